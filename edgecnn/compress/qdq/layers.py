"""Which layers of a QDQ model run in INT8, and keeping chosen ones in floating point (the accuracy-aware
fallback of the quantize stage)."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ...errors import InvalidInput, suggest
from .graph import BN_AS_DEPTHWISE, COMMUTING, WEIGHTED_OPS, Graph, attr, name_of, remove_dead_nodes, unique_name


def quantized_layers(model) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes whose weight is quantized (the candidates for keeping float; a
    BatchNormalization rewritten as a depthwise convolution is not one)."""
    g = Graph(model)
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
    wanted = set(layers)
    g = Graph(model)
    known = {name_of(n) for n in model.graph.node}
    missing = sorted(wanted - known)
    if missing:
        hint = suggest(missing[0], known) or " List the layers with 'edgecnn quantize ARTIFACT --list-layers'."
        raise InvalidInput(f"No node named '{missing[0]}' in the model.{hint}")
    changed = []
    for n in model.graph.node:
        if name_of(n) not in wanted or n.op_type not in WEIGHTED_OPS:
            continue
        real = _float_weight(g, n.input[1])
        if real is not None:
            name = unique_name(model, f"{n.input[1]}_float")
            model.graph.initializer.append(numpy_helper.from_array(real.astype(np.float32), name))
            n.input[1] = name
        n.input[0] = _float_source(model, g, n.input[0])
        changed.append(name_of(n))
    remove_dead_nodes(model)
    return changed


def _float_weight(g: Graph, name: str) -> np.ndarray | None:
    """The real values of quantized weight ``name`` (DQ of an int8 constant, or DQ(Q(float constant))), else None."""
    wdq = g.producer.get(name)
    if wdq is None or wdq.op_type != "DequantizeLinear":
        return None
    w = g.const(wdq.input[0])
    if w is None:
        q = g.producer.get(wdq.input[0])
        w = g.const(q.input[0]) if q is not None else None
        return w.astype(np.float32) if w is not None else None
    scale = g.const(wdq.input[1]).astype(np.float32)
    zp = g.const(wdq.input[2]) if len(wdq.input) > 2 and wdq.input[2] else np.zeros_like(scale, np.int32)
    axis = attr(wdq, "axis", 1)
    shape = [1] * w.ndim
    if scale.size > 1:
        shape[axis if axis >= 0 else w.ndim + axis] = -1
    return (w.astype(np.float32) - zp.astype(np.float32).reshape(shape)) * scale.reshape(shape)


def _float_source(model, g: Graph, name: str) -> str:
    """The un-quantized version of activation ``name``: the input of its QuantizeLinear, and when that is
    itself a pooling / shape-op chain over another Q/DQ pair (DQ -> AveragePool -> Q -> DQ, DQ -> Flatten ->
    Q -> DQ), the chain re-applied to the tensor before the first quantizer (the original stays for any
    other consumer)."""
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
        out = unique_name(model, f"{op.output[0]}_float")
        clone = helper.make_node(
            op.op_type, [cur] + list(op.input[1:]), [out], name=unique_name(model, f"{name_of(op)}_float")
        )
        clone.attribute.extend(op.attribute)
        model.graph.node.insert(list(model.graph.node).index(op) + 1, clone)
        cur = out
    return cur
