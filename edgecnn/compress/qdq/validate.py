"""Checking a QDQ ONNX model against what TensorRT's explicit quantization accepts.

TensorRT (8.x-10.x, explicit quantization) builds INT8 layers only from QuantizeLinear/DequantizeLinear
pairs that are *signed INT8 with zero point 0* (symmetric), with *per-channel* scales on the weights'
output-channel axis and *per-tensor* scales on activations. Anything else is either rejected by the ONNX
parser or silently runs in floating point. Placement matters too: TensorRT fuses
``Conv -> Add(DQ(skip)) -> ReLU`` into one INT8 kernel only when the skip input of a residual ``Add`` is
quantized and the convolution's own output is not, and it concatenates in INT8 only when every input
of a ``Concat`` shares one scale. (NVIDIA TensorRT developer guide, "Working with Quantized Types";
TensorRT Model Optimizer's ONNX Q/DQ placement follows the same rules.)

:func:`validate_qdq` reports every departure as a :class:`Violation` naming the node. ``severity`` is
"error" when TensorRT would refuse the model or misread it, "warning" when it builds but cannot fuse
(slower). A model *passes* when :func:`errors` of its violations is empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from ...errors import InvalidInput
from . import graph
from .graph import QUANT_OPS, WEIGHTED_OPS, Graph, attr, load_model, name_of, same_params, weight_axis

RULES = ("tensorrt",)

RULE_TEXT = {
    "zero-point-missing": "Q/DQ without a zero point means uint8 in ONNX; TensorRT needs an explicit int8 zero point 0",
    "unsigned": "TensorRT accepts only signed INT8 quantization (uint8 found)",
    "quantized-bias": "TensorRT keeps biases in floating point (no int32 bias DequantizeLinear)",
    "not-int8": "this validator covers INT8 (int4/int16/FP8 Q/DQ are other TensorRT modes)",
    "zero-point-nonzero": "TensorRT accepts only symmetric quantization (zero point 0)",
    "scale-invalid": "scales must be positive, finite constants",
    "weight-per-tensor": "weights must have one scale per output channel",
    "weight-axis": "per-channel weight scales must lie on the output-channel axis",
    "activation-per-channel": "activations must have one scale per tensor",
    "q-without-dq": "a QuantizeLinear must feed only DequantizeLinear nodes",
    "dq-without-q": "an activation DequantizeLinear must be fed by a QuantizeLinear",
    "q-dq-mismatch": "a Q/DQ pair must use the same scale and zero point",
    "residual-add": "residual Add: quantize the skip input, not the convolution output, so Conv+Add can fuse",
    "concat-scales": "all inputs of a Concat must share one scale so it can run in INT8",
    "unquantized-layer": "a Conv/Gemm/MatMul without Q/DQ on its input and weight runs in floating point",
}


@dataclass(frozen=True)
class Violation:
    """One departure from the rules: which node, which rule, what exactly."""

    node: str
    rule: str
    detail: str
    severity: str = "error"  # "error": refused/misread by TensorRT; "warning": builds but cannot fuse

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.severity}: {self.node}: [{self.rule}] {self.detail}"


def errors(violations: Iterable[Violation]) -> list[Violation]:
    return [v for v in violations if v.severity == "error"]


def summarize(violations: list[Violation]) -> dict:
    """What the manifest records: pass/fail, counts per rule and the first offending nodes."""
    counts: dict[str, int] = {}
    for v in violations:
        counts[v.rule] = counts.get(v.rule, 0) + 1
    return {
        "rules": "tensorrt",
        "passed": not errors(violations),
        "errors": len(errors(violations)),
        "warnings": len(violations) - len(errors(violations)),
        "by_rule": counts,
        "violations": [v.as_dict() for v in violations[:50]],
    }


def validate_qdq(model_or_path, rules: str = "tensorrt") -> list[Violation]:
    """Check a QDQ ONNX model (a ModelProto, an .onnx path or an onnx artifact directory).

    Returns every violation (errors first); an empty list or one with only warnings means TensorRT's
    explicit quantization will accept the model.
    """
    if rules not in RULES:
        raise InvalidInput(f"Unknown QDQ rule set '{rules}'; choose one of: {', '.join(RULES)}.")
    g = Graph(load_model(model_or_path))
    out: list[Violation] = []
    weight_dq = _weight_dequantizers(g)
    for n in g.nodes:
        if n.op_type in QUANT_OPS:
            out += _check_quantizer(g, n, weight_dq)
    out += _placement(g)
    out.sort(key=lambda v: (v.severity != "error", v.rule, v.node))
    return out


def validate_file(path: str | os.PathLike, rules: str = "tensorrt") -> dict:
    """validate_qdq + summarize, for the CLI and manifests."""
    return summarize(validate_qdq(path, rules))


# --------------------------------------------------------------------------------------------------
# per-quantizer rules: data type, zero point, scales, axis, pairing
# --------------------------------------------------------------------------------------------------
def _weight_dequantizers(g: Graph) -> dict:
    """DQ output name -> (weighted node, its expected axis, out channels) for every quantized weight."""
    weight_dq = {}
    for n in g.nodes:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1:
            p = g.producer.get(n.input[1])
            if p is not None and p.op_type == "DequantizeLinear":
                wt = g.const(p.input[0])
                if wt is None and g.producer.get(p.input[0]) is not None:
                    q = g.producer[p.input[0]]
                    wt = g.const(q.input[0]) if q.op_type == "QuantizeLinear" else None
                axis = weight_axis(n, g)
                channels = int(wt.shape[axis]) if wt is not None and axis is not None and wt.ndim > axis else None
                weight_dq[p.output[0]] = (n, axis, channels)
    return weight_dq


def _check_quantizer(g: Graph, n, weight_dq: dict) -> list[Violation]:
    out: list[Violation] = []

    def add(node, rule, detail, severity="error"):
        out.append(Violation(name_of(node), rule, detail, severity))

    if not _check_zero_point(g, n, add):
        return out  # an int32 bias: the remaining rules are about INT8 tensors
    scale = g.const(n.input[1]) if len(n.input) > 1 else None
    if scale is None:
        add(n, "scale-invalid", f"scale '{n.input[1] if len(n.input) > 1 else ''}' is not a constant")
        return out
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        add(n, "scale-invalid", "scale has non-positive or non-finite values")
    per_channel = scale.size > 1
    axis = attr(n, "axis", 1)
    is_weight = g.is_const(n.input[0])
    if n.op_type == "DequantizeLinear" and n.output[0] in weight_dq:
        layer, want_axis, channels = weight_dq[n.output[0]]
        if not per_channel and (channels or 2) > 1:
            add(
                n,
                "weight-per-tensor",
                f"weight of {name_of(layer)} has one scale for all "
                f"{channels if channels else 'its'} output channels; use per-channel scales (axis {want_axis})",
            )
        elif per_channel and want_axis is not None:
            rank = g.const(n.input[0]).ndim if g.const(n.input[0]) is not None else None
            norm = axis + rank if (rank is not None and axis < 0) else axis
            if norm != want_axis:
                add(
                    n,
                    "weight-axis",
                    f"weight of {name_of(layer)} is quantized per-channel on axis {axis}; "
                    f"TensorRT needs axis {want_axis} (output channels)",
                )
    elif not is_weight and per_channel:
        add(
            n,
            "activation-per-channel",
            f"activation quantized with {scale.size} scales on axis {axis}; TensorRT needs one scale per tensor",
        )
    _check_pairing(g, n, is_weight, add)
    return out


def _check_zero_point(g: Graph, n, add) -> bool:
    """Zero point present, signed int8, all zero. False for an int32 bias DQ (reported, nothing else to check)."""
    what = "QuantizeLinear" if n.op_type == "QuantizeLinear" else "DequantizeLinear"
    if len(n.input) < 3 or not n.input[2]:
        add(n, "zero-point-missing", f"{what} has no zero point, so ONNX reads it as uint8; add an int8 zero point 0")
        return True
    zp = g.const(n.input[2])
    if zp is None:
        add(n, "scale-invalid", f"zero point '{n.input[2]}' is not a constant")
    elif (
        zp.dtype == np.int32
        and n.op_type == "DequantizeLinear"
        and any(
            c.op_type in WEIGHTED_OPS and len(c.input) > 2 and c.input[2] == n.output[0]
            for c in g.consumers.get(n.output[0], [])
        )
    ):
        add(
            n,
            "quantized-bias",
            "bias stored as int32 (an ONNX Runtime layout); TensorRT keeps biases in "
            "float - quantize with --target tensorrt",
        )
        return False
    else:
        if zp.dtype != np.int8:
            add(
                n,
                "unsigned" if zp.dtype == np.uint8 else "not-int8",
                f"zero point is {zp.dtype.name}; TensorRT needs int8",
            )
        if np.any(zp != 0):
            nz = np.unique(zp[zp != 0])[:3].tolist()
            add(n, "zero-point-nonzero", f"zero point {nz} (asymmetric); TensorRT needs 0")
    return True


def _check_pairing(g: Graph, n, is_weight: bool, add) -> None:
    if n.op_type == "QuantizeLinear":
        cons = g.consumers.get(n.output[0], [])
        bad = [c for c in cons if c.op_type != "DequantizeLinear"]
        if bad or n.output[0] in g.outputs:
            who = ", ".join(name_of(c) for c in bad[:3]) or "a graph output"
            add(n, "q-without-dq", f"quantized output goes to {who}; TensorRT needs Q immediately followed by DQ")
        for c in cons:
            if c.op_type == "DequantizeLinear" and not same_params(g, n, c):
                add(c, "q-dq-mismatch", f"scale/zero point differ from its QuantizeLinear {name_of(n)}")
    elif not is_weight:
        p = g.producer.get(n.input[0])
        if p is None or p.op_type != "QuantizeLinear":
            add(n, "dq-without-q", "activation DequantizeLinear is not fed by a QuantizeLinear")


# --------------------------------------------------------------------------------------------------
# placement (fusion) rules: layers left in float, residual adds, concat scales
# --------------------------------------------------------------------------------------------------
def _placement(g: Graph) -> list[Violation]:
    """Fusion rules: residual adds, concat scales, weighted layers left in floating point."""
    if not any(n.op_type in QUANT_OPS for n in g.nodes):
        return []
    out: list[Violation] = []
    for n in g.nodes:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and not g.is_const(n.input[0]):
            out += _check_layer(g, n)
        elif n.op_type == "Add" and len(n.input) == 2 and not any(g.is_const(i) for i in n.input):
            out += _check_add(g, n)
        elif n.op_type == "Concat":
            out += _check_concat(g, n)
    return out


def _check_layer(g: Graph, n) -> list[Violation]:
    w = n.input[1]
    if not g.is_weight(w) or graph.quantized_layer(g, n):
        return []  # activation x activation MatMul (attention) is not a weighted layer
    missing = []
    if not graph.is_dq_activation(g, n.input[0]):
        missing.append("input")
    wp = g.producer.get(w)
    if wp is None or wp.op_type != "DequantizeLinear":
        missing.append("weight")
    return [
        Violation(
            name_of(n),
            "unquantized-layer",
            f"{n.op_type} has no Q/DQ on its {' and '.join(missing)}; it runs in floating point",
            "warning",
        )
    ]


def _check_add(g: Graph, n) -> list[Violation]:
    kinds = [graph.add_input_kind(g, i) for i in n.input]
    if "layer" in kinds:
        other = kinds[1] if kinds[0] == "layer" else kinds[0]
        if other == "layer":
            return [
                Violation(
                    name_of(n),
                    "residual-add",
                    "both inputs come straight from INT8 convolutions; put "
                    "Q/DQ on one of them (the skip branch) so the other can fuse with the add",
                    "warning",
                )
            ]
        if other == "float":
            skip = n.input[1] if kinds[0] == "layer" else n.input[0]
            return [
                Violation(
                    name_of(n),
                    "residual-add",
                    f"skip input '{skip}' is not quantized, so TensorRT cannot fuse this add into the INT8 convolution",
                    "warning",
                )
            ]
    elif kinds.count("qdq-layer") and "float" not in kinds:
        i = kinds.index("qdq-layer")
        return [
            Violation(
                name_of(n),
                "residual-add",
                f"input '{n.input[i]}' is a convolution output with its own "
                "Q/DQ; drop that Q/DQ so TensorRT can fuse the convolution with the add (keep the one on "
                "the skip input)",
                "warning",
            )
        ]
    return []


def _check_concat(g: Graph, n) -> list[Violation]:
    scales = []
    for i in n.input:
        p = graph.dq_source(g, i)
        s = g.const(p.input[1]) if p is not None else None
        scales.append(None if s is None else float(np.max(s)))
    quantized = [s is not None for s in scales]
    if any(quantized) and not all(quantized):
        return [
            Violation(
                name_of(n),
                "concat-scales",
                f"{quantized.count(False)} of {len(scales)} inputs are not "
                "quantized; TensorRT concatenates in floating point and requantizes",
                "warning",
            )
        ]
    if all(quantized) and len(scales) > 1:
        vals = np.array(scales)
        if not np.allclose(vals, vals[0], rtol=1e-5):
            return [
                Violation(
                    name_of(n),
                    "concat-scales",
                    f"input scales differ ({vals.min():.4g}..{vals.max():.4g}); "
                    "use one shared scale so TensorRT can concatenate in INT8",
                    "warning",
                )
            ]
    return []
