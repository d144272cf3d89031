"""`edgecnn models / train / eval` through click: help, happy paths (digits, ImageFolder of real PNG files,
single folder + --val-split, torchvision weights) and every error path of issue 2 - exit 1 (2 for usage),
one line, no traceback, nothing half-written."""

from __future__ import annotations

import json

import pytest
import torch
from test_data import write_digit_folder

from edgecnn.artifact import Artifact


def assert_clean_failure(result, code: int, *needles: str, out=None):
    """Exit ``code``, exactly one error line naming the problem, no traceback, nothing half-written."""
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, text
    if code == 1:
        assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    if out is not None:
        assert not out.exists(), f"{out} was written"
        assert not list(out.parent.glob(f".{out.name}.tmp-*")), "temporary directory left behind"


@pytest.mark.parametrize("cmd", ["train", "eval", "models"])
def test_help(cli_run, cmd):
    r = cli_run([cmd, "--help"])
    assert r.exit_code == 0 and "Usage: edgecnn " + cmd in r.output


def test_models_table_and_json(cli_run, tmp_path):
    r = cli_run(
        [
            "models",
            "lenet5",
            "resnet18",
            "vgg16",
            "--input-size",
            "32",
            "--in-channels",
            "1",
            "--num-classes",
            "10",
            "--json",
            tmp_path / "zoo.json",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "lenet5" in r.output and "61,706" in r.output and "LeCun" in r.output
    rows = json.loads((tmp_path / "zoo.json").read_text())
    assert [row["name"] for row in rows] == ["lenet5", "resnet18", "vgg16"]
    assert all(row["input"] == [1, 32, 32] for row in rows)
    full = cli_run(["models"])
    assert full.exit_code == 0 and all(n in full.output for n in ("densenet201", "googlenet", "vgg19_bn", "alexnet"))
    r = cli_run(["models", "resnet5"])
    assert_clean_failure(r, 1, "Unknown model 'resnet5'", "Did you mean 'resnet50'?")


def test_train_digits_json_and_resume(cli_run, tmp_path):
    out = tmp_path / "lenet"
    r = cli_run(
        ["train", "lenet5", "--data", "digits", "--epochs", "2", "--out", out, "--json", tmp_path / "t.json", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert "val top-1" in r.output and "digits/lenet5" in r.output
    art = Artifact.load(out, verify=True)
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["artifact"] == str(out) and data["metrics"]["top1"] == art.metrics["top1"]
    assert 0.5 < data["metrics"]["top1"] <= 1.0 and len(data["history"]) == 2
    assert art.manifest["input"]["channels"] == 1 and art.manifest["environment"]["versions"]["torch"]
    # resume from the checkpoint written next to --out, with its own settings (other settings are refused:
    # tests/test_integrity_read.py); a finished run is written again as it was
    ckpt = out.parent / "lenet.ckpt.pt"
    r = cli_run(["train", "lenet5", "--data", "digits", "--epochs", "2", "--out", out, "--resume", ckpt, "-q"])
    assert r.exit_code == 0, r.output
    art = Artifact.load(out)
    assert art.manifest["stage"]["params"]["resumed_at_epoch"] == 2 and len(art.manifest["history"]) == 2
    r = cli_run(["train", "resnet18", "--data", "digits", "--epochs", "3", "--out", tmp_path / "r", "--resume", ckpt])
    assert_clean_failure(r, 1, "is for lenet5, not resnet18", out=tmp_path / "r")
    r = cli_run(
        ["train", "lenet5", "--data", "digits", "--out", tmp_path / "r", "--resume", ckpt, "--weights", "imagenet"]
    )
    assert_clean_failure(r, 2, "drop --weights", out=tmp_path / "r")


def test_eval_torch_and_onnx(cli_run, lenet_digits, lenet_onnx, tmp_path):
    r = cli_run(["eval", lenet_digits.path, "--data", "digits", "--json", tmp_path / "e.json", "-q"])
    assert r.exit_code == 0, r.output
    assert "top-1" in r.output and "top-5" in r.output and "images/s" in r.output and "per-class" in r.output
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["top1"] == pytest.approx(lenet_digits.metrics["top1"]) and 0.98 <= res["top1"] <= 1.0
    assert len(res["per_class"]) == 10 and res["n"] == 360 and res["images_per_second"] > 0
    r = cli_run(
        ["eval", lenet_onnx.path, "--data", "digits", "--batch-size", "32", "--json", tmp_path / "o.json", "-q"]
    )
    assert r.exit_code == 0, r.output
    onnx = json.loads((tmp_path / "o.json").read_text())
    assert onnx["format"] == "onnx" and abs(onnx["top1"] - res["top1"]) <= 1 / 360


def test_eval_errors(cli_run, lenet_digits, tmp_path):
    r = cli_run(["eval", tmp_path / "nothing", "--data", "digits"])
    assert_clean_failure(r, 1, "does not exist")
    (tmp_path / "plain").mkdir()
    r = cli_run(["eval", tmp_path / "plain", "--data", "digits"])
    assert_clean_failure(r, 1, "no manifest.json")
    root = write_digit_folder(tmp_path / "three", per_class=2, classes=range(3))
    r = cli_run(["eval", lenet_digits.path, "--data", root])
    assert_clean_failure(r, 1, "has 3 classes but the model predicts 10")
    r = cli_run(["eval", lenet_digits.path, "--data", "digits", "--batch-size", "0"])
    assert_clean_failure(r, 2, "--batch-size")


def test_train_imagefolder_of_png_files(cli_run, tmp_path):
    root = write_digit_folder(tmp_path / "pngs", per_class=20)
    out = tmp_path / "folder-model"
    r = cli_run(
        [
            "train",
            "lenet5",
            "--data",
            root,
            "--epochs",
            "8",
            "--lr",
            "0.05",
            "--batch-size",
            "16",
            "--no-augment",
            "--out",
            out,
            "--json",
            tmp_path / "f.json",
            "-q",
        ]
    )
    assert r.exit_code == 0, r.output
    art = Artifact.load(out, verify=True)
    assert art.classes == [f"digit{i}" for i in range(10)]
    assert art.manifest["stage"]["params"]["recipe"] == "default"
    assert art.metrics["top1"] >= 0.6  # 100 val PNGs, 10 classes: far above chance
    r = cli_run(["eval", out, "--data", root, "--json", tmp_path / "fe.json", "-q"])
    assert r.exit_code == 0 and json.loads((tmp_path / "fe.json").read_text())["top1"] == pytest.approx(
        art.metrics["top1"]
    )


def test_train_single_folder_with_val_split(cli_run, tmp_path):
    root = write_digit_folder(tmp_path / "flat", split=None, per_class=10, classes=range(4))
    out = tmp_path / "split-model"
    r = cli_run(["train", "lenet5", "--data", root, "--val-split", "0.3", "--epochs", "1", "--out", out, "-q"])
    assert r.exit_code == 0, r.output
    r = cli_run(["eval", out, "--data", root, "--val-split", "0.3", "--json", tmp_path / "s.json", "-q"])
    assert r.exit_code == 0 and json.loads((tmp_path / "s.json").read_text())["n"] == 12
    r = cli_run(["train", "lenet5", "--data", root, "--val-split", "1.5", "--epochs", "1", "--out", tmp_path / "bad"])
    assert_clean_failure(r, 2, "--val-split", out=tmp_path / "bad")


def test_train_error_paths(cli_run, tmp_path):
    out = tmp_path / "out"
    r = cli_run(["train", "resnet5", "--data", "digits", "--out", out])
    assert_clean_failure(r, 1, "Unknown model 'resnet5'", "Did you mean 'resnet50'?", out=out)
    r = cli_run(["train", "lenet5", "--data", tmp_path / "missing", "--epochs", "1", "--out", out])
    assert_clean_failure(r, 1, "does not exist", out=out)
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    r = cli_run(["train", "lenet5", "--data", tmp_path / "empty", "--epochs", "1", "--out", out])
    assert_clean_failure(r, 1, "holds no images", out=out)
    r = cli_run(["train", "lenet5", "--data", "digits", "--epochs", "1", "--input-size", "big", "--out", out])
    assert_clean_failure(r, 2, "is not a size", out=out)
    r = cli_run(["train", "lenet5", "--data", "digits", "--optimizer", "lamb", "--out", out])
    assert_clean_failure(r, 2, "lamb", out=out)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("user data")
    r = cli_run(["train", "lenet5", "--data", "digits", "--epochs", "1", "--out", tmp_path / "mine"])
    assert_clean_failure(r, 1, "not an edgecnn artifact")
    assert (tmp_path / "mine" / "keep.txt").read_text() == "user data"


def test_corrupt_image_fails_naming_it_or_is_skipped(cli_run, tmp_path):
    root = write_digit_folder(tmp_path / "d", per_class=4, classes=range(3))
    bad = root / "train" / "digit1" / "zz-broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "m"
    r = cli_run(["train", "lenet5", "--data", root, "--epochs", "1", "--out", out, "-q"])
    assert_clean_failure(r, 1, str(bad), "--skip-corrupt", out=out)
    r = cli_run(
        [
            "train",
            "lenet5",
            "--data",
            root,
            "--epochs",
            "1",
            "--out",
            out,
            "--skip-corrupt",
            "-q",
            "--json",
            tmp_path / "j.json",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable" in r.output
    assert json.loads((tmp_path / "j.json").read_text())["config"]["skipped_images"] == 1


def test_weights_error_paths(cli_run, tmp_path, monkeypatch):
    from edgecnn.models import create_model

    out = tmp_path / "w"
    mismatched = tmp_path / "r34.pth"
    torch.save(create_model("resnet34", num_classes=10).state_dict(), mismatched)
    args = [
        "train",
        "resnet18",
        "--data",
        "synthetic:8",
        "--num-classes",
        "10",
        "--input-size",
        "32",
        "--epochs",
        "1",
        "--out",
        out,
        "-q",
        "--weights",
    ]
    r = cli_run(args + [mismatched])
    assert_clean_failure(r, 1, "do not fit resnet18", "unexpected key(s): layer1.2.conv1.weight", out=out)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not torch")
    r = cli_run(args + [garbage])
    assert_clean_failure(r, 1, "Cannot read weights file", str(garbage), out=out)
    r = cli_run(args + [tmp_path / "absent.pth"])
    assert_clean_failure(r, 1, "does not exist", out=out)
    # --weights imagenet offline: fails fast, names the file and where to put it
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    r = cli_run(args + ["imagenet"])
    cache = tmp_path / "th" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert_clean_failure(r, 1, "Could not download ImageNet weights", str(cache), out=out)


def test_torchvision_weights_through_the_cli_give_identical_logits(cli_run, tmp_path):
    import torchvision

    from edgecnn.models import load_torch_model

    torch.manual_seed(0)
    theirs = torchvision.models.resnet18().eval()
    path = tmp_path / "tv-r18.pth"
    torch.save(theirs.state_dict(), path)
    out = tmp_path / "imported"
    r = cli_run(
        [
            "train",
            "resnet18",
            "--data",
            "synthetic:4",
            "--num-classes",
            "1000",
            "--input-size",
            "64",
            "--epochs",
            "0",
            "--weights",
            path,
            "--out",
            out,
            "-q",
        ]
    )
    assert r.exit_code == 0, r.output
    ours = load_torch_model(Artifact.load(out))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
