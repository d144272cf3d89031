"""edgecnn doctor: ops a TensorRT version cannot import, Q/DQ TensorRT rejects, precisions a device lacks,
and layers that fall off the DLA - on the trained LeNet-5 and on small real ONNX graphs built per rule."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecnn.doctor import describe_onnx, diagnose, max_opset
from edgecnn.errors import InvalidInput


def _model(nodes, inits, path, *, opset=17, in_shape=("N", 3, 32, 32), out_shape=None, out="y"):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(m, str(path))
    return path


def _conv(path, *, k=3, stride=1, pad=1, dilation=1, cout=8, extra=(), **kw):
    w = np.random.default_rng(0).standard_normal((cout, 3, k, k)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w"],
            ["c"],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
            dilations=[dilation, dilation],
            name="conv",
        )
    ]
    last = "c"
    for i, (op, attrs) in enumerate(extra):
        nodes.append(helper.make_node(op, [last], [f"t{i}"], name=f"{op.lower()}{i}", **attrs))
        last = f"t{i}"
    nodes.append(helper.make_node("Relu", [last], ["y"], name="relu"))
    return _model(nodes, {"w": w}, path, **kw)


def ops_of(report, severity):
    return {f.op for f in report.findings if f.severity == severity}


def test_describe_and_clean_lenet(lenet_onnx13):
    info = describe_onnx(lenet_onnx13.model_file)
    assert info["input_name"] == "input" and info["input_chw"] == [1, 32, 32] and info["dynamic_batch"]
    assert info["opset"] == 13 and not info["qdq"] and info["ops"]["Conv"] == 2
    for device in ("jetson-nano", "jetson-xavier-nx", "jetson-orin-nano", "x86-gpu", "x86-cpu"):
        r = diagnose(lenet_onnx13, device)
        assert r.ok and not r.findings, (device, r.findings)


def test_opset_too_new_for_jetpack_4(lenet_onnx):
    r = diagnose(lenet_onnx, "jetson-nano")
    assert not r.ok and r.tensorrt == "8.2" and r.jetpack.startswith("4.6")
    assert any("opset 17" == f.op and "up to opset 13" in f.problem and "--opset 13" in f.fix for f in r.errors)
    assert diagnose(lenet_onnx, "jetson-orin-nano").ok  # TensorRT 10.3 reads opset 17
    assert not diagnose(lenet_onnx, "jetson-orin-nano", tensorrt="8.5").errors  # ... and so does 8.5
    assert max_opset((8, 2))[0] == 13 and max_opset((8, 6))[0] == 17 and max_opset((10, 3))[0] == 20


def test_int8_on_nano_and_qdq_ok_elsewhere(lenet_qdq):
    r = diagnose(lenet_qdq, "jetson-nano")
    assert r.precision == "int8" and "precision int8" in ops_of(r, "error")
    assert diagnose(lenet_qdq, "jetson-orin-nano").ok
    assert diagnose(lenet_qdq, "x86-cpu").ok


def test_lenet_on_dla(lenet_onnx13):
    r = diagnose(lenet_onnx13, "jetson-agx-orin", dla_core=0, precision="fp16")
    assert not r.ok and not r.errors
    assert "Flatten" in ops_of(r, "fallback") and "Tanh" in ops_of(r, "fallback")  # 2D classifier tail
    assert not {"Conv", "AveragePool"} & ops_of(r, "fallback")  # the conv trunk stays on DLA
    assert "dynamic batch" in ops_of(r, "warning")
    r32 = diagnose(lenet_onnx13, "jetson-agx-orin", dla_core=0, precision="fp32")
    assert "precision fp32" in ops_of(r32, "error")
    with pytest.raises(InvalidInput, match="--dla-core 2 does not exist"):
        diagnose(lenet_onnx13, "jetson-agx-orin", dla_core=2)
    with pytest.raises(InvalidInput, match="has no DLA"):
        diagnose(lenet_onnx13, "jetson-orin-nano", dla_core=0)


@pytest.mark.parametrize(
    "conv, dla_ok",
    [
        ({}, True),
        ({"k": 33, "pad": 0}, False),  # kernel > 32
        ({"stride": 9, "pad": 0}, False),  # stride > 8
        ({"k": 3, "pad": 3}, False),  # padding not smaller than the kernel
        ({"dilation": 33, "pad": 0, "k": 1}, False),
        ({"cout": 9000}, False),  # > 8192 output maps
    ],
)
def test_dla_convolution_limits(tmp_path, conv, dla_ok):
    path = _conv(tmp_path / "m.onnx", in_shape=(1, 3, 64, 64), **conv)
    r = diagnose(path, "jetson-orin-nx", dla_core=1, precision="fp16")
    assert ("Conv" not in ops_of(r, "fallback")) == dla_ok, r.findings


@pytest.mark.parametrize(
    "extra, device, falls",
    [
        ([("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]})], "jetson-agx-orin", False),
        ([("MaxPool", {"kernel_shape": [9, 9], "strides": [1, 1]})], "jetson-agx-orin", True),  # window > 8
        ([("AveragePool", {"kernel_shape": [2, 2], "strides": [17, 17]})], "jetson-agx-orin", True),  # stride > 16
        ([("GlobalAveragePool", {})], "jetson-agx-orin", True),
        ([("Softmax", {"axis": 1})], "jetson-agx-orin", False),
        ([("Softmax", {"axis": 1})], "jetson-agx-xavier", True),  # Orin-only on DLA
        ([("LRN", {"size": 5})], "jetson-xavier-nx", False),
        ([("LRN", {"size": 11})], "jetson-xavier-nx", True),
        ([("Elu", {})], "jetson-agx-orin", True),
    ],
)
def test_dla_layer_rules(tmp_path, extra, device, falls):
    path = _conv(tmp_path / "m.onnx", in_shape=(1, 3, 64, 64), extra=extra)
    r = diagnose(path, device, dla_core=0, precision="fp16")
    assert (extra[0][0] in ops_of(r, "fallback")) == falls, r.findings


def test_dla_concat_axis_and_qdq_on_tensorrt_8(tmp_path, lenet_qdq):
    w = np.ones((4, 3, 1, 1), np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], kernel_shape=[1, 1], name="c1"),
        helper.make_node("Conv", ["x", "w"], ["b"], kernel_shape=[1, 1], name="c2"),
        helper.make_node("Concat", ["a", "b"], ["y"], axis=2, name="cat"),
    ]
    path = _model(nodes, {"w": w}, tmp_path / "cat.onnx", in_shape=(1, 3, 16, 16))
    assert "Concat" in ops_of(diagnose(path, "jetson-agx-orin", dla_core=0, precision="fp16"), "fallback")
    r8 = diagnose(lenet_qdq, "jetson-xavier-nx", dla_core=0, tensorrt="8.5")
    assert "QuantizeLinear" in ops_of(r8, "fallback")  # no explicit quantization on DLA in TensorRT 8.x


def test_parser_support_by_version(tmp_path):
    ln = [helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, name="ln")]
    inits = {"s": np.ones(32, np.float32), "b": np.zeros(32, np.float32)}
    path = _model(ln, inits, tmp_path / "ln.onnx")
    assert "LayerNormalization" in ops_of(diagnose(path, "jetson-orin-nano", tensorrt="8.5"), "error")
    assert diagnose(path, "jetson-orin-nano", tensorrt="8.6").ok  # added in 8.6
    uq = [helper.make_node("Unique", ["x"], ["y"], name="uq")]
    assert "Unique" in ops_of(diagnose(_model(uq, {}, tmp_path / "u.onnx"), "x86-gpu"), "error")
    fq = [helper.make_node("FakeQuantize", ["x"], ["y"], domain="org.openvinotoolkit", name="fq")]
    m = _model(fq, {}, tmp_path / "fq.onnx")
    r = diagnose(m, "jetson-orin-nano")
    assert any(f.op == "org.openvinotoolkit:FakeQuantize" and "Q/DQ" in f.fix for f in r.errors)
    assert not diagnose(m, "x86-cpu").ok


def test_qdq_zero_point_rules(tmp_path):
    scale = np.array(0.1, np.float32)
    for zp, bad in ((np.array(0, np.int8), False), (np.array(3, np.int8), True), (np.array(128, np.uint8), True)):
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
        ]
        path = _model(nodes, {"s": scale, "z": zp}, tmp_path / f"q{zp.dtype}{int(zp)}.onnx")
        r = diagnose(path, "jetson-orin-nano", precision="int8")
        assert ("QuantizeLinear" in ops_of(r, "error")) == bad, (zp, r.findings)


def test_bad_arguments(lenet_onnx13, tmp_path):
    with pytest.raises(InvalidInput, match="outside"):
        diagnose(lenet_onnx13, "jetson-nano", tensorrt="10.3")
    with pytest.raises(InvalidInput, match="Did you mean 'jetson-nano'"):
        diagnose(lenet_onnx13, "jetson-nanoo")
    with pytest.raises(InvalidInput, match="does not exist"):
        diagnose(tmp_path / "missing.onnx", "x86-cpu")


def test_cli_doctor(cli_run, lenet_onnx13, lenet_onnx, tmp_path):
    assert cli_run(["doctor", "--help"]).exit_code == 0
    r = cli_run(["doctor", lenet_onnx13.path, "--device", "jetson-nano"])
    assert r.exit_code == 0 and "OK: no problems" in r.output and "TensorRT 8.2 (JetPack 4.6.1-4.6.6)" in r.output
    out = tmp_path / "doctor.json"
    r = cli_run(["doctor", lenet_onnx.path, "--device", "jetson-nano", "--json", out])
    assert r.exit_code == 1 and "PROBLEMS: 1 error(s)" in r.output and "opset 17" in r.output
    data = json.loads(out.read_text())
    assert data["ok"] is False and data["findings"][0]["severity"] == "error"
    r = cli_run(["doctor", lenet_onnx13.path, "--device", "jetson-agx-orin", "--dla-core", "0", "--fp16"])
    assert r.exit_code == 1 and "Flatten" in r.output and "DLA fallback" in r.output
    for args in (["--device", "jetson-agx-orin", "--dla-core", "5", "--fp16"], ["--device", "jetson-orin-nan"]):
        r = cli_run(["doctor", lenet_onnx13.path, *args])
        assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
