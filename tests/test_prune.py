"""Structured pruning: real Torch-Pruning dependency graphs on real zoo networks, real digits where
accuracy matters, real files and ONNX Runtime for reload / export parity."""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgecnn.compress.prune import PruneOptions
from edgecnn.errors import InvalidInput, OptionError

# Each architecture family's building blocks (plain stack, flatten into Linear, BN, inception concat,
# basic + bottleneck residual adds, dense concatenation). The other zoo members repeat these blocks
# deeper and cost minutes on 2 cores; EDGECNN_TEST_FULL_ZOO=1 runs all of them.
FAMILY_REPRESENTATIVES = {"lenet5", "alexnet", "vgg11_bn", "googlenet", "resnet18", "resnet50", "densenet121"}
FULL_ZOO = os.environ.get("EDGECNN_TEST_FULL_ZOO") == "1"


def random_artifact(name, out, *, size=None, in_channels=None, num_classes=10):
    """A zoo network with random weights saved as a torch artifact (plumbing / structure tests only)."""
    import torch

    from edgecnn.models import get_spec, save_torch_artifact

    spec = get_spec(name)
    torch.manual_seed(0)
    c = in_channels or spec.default_input[0]
    size = size or max(32, spec.min_input)
    model = spec.build(num_classes=num_classes, in_channels=c, input_size=size)
    return save_torch_artifact(
        model.eval(),
        out,
        name=name,
        input_spec=spec.input_spec(c, size),
        classes=[f"c{i}" for i in range(num_classes)],
        stage="random-init",
    )


def _widths(model):
    from torch import nn

    return {
        n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    }


# -- library ---------------------------------------------------------------------------------------
def test_prune_lenet_ratio_records_everything(lenet_digits, tmp_path):
    from edgecnn.artifact import Artifact
    from edgecnn.compress.prune import prune
    from edgecnn.models import load_torch_model

    art = prune(lenet_digits, tmp_path / "p", PruneOptions(ratio=0.3, data="digits"), progress=False)
    again = Artifact.load(tmp_path / "p", verify=True)
    rep = again.manifest["pruning"]
    assert again.stage == "prune" and again.manifest["parent"]["id"] == lenet_digits.id
    assert rep["requested"] == {"kind": "ratio", "value": 0.3}
    assert rep["round_to"] == 1 and rep["round_to_source"] == "auto"  # LeNet-5's 6-channel C1
    # every prunable layer lost int(0.3 * width) channels; the classifier kept its 10 outputs
    assert rep["layers"] == {
        "features.0": [6, 4],
        "features.3": [16, 11],
        "classifier.1": [120, 84],
        "classifier.3": [84, 58],
    }
    assert 0.25 < rep["achieved"]["channel_ratio"] < 0.35
    assert rep["macs"]["after"] < rep["macs"]["before"] and rep["params"]["after"] < rep["params"]["before"]
    assert again.metrics["macs"] == rep["macs"]["after"]
    assert again.metrics["reload_max_abs_diff"] == 0.0
    # the structure is data: rebuilt from the manifest, not unpickled
    arch = again.manifest["architecture"]["structure"]
    assert arch["features.0"] == {
        "type": "Conv2d",
        "attrs": {"out_channels": 4},
        "params": {"weight": [4, 1, 5, 5], "bias": [4]},
        "buffers": {},
    }
    model = load_torch_model(again)
    assert _widths(model)["classifier.5"] == 10 and _widths(model)["features.3"] == 11
    # pruning without fine-tuning costs a little accuracy on the real held-out digits, not all of it
    top1 = rep["top1"]
    assert top1["original"] == pytest.approx(lenet_digits.metrics["top1"])
    assert 0.5 < top1["pruned"] <= top1["original"] + 0.02
    assert art.metrics["top1"] == top1["pruned"]


def test_target_macs_is_reached_on_a_residual_network(tmp_path):
    from edgecnn.compress.prune import prune

    src = random_artifact("resnet18", tmp_path / "r18", size=32)
    art = prune(src, tmp_path / "p", PruneOptions(target_macs=0.5), progress=False)
    ach = art.manifest["pruning"]["achieved"]
    assert ach["macs_ratio"] <= 0.5
    assert ach["macs_ratio"] > 0.4  # the search stops close to the target, not far below it
    widths = art.manifest["pruning"]["layers"]
    # residual adds couple layer1's convs with the stem: they are pruned together, to the same width
    assert widths["conv1"][1] == widths["layer1.0.conv2"][1] == widths["layer1.1.conv2"][1]
    assert all(after % 8 == 0 for _, after in widths.values())  # round_to 8 (auto)


def test_target_params_and_global_caps(tmp_path):
    from edgecnn.compress.prune import prune

    src = random_artifact("resnet18", tmp_path / "r18", size=32)
    art = prune(
        src,
        tmp_path / "p",
        PruneOptions(target_params=0.4, global_pruning=True, max_layer_ratio=0.5, round_to=4),
        progress=False,
    )
    rep = art.manifest["pruning"]
    assert rep["achieved"]["params_ratio"] <= 0.4
    for name, (before, after) in rep["layers"].items():
        if name != "fc":
            assert after >= before * 0.5, name  # the cap holds under global ranking
            assert after % 4 == 0, name


def test_steps_with_distillation_finetuning(lenet_digits, tmp_path):
    from edgecnn.compress.prune import prune

    options = PruneOptions(target_macs=0.5, steps=2, finetune_epochs=1, data="digits", distill=True)
    art = prune(lenet_digits, tmp_path / "p", options, progress=False)
    rep = art.manifest["pruning"]
    assert [s["step"] for s in rep["steps"]] == [1, 2]
    assert rep["steps"][0]["macs_ratio"] <= 0.75 and rep["steps"][1]["macs_ratio"] <= 0.5
    assert all(len(s["history"]) == 1 and "top1_finetuned" in s for s in rep["steps"])
    assert art.manifest["stage"]["params"]["distill"] is True
    assert art.metrics["top1"] > 0.85  # fine-tuned with KD on the real digits


def test_taylor_importance_uses_data(lenet_digits, tmp_path):
    from edgecnn.compress.prune import prune

    art = prune(
        lenet_digits,
        tmp_path / "t",
        PruneOptions(ratio=0.5, importance="taylor", global_pruning=True, data="digits"),
        progress=False,
    )
    assert art.manifest["pruning"]["importance"] == "taylor"
    assert art.manifest["pruning"]["achieved"]["channel_ratio"] == pytest.approx(0.5, abs=0.05)


def test_auto_round_to_per_family():
    from edgecnn.compress.prune import auto_round_to, prunable_widths
    from edgecnn.models import get_spec

    def rt(name, size=32, c=3):
        spec = get_spec(name)
        model = spec.build(num_classes=10, in_channels=c, input_size=size)
        return auto_round_to(prunable_widths(model, [spec.classifier]))

    assert rt("lenet5", c=1) == 1 and rt("googlenet") == 4 and rt("resnet18") == 8


OPTION_RULES = [
    ({"ratio": 1.5}, "between 0 and 1"),
    ({"ratio": 0.0}, "between 0 and 1"),
    ({"target_macs": 1.0}, "between 0 and 1"),
    ({}, "Say how much"),
    ({"ratio": 0.3, "target_macs": 0.5}, "exactly one"),
    ({"ratio": 0.3, "importance": "taylr"}, "Did you mean 'taylor'"),
    ({"ratio": 0.3, "importance": "taylor"}, "needs --data"),
    ({"ratio": 0.3, "finetune_epochs": 2}, "needs training data"),
    ({"ratio": 0.3, "distill": True}, "--finetune-epochs"),
    ({"ratio": 0.3, "distill": True, "finetune_epochs": 1, "data": "digits", "alpha": 1.5}, "alpha"),
    ({"ratio": 0.9}, "--max-layer-ratio"),
    ({"ratio": 0.3, "steps": 0}, "--steps must be >= 1"),
    ({"ratio": 0.3, "round_to": 0}, "--round-to must be >= 1"),
    ({"ratio": 0.3, "lr": 0.0}, "learning rate must be > 0"),
    ({"ratio": 0.3, "config": {"optimizer": "rmsprop"}}, "optimizer"),
]


@pytest.mark.parametrize("kwargs, match", OPTION_RULES)
def test_option_rules_live_in_prune_options(kwargs, match):
    """Every rule on the options is PruneOptions.validate()'s: an OptionError without an artifact or the CLI."""
    with pytest.raises(OptionError, match=match):
        PruneOptions(**kwargs).validate()


def test_options_from_a_mapping_and_for_the_chain():
    """The fields the chain fills, read the way a recipe is (kebab-case keys, data parsed once)."""
    o = PruneOptions.from_mapping(
        {
            "ratio": 0.5,
            "importance": "l2",
            "finetune-epochs": 1,
            "data": "digits",
            "distill": True,
            "temperature": 2.0,
            "seed": 3,
        }
    )
    assert (o.ratio, o.importance, o.finetune_epochs, o.distill, o.temperature, o.seed) == (0.5, "l2", 1, True, 2.0, 3)
    assert str(o.data) == "digits" and o.target() == ("ratio", 0.5)
    with pytest.raises(OptionError, match="Did you mean 'finetune-epochs'"):
        PruneOptions.from_mapping({"ratio": 0.5, "finetune-epoch": 1})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        *OPTION_RULES[:4],
        ({"ratio": 0.3, "importance": "bn"}, "no BatchNorm"),
        ({"ratio": 0.3, "ignore": ["features.9"]}, "no such layer"),
        ({"ratio": 0.3, "ignore": ["features.0", "features.3", "classifier.1", "classifier.3"]}, "Nothing to prune"),
        ({"target_macs": 0.01}, "Cannot bring MACs down"),
    ],
)
def test_bad_requests_raise_clear_errors(lenet_digits, tmp_path, kwargs, match):
    from edgecnn.compress.prune import prune

    with pytest.raises(InvalidInput, match=match):
        prune(lenet_digits, tmp_path / "p", PruneOptions(**kwargs), progress=False)
    assert not (tmp_path / "p").exists()  # nothing half-written


def test_group_frozen_by_ignored_member_is_nothing_to_prune(tmp_path):
    """Ignoring one conv of a residual group freezes the whole group (its channels meet in the add)."""
    from edgecnn.compress.prune import NothingToPrune, prune
    from edgecnn.models import load_torch_model

    src = random_artifact("resnet18", tmp_path / "r18", size=32)
    art = prune(src, tmp_path / "p", PruneOptions(ratio=0.3, ignore=["layer1.0.conv2"]), progress=False)
    layers = art.manifest["pruning"]["layers"]
    assert "conv1" not in layers and "layer1.0.conv2" not in layers and "layer1.0.conv1" in layers
    convs = [n for n, w in _widths(load_torch_model(src)).items() if n != "fc"]
    with pytest.raises(NothingToPrune):
        prune(src, tmp_path / "q", PruneOptions(ratio=0.3, ignore=convs), progress=False)
    # a ratio too small to move any layer by one multiple of 8 is refused, not silently ignored
    with pytest.raises(NothingToPrune, match="removed no channel"):
        prune(src, tmp_path / "q", PruneOptions(ratio=0.005), progress=False)
    assert not (tmp_path / "q").exists()


# -- the zoo ---------------------------------------------------------------------------------------
def _zoo_params():
    from edgecnn.models import list_models

    out = []
    for name in list_models():
        marks = (
            []
            if FULL_ZOO or name in FAMILY_REPRESENTATIVES
            else [pytest.mark.skip(reason="same blocks as its family representative; EDGECNN_TEST_FULL_ZOO=1 runs it")]
        )
        out.append(pytest.param(name, marks=marks))
    return out


@pytest.mark.parametrize("name", _zoo_params())
def test_every_zoo_model_prunes_reloads_and_exports(name, tmp_path):
    import torch

    from edgecnn.artifact import Artifact
    from edgecnn.compress.prune import prune
    from edgecnn.export.onnx import export_onnx
    from edgecnn.models import get_spec, load_torch_model
    from edgecnn.runtime import open_runner

    spec = get_spec(name)
    c = 1 if name == "lenet5" else 3
    src = random_artifact(name, tmp_path / "src", size=max(32, spec.min_input), in_channels=c)
    art = prune(src, tmp_path / "pruned", PruneOptions(ratio=0.3), progress=False)
    rep = art.manifest["pruning"]
    assert rep["layers"] and rep["achieved"]["macs_ratio"] < 0.8
    assert art.metrics["reload_max_abs_diff"] == 0.0  # rebuilt from disk == pruned in memory
    model = load_torch_model(Artifact.load(tmp_path / "pruned", verify=True))
    x = torch.randn(3, *src.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        out2 = load_torch_model(art)(x)
    assert tuple(out.shape) == (3, 10)
    assert torch.equal(out, out2)
    assert _widths(model)[spec.classifier] == 10
    onnx_art = export_onnx(art, tmp_path / "onnx", progress=False)  # parity on the digits at any input spec
    with open_runner(onnx_art) as runner:
        got = runner.infer(x.numpy())
    np.testing.assert_allclose(got, out.numpy(), atol=1e-4 * max(1.0, float(out.abs().max())), rtol=1e-3)


# -- CLI -------------------------------------------------------------------------------------------
def _one_line_error(result, code):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 or code == 2, result.output
    return result.output


def test_cli_help(cli_run):
    r = cli_run(["prune", "--help"])
    assert r.exit_code == 0
    for opt in (
        "--ratio",
        "--target-macs",
        "--target-params",
        "--importance",
        "--global",
        "--round-to",
        "--max-layer-ratio",
        "--steps",
        "--finetune-epochs",
        "--distill",
        "--json",
    ):
        assert opt in r.output


def test_cli_happy_path_json(cli_run, lenet_digits, tmp_path):
    import json

    r = cli_run(
        [
            "prune",
            lenet_digits.path,
            "--out",
            tmp_path / "p",
            "--target-params",
            "0.6",
            "--data",
            "digits",
            "--no-progress",
            "--json",
            tmp_path / "p.json",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "MACs" in r.output and "top-1" in r.output and "wrote" in r.output
    s = json.loads((tmp_path / "p.json").read_text())
    assert s["achieved"]["params_ratio"] <= 0.6 and s["requested"] == {"kind": "target_params", "value": 0.6}


@pytest.mark.parametrize(
    "args, code, match",
    [
        (["--ratio", "1.5"], 2, "1.5"),
        (["--ratio", "0"], 2, "0"),
        (["--ratio", "0.3", "--target-macs", "0.5"], 2, "exactly one"),
        ([], 2, "exactly one"),
        (["--ratio", "0.3", "--importance", "taylor"], 2, "--data"),
        (["--ratio", "0.9"], 2, "--max-layer-ratio"),  # PruneOptions' rule, exit 2 through the CLI
        (["--ratio", "0.3", "--distill"], 2, "--finetune-epochs"),
        (
            [
                "--ratio",
                "0.3",
                "--ignore",
                "features.0",
                "--ignore",
                "features.3",
                "--ignore",
                "classifier.1",
                "--ignore",
                "classifier.3",
            ],
            1,
            "Nothing to prune",
        ),
        (["--ratio", "0.3", "--ignore", "fc"], 1, "no such layer"),
    ],
)
def test_cli_errors(cli_run, lenet_digits, tmp_path, args, code, match):
    r = cli_run(["prune", lenet_digits.path, "--out", tmp_path / "p", "--no-progress", *args])
    out = _one_line_error(r, code)
    assert match in out
    assert not (tmp_path / "p").exists()


def test_cli_not_an_artifact(cli_run, tmp_path):
    r = cli_run(["prune", tmp_path / "nope", "--out", tmp_path / "p", "--ratio", "0.3"])
    assert "does not exist" in _one_line_error(r, 1)
