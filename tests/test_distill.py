"""Knowledge distillation: the loss, cross-architecture students on the real digits, feature
adapters, and the errors a user can hit."""

from __future__ import annotations

import pytest
import torch
from test_prune import random_artifact

from edgecnn.compress.distill import DistillOptions
from edgecnn.errors import InvalidInput, OptionError


def test_kd_loss_matches_its_definition():
    import torch.nn.functional as F

    from edgecnn.compress.distill import kd_loss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    T, a = 4.0, 0.7
    p_t = F.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean()
    expected = a * T * T * kl + (1 - a) * F.cross_entropy(s, y)
    assert kd_loss(s, t, y, temperature=T, alpha=a).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_loss(t, t, y, temperature=T, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, t, y, temperature=T, alpha=0.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-6)


def test_cross_architecture_student_from_name(resnet18_digits, tmp_path):
    """resnet18 teacher -> lenet5 student built from its name, trained on the real digits."""
    from edgecnn.compress.distill import distill

    art = distill("lenet5", resnet18_digits, tmp_path / "kd", DistillOptions(data="digits", epochs=3), progress=False)
    rep = art.manifest["distillation"]
    assert art.model == "lenet5" and art.stage == "distill"
    assert art.input == resnet18_digits.input  # inherits the teacher's preprocessing
    assert art.manifest["parent"]["id"] == resnet18_digits.id
    assert rep["teacher_top1"] == pytest.approx(resnet18_digits.metrics["top1"])
    assert art.metrics["top1"] > 0.6  # 10 classes: chance is 0.1
    assert len(art.manifest["history"]) == 3


def test_student_artifact_with_other_normalisation_and_feature_adapter(lenet_digits, resnet18_digits, tmp_path):
    """A trained lenet5 (mean 0.5) distilled from resnet18 (ImageNet mean): the teacher's input is
    re-normalised; lenet's C3 (16 ch, 10x10) is matched to resnet18's layer1 (64 ch, 8x8) through a
    1x1 adapter and resizing."""
    from edgecnn.compress.distill import distill

    options = DistillOptions(data="digits", epochs=1, feature_layers=[("features.3", "layer1")], feature_weight=0.1)
    art = distill(lenet_digits, resnet18_digits, tmp_path / "kd", options, progress=False)
    rep = art.manifest["distillation"]
    assert rep["input_renormalised"] is True
    assert rep["adapters"] == ["features_3__layer1"]
    assert rep["top1_before"] == pytest.approx(lenet_digits.metrics["top1"])
    assert art.input == lenet_digits.input and art.manifest["parent"]["id"] == lenet_digits.id
    assert art.metrics["top1"] > 0.85
    # the adapters trained with the student are not part of the saved student
    from safetensors.torch import load_file

    assert not any(k.startswith(("adapters", "student.")) for k in load_file(str(art.model_file)))


def test_pruned_teacher_as_student_keeps_structure(lenet_digits, tmp_path):
    from edgecnn.compress.distill import distill
    from edgecnn.compress.prune import PruneOptions, prune
    from edgecnn.models import load_torch_model

    pruned = prune(lenet_digits, tmp_path / "p", PruneOptions(ratio=0.5), progress=False)
    art = distill(pruned, lenet_digits, tmp_path / "kd", DistillOptions(data="digits", epochs=1), progress=False)
    assert art.manifest["architecture"]["structure"] == pruned.manifest["architecture"]["structure"]
    assert load_torch_model(art).features[3].out_channels == 8
    assert art.metrics["top1"] > 0.85


def _teacher_with(tmp_path, name, **kw):
    return random_artifact(name, tmp_path / f"t-{name}-{kw}", in_channels=1, **kw)


def test_errors(lenet_digits, tmp_path):
    from edgecnn.compress.distill import distill

    one = DistillOptions(data="digits", epochs=1)
    five = _teacher_with(tmp_path, "lenet5", num_classes=5)
    with pytest.raises(InvalidInput, match="teacher predicts 5 classes"):
        distill(lenet_digits, five, tmp_path / "a", one, progress=False)
    big = _teacher_with(tmp_path, "lenet5", size=36)
    with pytest.raises(InvalidInput, match="1x32x32 inputs but the teacher .* 1x36x36"):
        distill(lenet_digits, big, tmp_path / "a", one, progress=False)
    with pytest.raises(InvalidInput, match="alexnet needs inputs of at least 63x63 but the teacher"):
        distill("alexnet", lenet_digits, tmp_path / "a", one, progress=False)
    with pytest.raises(InvalidInput, match="no layer 'features.7'"):
        distill(
            "lenet5",
            lenet_digits,
            tmp_path / "a",
            DistillOptions(data="digits", epochs=1, feature_layers=["features.7:features.3"]),
            progress=False,
        )
    with pytest.raises(InvalidInput, match="not a feature map"):
        distill(
            "lenet5",
            lenet_digits,
            tmp_path / "a",
            DistillOptions(data="digits", epochs=1, feature_layers=[("classifier.1", "classifier.1")]),
            progress=False,
        )
    with pytest.raises(OptionError, match="alpha"):
        distill(
            "lenet5", lenet_digits, tmp_path / "a", DistillOptions(data="digits", epochs=1, alpha=1.5), progress=False
        )
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epochs": 1}, "trains on data"),
        ({"data": "digits", "epochs": 0}, "epochs must be >= 1"),
        ({"data": "digits", "temperature": 0.0}, "temperature must be > 0"),
        ({"data": "digits", "alpha": -0.1}, "alpha must be in"),
        ({"data": "digits", "feature_weight": -1.0}, "feature weight"),
        ({"data": "digits", "feature_layers": ["a:b:c"]}, "STUDENT_LAYER:TEACHER_LAYER"),
    ],
)
def test_option_rules_live_in_distill_options(kwargs, match):
    with pytest.raises(OptionError, match=match):
        DistillOptions(**kwargs).validate()


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_help(cli_run):
    r = cli_run(["distill", "--help"])
    assert r.exit_code == 0
    for opt in ("--teacher", "--temperature", "--alpha", "--feature", "--epochs", "--json"):
        assert opt in r.output


def test_cli_happy_path(cli_run, lenet_digits, tmp_path):
    import json

    r = cli_run(
        [
            "distill",
            "lenet5",
            "--teacher",
            lenet_digits.path,
            "--data",
            "digits",
            "--out",
            tmp_path / "kd",
            "--epochs",
            "2",
            "--temperature",
            "2",
            "--alpha",
            "0.5",
            "--no-progress",
            "--json",
            tmp_path / "kd.json",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "student distilled" in r.output and "wrote" in r.output
    s = json.loads((tmp_path / "kd.json").read_text())
    assert s["temperature"] == 2.0 and s["alpha"] == 0.5 and len(s["history"]) == 2


def test_cli_errors(cli_run, lenet_digits, tmp_path):
    def one_line(r, code, match):
        assert r.exit_code == code, r.output
        assert match in r.output and "Traceback" not in r.output
        if code == 1:
            assert len(r.output.strip().splitlines()) == 1, r.output

    base = ["--data", "digits", "--out", tmp_path / "kd", "--epochs", "1", "--no-progress"]
    five = _teacher_with(tmp_path, "lenet5", num_classes=5)
    one_line(cli_run(["distill", lenet_digits.path, "--teacher", five.path, *base]), 1, "teacher predicts 5 classes")
    big = _teacher_with(tmp_path, "lenet5", size=36)
    one_line(cli_run(["distill", lenet_digits.path, "--teacher", big.path, *base]), 1, "1x36x36")
    one_line(cli_run(["distill", "lenet", "--teacher", lenet_digits.path, *base]), 1, "Did you mean 'lenet5'")
    one_line(cli_run(["distill", "lenet5", "--teacher", tmp_path / "none", *base]), 1, "does not exist")
    one_line(
        cli_run(["distill", "lenet5", "--teacher", lenet_digits.path, "--feature", "a:b:c", *base]),
        2,
        "STUDENT_LAYER:TEACHER_LAYER",
    )
    one_line(cli_run(["distill", "lenet5", "--teacher", lenet_digits.path, "--alpha", "2", *base]), 2, "alpha")
    assert not (tmp_path / "kd").exists()
