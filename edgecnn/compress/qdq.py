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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from ..errors import InvalidInput

RULES = ("tensorrt",)
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")
# op type -> (index of the weight input, output-channel axis of that weight)
WEIGHTED_OPS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "Gemm": (1, None), "MatMul": (1, 1)}
# ops that pass data through unchanged in value order, so "what feeds this" looks through them
_TRANSPARENT = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose")
# ops a DequantizeLinear commutes with (TensorRT propagates DQ forward across them)
COMMUTING = _TRANSPARENT + ("MaxPool",)

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
    severity: str = "error"   # "error": refused/misread by TensorRT; "warning": builds but cannot fuse

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
    return {"rules": "tensorrt", "passed": not errors(violations), "errors": len(errors(violations)),
            "warnings": len(violations) - len(errors(violations)), "by_rule": counts,
            "violations": [v.as_dict() for v in violations[:50]]}


def _load(model_or_path):
    import onnx

    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    p = Path(model_or_path)
    if p.is_dir():
        from ..artifact import Artifact

        p = Artifact.load(p, formats=("onnx",)).model_file
    if not p.is_file():
        raise InvalidInput(f"ONNX model '{p}' does not exist; pass an .onnx file or an onnx artifact directory.")
    try:
        return onnx.load(str(p), load_external_data=True)
    except Exception as exc:  # onnx raises DecodeError / OSError for non-ONNX files
        raise InvalidInput(f"'{p}' is not a readable ONNX model ({str(exc).splitlines()[0][:120]}); "
                           "pass a model written by 'edgecnn export' or 'edgecnn quantize'.") from exc


class _Graph:
    """Producer / consumer / constant lookups over one ONNX graph."""

    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.nodes = list(g.node)
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.output:
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}

    def const(self, name: str):
        if name in self.consts:
            return self.consts[name]
        # constants that reach a node through Identity (exporters emit those for shared weights)
        p = self.producer.get(name)
        while p is not None and p.op_type == "Identity":
            if p.input[0] in self.consts:
                return self.consts[p.input[0]]
            p = self.producer.get(p.input[0])
        return None

    def is_const(self, name: str) -> bool:
        if self.const(name) is not None:
            return True
        p = self.producer.get(name)
        if p is not None and p.op_type == "QuantizeLinear":   # Q(const) -> DQ : an unfolded weight
            return self.const(p.input[0]) is not None
        return False

    def is_weight(self, name: str) -> bool:
        """A constant, or a DequantizeLinear of a constant (a quantized weight)."""
        if self.is_const(name):
            return True
        p = self.producer.get(name)
        return p is not None and p.op_type == "DequantizeLinear" and self.is_const(p.input[0])

    def source(self, name: str):
        """The node that really produces ``name``, looking through shape-only ops."""
        p = self.producer.get(name)
        while p is not None and p.op_type in _TRANSPARENT:
            p = self.producer.get(p.input[0])
        return p


def name_of(node) -> str:
    return node.name or f"{node.op_type}({node.output[0] if node.output else '?'})"


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def weight_axis(node, g: _Graph | None = None) -> int | None:
    """Output-channel axis of the weight input of a weighted op."""
    op = node.op_type
    if op == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    return WEIGHTED_OPS[op][1]


def validate_qdq(model_or_path, rules: str = "tensorrt") -> list[Violation]:
    """Check a QDQ ONNX model (a ModelProto, an .onnx path or an onnx artifact directory).

    Returns every violation (errors first); an empty list or one with only warnings means TensorRT's
    explicit quantization will accept the model.
    """
    import numpy as np

    if rules not in RULES:
        raise InvalidInput(f"Unknown QDQ rule set '{rules}'; choose one of: {', '.join(RULES)}.")
    model = _load(model_or_path)
    g = _Graph(model)
    out: list[Violation] = []

    def add(node, rule, detail, severity="error"):
        out.append(Violation(name_of(node) if not isinstance(node, str) else node, rule, detail, severity))

    weight_dq = {}   # DQ output name -> (weighted node, its expected axis, out channels)
    for n in g.nodes:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1:
            w = n.input[1]
            p = g.producer.get(w)
            if p is not None and p.op_type == "DequantizeLinear":
                wt = g.const(p.input[0])
                if wt is None and g.producer.get(p.input[0]) is not None:
                    q = g.producer[p.input[0]]
                    wt = g.const(q.input[0]) if q.op_type == "QuantizeLinear" else None
                axis = weight_axis(n, g)
                channels = int(wt.shape[axis]) if wt is not None and axis is not None and wt.ndim > axis else None
                weight_dq[p.output[0]] = (n, axis, channels)

    for n in g.nodes:
        if n.op_type not in QUANT_OPS:
            continue
        what = "QuantizeLinear" if n.op_type == "QuantizeLinear" else "DequantizeLinear"
        # zero point: present, signed int8, all zero
        if len(n.input) < 3 or not n.input[2]:
            add(n, "zero-point-missing", f"{what} has no zero point, so ONNX reads it as uint8; add an int8 zero point 0")
        else:
            zp = g.const(n.input[2])
            if zp is None:
                add(n, "scale-invalid", f"zero point '{n.input[2]}' is not a constant")
            elif zp.dtype == np.int32 and n.op_type == "DequantizeLinear" and any(
                    c.op_type in WEIGHTED_OPS and len(c.input) > 2 and c.input[2] == n.output[0]
                    for c in g.consumers.get(n.output[0], [])):
                add(n, "quantized-bias", "bias stored as int32 (an ONNX Runtime layout); TensorRT keeps biases in "
                    "float - quantize with --target tensorrt")
                continue
            else:
                if zp.dtype != np.int8:
                    add(n, "unsigned" if zp.dtype == np.uint8 else "not-int8",
                        f"zero point is {zp.dtype.name}; TensorRT needs int8")
                if np.any(zp != 0):
                    nz = np.unique(zp[zp != 0])[:3].tolist()
                    add(n, "zero-point-nonzero", f"zero point {nz} (asymmetric); TensorRT needs 0")
        scale = g.const(n.input[1]) if len(n.input) > 1 else None
        if scale is None:
            add(n, "scale-invalid", f"scale '{n.input[1] if len(n.input) > 1 else ''}' is not a constant")
            continue
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            add(n, "scale-invalid", "scale has non-positive or non-finite values")
        per_channel = scale.size > 1
        axis = _attr(n, "axis", 1)
        is_weight = g.is_const(n.input[0])
        if n.op_type == "DequantizeLinear" and n.output[0] in weight_dq:
            layer, want_axis, channels = weight_dq[n.output[0]]
            if not per_channel and (channels or 2) > 1:
                add(n, "weight-per-tensor", f"weight of {name_of(layer)} has one scale for all "
                    f"{channels if channels else 'its'} output channels; use per-channel scales (axis {want_axis})")
            elif per_channel and want_axis is not None:
                rank = g.const(n.input[0]).ndim if g.const(n.input[0]) is not None else None
                norm = axis + rank if (rank is not None and axis < 0) else axis
                if norm != want_axis:
                    add(n, "weight-axis", f"weight of {name_of(layer)} is quantized per-channel on axis {axis}; "
                        f"TensorRT needs axis {want_axis} (output channels)")
        elif not is_weight and per_channel:
            add(n, "activation-per-channel", f"activation quantized with {scale.size} scales on axis {axis}; "
                "TensorRT needs one scale per tensor")
        # pairing
        if n.op_type == "QuantizeLinear":
            cons = g.consumers.get(n.output[0], [])
            bad = [c for c in cons if c.op_type != "DequantizeLinear"]
            if bad or n.output[0] in g.outputs:
                who = ", ".join(name_of(c) for c in bad[:3]) or "a graph output"
                add(n, "q-without-dq", f"quantized output goes to {who}; TensorRT needs Q immediately followed by DQ")
            for c in cons:
                if c.op_type == "DequantizeLinear" and not _same_params(g, n, c):
                    add(c, "q-dq-mismatch", f"scale/zero point differ from its QuantizeLinear {name_of(n)}")
        elif not is_weight:
            p = g.producer.get(n.input[0])
            if p is None or p.op_type != "QuantizeLinear":
                add(n, "dq-without-q", "activation DequantizeLinear is not fed by a QuantizeLinear")

    out += _placement(g)
    out.sort(key=lambda v: (v.severity != "error", v.rule, v.node))
    return out


def _same_params(g: _Graph, q, dq, *, exact: bool = False) -> bool:
    """Same scale and zero point (and axis). ``exact``: bit-identical scales, for rewrites that must not
    change a value; otherwise within float rounding, for the validator."""
    import numpy as np

    sq, sd = g.const(q.input[1]), g.const(dq.input[1])
    if sq is None or sd is None or sq.shape != sd.shape:
        return False
    if not (np.array_equal(sq, sd) if exact else np.allclose(sq, sd, rtol=1e-6, atol=0)):
        return False
    if exact and _attr(q, "axis", 1) != _attr(dq, "axis", 1):
        return False
    zq = g.const(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    zd = g.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if (zq is None) != (zd is None):
        return False
    return zq is None or (zq.dtype == zd.dtype and np.array_equal(zq, zd))


def dq_source(g: _Graph, name: str, _depth: int = 0):
    """The activation DequantizeLinear that feeds ``name`` directly or through ops that TensorRT moves a
    DQ across (max-pooling, shape-only ops, and a Concat whose inputs are all quantized), else None."""
    p = g.producer.get(name)
    while p is not None and p.op_type in COMMUTING:
        p = g.producer.get(p.input[0])
    if p is not None and p.op_type == "DequantizeLinear" and not g.is_const(p.input[0]):
        return p
    if p is not None and p.op_type == "Concat" and _depth < 8:
        sources = [dq_source(g, i, _depth + 1) for i in p.input]
        if sources and all(s is not None for s in sources):
            return sources[0]
    return None


def _is_dq_activation(g: _Graph, name: str) -> bool:
    return dq_source(g, name) is not None


def _quantized_layer(g: _Graph, node) -> bool:
    if len(node.input) < 2:
        return False
    return _is_dq_activation(g, node.input[0]) and (g.producer.get(node.input[1]) is not None
                                                      and g.producer[node.input[1]].op_type == "DequantizeLinear")


def _add_input_kind(g: _Graph, name: str) -> str:
    """'layer' (straight from an INT8 conv/gemm), 'qdq-layer' (an INT8 layer's output re-quantized),
    'qdq' (another quantized tensor) or 'float'."""
    p = g.producer.get(name)
    if p is None:
        return "float"
    if p.op_type in WEIGHTED_OPS:
        return "layer" if _quantized_layer(g, p) else "float"
    dq = dq_source(g, name)
    if dq is not None:
        q = g.producer.get(dq.input[0])
        s = g.producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        return "qdq-layer" if s is not None and s.op_type in WEIGHTED_OPS and _quantized_layer(g, s) else "qdq"
    return "float"


def _placement(g: _Graph) -> list[Violation]:
    """Fusion rules: residual adds, concat scales, weighted layers left in floating point."""
    import numpy as np

    out: list[Violation] = []
    quantized_model = any(n.op_type in QUANT_OPS for n in g.nodes)
    if not quantized_model:
        return out
    for n in g.nodes:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and not g.is_const(n.input[0]):
            w = n.input[1]
            if not g.is_weight(w):
                continue   # activation x activation MatMul (attention): not a weighted layer
            if not _quantized_layer(g, n):
                missing = []
                if not _is_dq_activation(g, n.input[0]):
                    missing.append("input")
                wp = g.producer.get(w)
                if wp is None or wp.op_type != "DequantizeLinear":
                    missing.append("weight")
                out.append(Violation(name_of(n), "unquantized-layer",
                                     f"{n.op_type} has no Q/DQ on its {' and '.join(missing)}; it runs in floating point",
                                     "warning"))
        elif n.op_type == "Add" and len(n.input) == 2 and not any(g.is_const(i) for i in n.input):
            kinds = [_add_input_kind(g, i) for i in n.input]
            if "layer" in kinds:
                other = kinds[1] if kinds[0] == "layer" else kinds[0]
                if other == "layer":
                    out.append(Violation(name_of(n), "residual-add", "both inputs come straight from INT8 "
                                         "convolutions; put Q/DQ on one of them (the skip branch) so the other can "
                                         "fuse with the add", "warning"))
                elif other == "float":
                    skip = n.input[1] if kinds[0] == "layer" else n.input[0]
                    out.append(Violation(name_of(n), "residual-add", f"skip input '{skip}' is not quantized, so "
                                         "TensorRT cannot fuse this add into the INT8 convolution", "warning"))
            elif kinds.count("qdq-layer") and "float" not in kinds:
                i = kinds.index("qdq-layer")
                out.append(Violation(name_of(n), "residual-add", f"input '{n.input[i]}' is a convolution output "
                                     "with its own Q/DQ; drop that Q/DQ so TensorRT can fuse the convolution with "
                                     "the add (keep the one on the skip input)", "warning"))
        elif n.op_type == "Concat":
            scales = []
            for i in n.input:
                p = dq_source(g, i)
                if p is not None:
                    s = g.const(p.input[1])
                    scales.append(None if s is None else float(np.max(s)))
                else:
                    scales.append(None)
            quantized = [s is not None for s in scales]
            if any(quantized) and not all(quantized):
                out.append(Violation(name_of(n), "concat-scales",
                                     f"{quantized.count(False)} of {len(scales)} inputs are not quantized; "
                                     "TensorRT concatenates in floating point and requantizes", "warning"))
            elif all(quantized) and len(scales) > 1:
                vals = np.array(scales)
                if not np.allclose(vals, vals[0], rtol=1e-5):
                    out.append(Violation(name_of(n), "concat-scales",
                                         f"input scales differ ({vals.min():.4g}..{vals.max():.4g}); use one shared "
                                         "scale so TensorRT can concatenate in INT8", "warning"))
    return out


def validate_file(path: str | os.PathLike, rules: str = "tensorrt") -> dict:
    """validate_qdq + summarize, for the CLI and manifests."""
    return summarize(validate_qdq(path, rules))


# --------------------------------------------------------------------------------------------------
# Rewrites used by the quantize stage. Each works in place on a ModelProto and returns what it changed.
# --------------------------------------------------------------------------------------------------
def _init_map(model) -> dict:
    return {i.name: i for i in model.graph.initializer}


def _unique(model, base: str) -> str:
    taken = {i.name for i in model.graph.initializer} | {o for n in model.graph.node for o in n.output} \
        | {n.name for n in model.graph.node}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def make_signed(model) -> list[str]:
    """Turn unsigned Q/DQ pairs with zero point 0 (NNCF's choice after a ReLU) into signed INT8 with zero
    point 0, as TensorRT requires. The representable range stays [0, max]: scale' = scale * 255 / 127, i.e.
    one bit of resolution is given up on non-negative tensors - exactly what a signed symmetric quantizer
    calibrated on the same statistics produces. Returns the names of the changed Q/DQ nodes."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = _init_map(model)
    unsigned = {name for name, t in inits.items() if t.data_type == TensorProto.UINT8}
    done: set[str] = set()
    changed = []
    for n in model.graph.node:
        if n.op_type not in QUANT_OPS or len(n.input) < 3 or n.input[2] not in unsigned:
            continue
        zp = numpy_helper.to_array(inits[n.input[2]]).astype(np.uint8)
        if np.any(zp != 0):
            raise ValueError(f"{name_of(n)}: asymmetric uint8 quantizer (zero point {zp.ravel()[:3]}) cannot be made "
                             "signed symmetric; quantize with preset 'performance'")
        if n.input[2] not in done:
            inits[n.input[2]].CopyFrom(numpy_helper.from_array(np.zeros(zp.shape, np.int8), n.input[2]))
            done.add(n.input[2])
        if n.input[1] not in done:
            s = numpy_helper.to_array(inits[n.input[1]])
            inits[n.input[1]].CopyFrom(numpy_helper.from_array((s.astype(np.float64) * 255.0 / 127.0).astype(s.dtype),
                                                               n.input[1]))
            done.add(n.input[1])
        changed.append(name_of(n))
    q_out = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for vi in model.graph.value_info:
        if vi.name in q_out and vi.type.tensor_type.elem_type == TensorProto.UINT8:
            vi.type.tensor_type.elem_type = TensorProto.INT8
    return changed


def remove_dead_nodes(model) -> int:
    """Drop nodes whose outputs nobody uses, and initializers nobody reads."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    removed = len(g.node) - len(keep)
    del g.node[:]
    g.node.extend(reversed(keep))
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    dead = [i for i in g.initializer if i.name not in used]
    for i in dead:
        g.initializer.remove(i)
    return removed


def fuse_friendly_residuals(model) -> list[str]:
    """TensorRT placement for residual adds: where both inputs of an Add carry Q/DQ and one of them is the
    output of an INT8 convolution, drop that convolution's output Q/DQ (for this Add) so TensorRT can fuse
    Conv + Add (+ ReLU) into one INT8 kernel; the skip input keeps its Q/DQ. Returns the Add names."""
    g = _Graph(model)
    changed = []
    for n in model.graph.node:
        if n.op_type != "Add" or len(n.input) != 2 or any(g.is_const(i) for i in n.input):
            continue
        kinds = [_add_input_kind(g, i) for i in n.input]
        if "layer" in kinds or "float" in kinds or "qdq-layer" not in kinds:
            continue
        i = kinds.index("qdq-layer")          # input 0 = torch's main branch (out += identity)
        dq = g.producer[n.input[i]]
        if dq.op_type != "DequantizeLinear":  # reached through a commuting op: leave it
            continue
        q = g.producer[dq.input[0]]
        n.input[i] = q.input[0]
        changed.append(name_of(n))
    if changed:
        remove_dead_nodes(model)
    return changed


def requantize_before_layers(model) -> list[str]:
    """Where a Conv/Gemm/MatMul reads an activation that was dequantized *before* a shape-only op
    (DQ -> Flatten -> Gemm, as NNCF leaves AlexNet's and VGG's first classifier layer), put an identical
    Q/DQ pair (same scale and zero point) right in front of the layer. Re-quantizing a dequantized value
    with the same parameters is exact, and ONNX Runtime (and TensorRT) then see a fusable DQ -> layer
    pattern instead of running the biggest layer of the network in floating point."""
    from onnx import helper

    g = _Graph(model)
    changed = []
    new_nodes: list[tuple[int, list]] = []
    made: dict[str, str] = {}      # tensor -> its re-quantized copy (shared by every layer that reads it)
    for idx, n in enumerate(model.graph.node):
        if n.op_type not in WEIGHTED_OPS or len(n.input) < 2 or not g.is_weight(n.input[1]):
            continue
        direct = g.producer.get(n.input[0])
        if direct is None or direct.op_type == "DequantizeLinear":
            continue
        if direct.op_type == "MaxPool" and (g.producer.get(direct.input[0]) is not None
                                           and g.producer[direct.input[0]].op_type == "DequantizeLinear"):
            continue   # ONNX Runtime and TensorRT run DQ -> MaxPool -> layer in INT8 as it is
        if n.input[0] in made:
            n.input[0] = made[n.input[0]]
            changed.append(name_of(n))
            continue
        p = dq_source(g, n.input[0])
        if p is None or not _requant_exact(g, n.input[0], p):
            continue
        scale, zp = p.input[1], (p.input[2] if len(p.input) > 2 else "")
        qname, dqname = _unique(model, f"{name_of(n)}_requant_q"), _unique(model, f"{name_of(n)}_requant_dq")
        q_out, dq_out = _unique(model, f"{n.input[0]}_requant_q"), _unique(model, f"{n.input[0]}_requant")
        q = helper.make_node("QuantizeLinear", [n.input[0], scale] + ([zp] if zp else []), [q_out], name=qname)
        dq = helper.make_node("DequantizeLinear", [q_out, scale] + ([zp] if zp else []), [dq_out], name=dqname)
        new_nodes.append((idx, [q, dq]))
        made[n.input[0]] = dq_out
        n.input[0] = dq_out
        changed.append(name_of(n))
    for idx, nodes in reversed(new_nodes):
        for k, node in enumerate(nodes):
            model.graph.node.insert(idx + k, node)
    return changed


def quantize_gemm_bias(model) -> list[str]:
    """For a Gemm with quantized input and weight but no QuantizeLinear after it (the classifier, whose
    logits leave the network), store the bias as int32 with scale = input scale x weight scale (zero point
    0, the usual integer-bias convention). ONNX Runtime then runs it as one INT8 QGemm with float output;
    with a float bias it de-quantizes the weight matrix on every call and runs the layer in FP32
    (measured: 17 % of AlexNet's INT8 latency). The rounding error is below 0.5 x input scale x weight
    scale per output. CPU layout only (TensorRT keeps biases in float). Returns the Gemm names."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = _Graph(model)
    changed = []
    for n in list(model.graph.node):
        if n.op_type != "Gemm" or len(n.input) < 3 or not n.input[2] or _attr(n, "transA", 0):
            continue
        after = g.consumers.get(n.output[0], [])
        after += [c2 for c in after if c.op_type in ("Relu", "Clip") for c2 in g.consumers.get(c.output[0], [])]
        if any(c.op_type == "QuantizeLinear" for c in after):
            continue   # the layer's output is quantized: ONNX Runtime fuses it as it is
        adq, wdq = g.producer.get(n.input[0]), g.producer.get(n.input[1])
        bias = g.consts.get(n.input[2])
        if (adq is None or adq.op_type != "DequantizeLinear" or wdq is None or wdq.op_type != "DequantizeLinear"
                or bias is None or bias.ndim != 1 or float(_attr(n, "beta", 1.0)) != 1.0):
            continue
        a_scale, w_scale = g.const(adq.input[1]), g.const(wdq.input[1])
        if a_scale is None or w_scale is None or a_scale.size != 1:
            continue
        scale = (float(a_scale.reshape(())) * w_scale.astype(np.float64).reshape(-1))
        if scale.size == 1:
            scale = np.full(bias.shape, scale[0])
        if scale.shape != bias.shape or np.any(scale <= 0):
            continue
        q = np.round(bias.astype(np.float64) / scale)
        if np.any(np.abs(q) > 2**31 - 1):
            continue
        base = _unique(model, f"{n.input[2]}_int32")
        s_name, z_name, out = _unique(model, f"{base}_scale"), _unique(model, f"{base}_zero_point"), \
            _unique(model, f"{n.input[2]}_dequantized")
        model.graph.initializer.extend([numpy_helper.from_array(q.astype(np.int32), base),
                                        numpy_helper.from_array(scale.astype(np.float32), s_name),
                                        numpy_helper.from_array(np.zeros(bias.shape, np.int32), z_name)])
        dq = helper.make_node("DequantizeLinear", [base, s_name, z_name], [out], name=_unique(model, f"{name_of(n)}_bias_dq"),
                              axis=0)
        model.graph.node.insert(list(model.graph.node).index(n), dq)
        n.input[2] = out
        changed.append(name_of(n))
    if changed:
        remove_dead_nodes(model)
    return changed


def _requant_exact(g: _Graph, name: str, dq) -> bool:
    """True when every DQ that reaches ``name`` uses ``dq``'s scale and zero point, so re-quantizing with
    them is exact (a Concat of differently scaled inputs is not)."""
    import numpy as np

    ref_s = g.const(dq.input[1])
    ref_z = g.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    stack, seen = [name], 0
    while stack and seen < 256:
        seen += 1
        p = g.producer.get(stack.pop())
        while p is not None and p.op_type in COMMUTING:
            p = g.producer.get(p.input[0])
        if p is None:
            return False
        if p.op_type == "Concat":
            stack += list(p.input)
            continue
        if p.op_type != "DequantizeLinear":
            return False
        s = g.const(p.input[1])
        z = g.const(p.input[2]) if len(p.input) > 2 and p.input[2] else None
        if s is None or ref_s is None or s.shape != ref_s.shape or not np.allclose(s, ref_s, rtol=1e-6):
            return False
        if (z is None) != (ref_z is None) or (z is not None and (z.dtype != ref_z.dtype or not np.array_equal(z, ref_z))):
            return False
    return not stack


def unify_concat_scales(model) -> list[str]:
    """Give every Q/DQ pair that feeds a Concat (directly or through max-pooling / shape ops) the largest
    of their scales, so TensorRT can concatenate in INT8 without re-quantizing and ONNX Runtime can read
    the concatenation as one INT8 tensor (OpenVINO calls these unified scales). Concats that share inputs
    (DenseNet blocks) are repeated until every scale in the group agrees. Returns the Concat names."""
    import numpy as np
    from onnx import numpy_helper

    inits = _init_map(model)
    changed: list[str] = []
    for _ in range(16):
        g = _Graph(model)
        step = 0
        for n in model.graph.node:
            if n.op_type != "Concat" or len(n.input) < 2:
                continue
            dqs = [dq_source(g, i) for i in n.input]
            if any(d is None for d in dqs):
                continue
            qs = [g.producer.get(d.input[0]) for d in dqs]
            if not all(q is not None and q.op_type == "QuantizeLinear" for q in qs):
                continue
            names = {x.input[1] for x in dqs + qs}
            zps = {x.input[2] for x in dqs + qs if len(x.input) > 2}
            if not all(s in inits for s in names) or len({inits[z].data_type for z in zps if z in inits}) > 1:
                continue
            values = [float(np.max(numpy_helper.to_array(inits[s]))) for s in names]
            if np.allclose(values, values[0], rtol=1e-6):
                continue
            top = max(values)
            for s in names:
                arr = numpy_helper.to_array(inits[s])
                inits[s].CopyFrom(numpy_helper.from_array(np.full(arr.shape, top, dtype=arr.dtype), s))
            step += 1
            if name_of(n) not in changed:
                changed.append(name_of(n))
        if not step:
            break
    return changed



# --------------------------------------------------------------------------------------------------
# CPU (ONNX Runtime) layout: rewrites that let ONNX Runtime fuse what NNCF's graph leaves in float (exact,
# except harmonize_concat_quantizers, which coarsens some steps). DenseNet-121 @224, batch 1, 2 threads
# (benchmarks/bench_int8_zoo.py): INT8 went from 0.75x to 1.59x of FP32 in ONNX Runtime with all four.
# --------------------------------------------------------------------------------------------------
BN_AS_DEPTHWISE = "edgecnn: BatchNormalization as a depthwise 1x1 convolution (int8 weights +-127)"


def uint8_activations(model) -> list[str]:
    """Store every signed INT8 activation quantizer as uint8 with zero point + 128 (the same real values:
    uint8 v + 128 is int8 v, so this is exact). ONNX Runtime on x86 fuses ``DQ -> Conv -> Q`` into
    QLinearConv only when the input and output are both uint8; NNCF quantizes ReLU outputs as uint8 and
    signed tensors (a DenseNet convolution output headed for a Concat) as int8, so those convolutions ran
    in float with both inputs de-quantized on every call. Returns the changed Q/DQ node names."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    g = _Graph(model)
    inits = _init_map(model)
    # zero points also used by a weight DQ are left alone (NNCF never shares them; be safe)
    weight_zps = {n.input[2] for n in model.graph.node if n.op_type == "DequantizeLinear" and len(n.input) > 2
                  and g.is_const(n.input[0])}
    done: set[str] = set()
    changed = []
    for n in model.graph.node:
        if n.op_type not in QUANT_OPS or len(n.input) < 3 or n.input[2] not in inits:
            continue
        if g.is_const(n.input[0]) or n.input[2] in weight_zps:
            continue
        zp = inits[n.input[2]]
        if n.input[2] not in done:
            if zp.data_type != TensorProto.INT8:
                continue
            z = numpy_helper.to_array(zp).astype(np.int16) + 128
            zp.CopyFrom(numpy_helper.from_array(z.astype(np.uint8), n.input[2]))
            done.add(n.input[2])
        changed.append(name_of(n))
    q_out = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
             and n.input[2] in done}
    for vi in model.graph.value_info:
        if vi.name in q_out:
            vi.type.tensor_type.elem_type = TensorProto.UINT8
    return changed


def harmonize_concat_quantizers(model) -> list[str]:
    """Give every uint8 activation quantizer that meets others in a Concat (directly, or through
    max-pooling / shape ops; DenseNet blocks chain them) one common scale and zero point covering all of
    their ranges, so :func:`concat_before_dequantize` can concatenate the 8-bit tensors. A quantizer that
    follows a ReLU with zero point 0 keeps its own parameters (ONNX Runtime drops the ReLU into it; a
    non-zero zero point would leave the convolution before it in float); its value is re-quantized to the
    common parameters once, in front of the Concats. Not exact: a member's step grows to the common one
    (DenseNet-121's first block: the stem output's step x3 at most). Returns the Concat names."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = _Graph(model)
    inits = _init_map(model)
    parent: dict = {}

    def find(k):
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    concats = []
    for n in model.graph.node:
        if n.op_type != "Concat" or len(n.input) < 2:
            continue
        dqs = [dq_source(g, i) for i in n.input]
        if any(d is None or len(d.input) < 3 or d.input[1] not in inits or d.input[2] not in inits
               or inits[d.input[2]].data_type != TensorProto.UINT8 or g.const(d.input[1]).size != 1
               or g.producer.get(d.input[0]) is None or g.producer[d.input[0]].op_type != "QuantizeLinear"
               for d in dqs):
            continue
        keys = [(d.input[1], d.input[2]) for d in dqs]
        for k in keys[1:]:
            parent[find(k)] = find(keys[0])
        concats.append((n, dqs))

    def params(k):
        return float(g.const(k[0]).reshape(())), int(g.const(k[1]).reshape(()))

    groups: dict = {}
    for k in list(parent):
        groups.setdefault(find(k), []).append(k)
    common: dict = {}
    for root, keys in groups.items():
        ps = {params(k) for k in keys}
        if len(ps) < 2:
            continue
        lo = min(s * (0 - z) for s, z in ps)
        hi = max(s * (255 - z) for s, z in ps)
        scale = (hi - lo) / 255.0
        zp = int(np.clip(np.round(-lo / scale), 0, 255))
        for k in keys:
            common[k] = (scale, zp)

    def fixed(k) -> bool:
        """Quantizers right after a ReLU with zero point 0 stay as they are (see above)."""
        if params(k)[1] != 0:
            return False
        for q in g.nodes:
            if q.op_type == "QuantizeLinear" and len(q.input) > 2 and (q.input[1], q.input[2]) == k:
                p = g.producer.get(q.input[0])
                if p is not None and p.op_type in ("Relu", "Clip"):
                    return True
        return False

    changed: list[str] = []
    fixed_keys = {k for k in common if fixed(k)}
    for k, (scale, zp) in common.items():
        if k not in fixed_keys:
            inits[k[0]].CopyFrom(numpy_helper.from_array(np.asarray(scale, np.float32), k[0]))
            inits[k[1]].CopyFrom(numpy_helper.from_array(np.asarray(zp, np.uint8), k[1]))
    made: dict = {}
    for n, dqs in concats:
        touched = False
        for i, d in enumerate(dqs):
            k = (d.input[1], d.input[2])
            if k not in common:
                continue
            touched = True
            if k not in fixed_keys:
                continue
            src = n.input[i]
            if src not in made:
                scale, zp = common[k]
                base = _unique(model, f"{src}_common")
                s_name, z_name = _unique(model, f"{base}_scale"), _unique(model, f"{base}_zero_point")
                model.graph.initializer.extend([numpy_helper.from_array(np.asarray(scale, np.float32), s_name),
                                                numpy_helper.from_array(np.asarray(zp, np.uint8), z_name)])
                q_out, dq_out = _unique(model, f"{base}_q"), _unique(model, f"{base}_dq")
                at = list(model.graph.node).index(g.producer[src]) + 1 if src in g.producer else 0
                model.graph.node.insert(at, helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out],
                                                             name=_unique(model, f"{base}_DequantizeLinear")))
                model.graph.node.insert(at, helper.make_node("QuantizeLinear", [src, s_name, z_name], [q_out],
                                                             name=_unique(model, f"{base}_QuantizeLinear")))
                made[src] = dq_out
            n.input[i] = made[src]
        if touched:
            changed.append(name_of(n))
    return changed

def concat_before_dequantize(model) -> list[str]:
    """``Concat(DQ(a), DQ(b), ...)`` with one scale and zero point -> ``DQ(Concat(a, b, ...))``: the
    concatenation runs on the 8-bit tensors and each DenseNet block de-quantizes once per layer instead of
    once per layer *and* per earlier feature map (ONNX Runtime gives every consumer its own DQ, so a
    24-layer block ran 300 of them). Exact. Returns the Concat names."""
    from onnx import helper

    g = _Graph(model)
    changed = []
    for n in list(model.graph.node):
        if n.op_type != "Concat" or len(n.input) < 2:
            continue
        dqs = [g.producer.get(i) for i in n.input]
        if not all(d is not None and d.op_type == "DequantizeLinear" and len(d.input) == 3 for d in dqs):
            continue
        if not all(_same_params(g, dqs[0], d, exact=True) for d in dqs[1:]) or g.const(dqs[0].input[1]).size != 1:
            continue
        out = n.output[0]
        q_cat = _unique(model, f"{out}_quantized")
        n.input[:] = [d.input[0] for d in dqs]
        n.output[0] = q_cat
        dq = helper.make_node("DequantizeLinear", [q_cat] + list(dqs[0].input[1:]), [out],
                              name=_unique(model, f"{name_of(n)}_dq"))
        model.graph.node.insert(list(model.graph.node).index(n) + 1, dq)
        changed.append(name_of(n))
    if changed:
        remove_dead_nodes(model)
    return changed


def batchnorm_as_depthwise(model) -> list[str]:
    """A BatchNormalization that reads a de-quantized activation and whose result is quantized again
    (DenseNet's pre-activation ``Concat -> BN -> ReLU -> Q``, which cannot be folded into a convolution)
    becomes a depthwise 1x1 convolution: weight = 127 x sign(gamma'), per-channel weight scale =
    abs(gamma') / 127 (exact in float), bias = beta' as int32 at scale input-scale x weight-scale (error
    below half a step of that scale). ONNX Runtime then runs it as one QLinearConv in its NHWC int8
    pipeline, instead of de-quantize, NCHW float BatchNorm, transposes and re-quantize. Returns the
    BatchNormalization names."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = _Graph(model)
    changed = []
    for n in list(model.graph.node):
        if n.op_type != "BatchNormalization" or len(n.output) != 1 or len(n.input) < 5:
            continue
        dq = g.producer.get(n.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or g.is_const(dq.input[0]):
            continue
        s_in = g.const(dq.input[1])
        params = [g.const(i) for i in n.input[1:5]]
        if s_in is None or s_in.size != 1 or any(p is None for p in params):
            continue
        after = g.consumers.get(n.output[0], [])
        if after and all(c.op_type == "Relu" for c in after):
            after = [c2 for c in after for c2 in g.consumers.get(c.output[0], [])]
        if not after or not all(c.op_type == "QuantizeLinear" for c in after):
            continue      # a float result: a depthwise conv without output Q would not fuse
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
        a = gamma / np.sqrt(var + float(_attr(n, "epsilon", 1e-5)))
        b = beta - a * mean
        c = a.size
        w_scale = np.where(a != 0, np.abs(a) / 127.0, 1.0)
        b_scale = float(s_in.reshape(())) * w_scale
        b_q = np.round(b / b_scale)
        if np.any(np.abs(b_q) > 2**31 - 1) or not np.all(np.isfinite(b_q)):
            continue
        base = _unique(model, f"{name_of(n)}_depthwise")
        names = {k: _unique(model, f"{base}_{k}") for k in ("w", "w_scale", "w_zero_point", "b", "b_scale",
                                                             "b_zero_point", "w_dq", "b_dq")}
        model.graph.initializer.extend([
            numpy_helper.from_array((127 * np.sign(a)).astype(np.int8).reshape(c, 1, 1, 1), names["w"]),
            numpy_helper.from_array(w_scale.astype(np.float32), names["w_scale"]),
            numpy_helper.from_array(np.zeros(c, np.int8), names["w_zero_point"]),
            numpy_helper.from_array(b_q.astype(np.int32), names["b"]),
            numpy_helper.from_array(b_scale.astype(np.float32), names["b_scale"]),
            numpy_helper.from_array(np.zeros(c, np.int32), names["b_zero_point"])])
        w_dq = helper.make_node("DequantizeLinear", [names["w"], names["w_scale"], names["w_zero_point"]],
                                [names["w_dq"]], name=names["w_dq"], axis=0)
        b_dq = helper.make_node("DequantizeLinear", [names["b"], names["b_scale"], names["b_zero_point"]],
                                [names["b_dq"]], name=names["b_dq"], axis=0)
        conv = helper.make_node("Conv", [n.input[0], names["w_dq"], names["b_dq"]], [n.output[0]], name=base,
                                group=c, kernel_shape=[1, 1])
        conv.doc_string = BN_AS_DEPTHWISE
        at = list(model.graph.node).index(n)
        model.graph.node.remove(n)
        for k, node in enumerate((w_dq, b_dq, conv)):
            model.graph.node.insert(at + k, node)
        changed.append(name_of(n))
    if changed:
        remove_dead_nodes(model)
    return changed


def quantized_layers(model) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes whose weight is quantized (the candidates for keeping float; a
    BatchNormalization rewritten as a depthwise convolution is not one)."""
    g = _Graph(model)
    out = []
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.doc_string != BN_AS_DEPTHWISE:
            p = g.producer.get(n.input[1])
            if p is not None and p.op_type == "DequantizeLinear":
                out.append(name_of(n))
    return out


def keep_float(model, layers) -> list[str]:
    """Run ``layers`` (node names) in floating point inside a QDQ model: the weight is replaced by its
    dequantized float values and the activation input is taken from before its QuantizeLinear. The Q/DQ
    pairs stay for any other consumer. Returns the layers changed."""
    import numpy as np
    from onnx import numpy_helper

    wanted = set(layers)
    g = _Graph(model)
    inits = _init_map(model)
    known = {name_of(n) for n in model.graph.node}
    missing = sorted(wanted - known)
    if missing:
        raise InvalidInput(f"No node named '{missing[0]}' in the model.{_suggest(missing[0], known)}")
    changed = []
    for n in model.graph.node:
        if name_of(n) not in wanted or n.op_type not in WEIGHTED_OPS:
            continue
        wdq = g.producer.get(n.input[1])
        if wdq is not None and wdq.op_type == "DequantizeLinear":
            w = g.const(wdq.input[0])
            if w is None:
                q = g.producer.get(wdq.input[0])
                w = g.const(q.input[0]) if q is not None else None
                real = w.astype(np.float32) if w is not None else None
            else:
                scale = g.const(wdq.input[1]).astype(np.float32)
                zp = g.const(wdq.input[2]) if len(wdq.input) > 2 and wdq.input[2] else np.zeros_like(scale, np.int32)
                axis = _attr(wdq, "axis", 1)
                shape = [1] * w.ndim
                if scale.size > 1:
                    shape[axis if axis >= 0 else w.ndim + axis] = -1
                real = ((w.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * scale.reshape(shape))
            if real is not None:
                name = _unique(model, f"{n.input[1]}_float")
                model.graph.initializer.append(numpy_helper.from_array(real.astype(np.float32), name))
                n.input[1] = name
        n.input[0] = _float_source(model, g, n.input[0])
        changed.append(name_of(n))
    remove_dead_nodes(model)
    del inits
    return changed


def _float_source(model, g: _Graph, name: str) -> str:
    """The un-quantized version of activation ``name``: the input of its QuantizeLinear, and when that is
    itself a pooling / shape-op chain over another Q/DQ pair (DQ -> AveragePool -> Q -> DQ, DQ -> Flatten ->
    Q -> DQ), the chain re-applied to the tensor before the first quantizer (the original stays for any
    other consumer)."""
    from onnx import helper

    dq = g.producer.get(name)
    if dq is not None and dq.op_type == "DequantizeLinear":
        q = g.producer.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            name = q.input[0]
    chain, p = [], g.producer.get(name)
    while p is not None and p.op_type in COMMUTING + ("AveragePool", "GlobalAveragePool"):
        chain.append(p)
        p = g.producer.get(p.input[0])
    if not chain or p is None or p.op_type != "DequantizeLinear":
        return name
    q = g.producer.get(p.input[0])
    if q is None or q.op_type != "QuantizeLinear":
        return name
    cur = q.input[0]
    for op in reversed(chain):
        out = _unique(model, f"{op.output[0]}_float")
        clone = helper.make_node(op.op_type, [cur] + list(op.input[1:]), [out], name=_unique(model, f"{name_of(op)}_float"))
        clone.attribute.extend(op.attribute)
        model.graph.node.insert(list(model.graph.node).index(op) + 1, clone)
        cur = out
    return cur


def _suggest(name: str, known) -> str:
    from ..errors import suggest

    return suggest(name, known) or " List the layers with 'edgecnn quantize ... --list-layers'."
