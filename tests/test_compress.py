"""'edgecnn compress': recipes (YAML, unknown keys, conflicts), the chain as a library function, the run
folder layout the deploy step relies on, the example recipes, and the command's error paths."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import pytest
from cli_helpers import one_line_error

from edgecnn.artifact import Artifact
from edgecnn.compress.pipeline import compress
from edgecnn.compress.recipe import CompressRecipe, RecipeError
from edgecnn.errors import WeightsError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "examples" / "recipes").glob("*.yaml"))


# -- recipes -----------------------------------------------------------------------------------------
def test_recipe_unknown_key_suggests(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: lenet5\nint8: true\ncalibb: digits\n")
    with pytest.raises(RecipeError, match=r"unknown option 'calibb'.*Did you mean 'calib'"):
        CompressRecipe.load(p)
    p.write_text("model: lenet5\nfinetune_epoch: 3\n")
    with pytest.raises(RecipeError, match="Did you mean 'finetune_epochs'"):
        CompressRecipe.load(p)


def test_recipe_kebab_and_snake_case_and_types(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: lenet5\nint8: true\ncalib: digits\nsubset-size: 64\nmax_drop: 0.5\ndata: digits\n")
    r = CompressRecipe.load(p)
    assert (r.subset_size, r.max_drop, r.int8) == (64, 0.5, True)
    r.validate()
    p.write_text("model: lenet5\nint8: yes-please\n")
    with pytest.raises(RecipeError, match="true or false"):
        CompressRecipe.load(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="mapping"):
        CompressRecipe.load(p)
    p.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        CompressRecipe.load(p)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"int8": True, "fp16": True, "calib": "digits"}, "one precision"),
        ({"int8": True}, "--int8 needs calibration"),
        ({"calib": "digits", "prune": 0.5}, "--calib is only used by --int8"),
        ({"fp16_io": True, "fp16": False, "prune": 0.5}, "--fp16-io only applies"),
        ({"int8": True, "calib": "digits", "max_drop": 0.3}, "--max-drop needs --data"),
        ({"int8": True, "calib": "digits", "qat": True}, "--qat needs --data"),
        ({"distill": True, "int8": True, "calib": "digits", "data": "digits"}, "needs --prune"),
        ({"prune": 1.5}, "between 0 and 1"),
        ({"prune": 0.5, "compact_names": True}, "--compact-names belongs to INT8"),
        ({}, "Nothing to do"),
    ],
)
def test_recipe_conflicts(options, message):
    with pytest.raises(RecipeError, match=message):
        CompressRecipe(model="lenet5").merged(options).validate()


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_example_recipes_are_valid(recipe):
    r = CompressRecipe.load(recipe)
    r.validate()
    assert r.name == recipe.stem and (r.int8 or r.fp16 or r.prune)


# -- the chain ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lenet_run(lenet_digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "lenet-int8"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compress(
            str(lenet_digits.path),
            int8=True,
            calib="digits",
            subset_size=64,
            data="digits",
            target="cpu",
            out=str(out),
            bench_seconds=0.2,
            progress=False,
        )


def test_chain_report_and_run_folder(lenet_digits, lenet_run):
    run = Path(lenet_run["run"])
    report = json.loads((run / "compress.json").read_text())
    assert report["final"] == lenet_run["final"] and report["final_precision"] == "int8"
    final = Artifact.load(report["final"])
    assert final.precision == "int8" and final.root_id == lenet_digits.root_id
    assert (run / "final").resolve() == final.path.resolve()  # the link the deploy step can follow
    rows = report["table"]["rows"]
    assert [r["label"] for r in rows] == ["original", "int8"]
    orig, q = rows
    assert orig["precision"] == "fp32" and orig["agreement"] == 1.0 and orig["speedup"] == 1.0
    assert q["size_ratio"] > 2.5 and q["agreement"] >= 0.97 and abs(q["top1_drop_pt"]) <= 1.0
    assert q["latency_ms"] > 0 and q["macs"] == orig["macs"]
    assert "360 held-out images" in report["table"]["images"]
    assert [s["step"] for s in report["steps"]] == ["source", "export original", "int8"]


def test_default_run_folder_and_pruning_chain(lenet_digits, tmp_path, monkeypatch):
    """No --out: runs/compress/<model>-<timestamp>/ under the current directory; prune + distil + FP16."""
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = compress(
            str(lenet_digits.path),
            prune=0.5,
            distill=True,
            finetune_epochs=1,
            fp16=True,
            data="digits",
            bench=False,
            progress=False,
        )
    run = Path(report["run"])
    assert run.parent == Path("runs") / "compress" and run.name.startswith("lenet5-")
    assert [r["label"] for r in report["table"]["rows"]] == ["original", "pruned", "fp16"]
    pruned = report["table"]["rows"][1]
    assert pruned["params"] < report["table"]["rows"][0]["params"] / 2
    assert Artifact.load(report["final"]).precision == "fp16"
    assert "latency_ms" not in pruned


def test_model_name_without_weights_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty torch cache
    with pytest.raises(WeightsError, match=r"--weights FILE.*--weights random"):
        compress("resnet18", int8=True, calib="calibration", out=str(tmp_path / "r"), progress=False)


def test_model_name_with_random_weights(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = compress(
            "resnet18",
            weights="random",
            input_size=32,
            int8=True,
            calib=str(ROOT / "calibration"),
            subset_size=8,
            target="tensorrt",
            out=str(tmp_path / "r"),
            bench=False,
            progress=False,
        )
    final = Artifact.load(report["final"])
    assert final.manifest["quantization"]["validation"]["passed"]
    assert "calibration images" in report["table"]["images"]
    original = Artifact.load(report["original"])
    assert original.manifest["stage"]["params"]["weights"] == "random" and original.num_classes == 1000


def test_example_recipe_runs(lenet_digits, tmp_path):
    """The LeNet recipe as written, with the model pointed at the test's artifact and fewer epochs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = compress(
            str(lenet_digits.path),
            recipe=ROOT / "examples" / "recipes" / "lenet5-prune-kd-int8.yaml",
            finetune_epochs=1,
            subset_size=32,
            out=str(tmp_path / "r"),
            bench=False,
            progress=False,
        )
    assert report["recipe"]["prune"] == 0.6 and report["recipe"]["distill"] is True
    assert report["recipe_file"].endswith("lenet5-prune-kd-int8.yaml")
    assert [r["label"] for r in report["table"]["rows"]] == ["original", "pruned", "int8"]
    final = Artifact.load(report["final"])  # compact-names: true in the recipe
    table = final.manifest["quantization"]["compact_names"]["names"]
    model = onnx.load(str(final.model_file))
    assert {i.name for i in model.graph.initializer} <= set(table) and not any(n.name for n in model.graph.node)
    assert any(orig.startswith("scale_") for orig in table.values())


# -- the command -------------------------------------------------------------------------------------
def test_compress_cli(lenet_digits, tmp_path, cli_run):
    r = cli_run(["compress", "--help"])
    assert r.exit_code == 0 and "--recipe" in r.output and "--int8" in r.output
    r = cli_run(
        [
            "compress",
            lenet_digits.path,
            "--int8",
            "--calib",
            "digits",
            "--subset-size",
            "32",
            "--data",
            "digits",
            "--bench-seconds",
            "0.2",
            "--out",
            tmp_path / "c",
            "--json",
            tmp_path / "c.json",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "original vs compressed" in r.output and "speed-up vs original" in r.output and "top-1" in r.output
    assert json.loads((tmp_path / "c.json").read_text())["final"].endswith("int8")


@pytest.mark.parametrize(
    "args,text",
    [
        (["--int8"], "--calib"),
        (["--int8", "--fp16", "--calib", "digits"], "one precision"),
        (["--fp16", "--fp16-io", "--calib", "digits"], "--calib is only used by --int8"),
        (["--fp16-io", "--prune", "0.5"], "--fp16-io"),
        (["--prune", "0.5", "--distill"], "--data"),
        ([], "Nothing to do"),
    ],
)
def test_compress_cli_usage_errors(lenet_digits, tmp_path, cli_run, args, text):
    r = cli_run(["compress", lenet_digits.path, *args, "--out", tmp_path / "o"])
    assert r.exit_code == 2, r.output
    assert text in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_compress_cli_recipe_errors(tmp_path, cli_run):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lenet5\nint8: true\ncalibration: digits\n")
    r = cli_run(["compress", "--recipe", bad])
    assert r.exit_code == 2 and "calibration" in r.output and "Did you mean 'calib'" in r.output
    assert "Traceback" not in r.output
    r = cli_run(["compress", "--recipe", tmp_path / "missing.yaml"])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_compress_cli_user_errors(tmp_path, cli_run):
    r = cli_run(["compress", "resnet5", "--int8", "--calib", "digits", "--weights", "random", "--out", tmp_path / "o"])
    one_line_error(r, 1)
    assert "Did you mean 'resnet50'" in r.output
    r = cli_run(
        ["compress", "lenet5", "--weights", "random", "--int8", "--calib", tmp_path / "none", "--out", tmp_path / "o2"]
    )
    one_line_error(r, 1)
    assert "does not exist" in r.output


def test_slower_int8_is_said_not_hidden():
    from edgecnn.compress.pipeline import slower_than_float

    rows = [
        {
            "label": "original",
            "precision": "fp32",
            "speedup": 1.0,
            "latency_ms": 8.0,
            "size_ratio": 1.0,
            "artifact": "run/original-onnx",
        },
        {
            "label": "int8",
            "precision": "int8",
            "speedup": 0.6,
            "latency_ms": 13.3,
            "size_ratio": 3.8,
            "artifact": "run/int8",
        },
    ]
    (msg,) = slower_than_float({"rows": rows})
    assert "int8 ran 1.67x slower than original" in msg and "run/original-onnx" in msg and "TensorRT" in msg
    rows[1]["speedup"] = 1.9
    assert slower_than_float({"rows": rows}) == []
    assert slower_than_float({"rows": [dict(r, speedup=None) for r in rows]}) == []  # --no-bench: nothing to say
