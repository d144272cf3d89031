"""INT8 quantization (real NNCF calibration, real ONNX Runtime evaluation), accuracy-aware mode, QAT, FP16
and the 'edgecnn quantize' command. Accuracy assertions use the bundled digits' held-out split."""

from __future__ import annotations

import collections
import json
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import one_line_error

from edgecnn.artifact import Artifact
from edgecnn.compress.precision import check_precision_flags, int8_flags_given
from edgecnn.compress.qdq import errors, validate_qdq
from edgecnn.compress.quantize import BudgetNotMet, QuantizeOptions, quantize
from edgecnn.data.calibration import build_calibration_folder, load_calibration
from edgecnn.data.source import DataSource
from edgecnn.errors import ArtifactError, DataError, InvalidInput, OptionError
from edgecnn.evaluation import evaluate


@pytest.fixture(scope="module")
def lenet_int8(runs, lenet_digits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize(
            lenet_digits,
            runs / "lenet5-int8",
            QuantizeOptions(calib="digits", subset_size=64, data="digits", target="cpu"),
            progress=False,
        )


@pytest.fixture(scope="module")
def resnet18_trt(runs, resnet18_digits):
    return quantize(
        resnet18_digits,
        runs / "resnet18-int8-trt",
        QuantizeOptions(calib="digits", subset_size=64, data="digits", target="tensorrt"),
        progress=False,
    )


def test_lenet_int8_artifact(lenet_digits, lenet_int8):
    art = lenet_int8
    assert art.format == "onnx" and art.precision == "int8" and art.stage == "quantize"
    assert art.manifest["parent"]["id"] == lenet_digits.id and art.root_id == lenet_digits.root_id
    q = art.manifest["quantization"]
    assert q["target"] == "cpu" and q["route"].startswith("nncf-onnx")
    assert q["calibration"]["images"] == 64 and q["calibration"]["source"] == "digits"
    # INT8 weights are stored as int8: the file is ~3x smaller than the FP32 weights
    assert art.model_file.stat().st_size * 2.5 < lenet_digits.model_file.stat().st_size
    model = onnx.load(str(art.model_file))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) >= 4
    assert any(i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2 for i in model.graph.initializer)
    # the recorded numbers are ONNX Runtime's on the held-out digits, and re-measuring gives the same
    m = art.manifest["metrics"]
    assert m["evaluated_in"] == "onnxruntime" and m["eval_data"]["split"] == "val"
    assert m["top1_drop_pt"] <= 1.0 and m["top1"] > 0.9
    again = evaluate(art, "digits")
    assert again["top1"] == pytest.approx(m["top1"], abs=1e-9)
    assert q["validation"]["required"] is False


def test_resnet18_tensorrt_target_passes_rules(resnet18_digits, resnet18_trt):
    art = resnet18_trt
    q = art.manifest["quantization"]
    assert q["target"] == "tensorrt" and q["validation"]["passed"] and q["validation"]["required"]
    violations = validate_qdq(art.model_file)
    assert errors(violations) == []
    assert not [v for v in violations if v.rule in ("residual-add", "concat-scales")]
    assert len(q["rewrites"]["residual_adds_fused"]) == 8  # every BasicBlock's add can fuse
    model = onnx.load(str(art.model_file))
    zps = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert zps[n.input[2]].data_type == onnx.TensorProto.INT8
    m = art.manifest["metrics"]
    assert m["top1_drop_pt"] <= 1.2, m  # 64 calibration images here; the 300-image number is in the README
    assert evaluate(art, "digits")["top1"] == pytest.approx(m["top1"], abs=1e-9)


@pytest.mark.parametrize("name,size", [("googlenet", 32), ("densenet121", 32), ("resnet50", 32)])
def test_every_family_quantizes_validates_and_runs(tmp_path, name, size):
    """Plumbing for the graph shapes that need care, at a small input: inception concats (GoogLeNet),
    pre-activation BatchNorm and growing concats (DenseNet), bottleneck residuals (ResNet-50). Random
    weights, synthetic calibration (no accuracy meaning), TensorRT target -> passes the rules with no
    layer left in floating point, and runs in ONNX Runtime. LeNet-5 (here) covers the Flatten -> Gemm
    classifier that AlexNet/VGG share; all families at 224 px, with speed: benchmarks/bench_int8_zoo.py."""
    import torch

    from edgecnn.models import build_model, get_spec, save_torch_artifact
    from edgecnn.runtime.onnxrt import create_session, run_batches

    torch.manual_seed(0)
    spec = get_spec(name)
    ispec = spec.input_spec(input_size=size)
    net, _ = build_model(name, weights="random", num_classes=10, input_size=size, warn_random=False)
    src = save_torch_artifact(
        net, tmp_path / "src", name=name, input_spec=ispec, classes=[str(i) for i in range(10)], stage="load"
    )
    art = quantize(
        src, tmp_path / "int8", QuantizeOptions(calib="synthetic:4", subset_size=4, target="tensorrt"), progress=False
    )
    v = validate_qdq(art.model_file)
    assert errors(v) == [], v[:3]
    assert not [x for x in v if x.rule == "unquantized-layer"], [x for x in v if x.rule == "unquantized-layer"]
    x = np.random.default_rng(0).standard_normal((2, *art.input_shape)).astype(np.float32)
    out = run_batches(create_session(art.model_file), x)
    assert out.shape == (2, 10) and np.isfinite(out).all()


@pytest.fixture(scope="module")
def gray_calib(tmp_path_factory):
    """Unrepresentative calibration images (flat mid-gray): every activation range comes out far too
    narrow - the classic way a user's PTQ goes wrong."""
    from PIL import Image

    d = tmp_path_factory.mktemp("gray-calib")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(120, 136, (8, 8)).astype(np.uint8)).save(d / f"{i}.png")
    return d


def test_accuracy_aware_keeps_measured_layers_in_float(lenet_digits, gray_calib, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = quantize(
            lenet_digits,
            tmp_path / "aa",
            QuantizeOptions(calib=gray_calib, data="digits", max_drop=0.5, target="cpu"),
            progress=False,
        )
    acc = art.manifest["quantization"]["accuracy_aware"]
    assert acc["ptq_drop_pt"] > 20, "gray calibration should have broken plain PTQ"
    assert acc["met"] and acc["final_drop_pt"] <= 0.5
    kept = art.manifest["quantization"]["kept_float"]
    ranked = [r["layer"] for r in acc["ranking"]]
    assert len(ranked) == 5  # LeNet-5: 2 convolutions + 3 linear layers
    assert kept and [k["layer"] for k in acc["kept_float"]] == kept == ranked[: len(kept)]  # measured order
    assert kept[0] == "/features/features.0/Conv"  # the input quantizer is the broken one
    assert acc["ranking"][0]["top1_gain_pt"] > 20
    assert all("gives back" in k["reason"] for k in acc["kept_float"])
    assert [s["kept"] for s in acc["steps"]] == [kept[: i + 1] for i in range(len(kept))]
    assert evaluate(art, "digits")["top1"] == pytest.approx(art.manifest["metrics"]["top1"], abs=1e-9)
    v = validate_qdq(art.model_file)
    assert {x.node for x in v if x.rule == "unquantized-layer"} == set(kept)


def test_budget_not_met_writes_nothing(lenet_digits, gray_calib, tmp_path):
    out = tmp_path / "nope"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BudgetNotMet, match=r"features.0/Conv.*--qat"):
            quantize(
                lenet_digits,
                out,
                QuantizeOptions(calib=gray_calib, data="digits", max_drop=0.5, max_float_layers=0, target="cpu"),
                progress=False,
            )
    assert not out.exists()


def test_qat_fine_tunes_and_exports(lenet_digits, tmp_path):
    options = QuantizeOptions(calib="digits", subset_size=32, data="digits", qat=True, epochs=1, target="cpu")
    art = quantize(lenet_digits, tmp_path / "qat", options, progress=False)
    q = art.manifest["quantization"]
    assert q["route"].endswith("+ qat")
    assert q["qat"]["fake_quantized_layers"] == 5 and q["qat"]["epochs"] == 1 and q["qat"]["kd"]["temperature"] > 0
    assert len(q["qat"]["history"]) == 1
    acc = q["accuracy_aware"]
    assert "before_qat" in acc and acc["final_drop_pt"] <= 1.0
    assert evaluate(art, "digits")["top1"] == pytest.approx(acc["final_top1"], abs=1e-9)


def test_fp16(lenet_digits, tmp_path):
    from edgecnn.compress.fp16 import Fp16Options, convert_fp16

    art = convert_fp16(lenet_digits, tmp_path / "fp16", Fp16Options(data="digits"), progress=False)
    assert art.precision == "fp16" and art.manifest["fp16"]["io_dtype"] == "float32"
    m = art.manifest["metrics"]
    assert m["fp16_parity"]["agreement_with_fp32"] >= 0.99 and abs(m["top1_drop_pt"]) <= 0.3
    model = onnx.load(str(art.model_file))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert evaluate(art, "digits")["top1"] == pytest.approx(m["top1"], abs=1e-9)
    io = convert_fp16(lenet_digits, tmp_path / "fp16io", Fp16Options(fp16_io=True), progress=False)
    assert onnx.load(str(io.model_file)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_library_errors(lenet_digits, lenet_int8, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        quantize(lenet_digits, tmp_path / "x", QuantizeOptions(calib=tmp_path / "nope"), progress=False)
    with pytest.raises(ArtifactError, match="already int8"):
        quantize(lenet_int8, tmp_path / "x", QuantizeOptions(calib="digits"), progress=False)
    with pytest.raises(OptionError, match="TensorRT rejects"):
        quantize(
            lenet_digits,
            tmp_path / "x",
            QuantizeOptions(calib="digits", target="tensorrt", preset="mixed"),
            progress=False,
        )
    with pytest.raises(OptionError, match="needs --data"):
        quantize(lenet_digits, tmp_path / "x", QuantizeOptions(calib="digits", max_drop=0.5), progress=False)
    with pytest.raises(InvalidInput, match=r"matches no node.*Did you mean.*--list-layers"):
        quantize(
            lenet_digits,
            tmp_path / "x",
            QuantizeOptions(calib="synthetic:2", subset_size=2, ignore=["/classifier/classifier.1/Gem"]),
            progress=False,
        )
    assert not (tmp_path / "x").exists()


def test_ignore_keeps_layer_float(lenet_digits, tmp_path):
    options = QuantizeOptions(
        calib="synthetic:4", subset_size=4, target="tensorrt", ignore=["/classifier/classifier.5/Gemm"]
    )
    art = quantize(lenet_digits, tmp_path / "ign", options, progress=False)
    v = validate_qdq(art.model_file)
    assert [x.node for x in v if x.rule == "unquantized-layer"] == ["/classifier/classifier.5/Gemm"]
    assert art.manifest["quantization"]["ignored"] == ["/classifier/classifier.5/Gemm"]


def test_quantize_cli(lenet_digits, tmp_path, cli_run):
    r = cli_run(["quantize", "--help"])
    assert r.exit_code == 0 and "--calib" in r.output and "--validate-only" in r.output
    out = tmp_path / "q"
    r = cli_run(
        [
            "quantize",
            lenet_digits.path,
            "--calib",
            "digits",
            "--subset-size",
            "32",
            "--target",
            "tensorrt",
            "--compact-names",
            "--out",
            out,
            "--json",
            tmp_path / "q.json",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "TensorRT rules" in r.output and "passed" in r.output and "compacted" in r.output
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["quantization"]["validation"]["passed"] and Artifact.load(out).precision == "int8"
    r = cli_run(["quantize", lenet_digits.path, "--fp16", "--out", tmp_path / "h"])
    assert r.exit_code == 0, r.output and Artifact.load(tmp_path / "h").precision == "fp16"


@pytest.mark.parametrize(
    "args,code,text",
    [
        (["--out", "X"], 2, "--calib"),  # --int8 (default) without --calib
        (["--int8", "--out", "X"], 2, "--calib"),
        (["--int8", "--fp16", "--out", "X"], 2, "one precision"),
        (["--fp16", "--calib", "digits", "--out", "X"], 2, "INT8 option"),
        (["--fp16-io", "--out", "X"], 2, "--fp16-io"),
        (["--fp16", "--compact-names", "--out", "X"], 2, "INT8 option"),
        (["--calib", "digits", "--max-drop", "0.5", "--out", "X"], 2, "--data"),
        (["--calib", "digits", "--qat", "--out", "X"], 2, "--qat needs --data"),
        (["--calib", "digits", "--target", "tensorrt", "--preset", "mixed", "--out", "X"], 2, "TensorRT rejects"),
        (["--fp16", "--val-split", "1.5", "--out", "X"], 2, "--val-split"),
        (["--calib", "MISSING", "--out", "X"], 1, "does not exist"),
        (["--calib", "digits"], 2, "--out"),
    ],
)
def test_quantize_cli_errors(lenet_digits, tmp_path, cli_run, args, code, text):
    args = [str(tmp_path / a) if a in ("X", "MISSING") else a for a in args]
    r = cli_run(["quantize", lenet_digits.path, *args])
    assert r.exit_code == code, r.output
    assert text in r.output and "Traceback" not in r.output
    if code == 1:
        one_line_error(r)
    assert not (tmp_path / "X").exists()


def test_quantize_cli_non_image_calib_folder(lenet_digits, tmp_path, cli_run):
    d = tmp_path / "cal"
    d.mkdir()
    (d / "labels.txt").write_text("x")
    r = cli_run(["quantize", lenet_digits.path, "--calib", d, "--out", tmp_path / "o"])
    one_line_error(r)
    assert "no images" in r.output and "labels.txt" in r.output


def test_compact_names_same_model_smaller_file(lenet_int8, tmp_path):
    """Short tensor names change nothing that runs: identical logits in ONNX Runtime (optimised, as deployed),
    the same inputs/outputs, a table back to the original names - and a smaller file (the names are the same
    ~7 kB whatever the weights; on the pruned LeNet-5 that is a third of the file: README, compress)."""
    import copy

    from edgecnn.export.onnx import compact_names
    from edgecnn.runtime.onnxrt import create_session, run_batches

    original = onnx.load(str(lenet_int8.model_file))
    short = copy.deepcopy(original)
    info = compact_names(short)
    onnx.checker.check_model(short)
    assert [i.name for i in short.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in short.graph.output] == [o.name for o in original.graph.output]
    assert info["tensors"] == len(info["names"]) > 30 and info["nodes"] == len(original.graph.node)
    assert set(info["names"].values()) >= {i.name for i in original.graph.initializer}
    x = np.random.default_rng(0).standard_normal((8, *lenet_int8.input_shape)).astype(np.float32)
    np.testing.assert_array_equal(run_batches(create_session(short), x), run_batches(create_session(original), x))
    assert original.ByteSize() - short.ByteSize() > 5000, (short.ByteSize(), original.ByteSize())  # ~7 of 75 kB


def test_densenet_cpu_layout_runs_every_conv_in_int8(tmp_path):
    """DenseNet on the cpu target: after uint8 activations, one quantizer per concat group, integer concats
    and pre-activation BN as depthwise convs, ONNX Runtime runs every convolution (and every BN but the one
    right after the stem's max-pool) as QLinearConv, with almost no stand-alone DequantizeLinear left
    (NNCF's graph as it was: 54 float convs, 62 float BNs, 708 DQs at this size). Speed at 224 px:
    benchmarks/bench_int8_zoo.py."""
    import torch
    from test_qdq import fused_ops

    from edgecnn.models import build_model, get_spec, save_torch_artifact

    torch.manual_seed(0)
    ispec = get_spec("densenet121").input_spec(input_size=32)
    net, _ = build_model("densenet121", weights="random", num_classes=10, input_size=32, warn_random=False)
    src = save_torch_artifact(
        net, tmp_path / "src", name="densenet121", input_spec=ispec, classes=[str(i) for i in range(10)], stage="load"
    )
    art = quantize(
        src, tmp_path / "int8", QuantizeOptions(calib="synthetic:4", subset_size=4, target="cpu"), progress=False
    )
    rw = art.manifest["quantization"]["rewrites"]
    assert len(rw["batchnorm_as_depthwise"]) == 61 and len(rw["concat_before_dequantize"]) == 58, {
        k: (len(v) if isinstance(v, list) else v) for k, v in rw.items()
    }
    ops = fused_ops(onnx.load(str(art.model_file)))
    assert "Conv" not in ops and ops.get("BatchNormalization", 0) <= 1, ops
    assert ops["QLinearConv"] == 120 + 61 and ops.get("DequantizeLinear", 0) <= 2, ops


# --------------------------------------------------------------------------------------------------
# options: the rules live once, in the library (OptionError), and the CLI maps them to exit 2
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw,text,args",
    [
        ({}, "--int8 needs calibration images", []),
        ({"calib": "digits", "max_drop": 0.5}, "--max-drop needs --data", ["--calib", "digits", "--max-drop", "0.5"]),
        ({"calib": "digits", "qat": True}, "--qat needs --data", ["--calib", "digits", "--qat"]),
        (
            {"calib": "digits", "target": "tensorrt", "preset": "mixed"},
            "TensorRT rejects",
            ["--calib", "digits", "--target", "tensorrt", "--preset", "mixed"],
        ),
        (
            {"calib": "digits", "target": "tensorrt", "per_channel": False},
            "drop --per-tensor",
            ["--calib", "digits", "--target", "tensorrt", "--per-tensor"],
        ),
        (
            {"calib": "digits", "data": "digits", "max_drop": -1.0},
            "--max-drop must be >= 0",
            ["--calib", "digits", "--data", "digits", "--max-drop", "-1"],
        ),
        ({"calib": "digits", "subset_size": 0}, "--subset-size must be >= 1", None),
        ({"calib": "digits", "target": "gpu"}, "Unknown target 'gpu'", None),
    ],
)
def test_quantize_options_rules(lenet_digits, tmp_path, cli_run, kw, text, args):
    """The same rule, from the library with no CLI involved, and from 'edgecnn quantize' as exit 2."""
    with pytest.raises(OptionError, match=re.escape(text)):
        QuantizeOptions(**kw).validate()
    if args is not None:
        r = cli_run(["quantize", lenet_digits.path, *args, "--out", tmp_path / "o"])
        assert r.exit_code == 2 and text in r.output and "Traceback" not in r.output, r.output
        assert not (tmp_path / "o").exists()


def test_quantize_options_from_a_mapping():
    o = QuantizeOptions.from_mapping(
        {"calib": "digits", "subset-size": 32, "ignore": ["/fc/Gemm"], "data": "digits", "max_drop": 0.5}
    )
    assert o.calib == DataSource.parse("digits") and o.data.kind == "digits"
    assert o.subset_size == 32 and o.ignore == ("/fc/Gemm",) and o.as_dict()["calib"] == "digits"
    with pytest.raises(OptionError, match="Did you mean 'subset-size'"):
        QuantizeOptions.from_mapping({"calib": "digits", "subset-sise": 3})
    with pytest.raises(OptionError, match="needs --data"):
        QuantizeOptions.from_mapping({"calib": "digits", "qat": True})


@pytest.mark.parametrize(
    "flags,kw,text",
    [
        ((True, True, False, {}), {}, "one precision"),
        ((False, False, True, {}), {}, "--fp16-io only applies with --fp16"),
        ((False, True, False, {"--calib": True}), {"int8_by_default": True}, "--calib is an INT8 option"),
        ((False, True, False, {"--calib": True}), {}, "--calib is only used by --int8"),
        ((False, False, False, {"--calib": False, "--compact-names": True}), {}, "--compact-names belongs to INT8"),
    ],
)
def test_precision_flag_rules(flags, kw, text):
    with pytest.raises(OptionError, match=re.escape(text)):
        check_precision_flags(*flags, **kw)


def test_precision_flags_say_what_runs():
    assert check_precision_flags(False, False, False, {}, int8_by_default=True) == "int8"
    assert check_precision_flags(True, False, False, {"--calib": True}) == "int8"
    assert check_precision_flags(False, True, True, {"--calib": False}) == "fp16"
    assert check_precision_flags(False, False, False, {}) is None
    given = int8_flags_given({"calib": None, "qat": True, "ignore": (), "compact_names": False, "subset_size": 3})
    assert given == {"--calib": False, "--qat": True, "--ignore": False, "--compact-names": False}


# --------------------------------------------------------------------------------------------------
# data read once
# --------------------------------------------------------------------------------------------------
def test_calibration_folder_is_scanned_once_and_decoded_once(lenet_digits, tmp_path, monkeypatch):
    """A whole quantize run - calibration, PTQ, evaluation on --data, QAT (which calibrates its fake
    quantizers on the same batches) and the second PTQ - scans the calibration folder once and decodes
    each of its images at most once. Counted on the real functions (pathlib's rglob, the image decoder)."""
    import edgecnn.data.images as images

    calib = tmp_path / "calib"
    build_calibration_folder(DataSource.parse("digits"), 40, calib)
    root = calib.resolve()
    scans, decodes = [], collections.Counter()
    real_rglob, real_read = Path.rglob, images.read_image

    def rglob(self, pattern, *args, **kwargs):
        if root == Path(self).resolve() or root in Path(self).resolve().parents:
            scans.append(str(self))
        return real_rglob(self, pattern, *args, **kwargs)

    def read_image(path, channels):
        decodes[str(Path(path).resolve())] += 1
        return real_read(path, channels)

    monkeypatch.setattr(Path, "rglob", rglob)
    monkeypatch.setattr(images, "read_image", read_image)
    options = QuantizeOptions(calib=calib, data="digits", qat=True, epochs=1, target="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = quantize(lenet_digits, tmp_path / "int8", options, progress=False)
    q = art.manifest["quantization"]
    assert q["qat"] is not None and q["calibration"]["images"] == 40
    assert len(scans) == 1, scans
    assert len(decodes) == 40 and set(decodes.values()) == {1}, decodes


def test_calibration_set_given_is_not_read_again(lenet_digits, tmp_path, monkeypatch):
    import edgecnn.compress.quantize as quantize_module
    from edgecnn.models import get_spec

    cal = load_calibration(DataSource.parse("synthetic:4"), lenet_digits.input, subset_size=4)
    monkeypatch.setattr(quantize_module, "load_calibration", lambda *a, **k: pytest.fail("calibration read again"))
    options = QuantizeOptions(calib="synthetic:4", subset_size=4, target="cpu")
    art = quantize(lenet_digits, tmp_path / "q", options, calib_set=cal, progress=False)
    assert art.manifest["quantization"]["calibration"]["images"] == 4
    rgb = load_calibration(DataSource.parse("synthetic:2"), get_spec("resnet18").input_spec(input_size=32))
    with pytest.raises(InvalidInput, match="per image"):
        quantize(lenet_digits, tmp_path / "q2", options, calib_set=rgb, progress=False)


def test_list_layers(lenet_digits, lenet_int8, tmp_path, cli_run):
    r = cli_run(["quantize", lenet_digits.path, "--list-layers", "--json", tmp_path / "l.json"])
    assert r.exit_code == 0, r.output
    layers = json.loads((tmp_path / "l.json").read_text())["layers"]
    assert [x["op_type"] for x in layers] == ["Conv", "Conv", "Gemm", "Gemm", "Gemm"]
    assert "/classifier/classifier.5/Gemm" in r.output
    r = cli_run(["quantize", lenet_int8.path, "--list-layers"])
    assert r.exit_code == 0 and "/features/features.0/Conv" in r.output and "int8" in r.output, r.output
