"""Lookups over a QDQ ONNX graph, shared by the validator and the rewrites: who produces / consumes a
tensor, which tensors are constants or quantized weights, which DequantizeLinear feeds a layer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ...artifact import Artifact
from ...errors import InvalidInput

QUANT_OPS = ("QuantizeLinear", "DequantizeLinear")
# op type -> (index of the weight input, output-channel axis of that weight)
WEIGHTED_OPS = {"Conv": (1, 0), "ConvTranspose": (1, 1), "Gemm": (1, None), "MatMul": (1, 1)}
# ops that pass data through unchanged in value order, so "what feeds this" looks through them
TRANSPARENT = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose")
# ops a DequantizeLinear commutes with (TensorRT propagates DQ forward across them)
COMMUTING = TRANSPARENT + ("MaxPool",)
# doc_string of a BatchNormalization rewritten as a depthwise INT8 convolution (not a layer a user quantized)
BN_AS_DEPTHWISE = "edgecnn: BatchNormalization as a depthwise 1x1 convolution (int8 weights +-127)"


def load_model(model_or_path: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    """A ModelProto, an .onnx path or an onnx artifact directory -> ModelProto (InvalidInput naming the file)."""
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    p = Path(model_or_path)
    if p.is_dir():
        p = Artifact.load(p, formats=("onnx",)).model_file
    if not p.is_file():
        raise InvalidInput(f"ONNX model '{p}' does not exist; pass an .onnx file or an onnx artifact directory.")
    try:
        return onnx.load(str(p), load_external_data=True)
    except Exception as exc:  # onnx raises DecodeError / OSError for non-ONNX files
        raise InvalidInput(
            f"'{p}' is not a readable ONNX model ({str(exc).splitlines()[0][:120]}); "
            "pass a model written by 'edgecnn export' or 'edgecnn quantize'."
        ) from exc


class Graph:
    """Producer / consumer / constant lookups over one ONNX graph."""

    def __init__(self, model):
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
        if p is not None and p.op_type == "QuantizeLinear":  # Q(const) -> DQ : an unfolded weight
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
        while p is not None and p.op_type in TRANSPARENT:
            p = self.producer.get(p.input[0])
        return p


def name_of(node) -> str:
    return node.name or f"{node.op_type}({node.output[0] if node.output else '?'})"


def attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def weight_axis(node, g: Graph | None = None) -> int | None:
    """Output-channel axis of the weight input of a weighted op."""
    op = node.op_type
    if op == "Gemm":
        return 0 if attr(node, "transB", 0) else 1
    return WEIGHTED_OPS[op][1]


def same_params(g: Graph, q, dq, *, exact: bool = False) -> bool:
    """Same scale and zero point (and axis). ``exact``: bit-identical scales, for rewrites that must not
    change a value; otherwise within float rounding, for the validator."""
    sq, sd = g.const(q.input[1]), g.const(dq.input[1])
    if sq is None or sd is None or sq.shape != sd.shape:
        return False
    if not (np.array_equal(sq, sd) if exact else np.allclose(sq, sd, rtol=1e-6, atol=0)):
        return False
    if exact and attr(q, "axis", 1) != attr(dq, "axis", 1):
        return False
    zq = g.const(q.input[2]) if len(q.input) > 2 and q.input[2] else None
    zd = g.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if (zq is None) != (zd is None):
        return False
    return zq is None or (zq.dtype == zd.dtype and np.array_equal(zq, zd))


def dq_source(g: Graph, name: str, _depth: int = 0):
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


def is_dq_activation(g: Graph, name: str) -> bool:
    return dq_source(g, name) is not None


def quantized_layer(g: Graph, node) -> bool:
    """A weighted layer with a quantized activation input and a quantized weight (runs in INT8)."""
    if len(node.input) < 2:
        return False
    return is_dq_activation(g, node.input[0]) and (
        g.producer.get(node.input[1]) is not None and g.producer[node.input[1]].op_type == "DequantizeLinear"
    )


def add_input_kind(g: Graph, name: str) -> str:
    """'layer' (straight from an INT8 conv/gemm), 'qdq-layer' (an INT8 layer's output re-quantized),
    'qdq' (another quantized tensor) or 'float'."""
    p = g.producer.get(name)
    if p is None:
        return "float"
    if p.op_type in WEIGHTED_OPS:
        return "layer" if quantized_layer(g, p) else "float"
    dq = dq_source(g, name)
    if dq is not None:
        q = g.producer.get(dq.input[0])
        s = g.producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        return "qdq-layer" if s is not None and s.op_type in WEIGHTED_OPS and quantized_layer(g, s) else "qdq"
    return "float"


# --------------------------------------------------------------------------------------------------
# editing helpers (in place on a ModelProto)
# --------------------------------------------------------------------------------------------------
def init_map(model) -> dict:
    return {i.name: i for i in model.graph.initializer}


def unique_name(model, base: str) -> str:
    """``base``, or ``base_N``: a name no initializer, node output or node of ``model`` uses yet."""
    taken = (
        {i.name for i in model.graph.initializer}
        | {o for n in model.graph.node for o in n.output}
        | {n.name for n in model.graph.node}
    )
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


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
