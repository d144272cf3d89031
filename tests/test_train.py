"""Training and evaluation on the bundled digits: the tuned recipes reach their accuracy, checkpoints resume
exactly, evaluation through a runner agrees with the training loop, and bad settings fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecnn.artifact import Artifact
from edgecnn.data import DataSource
from edgecnn.errors import InvalidInput, OptionError, WeightsError
from edgecnn.evaluation import evaluate, evaluate_module, scores
from edgecnn.train import (
    DIGITS_RECIPES,
    TrainConfig,
    TrainingDiverged,
    checkpoint_path,
    configure,
    fit,
    lr_factor,
    read_checkpoint,
    recipe,
    train,
)


def test_lenet5_digits_recipe_reaches_98_percent(lenet_digits):
    """The issue's claim: LeNet-5 at 1x32x32, exact paper-architecture params, >= 98 % top-1 held out."""
    m = lenet_digits.metrics
    assert lenet_digits.input_shape == (1, 32, 32)
    assert m["params"] == 61706
    assert m["top1"] >= 0.98, m
    assert m["eval_data"]["source"] == "digits" and m["eval_data"]["split"] == "val"
    assert len(lenet_digits.manifest["history"]) == lenet_digits.manifest["stage"]["params"]["epochs"]
    # the number in the manifest is reproduced by evaluating the artifact through its runner
    r = evaluate(lenet_digits, "digits")
    assert r["n"] == 360 and r["top1"] == pytest.approx(m["top1"]) and r["top5"] >= r["top1"]
    assert set(r["per_class"]) == set(lenet_digits.classes) and sum(r["per_class_n"].values()) == 360
    assert r["images_per_second"] > 0 and r["runner"].startswith("torch")


@pytest.mark.slow
def test_resnet18_digits_recipe_reaches_97_percent(tmp_path):
    """The issue's claim for ResNet-18, with the library's recipe (1x32x32) and nothing else set."""
    art = train("resnet18", data="digits", out=tmp_path / "r18", progress=False)
    assert art.input_shape == (1, 32, 32)
    assert art.manifest["stage"]["params"]["recipe"] == "digits/resnet18"
    # `make demo` gives 97.22 % (the README's number, also on a 2-core AVX2-only EPYC); under pytest on that
    # machine this test gives 96.67 % (2 of 360 images fewer), and so does the commit before the design
    # consolidation (951b431): float reduction order differs with the thread setup, so the bound leaves
    # that much slack.
    assert art.metrics["top1"] >= 0.96, art.metrics


def test_recipes_and_configure_priorities():
    r = recipe("lenet5", "digits")
    assert (r["name"], r["in_channels"], r["input_size"]) == ("digits/lenet5", 1, 32)
    assert recipe("alexnet", "digits")["input_size"] == 64  # smallest multiple of 8 >= min_input 63
    assert recipe("vgg16", "digits")["input_size"] == 32
    assert recipe("resnet18", "/some/folder") == {
        "name": "default",
        "in_channels": None,
        "input_size": None,
        "config": {},
    }
    assert recipe("lenet5", DataSource.parse("digits")) == r  # text or the parsed source
    c = configure("lenet5", "digits")
    assert (c.epochs, c.lr, c.optimizer) == (DIGITS_RECIPES["lenet5"]["epochs"], DIGITS_RECIPES["lenet5"]["lr"], "sgd")
    c = configure("lenet5", "digits", epochs=3, lr=None)  # None = unset, keeps the recipe's lr
    assert (c.epochs, c.lr) == (3, DIGITS_RECIPES["lenet5"]["lr"])
    c = configure("lenet5", "digits", resume={"config": {"epochs": 7, "lr": 0.02}}, epochs=9)
    assert (c.epochs, c.lr) == (9, 0.02)  # explicit > checkpoint > recipe
    assert configure("resnet50", "folder").epochs == TrainConfig().epochs
    with pytest.raises(OptionError, match="optimizer must be 'sgd' or 'adamw'"):
        configure("lenet5", "digits", optimizer="rmsprop")
    with pytest.raises(OptionError, match="label smoothing"):
        configure("lenet5", "digits", label_smoothing=1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": -1}, "epochs must be >= 0"),
        ({"batch_size": 0}, "batch size must be >= 1"),
        ({"optimizer": "rmsprop"}, "optimizer must be 'sgd' or 'adamw'"),
        ({"lr": 0.0}, "learning rate must be > 0"),
        ({"weight_decay": -1.0}, "weight decay must be >= 0"),
        ({"label_smoothing": 1.0}, r"label smoothing must be in \[0, 1\)"),
        ({"warmup_epochs": -0.5}, "warm-up epochs must be >= 0"),
        ({"schedule": "step"}, "schedule must be 'cosine' or 'constant'"),
        ({"num_workers": -1}, "workers must be >= 0"),
    ],
)
def test_train_config_rules_raise_option_errors(kwargs, match):
    """The rules live in TrainConfig.validate(), raised without the CLI; a recipe mapping is read the same way."""
    with pytest.raises(OptionError, match=match):
        TrainConfig(**kwargs).validate()
    c = TrainConfig.from_mapping({"epochs": 3, "label-smoothing": 0.1, "optimizer": "adamw"})
    assert (c.epochs, c.label_smoothing, c.resolved_lr()) == (3, 0.1, 1e-3)
    with pytest.raises(OptionError, match="Did you mean 'epochs'"):
        TrainConfig.from_mapping({"epoch": 3})


def test_train_option_rules_before_any_work(cli_run, tmp_path):
    """--resume with --weights is refused by the library (before the checkpoint is read), exit 2 via the CLI."""
    with pytest.raises(OptionError, match="--resume restores the weights"):
        train("lenet5", data="digits", out=tmp_path / "x", weights="imagenet", resume=tmp_path / "none.pt")
    r = cli_run(
        [
            "train",
            "lenet5",
            "--data",
            "digits",
            "--out",
            tmp_path / "x",
            "--weights",
            "imagenet",
            "--resume",
            tmp_path / "none.pt",
        ]
    )
    assert r.exit_code == 2 and "drop --weights" in r.output
    assert not (tmp_path / "x").exists()


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 10, "cosine") < 0.01
    assert lr_factor(50, 100, 0, "constant") == 1.0


def test_scores_from_logits():
    # no ties: in row 3 the true class (c) has the lowest logit, so it is outside the top 5 of 6
    logits = np.array(
        [[3, 2, 1, 0.5, 0.2, 0.1], [0.3, 1, 5, 0.2, 0.1, 0], [1, 0.5, -1, 0.2, 0.3, 2], [0.1, 0.2, 0.3, 0.4, 9, 1]],
        dtype=np.float32,
    )
    s = scores(logits, np.array([0, 1, 2, 4]), ["a", "b", "c", "d", "e", "f"])
    assert s["top1"] == 0.5 and s["top5"] == 0.75 and s["n"] == 4
    assert s["per_class"] == {"a": 1.0, "b": 0.0, "c": 0.0, "e": 1.0}


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.1, seed=3)
    full = train("lenet5", data="digits", out=tmp_path / "full", config=cfg, progress=False)

    class Crash(Exception):
        pass

    def crash_after_second(epoch, model, optimizer, record):
        if epoch == 1:
            raise Crash

    out = tmp_path / "crashed"
    with pytest.raises(Crash):
        train("lenet5", data="digits", out=out, config=cfg, progress=False, on_epoch_end=crash_after_second)
    assert not out.exists() and not list(tmp_path.glob(".crashed.tmp-*"))  # nothing half-written
    ckpt = checkpoint_path(out)
    state = read_checkpoint(ckpt)
    assert state["epoch"] == 2 and state["model_name"] == "lenet5" and len(state["history"]) == 2
    resumed = train("lenet5", data="digits", out=out, config=cfg, progress=False, resume=ckpt)
    assert resumed.manifest["stage"]["params"]["resumed_at_epoch"] == 2
    from edgecnn.models import load_torch_model

    a, b = load_torch_model(full).state_dict(), load_torch_model(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on CPU
    assert [h["loss"] for h in resumed.manifest["history"]] == [h["loss"] for h in full.manifest["history"]]
    assert resumed.metrics["top1"] == full.metrics["top1"]


def test_resume_refuses_the_wrong_model_or_input(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=64)
    train("lenet5", data="digits", out=tmp_path / "l", config=cfg, progress=False)
    ckpt = checkpoint_path(tmp_path / "l")
    with pytest.raises(WeightsError, match="is for lenet5, not resnet18"):
        train("resnet18", data="digits", out=tmp_path / "r", config=cfg, resume=ckpt, progress=False)
    with pytest.raises(InvalidInput, match="trained at 1x32x32"):
        train("lenet5", data="digits", out=tmp_path / "l2", config=cfg, resume=ckpt, input_size=40, progress=False)
    (tmp_path / "not.pt").write_bytes(b"nope")
    with pytest.raises(WeightsError, match="Cannot read checkpoint"):
        read_checkpoint(tmp_path / "not.pt")
    torch.save({"fc.weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(WeightsError, match="not an edgecnn training checkpoint.*--weights"):
        read_checkpoint(tmp_path / "plain.pt")


def test_fit_adamw_warmup_and_divergence():
    from edgecnn.data import load_dataset
    from edgecnn.models import create_model, get_spec

    spec = get_spec("lenet5").input_spec()
    train_set, val_set = load_dataset("digits", spec, "train"), load_dataset("digits", spec, "val")
    model = create_model("lenet5", num_classes=10)
    before = evaluate_module(model, val_set)["top1"]
    r = fit(
        model,
        train_set,
        val_set,
        TrainConfig(epochs=2, optimizer="adamw", lr=3e-3, warmup_epochs=0.5, augment=False),
        progress=False,
    )
    assert [h["epoch"] for h in r["history"]] == [1, 2] and r["history"][1]["loss"] < r["history"][0]["loss"]
    assert r["best_top1"] > max(before, 0.7) and r["device"] == "cpu" and r["world_size"] == 1
    rspec = get_spec("resnet18").input_spec(in_channels=1, input_size=32)
    noise = load_dataset("synthetic:32", rspec, "train")
    with pytest.raises(TrainingDiverged, match="lower --lr"):
        fit(
            create_model("resnet18", num_classes=10, in_channels=1, input_size=32),
            noise,
            None,
            TrainConfig(epochs=2, batch_size=16, lr=1e6, weight_decay=0.0),
            progress=False,
        )


def test_train_validates_before_training(tmp_path):
    (tmp_path / "user-files").mkdir()
    (tmp_path / "user-files" / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="exists and is not an edgecnn artifact"):
        train("lenet5", data="digits", out=tmp_path / "user-files", config=TrainConfig(epochs=1), progress=False)
    with pytest.raises(InvalidInput, match="--num-classes 5 but data 'digits' has 10 classes"):
        train("lenet5", data="digits", out=tmp_path / "x", num_classes=5, config=TrainConfig(epochs=1), progress=False)
    with pytest.raises(InvalidInput, match="at least 63x63"):
        train("alexnet", data="digits", out=tmp_path / "x", input_size=32, config=TrainConfig(epochs=1), progress=False)
    assert not (tmp_path / "x").exists()


def test_train_from_an_artifact_keeps_its_input_and_lineage(lenet_digits, tmp_path):
    art = train(
        "lenet5",
        data="digits",
        out=tmp_path / "ft",
        weights=str(lenet_digits.path),
        config=TrainConfig(epochs=1, lr=0.01),
        progress=False,
    )
    assert art.input_shape == lenet_digits.input_shape
    assert art.manifest["parent"]["id"] == lenet_digits.id and art.root_id == lenet_digits.id
    assert art.metrics["top1"] >= 0.95  # fine-tuning starts from a trained net
    Artifact.load(art.path, verify=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_amp_channels_last(tmp_path):
    art = train(
        "resnet18",
        data="digits",
        out=tmp_path / "gpu",
        config=configure("resnet18", "digits", epochs=2),
        progress=False,
    )
    assert art.manifest["stage"]["params"]["amp"] is True
    assert art.metrics["top1"] > 0.8
