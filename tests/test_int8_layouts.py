"""Issue 13 item 1: the deploy target decides the INT8 layout, never the host.

One ``compress --int8`` run (``--target auto``, the default) writes the TensorRT layout (``model.onnx``, signed
INT8, zero point 0) and the CPU layout (``model.cpu.onnx``) from one calibration; deploy / eval / bench / check
pick the file by the runtime family (:mod:`edgecnn.layouts`) and say which one and why. Everything here runs on
this CPU-only machine, where ``--target auto`` used to mean the cpu layout only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import one_line_error

from edgecnn.artifact import Artifact, sha256_file
from edgecnn.compress.qdq import errors, validate_qdq
from edgecnn.compress.quantize import QuantizeOptions, quantize
from edgecnn.errors import ArtifactError
from edgecnn.evaluation import evaluate, predict
from edgecnn.runtime import open_runner
from edgecnn.runtime.onnxrt import create_session

LAYOUT_KEY = "edgecnn.int8_layout"


def _quantize(src, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize(src, out, QuantizeOptions(calib="digits", subset_size=64, **kw), progress=False)


@pytest.fixture(scope="module")
def auto_int8(lenet_digits, tmp_path_factory):
    """LeNet-5 quantized with the default --target auto, accuracy measured on the digits."""
    return _quantize(lenet_digits, tmp_path_factory.mktemp("layouts") / "auto", data="digits")


def _session_layout(runner) -> str:
    """Which layout the runner's ONNX Runtime session loaded: the stamp in the loaded graph's metadata."""
    return runner.session.get_modelmeta().custom_metadata_map[LAYOUT_KEY]


# -- the artifact ------------------------------------------------------------------------------------
def test_auto_writes_both_layouts_each_validated_and_measured(auto_int8):
    art = auto_int8
    q = art.manifest["quantization"]
    assert q["target"] == "auto"
    assert {f: e["file"] for f, e in q["layouts"].items()} == {"tensorrt": "model.onnx", "cpu": "model.cpu.onnx"}
    assert art.manifest["file"] == "model.onnx"
    for fam, entry in q["layouts"].items():
        assert art.manifest["files"][entry["file"]] == entry["sha256"] == sha256_file(art.path / entry["file"])
        stamp = {p.key: p.value for p in onnx.load(str(art.path / entry["file"])).metadata_props}
        assert stamp[LAYOUT_KEY] == fam and stamp["edgecnn.id"] == art.id
        assert 0.9 < entry["top1"] <= 1.0 and entry["evaluated_in"] == "onnxruntime"
    trt, cpu = q["layouts"]["tensorrt"], q["layouts"]["cpu"]
    assert trt["validation"]["passed"] and trt["validation"]["required"]
    assert not cpu["validation"]["passed"] and not cpu["validation"]["required"]  # uint8: TensorRT rejects it
    assert errors(validate_qdq(art.path / "model.onnx", "tensorrt")) == []
    assert errors(validate_qdq(art.path / "model.cpu.onnx", "tensorrt"))
    assert "uint8_activations" in cpu["rewrites"] and "signed" in trt["rewrites"]
    # each layout's top-1 is its own measurement: re-measuring each file gives exactly its number
    held = {fam: _top1_of_file(art.path / e["file"]) for fam, e in q["layouts"].items()}
    assert held == pytest.approx({fam: e["top1"] for fam, e in q["layouts"].items()}, abs=1e-9)
    assert art.manifest["metrics"]["top1_by_layout"] == {fam: e["top1"] for fam, e in q["layouts"].items()}


def _top1_of_file(path: Path) -> float:
    from edgecnn.data.source import DataSource

    class FileRunner:
        def __init__(self, p):
            self.session = create_session(p, threads=1)

        def infer(self, x):
            return self.session.run(None, {self.session.get_inputs()[0].name: np.asarray(x, np.float32)})[0]

    art = Artifact.load(path.parent)
    ds = DataSource.parse("digits").dataset(art.input, "val", num_classes=art.num_classes)
    logits, labels, _ = predict(FileRunner(path), ds, batch_size=64)
    return float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


def test_explicit_targets_write_one_layout(lenet_digits, auto_int8, tmp_path):
    art = _quantize(lenet_digits, tmp_path / "cpu", target="cpu", data="digits")
    assert sorted(art.manifest["files"]) == ["model.onnx"]
    assert {f: e["file"] for f, e in art.manifest["quantization"]["layouts"].items()} == {"cpu": "model.onnx"}
    # auto's cpu layout is the very graph --target cpu writes (same calibration, same rewrites): CPU speed kept
    explicit, auto = onnx.load(str(art.model_file)), onnx.load(str(auto_int8.path / "model.cpu.onnx"))
    assert [(n.op_type, list(n.input)) for n in explicit.graph.node] == [
        (n.op_type, list(n.input)) for n in auto.graph.node
    ]
    assert [i.SerializeToString() for i in explicit.graph.initializer] == [
        i.SerializeToString() for i in auto.graph.initializer
    ]
    assert art.manifest["metrics"]["top1"] == auto_int8.manifest["quantization"]["layouts"]["cpu"]["top1"]


def test_kept_float_layers_are_applied_to_both_layouts_and_both_measured(lenet_digits, tmp_path):
    """Accuracy-aware: the layers kept in float are chosen on one layout and applied to the other, whose top-1
    is measured, never assumed."""
    from PIL import Image

    gray = tmp_path / "gray"
    gray.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(120, 136, (8, 8)).astype(np.uint8)).save(gray / f"{i}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = quantize(
            lenet_digits, tmp_path / "aa", QuantizeOptions(calib=gray, data="digits", max_drop=0.5), progress=False
        )
    q = art.manifest["quantization"]
    kept = q["kept_float"]
    assert kept and q["layouts"]["tensorrt"]["kept_float"] == q["layouts"]["cpu"]["kept_float"] == kept
    for fam, entry in q["layouts"].items():
        unquantized = {v.node for v in validate_qdq(art.path / entry["file"]) if v.rule == "unquantized-layer"}
        assert unquantized == set(kept), fam
        assert entry["top1"] == pytest.approx(_top1_of_file(art.path / entry["file"]), abs=1e-9)
        assert entry["top1_drop_pt"] == pytest.approx(100 * (q["accuracy_aware"]["fp32_top1"] - entry["top1"]))


# -- who runs which file ------------------------------------------------------------------------------
def test_eval_bench_check_run_the_cpu_layout(auto_int8, lenet_digits, cli_run, tmp_path):
    with open_runner(auto_int8) as runner:
        assert _session_layout(runner) == "cpu"
        assert runner.layout.file == auto_int8.path / "model.cpu.onnx"
        assert "INT8 layout cpu (model.cpu.onnx)" in runner.description
    r = evaluate(auto_int8, "digits")
    assert r["int8_layout"]["file"] == "model.cpu.onnx" and r["int8_layout"]["layout"] == "cpu"
    assert r["top1"] == pytest.approx(auto_int8.manifest["quantization"]["layouts"]["cpu"]["top1"], abs=1e-9)
    res = cli_run(["eval", auto_int8.path, "--data", "digits", "-q"])
    assert res.exit_code == 0 and "INT8 layout: cpu (model.cpu.onnx)" in res.output, res.output
    res = cli_run(
        ["bench", auto_int8.path, "-b", "1", "--min-time", "0.05", "--max-time", "0.2", "--warmup", "2"]
        + ["--min-repeats", "3", "--json", tmp_path / "b.json"]
    )
    assert res.exit_code == 0, res.output
    assert "INT8 layout: cpu (model.cpu.onnx)" in res.output
    bench = json.loads((tmp_path / "b.json").read_text())
    assert bench["candidates"][0]["int8_layout"]["file"] == "model.cpu.onnx"
    res = cli_run(
        ["check", auto_int8.path, "--against", lenet_digits.path, "--data", "digits", "--no-latency"]
        + ["--json", tmp_path / "c.json"]
    )
    assert res.exit_code in (0, 3), res.output
    report = json.loads((tmp_path / "c.json").read_text())
    assert "INT8 layout cpu (model.cpu.onnx)" in report["candidate"]["runner"]
    # a check reports the bytes the cpu deployment ships: one layout, not both
    assert report["candidate"]["size_bytes"] == (auto_int8.path / "model.cpu.onnx").stat().st_size


def test_tampered_second_layout_is_refused(auto_int8, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(auto_int8.path, copy)
    data = bytearray((copy / "model.cpu.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.cpu.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model.cpu.onnx does not match its sha256"):
        Artifact.load(copy)
    # even an artifact loaded without the full check is refused when the runtime picks the tampered layout
    unverified = Artifact.load(copy, verify=False)
    with pytest.raises(ArtifactError, match=r"model.cpu.onnx does not match its sha256"):
        open_runner(unverified)
    from edgecnn.layouts import model_file_for

    with pytest.raises(ArtifactError, match=r"model.cpu.onnx does not match its sha256"):
        model_file_for(unverified, "cpu")
    assert model_file_for(unverified, "tensorrt") == copy / "model.onnx"  # the intact layout is still usable


# -- deploy -----------------------------------------------------------------------------------------------
def test_one_compress_run_deploys_to_jetson_and_cpu(lenet_digits, cli_run, tmp_path, monkeypatch):
    """The issue's sequence on this CPU machine: compress once, deploy to a Jetson and to a CPU."""
    from edgecnn.doctor import diagnose

    monkeypatch.chdir(tmp_path)
    r = cli_run(["compress", lenet_digits.path, "--int8", "--calib", "digits", "--subset-size", "64", "--no-bench"])
    assert r.exit_code == 0, r.output
    assert "INT8 layouts: tensorrt (model.onnx)" in r.output and "cpu (model.cpu.onnx)" in r.output
    r = cli_run(["deploy", "--target", "jetson", "--device", "jetson-agx-orin", "--out", "jet"])
    assert r.exit_code == 0, r.output
    assert "INT8 layout: tensorrt (model.onnx) for target jetson" in r.output
    final = Artifact.load(json.loads(next(Path("runs/compress").glob("*/compress.json")).read_text())["final"])
    jet = Artifact.load("jet")
    assert sha256_file(jet.path / "model.onnx") == final.manifest["files"]["model.onnx"]
    assert errors(validate_qdq(jet.path / "model.onnx", "tensorrt")) == []
    assert diagnose(jet.path / "model.onnx", "jetson-agx-orin").ok
    info = json.loads((jet.path / "bundle.json").read_text())
    assert info["int8_layout"]["layout"] == "tensorrt" and info["int8_layout"]["file"] == "model.onnx"
    assert jet.manifest["bundle"]["int8_layout"]["layout"] == "tensorrt"

    r = cli_run(["deploy", "--target", "cpu", "--out", "cpu"])
    assert r.exit_code == 0, r.output
    assert "INT8 layout: cpu (model.cpu.onnx) for target cpu" in r.output
    cpu = Artifact.load("cpu")
    assert sha256_file(cpu.path / "model.onnx") == final.manifest["files"]["model.cpu.onnx"]
    info = json.loads((cpu.path / "bundle.json").read_text())
    assert info["int8_layout"]["layout"] == "cpu" and info["int8_layout"]["source_file"] == "model.cpu.onnx"
    # the golden outputs were computed from the file the bundle ships
    sess = create_session(cpu.path / "model.onnx", threads=1)
    ins = np.load(cpu.path / "golden" / "inputs.npy")
    assert np.array_equal(
        sess.run(None, {sess.get_inputs()[0].name: ins})[0], np.load(cpu.path / "golden/expected.npy")
    )
    v = subprocess.run(
        [sys.executable, str(cpu.path / "run.py"), "--verify", "--runtime", "onnxruntime"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert v.returncode == 0, v.stdout + v.stderr


def test_explicit_cpu_artifact_to_jetson_fails_in_one_line(lenet_digits, cli_run, tmp_path):
    out = tmp_path / "cpu-only"
    r = cli_run(
        ["quantize", lenet_digits.path, "--calib", "digits", "--subset-size", "32", "--target", "cpu"] + ["--out", out]
    )
    assert r.exit_code == 0, r.output
    r = cli_run(["deploy", out, "--target", "jetson", "--device", "jetson-agx-orin", "--out", tmp_path / "b"])
    line = one_line_error(r)
    assert "no INT8 layout for TensorRT" in line and "re-quantize with --target auto or --target tensorrt" in line
    assert not (tmp_path / "b").exists()
    # the same artifact still deploys to a CPU (its one layout is the cpu one)
    r = cli_run(["deploy", out, "--target", "cpu", "--out", tmp_path / "c"])
    assert r.exit_code == 0 and "INT8 layout: cpu (model.onnx) for target cpu" in r.output, r.output


def test_fp32_artifacts_are_unaffected(lenet_onnx):
    from edgecnn.layouts import choose

    for fam in ("cpu", "tensorrt"):
        c = choose(lenet_onnx, fam)
        assert c.layout is None and c.file == lenet_onnx.model_file


def test_depthwise_and_squeeze_excitation_nets_get_per_tensor_activations(tmp_path):
    """Found by the zoo benchmark and the model-source work: NNCF put per-channel activation quantizers after
    ReLU6 / into SE blocks. ONNX Runtime then keeps those convolutions in float (MobileNet V2: 34 of 52), and the
    TensorRT layout rejects them ("activation quantized with N scales"), so --target auto failed on SE networks."""
    import torch
    from torch import nn

    from edgecnn.compress.quantize import nncf_quantize

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU6())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU6())
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 8, 1), nn.SiLU(), nn.Conv2d(8, 16, 1))
            self.pw = nn.Conv2d(16, 16, 1)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            y = self.dw(self.stem(x))
            y = self.pw(y * torch.sigmoid(self.se(y)))
            return self.head(y.mean((2, 3)))

    path = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), torch.randn(1, 3, 32, 32), str(path), dynamo=False, opset_version=17)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = nncf_quantize(onnx.load(str(path)), calib, subset_size=8)
    inits = {i.name: i for i in q.graph.initializer}
    weights = {n.output[0] for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits}
    per_channel = [
        n.name
        for n in q.graph.node
        if n.op_type == "QuantizeLinear"
        and n.input[0] not in inits
        and n.output[0] not in weights
        and n.input[1] in inits
        and onnx.numpy_helper.to_array(inits[n.input[1]]).size > 1
    ]
    assert not per_channel, f"per-channel activation quantizers: {per_channel}"
