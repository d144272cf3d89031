"""Issue 15, part 2: augmentation as a policy (``--augment none|light|default|FILE`` on train and every
fine-tuning stage, recorded in the manifest, no flips for single-channel data by default, the distillation
teacher on the student's own augmented batch and warned about when it fails there) and the input spec of a
folder taken from its images (printed), with plain progress lines when stdout is not a terminal.

The data is a real folder of 28x28 grayscale PNGs made from the bundled digits (40 per class)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from edgecnn.artifact import Artifact
from edgecnn.data.augment import AugmentationWarning, AugmentPolicy
from edgecnn.data.images import train_transform
from edgecnn.data.shape import input_from_folder
from edgecnn.data.source import DataSource
from edgecnn.errors import OptionError
from edgecnn.train import TrainConfig, train

PER_CLASS = 40


def _digit_folder(root: Path) -> Path:
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    for c in range(10):
        for i in rng.choice(np.flatnonzero(d.target == c), PER_CLASS, replace=False):
            img = Image.fromarray((d.images[i] / 16 * 255).astype(np.uint8), mode="L").resize((28, 28), Image.BILINEAR)
            (root / str(c)).mkdir(parents=True, exist_ok=True)
            img.save(root / str(c) / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def digits28(tmp_path_factory) -> Path:
    """400 grayscale 28x28 PNGs in 10 class folders (the bundled digits, upscaled)."""
    return _digit_folder(tmp_path_factory.mktemp("digits28") / "digits")


@pytest.fixture(scope="module")
def teacher28(tmp_path_factory, digits28) -> Artifact:
    """lenet5 trained on the folder without augmentation: a teacher that knows upright digits only."""
    out = tmp_path_factory.mktemp("teacher") / "lenet5"
    config = TrainConfig(epochs=5, batch_size=32, lr=0.1, label_smoothing=0.1, augment="none")
    return train("lenet5", data=digits28, out=out, config=config, progress=False)


def _params(path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())["stage"]["params"]


def _flips(transform) -> list:
    return [t for t in transform.transforms if isinstance(t, (T.RandomHorizontalFlip, T.RandomVerticalFlip))]


# -- train --------------------------------------------------------------------------------------------
def test_lenet5_on_gray_digit_folder_trains_without_flips_by_default(digits28, tmp_path, cli_run):
    out = tmp_path / "lenet5"
    r = cli_run(["train", "lenet5", "--data", digits28, "--out", out, "--epochs", "1", "--batch-size", "32"])
    assert r.exit_code == 0, r.output
    assert "augment 'default': random resized crop (area 0.5-1)" in r.output
    assert "flip" not in r.output.split("augment 'default'")[1].splitlines()[0]
    aug = _params(out)["augment"]
    assert aug["name"] == "default" and aug["hflip"] is None and aug["hflip_applied"] is False
    assert not any("flip" in s for s in aug["steps"]), aug
    # the training set train() reads with that policy has no flip step
    art = Artifact.load(out)
    train_set = DataSource.parse(digits28).dataset(art.input, "train", augment=AugmentPolicy.parse(aug["name"]))
    assert not _flips(train_set.transform) and art.input_shape == (1, 32, 32)


def test_default_policy_flips_color_input_only():
    gray = {"channels": 1, "height": 32, "width": 32, "mean": [0.5], "std": [0.5]}
    rgb = {**gray, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert not _flips(train_transform(gray, "default"))
    assert [type(t) for t in _flips(train_transform(rgb, "default"))] == [T.RandomHorizontalFlip]
    assert not _flips(train_transform(rgb, "light")) and not _flips(train_transform(rgb, "none"))
    assert [type(t) for t in _flips(train_transform(gray, {"hflip": True}))] == [T.RandomHorizontalFlip]
    # the bundled digits (8x8 arrays) get their own jitter under any policy but none, never a flip
    digits = AugmentPolicy.parse("default").record(3, DataSource.parse("digits"))
    assert digits["hflip_applied"] is False and "jitter" in digits["steps"][0]


def test_augment_none_trains_on_the_eval_preprocessing(digits28):
    spec = {"channels": 1, "height": 32, "width": 32, "mean": [0.5], "std": [0.5], "resize": 37, "crop": [32, 32]}
    plain = DataSource.parse(digits28).dataset(spec, "train")
    none = DataSource.parse(digits28).dataset(spec, "train", augment=AugmentPolicy.parse("none"))
    assert torch.equal(none[0][0], plain[0][0]) and torch.equal(none[5][0], plain[5][0])


@pytest.mark.parametrize(
    "flags, name", [(["--augment", "light"], "light"), (["--no-augment"], "none"), (["--augment", "none"], "none")]
)
def test_train_records_the_augment_option(digits28, tmp_path, cli_run, flags, name):
    out = tmp_path / "m"
    r = cli_run(["train", "lenet5", "--data", digits28, "--out", out, "--epochs", "0", *flags])
    assert r.exit_code == 0, r.output
    aug = _params(out)["augment"]
    assert aug["name"] == name
    if name == "light":
        assert aug["rotate"] == 10.0 and aug["crop_scale"] == [0.8, 1.0] and aug["hflip_applied"] is False
    else:
        assert aug["steps"] == [] and aug["crop_scale"] is None


def test_augment_file_is_an_options_object(digits28, tmp_path, cli_run):
    policy = tmp_path / "mild.yaml"
    policy.write_text("base: light\nrotate: 5\ncrop-scale: [0.9, 1.0]\nbrightness: 0.2\n")
    out = tmp_path / "m"
    r = cli_run(["train", "lenet5", "--data", digits28, "--out", out, "--epochs", "0", "--augment", policy])
    assert r.exit_code == 0, r.output
    aug = _params(out)["augment"]
    assert aug["name"] == "mild" and aug["file"] == str(policy)
    assert (aug["rotate"], aug["crop_scale"], aug["brightness"], aug["crop_ratio"]) == (
        5.0,
        [0.9, 1.0],
        0.2,
        [0.9, 1.1],
    )
    assert aug["steps"][0] == "random resized crop (area 0.9-1)"


def test_bad_augment_values_are_usage_errors(digits28, tmp_path, cli_run):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rotat: 5\n")
    r = cli_run(["train", "lenet5", "--data", digits28, "--out", tmp_path / "a", "--augment", bad])
    assert r.exit_code == 2 and "unknown option 'rotat'" in r.output and "Did you mean 'rotate'" in r.output
    r = cli_run(["train", "lenet5", "--data", digits28, "--out", tmp_path / "b", "--augment", "ligth"])
    assert r.exit_code == 2 and "Did you mean 'light'" in r.output, r.output
    r = cli_run(["train", "lenet5", "--data", digits28, "--out", tmp_path / "c", "--augment", "light", "--no-augment"])
    assert r.exit_code == 2 and "contradict" in r.output
    bad.write_text("crop-scale: [0.9, 0.5]\n")
    with pytest.raises(OptionError, match="crop-scale"):
        AugmentPolicy.parse(str(bad))
    bad.write_text("rotate: 400\n")
    with pytest.raises(OptionError, match="rotate must be between 0 and 180"):
        AugmentPolicy.parse(str(bad))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- input spec from the data, progress -------------------------------------------------------------
def test_gray_28px_folder_gets_a_data_derived_input_and_it_is_printed(digits28, tmp_path, cli_run):
    """resnet18's own input is 3x224x224; 28x28 grayscale data gives 1x32x32, said before training."""
    out = tmp_path / "r18"
    r = cli_run(["train", "resnet18", "--data", digits28, "--out", out, "--epochs", "0"])
    assert r.exit_code == 0, r.output
    assert "input 1x32x32 (from the data: " in r.output and "grayscale" in r.output, r.output
    assert Artifact.load(out).input_shape == (1, 32, 32)
    assert _params(out)["input_from"]["median_short_side"] == 28
    r = cli_run(
        ["train", "resnet18", "--data", digits28, "--out", tmp_path / "x", "--epochs", "0", "--input-size", "40"]
    )
    assert r.exit_code == 0 and Artifact.load(tmp_path / "x").input_shape == (1, 40, 40), r.output


def test_input_rule_for_color_photos(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (640, 480), (i * 40, 10, 200)).save(tmp_path / c / f"{i}.jpg")
    found = input_from_folder(tmp_path, min_input=1, default_side=224)
    assert (found.channels, found.side, found.grayscale) == (3, 224, False)
    assert input_from_folder(tmp_path, min_input=1, default_side=800).side == 480


def test_progress_is_plain_lines_when_stdout_is_not_a_terminal(digits28, tmp_path, cli_run, monkeypatch):
    monkeypatch.setenv("EDGECNN_PROGRESS_EVERY", "0")  # a line per batch (default: every 30 s)
    r = cli_run(["train", "lenet5", "--data", digits28, "--out", tmp_path / "m", "--epochs", "1", "--batch-size", "64"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("epoch 1/1  batch ")]
    assert len(lines) == 5 and lines[-1].startswith("epoch 1/1  batch 5/5  loss "), r.output
    assert all(" elapsed " in ln and ln.endswith(" s") and "\r" not in ln for ln in lines)


# -- fine-tuning stages -----------------------------------------------------------------------------------
def test_prune_and_sparsify_record_the_augment_option(teacher28, digits28, tmp_path, cli_run):
    common = ["--finetune-epochs", "1", "--data", digits28, "--augment", "light", "--batch-size", "64"]
    r = cli_run(["prune", teacher28.path, "--out", tmp_path / "p", "--ratio", "0.3", *common, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert _params(tmp_path / "p")["finetune"]["augment"]["name"] == "light"
    r = cli_run(["sparsify", teacher28.path, "--out", tmp_path / "s", "--pattern", "unstructured", *common])
    assert r.exit_code == 0, r.output
    assert _params(tmp_path / "s")["finetune"]["augment"]["name"] == "light"
    r = cli_run(["prune", teacher28.path, "--out", tmp_path / "q", "--ratio", "0.3", "--augment", "light"])
    assert r.exit_code == 2 and "add --finetune-epochs" in r.output, r.output


def test_compress_recipe_sweep_and_qat_take_the_augment_option(digits28, tmp_path):
    from edgecnn.compress.quantize import QuantizeOptions
    from edgecnn.compress.recipe import CompressRecipe, RecipeError
    from edgecnn.sweep import SweepOptions

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: lenet5\nprune: 0.3\ndata: {digits28}\naugment: light\nint8: true\ncalib: digits\nqat: true\n"
    )
    plan = CompressRecipe.load(recipe).plan()
    assert plan.prune.policy.name == "light" and plan.int8.augment.name == "light"
    plan = CompressRecipe.from_mapping(
        {"model": "lenet5", "prune": 0.3, "data": "digits", "int8": True, "calib": "d"}
    ).plan()
    assert plan.prune.policy.name == "default" and plan.int8.augment is None  # QAT keeps its measured 'none'
    with pytest.raises(RecipeError, match="--augment light sets the images of fine-tuning"):
        CompressRecipe.from_mapping({"model": "lenet5", "int8": True, "calib": "digits", "augment": "light"}).validate()
    sweep = SweepOptions().merged(data=str(digits28), finetune_epochs=1, augment="light")
    assert sweep.plan(0.3, "fp32").prune.policy.name == "light"
    assert sweep.settings(type("A", (), {"sha256": "x", "model": "m"})(), "cpu")["augment"]["name"] == "light"
    with pytest.raises(OptionError, match="add --qat"):
        QuantizeOptions(calib="digits", data="digits", augment="light").validate()


def test_compress_cli_records_augment_in_the_pruned_manifest(teacher28, digits28, tmp_path, cli_run):
    run = tmp_path / "c"
    args = ["compress", teacher28.path, "--prune", "0.3", "--finetune-epochs", "1", "--data", digits28]
    r = cli_run([*args, "--augment", "light", "--no-bench", "--out", run])
    assert r.exit_code == 0, r.output
    assert _params(run / "pruned")["finetune"]["augment"]["name"] == "light"


def test_qat_fine_tuning_records_its_augmentation(teacher28, digits28):
    from edgecnn.compress.qat import qat_finetune
    from edgecnn.models import load_torch_model

    teacher = load_torch_model(teacher28)
    student = load_torch_model(teacher28)
    policy = AugmentPolicy.parse("light")
    train_set = DataSource.parse(digits28).dataset(teacher28.input, "train", augment=policy)
    calib = [np.stack([train_set[i][0].numpy() for i in range(8)])]
    rec = qat_finetune(student, teacher, train_set, calib, epochs=1, augment=(policy, teacher28.metrics["top1"]))
    assert rec["augment"]["name"] == "light" and rec["augment"]["hflip_applied"] is False
    assert rec["teacher_top1_augmented"] is not None


# -- distillation -----------------------------------------------------------------------------------------
def test_distill_teacher_and_student_get_the_identical_augmented_tensor(teacher28, digits28):
    from edgecnn.compress.distill import build_kd
    from edgecnn.fitting import fit
    from edgecnn.models import load_torch_model

    teacher, student = load_torch_model(teacher28), load_torch_model(teacher28)
    train_set = DataSource.parse(digits28).dataset(teacher28.input, "train", augment=AugmentPolicy.parse("default"))
    seen = {"student": [], "teacher": []}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, who=who: seen[who].append(args[0].detach().clone()))
        for who, m in (("student", student), ("teacher", teacher))
    ]
    trained, loss_fn = build_kd(student, teacher, input_shape=teacher28.input_shape)
    fit(trained, train_set, None, TrainConfig(epochs=1, batch_size=64, device="cpu"), loss_fn=loss_fn, progress=False)
    for h in hooks:
        h.remove()
    assert len(seen["student"]) == len(seen["teacher"]) == 5
    assert all(torch.equal(s, t) for s, t in zip(seen["student"], seen["teacher"]))
    assert not torch.equal(seen["student"][0], seen["student"][1])


def test_distill_warns_about_a_teacher_that_fails_on_the_augmented_images(teacher28, digits28, tmp_path, cli_run):
    mirror = tmp_path / "mirror.yaml"
    mirror.write_text("hflip: true\nvflip: true\n")
    base = ["distill", teacher28.path, "--teacher", teacher28.path, "--data", digits28, "--epochs", "1"]
    r = cli_run([*base, "--out", tmp_path / "flip", "--augment", mirror, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "warning: The teacher scores" in r.output and "horizontal flip" in r.output, r.output
    rep = json.loads((tmp_path / "flip" / "manifest.json").read_text())["distillation"]
    assert rep["teacher_top1_augmented"] < rep["teacher_top1"] - 0.15
    assert _params(tmp_path / "flip")["augment"]["file"] == str(mirror)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AugmentationWarning)
        r = cli_run([*base, "--out", tmp_path / "light", "--augment", "light", "--no-progress"])
    assert r.exit_code == 0 and "warning: The teacher" not in r.output, r.output
    assert _params(tmp_path / "light")["augment"]["name"] == "light"
