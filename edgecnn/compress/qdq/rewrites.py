"""Q/DQ graph rewrites used by the quantize stage, per target. Each works in place on a ModelProto and
returns what it changed; :func:`adapt_for_target` applies the set a target needs (see
:mod:`edgecnn.compress.quantize` for why each exists)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .graph import (
    BN_AS_DEPTHWISE,
    COMMUTING,
    QUANT_OPS,
    WEIGHTED_OPS,
    Graph,
    add_input_kind,
    attr,
    dq_source,
    init_map,
    name_of,
    remove_dead_nodes,
    same_params,
    unique_name,
)


def adapt_for_target(model, target: str) -> dict:
    """Apply the per-target Q/DQ rewrites (in place); returns what each one changed."""
    done: dict = {}
    if target == "tensorrt":
        done["signed"] = len(make_signed(model))  # before unifying: uint8 and int8 cannot share a scale
    done["concat_scales_unified"] = unify_concat_scales(model)
    done["requantized_layers"] = requantize_before_layers(model)
    if target == "cpu":
        done["int8_gemm_float_output"] = quantize_gemm_bias(model)
        done["uint8_activations"] = len(uint8_activations(model))
        done["concat_quantizers_harmonized"] = harmonize_concat_quantizers(model)
        done["concat_before_dequantize"] = concat_before_dequantize(model)
        done["batchnorm_as_depthwise"] = batchnorm_as_depthwise(model)
    if target == "tensorrt":
        done["residual_adds_fused"] = fuse_friendly_residuals(model)
    remove_dead_nodes(model)
    return done


# --------------------------------------------------------------------------------------------------
# every target / TensorRT
# --------------------------------------------------------------------------------------------------
def make_signed(model) -> list[str]:
    """Turn unsigned Q/DQ pairs with zero point 0 (NNCF's choice after a ReLU) into signed INT8 with zero
    point 0, as TensorRT requires. The representable range stays [0, max]: scale' = scale * 255 / 127, i.e.
    one bit of resolution is given up on non-negative tensors - exactly what a signed symmetric quantizer
    calibrated on the same statistics produces. Returns the names of the changed Q/DQ nodes."""
    inits = init_map(model)
    unsigned = {name for name, t in inits.items() if t.data_type == TensorProto.UINT8}
    done: set[str] = set()
    changed = []
    for n in model.graph.node:
        if n.op_type not in QUANT_OPS or len(n.input) < 3 or n.input[2] not in unsigned:
            continue
        zp = numpy_helper.to_array(inits[n.input[2]]).astype(np.uint8)
        if np.any(zp != 0):
            raise ValueError(
                f"{name_of(n)}: asymmetric uint8 quantizer (zero point {zp.ravel()[:3]}) cannot be made "
                "signed symmetric; quantize with preset 'performance'"
            )
        if n.input[2] not in done:
            inits[n.input[2]].CopyFrom(numpy_helper.from_array(np.zeros(zp.shape, np.int8), n.input[2]))
            done.add(n.input[2])
        if n.input[1] not in done:
            s = numpy_helper.to_array(inits[n.input[1]])
            inits[n.input[1]].CopyFrom(
                numpy_helper.from_array((s.astype(np.float64) * 255.0 / 127.0).astype(s.dtype), n.input[1])
            )
            done.add(n.input[1])
        changed.append(name_of(n))
    q_out = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for vi in model.graph.value_info:
        if vi.name in q_out and vi.type.tensor_type.elem_type == TensorProto.UINT8:
            vi.type.tensor_type.elem_type = TensorProto.INT8
    return changed


def fuse_friendly_residuals(model) -> list[str]:
    """TensorRT placement for residual adds: where both inputs of an Add carry Q/DQ and one of them is the
    output of an INT8 convolution, drop that convolution's output Q/DQ (for this Add) so TensorRT can fuse
    Conv + Add (+ ReLU) into one INT8 kernel; the skip input keeps its Q/DQ. Returns the Add names."""
    g = Graph(model)
    changed = []
    for n in model.graph.node:
        if n.op_type != "Add" or len(n.input) != 2 or any(g.is_const(i) for i in n.input):
            continue
        kinds = [add_input_kind(g, i) for i in n.input]
        if "layer" in kinds or "float" in kinds or "qdq-layer" not in kinds:
            continue
        i = kinds.index("qdq-layer")  # input 0 = torch's main branch (out += identity)
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
    g = Graph(model)
    changed = []
    new_nodes: list[tuple[int, list]] = []
    made: dict[str, str] = {}  # tensor -> its re-quantized copy (shared by every layer that reads it)
    for idx, n in enumerate(model.graph.node):
        if n.op_type not in WEIGHTED_OPS or len(n.input) < 2 or not g.is_weight(n.input[1]):
            continue
        direct = g.producer.get(n.input[0])
        if direct is None or direct.op_type == "DequantizeLinear":
            continue
        if direct.op_type == "MaxPool" and (
            g.producer.get(direct.input[0]) is not None and g.producer[direct.input[0]].op_type == "DequantizeLinear"
        ):
            continue  # ONNX Runtime and TensorRT run DQ -> MaxPool -> layer in INT8 as it is
        if n.input[0] in made:
            n.input[0] = made[n.input[0]]
            changed.append(name_of(n))
            continue
        p = dq_source(g, n.input[0])
        if p is None or not _requant_exact(g, n.input[0], p):
            continue
        scale, zp = p.input[1], (p.input[2] if len(p.input) > 2 else "")
        qname, dqname = unique_name(model, f"{name_of(n)}_requant_q"), unique_name(model, f"{name_of(n)}_requant_dq")
        q_out, dq_out = unique_name(model, f"{n.input[0]}_requant_q"), unique_name(model, f"{n.input[0]}_requant")
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
    g = Graph(model)
    changed = []
    for n in list(model.graph.node):
        if n.op_type != "Gemm" or len(n.input) < 3 or not n.input[2] or attr(n, "transA", 0):
            continue
        after = g.consumers.get(n.output[0], [])
        after += [c2 for c in after if c.op_type in ("Relu", "Clip") for c2 in g.consumers.get(c.output[0], [])]
        if any(c.op_type == "QuantizeLinear" for c in after):
            continue  # the layer's output is quantized: ONNX Runtime fuses it as it is
        adq, wdq = g.producer.get(n.input[0]), g.producer.get(n.input[1])
        bias = g.consts.get(n.input[2])
        if (
            adq is None
            or adq.op_type != "DequantizeLinear"
            or wdq is None
            or wdq.op_type != "DequantizeLinear"
            or bias is None
            or bias.ndim != 1
            or float(attr(n, "beta", 1.0)) != 1.0
        ):
            continue
        a_scale, w_scale = g.const(adq.input[1]), g.const(wdq.input[1])
        if a_scale is None or w_scale is None or a_scale.size != 1:
            continue
        scale = float(a_scale.reshape(())) * w_scale.astype(np.float64).reshape(-1)
        if scale.size == 1:
            scale = np.full(bias.shape, scale[0])
        if scale.shape != bias.shape or np.any(scale <= 0):
            continue
        q = np.round(bias.astype(np.float64) / scale)
        if np.any(np.abs(q) > 2**31 - 1):
            continue
        base = unique_name(model, f"{n.input[2]}_int32")
        s_name, z_name, out = (
            unique_name(model, f"{base}_scale"),
            unique_name(model, f"{base}_zero_point"),
            unique_name(model, f"{n.input[2]}_dequantized"),
        )
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q.astype(np.int32), base),
                numpy_helper.from_array(scale.astype(np.float32), s_name),
                numpy_helper.from_array(np.zeros(bias.shape, np.int32), z_name),
            ]
        )
        dq = helper.make_node(
            "DequantizeLinear", [base, s_name, z_name], [out], name=unique_name(model, f"{name_of(n)}_bias_dq"), axis=0
        )
        model.graph.node.insert(list(model.graph.node).index(n), dq)
        n.input[2] = out
        changed.append(name_of(n))
    if changed:
        remove_dead_nodes(model)
    return changed


def _requant_exact(g: Graph, name: str, dq) -> bool:
    """True when every DQ that reaches ``name`` uses ``dq``'s scale and zero point, so re-quantizing with
    them is exact (a Concat of differently scaled inputs is not)."""
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
        if (z is None) != (ref_z is None) or (
            z is not None and (z.dtype != ref_z.dtype or not np.array_equal(z, ref_z))
        ):
            return False
    return not stack


def unify_concat_scales(model) -> list[str]:
    """Give every Q/DQ pair that feeds a Concat (directly or through max-pooling / shape ops) the largest
    of their scales, so TensorRT can concatenate in INT8 without re-quantizing and ONNX Runtime can read
    the concatenation as one INT8 tensor (OpenVINO calls these unified scales). Concats that share inputs
    (DenseNet blocks) are repeated until every scale in the group agrees. Returns the Concat names."""
    inits = init_map(model)
    changed: list[str] = []
    for _ in range(16):
        g = Graph(model)
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
def uint8_activations(model) -> list[str]:
    """Store every signed INT8 activation quantizer as uint8 with zero point + 128 (the same real values:
    uint8 v + 128 is int8 v, so this is exact). ONNX Runtime on x86 fuses ``DQ -> Conv -> Q`` into
    QLinearConv only when the input and output are both uint8; NNCF quantizes ReLU outputs as uint8 and
    signed tensors (a DenseNet convolution output headed for a Concat) as int8, so those convolutions ran
    in float with both inputs de-quantized on every call. Returns the changed Q/DQ node names."""
    g = Graph(model)
    inits = init_map(model)
    # zero points also used by a weight DQ are left alone (NNCF never shares them; be safe)
    weight_zps = {
        n.input[2]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and len(n.input) > 2 and g.is_const(n.input[0])
    }
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
    q_out = {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in done
    }
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
    g = Graph(model)
    inits = init_map(model)
    concats, groups = _uint8_concat_groups(g, model, inits)
    common = _common_params(g, groups)
    fixed_keys = {k for k in common if _after_relu(g, k)}
    for k, (scale, zp) in common.items():
        if k not in fixed_keys:
            inits[k[0]].CopyFrom(numpy_helper.from_array(np.asarray(scale, np.float32), k[0]))
            inits[k[1]].CopyFrom(numpy_helper.from_array(np.asarray(zp, np.uint8), k[1]))
    changed: list[str] = []
    made: dict = {}
    for n, dqs in concats:
        touched = False
        for i, d in enumerate(dqs):
            k = (d.input[1], d.input[2])
            if k not in common:
                continue
            touched = True
            if k in fixed_keys:
                if n.input[i] not in made:
                    made[n.input[i]] = _requantize(model, g, n.input[i], *common[k])
                n.input[i] = made[n.input[i]]
        if touched:
            changed.append(name_of(n))
    return changed


def _qparams(g: Graph, key) -> tuple[float, int]:
    return float(g.const(key[0]).reshape(())), int(g.const(key[1]).reshape(()))


def _uint8_concat_groups(g: Graph, model, inits) -> tuple[list, list[list]]:
    """Concats whose inputs are all per-tensor uint8 Q/DQ pairs, with their DQs; and the groups of
    (scale, zero point) names that meet in some Concat (union-find over shared inputs)."""
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
        if any(
            d is None
            or len(d.input) < 3
            or d.input[1] not in inits
            or d.input[2] not in inits
            or inits[d.input[2]].data_type != TensorProto.UINT8
            or g.const(d.input[1]).size != 1
            or g.producer.get(d.input[0]) is None
            or g.producer[d.input[0]].op_type != "QuantizeLinear"
            for d in dqs
        ):
            continue
        keys = [(d.input[1], d.input[2]) for d in dqs]
        for k in keys[1:]:
            parent[find(k)] = find(keys[0])
        concats.append((n, dqs))
    groups: dict = {}
    for k in list(parent):
        groups.setdefault(find(k), []).append(k)
    return concats, list(groups.values())


def _common_params(g: Graph, groups: list[list]) -> dict:
    """(scale, zero point) name pair -> the uint8 (scale, zero point) covering every range of its group."""
    common: dict = {}
    for keys in groups:
        ps = {_qparams(g, k) for k in keys}
        if len(ps) < 2:
            continue
        lo = min(s * (0 - z) for s, z in ps)
        hi = max(s * (255 - z) for s, z in ps)
        scale = (hi - lo) / 255.0
        zp = int(np.clip(np.round(-lo / scale), 0, 255))
        for k in keys:
            common[k] = (scale, zp)
    return common


def _after_relu(g: Graph, key) -> bool:
    """A quantizer right after a ReLU with zero point 0: it keeps its own parameters (ONNX Runtime folds the ReLU)."""
    if _qparams(g, key)[1] != 0:
        return False
    for q in g.nodes:
        if q.op_type == "QuantizeLinear" and len(q.input) > 2 and (q.input[1], q.input[2]) == key:
            p = g.producer.get(q.input[0])
            if p is not None and p.op_type in ("Relu", "Clip"):
                return True
    return False


def _requantize(model, g: Graph, src: str, scale: float, zp: int) -> str:
    """Insert Q/DQ of ``src`` with uint8 (scale, zp) right after its producer; returns the DQ output."""
    base = unique_name(model, f"{src}_common")
    s_name, z_name = unique_name(model, f"{base}_scale"), unique_name(model, f"{base}_zero_point")
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(scale, np.float32), s_name),
            numpy_helper.from_array(np.asarray(zp, np.uint8), z_name),
        ]
    )
    q_out, dq_out = unique_name(model, f"{base}_q"), unique_name(model, f"{base}_dq")
    at = list(model.graph.node).index(g.producer[src]) + 1 if src in g.producer else 0
    model.graph.node.insert(
        at,
        helper.make_node(
            "DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=unique_name(model, f"{base}_DequantizeLinear")
        ),
    )
    model.graph.node.insert(
        at,
        helper.make_node(
            "QuantizeLinear", [src, s_name, z_name], [q_out], name=unique_name(model, f"{base}_QuantizeLinear")
        ),
    )
    return dq_out


def concat_before_dequantize(model) -> list[str]:
    """``Concat(DQ(a), DQ(b), ...)`` with one scale and zero point -> ``DQ(Concat(a, b, ...))``: the
    concatenation runs on the 8-bit tensors and each DenseNet block de-quantizes once per layer instead of
    once per layer *and* per earlier feature map (ONNX Runtime gives every consumer its own DQ, so a
    24-layer block ran 300 of them). Exact. Returns the Concat names."""
    g = Graph(model)
    changed = []
    for n in list(model.graph.node):
        if n.op_type != "Concat" or len(n.input) < 2:
            continue
        dqs = [g.producer.get(i) for i in n.input]
        if not all(d is not None and d.op_type == "DequantizeLinear" and len(d.input) == 3 for d in dqs):
            continue
        if not all(same_params(g, dqs[0], d, exact=True) for d in dqs[1:]) or g.const(dqs[0].input[1]).size != 1:
            continue
        out = n.output[0]
        q_cat = unique_name(model, f"{out}_quantized")
        n.input[:] = [d.input[0] for d in dqs]
        n.output[0] = q_cat
        dq = helper.make_node(
            "DequantizeLinear", [q_cat] + list(dqs[0].input[1:]), [out], name=unique_name(model, f"{name_of(n)}_dq")
        )
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
    g = Graph(model)
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
            continue  # a float result: a depthwise conv without output Q would not fuse
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
        a = gamma / np.sqrt(var + float(attr(n, "epsilon", 1e-5)))
        b = beta - a * mean
        c = a.size
        w_scale = np.where(a != 0, np.abs(a) / 127.0, 1.0)
        b_scale = float(s_in.reshape(())) * w_scale
        b_q = np.round(b / b_scale)
        if np.any(np.abs(b_q) > 2**31 - 1) or not np.all(np.isfinite(b_q)):
            continue
        base = unique_name(model, f"{name_of(n)}_depthwise")
        names = {
            k: unique_name(model, f"{base}_{k}")
            for k in ("w", "w_scale", "w_zero_point", "b", "b_scale", "b_zero_point", "w_dq", "b_dq")
        }
        model.graph.initializer.extend(
            [
                numpy_helper.from_array((127 * np.sign(a)).astype(np.int8).reshape(c, 1, 1, 1), names["w"]),
                numpy_helper.from_array(w_scale.astype(np.float32), names["w_scale"]),
                numpy_helper.from_array(np.zeros(c, np.int8), names["w_zero_point"]),
                numpy_helper.from_array(b_q.astype(np.int32), names["b"]),
                numpy_helper.from_array(b_scale.astype(np.float32), names["b_scale"]),
                numpy_helper.from_array(np.zeros(c, np.int32), names["b_zero_point"]),
            ]
        )
        w_dq = helper.make_node(
            "DequantizeLinear",
            [names["w"], names["w_scale"], names["w_zero_point"]],
            [names["w_dq"]],
            name=names["w_dq"],
            axis=0,
        )
        b_dq = helper.make_node(
            "DequantizeLinear",
            [names["b"], names["b_scale"], names["b_zero_point"]],
            [names["b_dq"]],
            name=names["b_dq"],
            axis=0,
        )
        conv = helper.make_node(
            "Conv", [n.input[0], names["w_dq"], names["b_dq"]], [n.output[0]], name=base, group=c, kernel_shape=[1, 1]
        )
        conv.doc_string = BN_AS_DEPTHWISE
        at = list(model.graph.node).index(n)
        model.graph.node.remove(n)
        for k, node in enumerate((w_dq, b_dq, conv)):
            model.graph.node.insert(at + k, node)
        changed.append(name_of(n))
    if changed:
        remove_dead_nodes(model)
    return changed
