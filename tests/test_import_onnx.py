"""``edgecnn import``: an ONNX classifier made elsewhere becomes an edgecnn ONNX artifact that the rest of the
chain (quantize, eval, bench, check, deploy, doctor, precision-only sweep) accepts.

The main network is torchvision's ``squeezenet1_1`` (random weights, 10 classes, 3x64x64) exported with
``torch.onnx`` outside edgecnn - torch's default exporter, batch fixed to 1, its own input / output names -
so the import has to rewrite the batch dimension and prove the rewrite computes the same logits.
Random weights make agreement numbers meaningless (field notes); the tests assert plumbing, parity of the
rewrites (max abs on logits) and the manifest, never accuracy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli_helpers import one_line_error
from onnx import TensorProto, helper

from edgecnn.artifact import Artifact
from edgecnn.runtime.onnxrt import create_session

DIGIT_CLASSES = [str(i) for i in range(10)]
NORM = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


def usage_error(result) -> str:
    """Exit 2 (click prints its usage lines first), exactly one 'Error' line, no traceback; returns that line."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    return errors[0]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _classes_file(folder: Path, names=DIGIT_CLASSES) -> Path:
    path = folder / "classes.txt"
    path.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return path


def _export(net, path: Path, size: int, channels: int = 3, **kwargs) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(1, channels, size, size),), str(path), **kwargs)
    return path


@pytest.fixture(scope="module")
def made_elsewhere(tmp_path_factory) -> Path:
    """squeezenet1_1 exported by torch's default exporter: batch fixed to 1, names 'image' / 'scores'."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.squeezenet1_1(num_classes=10)
    folder = tmp_path_factory.mktemp("elsewhere")
    path = _export(net, folder / "squeezenet1_1.onnx", 64, input_names=["image"], output_names=["scores"])
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]  # what the import has to make dynamic
    _classes_file(folder)
    return path


@pytest.fixture(scope="module")
def imported(made_elsewhere, tmp_path_factory):
    from click.testing import CliRunner

    from edgecnn.cli import cli

    out = tmp_path_factory.mktemp("imp") / "squeezenet"
    classes = made_elsewhere.parent / "classes.txt"
    r = CliRunner().invoke(
        cli, ["import", str(made_elsewhere), "--classes", str(classes), "--input-size", "64", *NORM, "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    return Artifact.load(out)


@pytest.fixture(scope="module")
def quantized(imported, tmp_path_factory):
    from click.testing import CliRunner

    from edgecnn.cli import cli

    out = tmp_path_factory.mktemp("q") / "squeezenet-int8"
    r = CliRunner().invoke(
        cli, ["quantize", str(imported.path), "--int8", "--calib", "digits", "--subset-size", "64", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    return Artifact.load(out)


# -- the artifact ------------------------------------------------------------------------------------------
def test_import_writes_a_verified_onnx_artifact(imported, made_elsewhere):
    m = imported.manifest
    assert imported.format == "onnx" and imported.precision == "fp32" and imported.stage == "import"
    assert imported.classes == DIGIT_CLASSES and imported.input_shape == (3, 64, 64)
    data = made_elsewhere.with_name("squeezenet1_1.onnx.data")  # torch.onnx keeps the weights beside the graph
    assert "source" not in m and m["architecture"]["source"] == {
        "kind": "onnx-import",
        "file": "squeezenet1_1.onnx",
        "sha256": _sha(made_elsewhere),
        "bytes": made_elsewhere.stat().st_size,
        "external_data": {"tensors": 26, "files": {data.name: _sha(data)}},
    }
    spec = m["input"]
    assert spec["mean"] == [0.485, 0.456, 0.406] and spec["std"] == [0.229, 0.224, 0.225]
    assert spec["layout"] == "NCHW" and spec["crop"] == [64, 64] and spec["resize"] == 64
    assert spec["preprocess"]["resize"]["shorter_side"] == 64  # the contract a consumer without edgecnn follows
    assert m["files"] == {"model.onnx": _sha(imported.model_file)}
    assert m["parent"] is None and m["lineage"] == []
    info = m["onnx"]
    assert info["input_name"] == "image" and info["output_name"] == "scores"
    assert info["opset"] >= 18 and info["original_opset"] == info["opset"]


def test_fixed_batch_is_rewritten_to_dynamic_and_parity_recorded(imported):
    info, parity = imported.manifest["onnx"], imported.metrics["parity"]
    assert info["dynamic_batch"] is True and info["batch_size"] is None and info["original_batch"] == 1
    assert any("batch" in r for r in info["rewrites"])
    assert parity["max_abs"] <= 1e-5 and parity["top1_agreement"] == 1.0
    assert parity["n_images"] >= 16 and parity["data"]["source"] == "digits"
    # the written graph takes any batch and computes, image by image, what it computes one at a time
    session = create_session(imported.model_file)
    x = np.random.default_rng(0).standard_normal((5, 3, 64, 64)).astype(np.float32)
    batch = session.run(None, {"image": x})[0]
    assert batch.shape == (5, 10)
    single = np.concatenate([session.run(None, {"image": x[i : i + 1]})[0] for i in range(5)])
    assert np.abs(batch - single).max() <= 1e-5


def _tiny(folder: Path) -> Path:
    """A small gray 16x16 classifier exported by torch's legacy exporter: dynamic batch, opset 17, one file."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    net = torch.nn.Sequential(net, torch.nn.Flatten(), torch.nn.Linear(8, 10))
    kw = {"dynamo": False, "opset_version": 17, "input_names": ["x"], "dynamic_axes": {"x": {0: "n"}}}
    return _export(net, folder / "tiny.onnx", 16, channels=1, **kw)


def test_import_without_rewrite_keeps_the_bytes(tmp_path, cli_run):
    """A graph that needs no rewrite is copied byte for byte (its sha256 is the source's); no parity needed."""
    src = _tiny(tmp_path)
    out = tmp_path / "tiny-imp"
    r = cli_run(
        ["import", str(src), "--num-classes", "10", "--input-size", "16", "--mean", "0.5", "--std", "0.25"]
        + ["--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    art = Artifact.load(out)
    assert art.sha256 == _sha(src) and art.manifest["onnx"]["rewrites"] == []
    assert art.classes == DIGIT_CLASSES and art.input_shape == (1, 16, 16)
    assert art.input["mean"] == [0.5] and art.manifest["metrics"].get("parity") is None


def test_old_opset_is_converted_with_parity(tmp_path, cli_run):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 14 * 14, 10),
    )
    torch.manual_seed(1)
    src = _export(
        net,
        tmp_path / "old.onnx",
        16,
        channels=1,
        dynamo=False,
        opset_version=11,
        dynamic_axes={"input": {0: "n"}},
        input_names=["input"],
    )
    out = tmp_path / "old-imp"
    r = cli_run(
        [
            "import",
            str(src),
            "--num-classes",
            "10",
            "--input-size",
            "16",
            "--mean",
            "0.5",
            "--std",
            "0.5",
            "--out",
            str(out),
        ]
    )
    assert r.exit_code == 0, r.output
    art = Artifact.load(out)
    info = art.manifest["onnx"]
    assert info["original_opset"] == 11 and info["opset"] == 13
    assert any("opset 11 -> 13" in r for r in info["rewrites"])
    assert art.metrics["parity"]["max_abs"] <= 1e-5
    assert "parity" in r.output


def test_batch_that_cannot_be_dynamic_stays_fixed_and_is_recorded(tmp_path, cli_run):
    """Flatten(axis=0) folds the batch into the features: no rewrite makes it dynamic, so the batch stays 1,
    the manifest says why, and eval runs it at its batch."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [16, 10], np.linspace(-1, 1, 160, dtype=np.float32).tolist())
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=0), helper.make_node("MatMul", ["f", "w"], ["y"])]
    src = _graph(tmp_path, "folded", [("x", [1, 1, 4, 4])], [1, 10], nodes)
    m = onnx.load(str(src))
    m.graph.initializer.append(w)
    onnx.save(m, str(src))
    r = cli_run(
        ["import", str(src), "--num-classes", "10", "--mean", "0.5", "--std", "0.5", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    assert "batch kept fixed at 1" in r.output
    art = Artifact.load(tmp_path / "o")
    info = art.manifest["onnx"]
    assert info["dynamic_batch"] is False and info["batch_size"] == 1 and info["rewrites"] == []
    assert info["batch_note"].startswith("batch kept fixed at 1")
    assert art.sha256 == _sha(src)
    assert cli_run(["eval", str(art.path), "--data", "digits", "--batch-size", "1"]).exit_code == 0
    r = cli_run(["eval", str(art.path), "--data", "digits", "--batch-size", "4"])
    assert r.exit_code == 1 and "fixed batch size of 1" in r.output and "batch kept fixed at 1" in r.output
    assert "edgecnn export" not in r.output  # an imported graph is not re-exported


def test_simplify_is_a_measured_rewrite(tmp_path, cli_run):
    r = cli_run(
        ["import", str(_tiny(tmp_path)), "--num-classes", "10", "--mean", "0.5", "--std", "0.5"]
        + ["--simplify", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 0, r.output
    art = Artifact.load(tmp_path / "o")
    assert any(x.startswith("onnxslim") for x in art.manifest["onnx"]["rewrites"])
    assert art.metrics["parity"]["max_abs"] <= 1e-5 and art.metrics["parity"]["top1_agreement"] == 1.0


# -- the chain accepts it ----------------------------------------------------------------------------------
def test_eval_and_bench_take_the_import(imported, cli_run, tmp_path):
    r = cli_run(["eval", str(imported.path), "--data", "digits", "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "e.json").read_text())
    assert rep["n"] == 360 and rep["format"] == "onnx" and 0.0 <= rep["top1"] <= 1.0
    r = cli_run(["bench", str(imported.path), "--batch-size", "1", "--min-time", "0.2", "--max-time", "0.6"])
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_quantize_check_deploy_doctor_take_the_import(imported, quantized, cli_run, tmp_path):
    assert quantized.precision == "int8" and quantized.manifest["parent"]["id"] == imported.id
    r = cli_run(["eval", str(quantized.path), "--data", "digits"])
    assert r.exit_code == 0, r.output
    r = cli_run(["check", str(quantized.path), "--against", str(imported.path), "--data", "digits", "--no-latency"])
    assert r.exit_code == 0 and "PASS" in r.output, r.output  # random weights: every image is one class
    bundle = tmp_path / "bundle"
    r = cli_run(["deploy", str(quantized.path), "--target", "cpu", "--out", str(bundle)])
    assert r.exit_code == 0, r.output
    v = subprocess.run(
        [sys.executable, str(bundle / "run.py"), "--verify", "--runtime", "onnxruntime"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert v.returncode == 0, v.stdout + v.stderr
    for art, flags in ((imported, ["--fp16"]), (quantized, ["--int8"])):
        r = cli_run(["doctor", str(art.path), "--device", "jetson-orin-nano", *flags])
        assert r.exit_code == 0, r.output


def test_deploy_the_fp32_import(imported, cli_run, tmp_path):
    bundle = tmp_path / "fp32-bundle"
    r = cli_run(["deploy", str(imported.path), "--target", "cpu", "--out", str(bundle)])
    assert r.exit_code == 0, r.output
    v = subprocess.run(
        [sys.executable, str(bundle / "run.py"), "--verify"], capture_output=True, text=True, timeout=300
    )
    assert v.returncode == 0, v.stdout + v.stderr


@pytest.mark.slow
def test_sweep_is_precision_only_on_an_import(cli_run, tmp_path):
    """An imported network has no torch network: its sweep is over precisions (prune 0 by default), and
    asking for pruning says so in one line."""
    imp = tmp_path / "tiny-imp"
    r = cli_run(
        ["import", str(_tiny(tmp_path)), "--num-classes", "10", "--mean", "0.5", "--std", "0.5"] + ["--out", str(imp)]
    )
    assert r.exit_code == 0, r.output
    line = usage_error(cli_run(["sweep", str(imp), "--prune", "0.3", "--data", "digits", "--out", str(tmp_path / "s")]))
    assert "imported from tiny.onnx" in line and "torch network" in line and "precision only" in line
    out = tmp_path / "sweep"
    r = cli_run(
        ["sweep", str(imp), "--data", "digits", "--subset-size", "32", "--min-time", "0.05"]
        + ["--out", str(out), "--json", str(tmp_path / "s.json")]
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert sorted((c["prune"], c["precision"]) for c in report["candidates"]) == [(0.0, "fp32"), (0.0, "int8")]
    assert all(c["status"] == "measured" for c in report["candidates"]), report["candidates"]


# -- bad input: one line each ------------------------------------------------------------------------------
def _graph(tmp_path: Path, name: str, inputs, output_shape, nodes=None) -> Path:
    """A hand-written graph: ``inputs`` [(name, shape)], one output 'y' of ``output_shape``."""
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)
    if nodes is None:
        nodes = [helper.make_node("GlobalAveragePool", [inputs[0][0]], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, name, ins, [out]), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _import(cli_run, src, tmp_path, *extra, classes="--num-classes=10"):
    return cli_run(["import", str(src), classes, *NORM, "--out", str(tmp_path / "out"), *extra])


def test_missing_file(cli_run, tmp_path):
    line = one_line_error(_import(cli_run, tmp_path / "nope.onnx", tmp_path, "--input-size", "64"))
    assert "nope.onnx" in line and "does not exist" in line
    assert not (tmp_path / "out").exists()


def test_not_an_onnx_file(cli_run, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a protobuf, just text\n" * 20)
    line = one_line_error(_import(cli_run, bad, tmp_path, "--input-size", "64"))
    assert "model.onnx" in line and "not an ONNX model" in line
    assert not (tmp_path / "out").exists()


def test_two_inputs(cli_run, tmp_path):
    add = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("GlobalAveragePool", ["s"], ["g"])]
    add.append(helper.make_node("Flatten", ["g"], ["y"]))
    src = _graph(tmp_path, "two", [("a", [1, 3, 8, 8]), ("b", [1, 3, 8, 8])], [1, 3], add)
    line = one_line_error(_import(cli_run, src, tmp_path, classes="--num-classes=3"))
    assert "2 inputs" in line and "'a'" in line and "'b'" in line


def test_non_classifier_output(cli_run, tmp_path):
    conv_w = helper.make_tensor("w", TensorProto.FLOAT, [10, 3, 1, 1], np.ones(30, np.float32).tolist())
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    src = _graph(tmp_path, "seg", [("x", ["N", 3, 8, 8])], ["N", 10, 8, 8], nodes)
    m = onnx.load(str(src))
    m.graph.initializer.append(conv_w)
    onnx.save(m, str(src))
    line = one_line_error(_import(cli_run, src, tmp_path))
    assert "N x 10 x 8 x 8" in line and "N x C" in line


def test_class_count_mismatch(made_elsewhere, cli_run, tmp_path):
    classes = _classes_file(tmp_path, ["cat", "dog", "bird"])
    line = one_line_error(_import(cli_run, made_elsewhere, tmp_path, classes=f"--classes={classes}"))
    assert "3 class" in line and "10" in line
    line = one_line_error(_import(cli_run, made_elsewhere, tmp_path, classes="--num-classes=7"))
    assert "7" in line and "10" in line


def test_input_size_the_network_cannot_take(made_elsewhere, cli_run, tmp_path):
    line = one_line_error(_import(cli_run, made_elsewhere, tmp_path, "--input-size", "96"))
    assert "96x96" in line and "64x64" in line
    r = cli_run(
        ["import", str(made_elsewhere), "--num-classes", "10", "--mean", "0.5", "--std", "0.25"]
        + ["--in-channels", "1", "--out", str(tmp_path / "out")]
    )
    line = one_line_error(r)
    assert "channel" in line and "3" in line


def test_input_size_too_small_for_a_dynamic_network(cli_run, tmp_path):
    """Symbolic H and W: the size is taken from the option, and the network is run at it to prove it can."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 10, 5))
    net = torch.nn.Sequential(net, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    src = _export(
        net,
        tmp_path / "dyn.onnx",
        32,
        channels=1,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
    )
    base = ["import", str(src), "--num-classes", "10", "--mean", "0.5", "--std", "0.5"]
    line = one_line_error(cli_run([*base, "--input-size", "6", "--out", str(tmp_path / "o")]))
    assert "6x6" in line and "cannot" in line
    r = cli_run([*base, "--input-size", "24", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert Artifact.load(tmp_path / "o").input_shape == (1, 24, 24)
    line = usage_error(cli_run([*base, "--out", str(tmp_path / "o2")]))
    assert "--input-size" in line


def test_oversized_classes_file(made_elsewhere, cli_run, tmp_path):
    from edgecnn import limits

    big = tmp_path / "classes.txt"
    with big.open("w") as fh:
        line = "x" * 1023 + "\n"
        for _ in range(limits.MAX_CLASSES_FILE_BYTES // 1024 + 1):
            fh.write(line)
    line = one_line_error(_import(cli_run, made_elsewhere, tmp_path, classes=f"--classes={big}"))
    assert "classes.txt" in line and "MiB" in line


@pytest.mark.parametrize(
    "lines, needle", [(["a", "", "b"], "empty"), (["a", "a"], "twice"), (["a\tb", "c"], "control")]
)
def test_bad_classes_file(made_elsewhere, cli_run, tmp_path, lines, needle):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(lines) + "\n")
    line = one_line_error(_import(cli_run, made_elsewhere, tmp_path, classes=f"--classes={path}"))
    assert needle in line


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mean", "0.5,0.5", "--std", "0.2"], "--mean"),
        (["--mean", "0.5", "--std", "0"], "--std"),
        (["--std", "0.2"], "--mean"),
        (["--mean", "0.5", "--std", "0.2", "--num-classes", "10", "--classes", "x.txt"], "either"),
        (["--mean", "0.5", "--std", "0.2"], "--classes"),
        (["--mean", "0.5,nan", "--std", "0.2"], "finite"),
    ],
)
def test_option_errors_exit_2(made_elsewhere, cli_run, tmp_path, args, needle):
    r = cli_run(
        ["import", str(made_elsewhere), *args, "--out", str(tmp_path / "o")]
        + ([] if "--classes" in args or "--num-classes" in args or needle == "--classes" else ["--num-classes", "10"])
    )
    line = usage_error(r)
    assert needle in line


def test_quantized_graph_imports_as_int8(quantized, cli_run, tmp_path):
    """An INT8 Q/DQ graph made elsewhere keeps its precision: eval takes it, quantize refuses to quantize again."""
    r = cli_run(["import", str(quantized.model_file), "--num-classes", "10", *NORM, "--out", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    art = Artifact.load(tmp_path / "q")
    assert art.precision == "int8" and art.sha256 == quantized.sha256
    assert cli_run(["eval", str(art.path), "--data", "digits"]).exit_code == 0
    r = cli_run(["quantize", str(art.path), "--int8", "--calib", "digits", "--out", str(tmp_path / "qq")])
    assert "already int8" in one_line_error(r)


def test_help_lists_import(cli_run):
    r = cli_run(["--help"])
    assert "import" in r.output
    assert cli_run(["import", "--help"]).exit_code == 0


def test_an_imported_source_is_never_rebuilt_as_torch():
    from edgecnn.errors import ArtifactError
    from edgecnn.models.sources import ModelSource

    with pytest.raises(ArtifactError, match="imported from the ONNX file sq.onnx: there is no torch network"):
        ModelSource.from_record({"kind": "onnx-import", "file": "sq.onnx"}, "'runs/sq'")
