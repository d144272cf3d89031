"""The TensorRT-rules QDQ validator and the Q/DQ rewrites, on small models built with onnx.helper.

Good and deliberately bad QDQ graphs are built here (no NNCF), run through ONNX Runtime to prove they
are real, loadable models, and the validator must name exactly the offending nodes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecnn.compress import qdq
from edgecnn.compress.qdq import validate_qdq

RNG = np.random.default_rng(0)


def _const(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


class Builder:
    """A tiny graph builder: activations Q/DQ'd, conv / gemm weights per-channel int8."""

    def __init__(self, in_shape=(1, 3, 8, 8)):
        self.nodes, self.inits, self.n = [], [], 0
        self.in_shape = in_shape

    def uid(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def qdq(self, x, *, scale=0.05, zp=0, dtype=np.int8, name=None, axis=None, with_zp=True):
        name = name or self.uid("act")
        s, z = f"{name}_scale", f"{name}_zp"
        self.inits.append(_const(s, np.asarray(scale, np.float32)))
        inputs = [x, s]
        if with_zp:
            self.inits.append(_const(z, np.asarray(zp, dtype)))
            inputs.append(z)
        kw = {} if axis is None else {"axis": axis}
        self.nodes.append(helper.make_node("QuantizeLinear", inputs, [f"{name}_q"], name=f"Q_{name}", **kw))
        self.nodes.append(
            helper.make_node("DequantizeLinear", [f"{name}_q"] + inputs[1:], [f"{name}_dq"], name=f"DQ_{name}", **kw)
        )
        return f"{name}_dq"

    def weight(self, shape, *, per_channel=True, axis=0, dtype=np.int8, zp=0, name=None):
        name = name or self.uid("w")
        w = RNG.integers(-100, 100, size=shape).astype(dtype if dtype != np.uint8 else np.uint8)
        self.inits.append(_const(f"{name}_int", w))
        if per_channel:
            scale = np.full(shape[axis], 0.01, np.float32)
            zps = np.full(shape[axis], zp, dtype)
        else:
            scale, zps = np.asarray(0.01, np.float32), np.asarray(zp, dtype)
        self.inits += [_const(f"{name}_scale", scale), _const(f"{name}_zp", zps)]
        kw = {"axis": axis} if per_channel else {}
        self.nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}_int", f"{name}_scale", f"{name}_zp"],
                [f"{name}_dq"],
                name=f"DQ_{name}",
                **kw,
            )
        )
        return f"{name}_dq"

    def conv(self, x, cin, cout, name, *, relu=True, **wkw):
        w = self.weight((cout, cin, 3, 3), name=f"{name}_w", **wkw)
        self.inits.append(_const(f"{name}_b", np.zeros(cout, np.float32)))
        self.nodes.append(helper.make_node("Conv", [x, w, f"{name}_b"], [f"{name}_out"], name=name, pads=[1, 1, 1, 1]))
        out = f"{name}_out"
        if relu:
            self.nodes.append(helper.make_node("Relu", [out], [f"{name}_relu"], name=f"{name}_Relu"))
            out = f"{name}_relu"
        return out

    def model(self, out, out_shape):
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.in_shape))],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def run(model, x=None, *, optimize=False):
    """Run in ONNX Runtime. Without graph optimisation the result is the ONNX semantics of the graph (ORT's
    fused INT8 kernels round differently), which is what the rewrites must preserve."""
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = RNG.standard_normal(tuple(sess.get_inputs()[0].shape)).astype(np.float32) if x is None else x
    return sess.run(None, {"input": x})[0], x


def good_model():
    b = Builder()
    x = b.qdq("input", name="in")
    y = b.conv(x, 3, 4, "conv1")
    y = b.qdq(y, name="c1")
    y = b.conv(y, 4, 4, "conv2", relu=False)
    return b.model(y, (1, 4, 8, 8))


def rules(violations, node=None):
    return sorted({v.rule for v in violations if node is None or v.node == node})


def test_good_model_passes_and_runs():
    m = good_model()
    out, x = run(m)
    assert out.shape == (1, 4, 8, 8)
    np.testing.assert_allclose(run(m, x, optimize=True)[0], out, atol=0.5)  # ORT's INT8 kernels load it
    assert validate_qdq(m) == []
    assert qdq.summarize([])["passed"] is True


def test_uint8_zero_point_named():
    b = Builder()
    x = b.qdq("input", name="in")
    y = b.conv(x, 3, 4, "conv1")
    y = b.qdq(y, name="after_relu", dtype=np.uint8)  # what NNCF emits after a ReLU
    y = b.conv(y, 4, 2, "conv2", relu=False)
    m = b.model(y, (1, 2, 8, 8))
    run(m)
    v = validate_qdq(m)
    bad = {x.node for x in qdq.errors(v)}
    assert bad == {"Q_after_relu", "DQ_after_relu"}
    assert rules(v, "Q_after_relu") == ["unsigned"]


def test_nonzero_zero_point_named():
    b = Builder()
    x = b.qdq("input", name="in", zp=3)
    y = b.conv(x, 3, 4, "conv1", relu=False)
    m = b.model(y, (1, 4, 8, 8))
    run(m)
    v = validate_qdq(m)
    assert {x.node for x in v if x.rule == "zero-point-nonzero"} == {"Q_in", "DQ_in"}


def test_missing_zero_point_is_uint8():
    b = Builder()
    x = b.qdq("input", name="in", with_zp=False)
    y = b.conv(x, 3, 4, "conv1", relu=False)
    m = b.model(y, (1, 4, 8, 8))
    run(m)
    assert {x.node for x in validate_qdq(m) if x.rule == "zero-point-missing"} == {"Q_in", "DQ_in"}


def test_per_tensor_weights_named():
    b = Builder()
    x = b.qdq("input", name="in")
    y = b.conv(x, 3, 4, "conv1", relu=False, per_channel=False)
    m = b.model(y, (1, 4, 8, 8))
    run(m)
    v = validate_qdq(m)
    assert [(x.node, x.rule) for x in qdq.errors(v)] == [("DQ_conv1_w", "weight-per-tensor")]
    assert "conv1" in qdq.errors(v)[0].detail


def test_weight_axis_not_zero_named():
    b = Builder()
    x = b.qdq("input", name="in")
    y = b.conv(x, 3, 4, "conv1", relu=False, axis=1)  # per input channel: wrong for TensorRT
    m = b.model(y, (1, 4, 8, 8))
    run(m)
    v = qdq.errors(validate_qdq(m))
    assert [(x.node, x.rule) for x in v] == [("DQ_conv1_w", "weight-axis")]
    assert "axis 1" in v[0].detail and "axis 0" in v[0].detail


def test_activation_per_channel_and_orphans_named():
    b = Builder()
    x = b.qdq("input", name="in", scale=np.full(3, 0.05, np.float32), zp=np.zeros(3, np.int8), axis=1)
    y = b.conv(x, 3, 4, "conv1", relu=False)
    # a QuantizeLinear whose int8 output goes straight into a Cast (not a DQ)
    b.inits += [_const("s2", np.asarray(0.1, np.float32)), _const("z2", np.asarray(0, np.int8))]
    b.nodes.append(helper.make_node("QuantizeLinear", [y, "s2", "z2"], ["q2"], name="Q_orphan"))
    b.nodes.append(helper.make_node("Cast", ["q2"], ["out"], name="Cast_out", to=TensorProto.FLOAT))
    m = b.model("out", (1, 4, 8, 8))
    run(m)
    v = validate_qdq(m)
    assert {x.node for x in v if x.rule == "activation-per-channel"} == {"Q_in", "DQ_in"}
    assert [x.node for x in v if x.rule == "q-without-dq"] == ["Q_orphan"]


def test_scale_mismatch_and_invalid_scale():
    b = Builder()
    x = b.qdq("input", name="in")
    y = b.conv(x, 3, 4, "conv1", relu=False)
    m = b.model(y, (1, 4, 8, 8))
    for init in m.graph.initializer:
        if init.name == "in_scale":
            init.CopyFrom(_const("in_scale", np.asarray(-0.05, np.float32)))
    v = validate_qdq(m)
    assert {x.node for x in v if x.rule == "scale-invalid"} == {"Q_in", "DQ_in"}


def _residual(b, *, skip_qdq=True, conv_out_qdq=True):
    x = b.qdq("input", name="in")
    y = b.conv(x, 3, 3, "conv1")
    y = b.qdq(y, name="c1")
    y = b.conv(y, 3, 3, "conv2", relu=False)
    if conv_out_qdq:
        y = b.qdq(y, name="c2out", scale=0.5)  # wide range: no saturation, rounding error <= 0.25
    skip = b.qdq("input", name="skip") if skip_qdq else "input"
    b.nodes.append(helper.make_node("Add", [y, skip], ["sum"], name="res_add"))
    return b.model("sum", (1, 3, 8, 8))


def test_residual_add_placement_and_fix():
    m = _residual(Builder())
    v = validate_qdq(m)
    assert [(x.node, x.rule, x.severity) for x in v] == [("res_add", "residual-add", "warning")]
    before, x = run(m)
    changed = qdq.fuse_friendly_residuals(m)
    assert changed == ["res_add"]
    assert validate_qdq(m) == []
    after, _ = run(m, x)
    # the convolution's output is no longer rounded to int8 before the add: within half a step
    assert 0 < np.abs(after - before).max() <= 0.25 + 1e-4
    unquantized_skip = _residual(Builder(), skip_qdq=False, conv_out_qdq=False)
    assert [(x.node, x.rule) for x in validate_qdq(unquantized_skip)] == [("res_add", "residual-add")]


def test_concat_scales_warning_and_unify():
    b = Builder()
    x = b.qdq("input", name="in")
    a = b.qdq(b.conv(x, 3, 2, "ca"), name="qa", scale=0.05)
    c = b.qdq(b.conv(x, 3, 2, "cb"), name="qb", scale=0.2)
    b.nodes.append(helper.make_node("Concat", [a, c], ["cat"], name="cat", axis=1))
    m = b.model("cat", (1, 4, 8, 8))
    run(m)
    assert [(v.node, v.rule) for v in validate_qdq(m)] == [("cat", "concat-scales")]
    assert qdq.unify_concat_scales(m) == ["cat"]
    run(m)
    assert validate_qdq(m) == []


def _flatten_gemm():
    b = Builder((1, 2, 2, 2))
    x = b.qdq("input", name="in")
    b.nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten"))
    w = b.weight((5, 8), name="fc_w")
    b.inits.append(_const("fc_b", np.linspace(-1, 1, 5).astype(np.float32)))
    b.nodes.append(helper.make_node("Gemm", ["flat", w, "fc_b"], ["logits"], name="fc", transB=1))
    return b.model("logits", (1, 5))


def test_requantize_gemm_after_flatten_is_exact():
    m = _flatten_gemm()
    before, x = run(m)
    assert qdq.requantize_before_layers(m) == ["fc"]
    after, _ = run(m, x)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    assert all(v.rule != "unquantized-layer" for v in validate_qdq(m))


def test_int8_bias_gemm_matches_and_is_flagged_for_tensorrt():
    m = _flatten_gemm()
    qdq.requantize_before_layers(m)
    before, x = run(m)
    assert qdq.quantize_gemm_bias(m) == ["fc"]
    after, _ = run(m, x)
    np.testing.assert_allclose(after, before, atol=1e-3)
    assert "quantized-bias" in rules(qdq.errors(validate_qdq(m)))


def test_make_signed_keeps_range():
    b = Builder()
    x = b.qdq("input", name="in")
    y = b.conv(x, 3, 4, "conv1")
    y = b.qdq(y, name="r", dtype=np.uint8, scale=0.02)
    y = b.conv(y, 4, 2, "conv2", relu=False)
    m = b.model(y, (1, 2, 8, 8))
    before, x = run(m)
    assert set(qdq.make_signed(m)) == {"Q_r", "DQ_r"}
    after, _ = run(m, x)
    assert qdq.errors(validate_qdq(m)) == []
    scale = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}["r_scale"]
    assert scale == pytest.approx(0.02 * 255 / 127)
    assert np.abs(after - before).max() < 0.5


def test_keep_float_removes_quantization_of_one_layer():
    m = good_model()
    assert qdq.quantized_layers(m) == ["conv1", "conv2"]
    qdq.keep_float(m, ["conv2"])
    run(m)
    assert qdq.quantized_layers(m) == ["conv1"]
    v = validate_qdq(m)
    assert [(x.node, x.rule, x.severity) for x in v] == [("conv2", "unquantized-layer", "warning")]
    with pytest.raises(Exception, match="conv3"):
        qdq.keep_float(m, ["conv3"])


def test_validate_only_cli(tmp_path, cli_run):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx.save(good_model(), good)
    b = Builder()
    y = b.conv(b.qdq("input", name="in", dtype=np.uint8), 3, 4, "conv1", relu=False, per_channel=False)
    onnx.save(b.model(y, (1, 4, 8, 8)), bad)
    r = cli_run(["quantize", good, "--validate-only", "--json", tmp_path / "v.json"])
    assert r.exit_code == 0, r.output
    assert "passed" in r.output
    r = cli_run(["quantize", bad, "--validate-only"])
    assert r.exit_code == 3
    assert "DQ_conv1_w" in r.output and "Q_in" in r.output and "weight-per-tensor" in r.output
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    r = cli_run(["quantize", junk, "--validate-only"])
    assert r.exit_code == 1
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert "junk.onnx" in r.output


# --------------------------------------------------------------------------------------------------
# CPU layout rewrites (exact, or within one quantization step) and what ONNX Runtime fuses after them
# --------------------------------------------------------------------------------------------------
def fused_ops(model) -> dict:
    """Op types of the graph ONNX Runtime actually runs (QDQ fusion on, hardware-specific layouts off)."""
    import collections
    import os
    import tempfile

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory() as d:
        so.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return dict(collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node))


def _signed_layer_outputs():
    """uint8 after a ReLU into conv1; conv1's output can be negative, so NNCF quantizes it as int8, and it is
    read twice (a DenseNet feature map feeds every later Concat of its block). ONNX Runtime (x86) then
    leaves conv1 in float, with both inputs de-quantized on every call."""
    b = Builder()
    b.nodes.append(helper.make_node("Relu", ["input"], ["in_relu"], name="in_Relu"))
    x = b.qdq("in_relu", name="in", dtype=np.uint8, scale=0.02)
    y = b.qdq(b.conv(x, 3, 4, "conv1", relu=False), name="s1", scale=0.1)
    b.nodes.append(helper.make_node("Concat", [y, y], ["cat"], name="cat", axis=1))
    return b.model("cat", (1, 8, 8, 8))


def test_uint8_activations_is_exact_and_lets_ort_fuse():
    m = _signed_layer_outputs()
    before, x = run(m)
    assert fused_ops(m).get("QLinearConv", 0) == 0
    changed = qdq.uint8_activations(m)
    assert set(changed) == {"Q_s1", "DQ_s1"}  # the uint8 input quantizer stays
    zps = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert zps["s1_zp"].dtype == np.uint8 and int(zps["s1_zp"]) == 128 and int(zps["in_zp"]) == 0
    assert zps["conv1_w_zp"].dtype == np.int8  # weights stay signed
    after, _ = run(m, x)
    np.testing.assert_array_equal(after, before)
    assert fused_ops(m).get("QLinearConv", 0) == 1
    assert qdq.uint8_activations(m) == []  # idempotent


def _concat_model(scales=(0.1, 0.1)):
    b = Builder()
    x = b.qdq("input", name="in")
    a = b.qdq(b.conv(x, 3, 2, "ca", relu=False), name="qa", scale=scales[0])
    c = b.qdq(b.conv(x, 3, 3, "cb", relu=False), name="qb", scale=scales[1])
    b.nodes.append(helper.make_node("Concat", [a, c], ["cat"], name="cat", axis=1))
    return b.model("cat", (1, 5, 8, 8))


def test_concat_before_dequantize_is_exact():
    m = _concat_model()
    before, x = run(m)
    assert qdq.concat_before_dequantize(m) == ["cat"]
    after, _ = run(m, x)
    np.testing.assert_array_equal(after, before)
    g = qdq.Graph(m)
    cat = next(n for n in m.graph.node if n.op_type == "Concat")
    assert [g.producer[i].op_type for i in cat.input] == ["QuantizeLinear", "QuantizeLinear"]
    assert [c.op_type for c in g.consumers[cat.output[0]]] == ["DequantizeLinear"]
    # inputs with different scales cannot be concatenated as integers: left alone
    m2 = _concat_model((0.1, 0.2))
    assert qdq.concat_before_dequantize(m2) == []


def _preact_bn(followed_by_q=True):
    """DQ -> BatchNormalization -> ReLU -> Q/DQ -> conv: DenseNet's pre-activation layer."""
    rng = np.random.default_rng(1)
    b = Builder()
    b.nodes.append(helper.make_node("Relu", ["input"], ["in_relu"], name="in_Relu"))
    x = b.qdq("in_relu", name="in", dtype=np.uint8, scale=0.02)
    c = 3
    b.inits += [
        _const("bn_g", rng.uniform(-1.5, 1.5, c).astype(np.float32)),
        _const("bn_b", rng.uniform(-0.5, 0.5, c).astype(np.float32)),
        _const("bn_m", rng.uniform(0, 1, c).astype(np.float32)),
        _const("bn_v", rng.uniform(0.5, 2, c).astype(np.float32)),
    ]
    b.nodes.append(
        helper.make_node("BatchNormalization", [x, "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn", epsilon=1e-5)
    )
    b.nodes.append(helper.make_node("Relu", ["bn"], ["bn_relu"], name="bn_Relu"))
    if not followed_by_q:
        return b.model("bn_relu", (1, 3, 8, 8))
    y = b.qdq("bn_relu", name="r", dtype=np.uint8, scale=0.01)
    return b.model(y, (1, 3, 8, 8))


def test_batchnorm_as_depthwise_matches_and_fuses():
    m = _preact_bn()
    before, x = run(m)
    assert fused_ops(m).get("BatchNormalization", 0) == 1
    assert qdq.batchnorm_as_depthwise(m) == ["bn"]
    after, _ = run(m, x)
    assert not [n for n in m.graph.node if n.op_type == "BatchNormalization"]
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    assert qdq.attr(conv, "group") == 3 and conv.doc_string == qdq.BN_AS_DEPTHWISE
    # the int32 bias rounds to below half a step of its scale; after the output quantizer (step 0.01) a
    # value may land one step away, never more
    diff = np.abs(after - before)
    assert diff.max() <= 0.01 + 1e-6 and (diff > 1e-6).mean() < 0.05, (diff.max(), (diff > 1e-6).mean())
    ops = fused_ops(m)
    assert ops.get("QLinearConv", 0) == 1 and "BatchNormalization" not in ops, ops
    assert qdq.quantized_layers(m) == []  # not a candidate for keeping a layer in float


def test_batchnorm_with_float_result_is_left_alone():
    m = _preact_bn(followed_by_q=False)
    assert qdq.batchnorm_as_depthwise(m) == []


def test_harmonize_concat_quantizers_then_concat_as_integers():
    """DenseNet's first block: the stem's ReLU output (uint8, zero point 0, max-pooled) meets convolution
    outputs (uint8, zero point 128 after uint8_activations) in one Concat."""
    b = Builder()
    b.nodes.append(helper.make_node("Relu", ["input"], ["in_relu"], name="stem_Relu"))
    x = b.qdq("in_relu", name="stem", dtype=np.uint8, scale=0.02)
    b.nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="pool", kernel_shape=[1, 1]))
    y1 = b.qdq(b.conv("pool", 3, 2, "c1", relu=False), name="o1", scale=0.1, dtype=np.uint8, zp=128)
    b.nodes.append(helper.make_node("Concat", ["pool", y1], ["cat1"], name="cat1", axis=1))
    y2 = b.qdq(b.conv("cat1", 5, 2, "c2", relu=False), name="o2", scale=0.05, dtype=np.uint8, zp=128)
    b.nodes.append(helper.make_node("Concat", ["pool", y1, y2], ["cat2"], name="cat2", axis=1))
    m = b.model("cat2", (1, 7, 8, 8))
    before, x_in = run(m)
    assert qdq.concat_before_dequantize(m) == []  # three different quantizers
    assert qdq.harmonize_concat_quantizers(m) == ["cat1", "cat2"]
    consts = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert float(consts["stem_scale"]) == pytest.approx(0.02) and int(consts["stem_zp"]) == 0  # ReLU stays fused
    common = (float(consts["o1_scale"]), int(consts["o1_zp"]))
    assert common == (pytest.approx(float(consts["o2_scale"])), int(consts["o2_zp"]))
    lo, hi = -128 * 0.1, max(127 * 0.1, 255 * 0.02)  # covers every member's range
    assert common[0] == pytest.approx((hi - lo) / 255) and common[1] == round(-lo / common[0])
    after, _ = run(m, x_in)
    # stem and c1 channels: at most half a common step away (c2 reads the re-quantized block, and its wider
    # common range no longer clips what its own scale did, so its channels move by more)
    assert np.abs(after - before)[:, :5].max() <= common[0] * 0.5 + 1e-6
    assert qdq.concat_before_dequantize(m) == ["cat1", "cat2"]
    np.testing.assert_array_equal(run(m, x_in)[0], after)  # the integer concat is exact
    g = qdq.Graph(m)
    for cat in ("cat1", "cat2"):
        node = next(n for n in m.graph.node if n.name == cat)
        assert {g.producer[i].op_type for i in node.input} == {"QuantizeLinear"}
