"""2:4 and unstructured sparsity: masks, the 2:4 proof, fine-tuning that keeps the mask, the CLI."""

from __future__ import annotations

import pytest
import torch
from test_prune import random_artifact

from edgecnn.compress.sparsity import SparsifyOptions
from edgecnn.errors import InvalidInput, OptionError


def test_mask_2to4_groups_run_along_input_channels():
    from edgecnn.compress.sparsity import check_2to4, mask_2to4

    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 32, 3, 3, generator=g)
    m = mask_2to4(w)
    sw = w * m
    # exactly 2 of every 4 consecutive input channels survive, for every (out, kh, kw)
    per_group = m.permute(0, 2, 3, 1).reshape(16, 3, 3, 8, 4).sum(-1)
    assert torch.all(per_group == 2)
    # the survivors are the 2 largest magnitudes of their group
    grp = w.abs().permute(0, 2, 3, 1).reshape(-1, 4)
    kept = m.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.all(grp[kept].view(-1, 2).min(1).values >= grp[~kept].view(-1, 2).max(1).values)
    assert check_2to4({"conv.weight": sw}) == []
    # a single extra non-zero is found and located: (out, first input channel of the group, kh, kw)
    broken = sw.clone()
    zero_pos = (broken[5, 8:12, 1, 2] == 0).nonzero()[0, 0]
    broken[5, 8 + zero_pos, 1, 2] = 1.0
    v = check_2to4({"conv.weight": broken})
    assert v == [{"layer": "conv", "groups": 16 * 8 * 9, "violating_groups": 1, "first": [5, 8, 1, 2]}]
    lin = torch.randn(8, 16, generator=g)
    assert check_2to4({"fc.weight": lin * mask_2to4(lin)}) == []
    assert check_2to4({"fc.weight": lin})[0]["violating_groups"] == 8 * 4


def test_unstructured_mask_fraction():
    from edgecnn.compress.sparsity import mask_magnitude

    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(1))
    m = mask_magnitude(w, 0.7)
    assert (~m).float().mean().item() == pytest.approx(0.7, abs=1e-3)
    assert w.abs()[m].min() >= w.abs()[~m].max()


def test_skips_layers_tensorrt_would_not_run_sparse(tmp_path):
    from edgecnn.compress.sparsity import check_2to4, sparsify

    src = random_artifact("resnet18", tmp_path / "r18", size=32, in_channels=1)
    art = sparsify(src, tmp_path / "s", SparsifyOptions(), progress=False)
    rep = art.manifest["sparsity"]
    assert "conv1" in rep["skipped"] and "1 input channels" in rep["skipped"]["conv1"]  # the 1-channel stem
    assert "fc" in rep["skipped"] and "10 outputs" in rep["skipped"]["fc"]  # 10 classes
    assert len(rep["layers"]) == 19 and all(v == 0.5 for v in rep["layers"].values())
    assert rep["covered_weight_fraction"] > 0.99
    assert check_2to4(art) == []  # layers taken from the manifest
    assert check_2to4(src, list(rep["layers"]))  # the dense original fails the same check
    assert art.stage == "sparsify" and art.manifest["parent"]["id"] == src.id


def test_2to4_survives_onnx_export(tmp_path):
    """BatchNorm folding scales each output channel, so the zeros - and the pattern - reach the ONNX
    file that TensorRT builds from."""
    import onnx
    from onnx import numpy_helper

    from edgecnn.compress.sparsity import check_2to4, sparsify
    from edgecnn.export.onnx import export_onnx

    src = random_artifact("resnet18", tmp_path / "r18", size=32, in_channels=1)
    art = sparsify(src, tmp_path / "s", SparsifyOptions(), progress=False)
    onnx_art = export_onnx(art, tmp_path / "onnx", progress=False)  # parity on the digits (real images)
    graph = onnx.load(str(onnx_art.model_file)).graph
    inits = {i.name: i for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    weights = {
        f"conv{i}": torch.from_numpy(numpy_helper.to_array(inits[n.input[1]]).copy())
        for i, n in enumerate(convs)
        if n.input[1] in inits
    }
    sparse = {k + ".weight": w for k, w in weights.items() if w.shape[1] % 16 == 0 and w.shape[0] % 8 == 0}
    assert len(sparse) >= 16
    assert check_2to4(sparse) == []


def test_finetuning_keeps_the_mask(lenet_digits, tmp_path):
    from edgecnn.compress.sparsity import check_2to4, sparsify
    from edgecnn.models import load_torch_model

    art = sparsify(
        lenet_digits, tmp_path / "s", SparsifyOptions(pattern="2:4", finetune_epochs=1, data="digits"), progress=False
    )
    rep = art.manifest["sparsity"]
    assert list(rep["layers"]) == ["classifier.1"]  # the only 2:4-eligible layer of LeNet-5
    assert check_2to4(art) == []
    model = load_torch_model(art)
    assert (model.classifier[1].weight == 0).float().mean().item() == 0.5
    # training moved the surviving weights (it did train) but not the zeros
    orig = load_torch_model(lenet_digits)
    assert not torch.equal(model.features[0].weight, orig.features[0].weight)
    assert rep["top1"]["final"] > 0.85 and art.metrics["top1"] == rep["top1"]["final"]


def test_mask_keeper_holds_under_adamw():
    from edgecnn.compress.sparsity import MaskKeeper, mask_magnitude
    from edgecnn.data import load_dataset
    from edgecnn.models import create_model
    from edgecnn.train import TrainConfig, fit

    model = create_model("lenet5", num_classes=10, in_channels=1, input_size=32)
    masks = {
        n: mask_magnitude(m.weight, 0.6)
        for n, m in model.named_modules()
        if hasattr(m, "weight") and m.weight is not None
    }
    keeper = MaskKeeper(model, masks)
    spec = {"channels": 1, "height": 32, "width": 32}
    fit(
        model,
        load_dataset("synthetic:128", spec, "train"),
        None,
        TrainConfig(epochs=2, batch_size=32, optimizer="adamw", weight_decay=0.05),
        progress=False,
    )
    keeper.close()
    for n, m in model.named_modules():
        if n in masks:
            assert torch.all(m.weight[~masks[n]] == 0), n
            assert torch.any(m.weight[masks[n]] != 0), n


def test_unstructured(lenet_digits, tmp_path):
    from edgecnn.compress.sparsity import sparsify

    art = sparsify(lenet_digits, tmp_path / "u", SparsifyOptions(pattern="unstructured", sparsity=0.7), progress=False)
    rep = art.manifest["sparsity"]
    assert set(rep["layers"]) == {"features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"}
    assert all(v == pytest.approx(0.7, abs=0.01) for v in rep["layers"].values())
    assert art.metrics["weight_sparsity"] == pytest.approx(0.7, abs=0.01)


OPTION_RULES = [
    ({"pattern": "3:4"}, "Unknown sparsity pattern"),
    ({"pattern": "2:4", "sparsity": 0.7}, "50 %"),
    ({"pattern": "unstructured", "sparsity": 1.0}, "between 0 and 1"),
    ({"finetune_epochs": 1}, "needs training data"),
    ({"finetune_epochs": -1}, "--finetune-epochs must be >= 0"),
    ({"batch_size": 0}, "batch size must be >= 1"),
]


@pytest.mark.parametrize("kwargs, match", OPTION_RULES)
def test_option_rules_live_in_sparsify_options(kwargs, match):
    with pytest.raises(OptionError, match=match):
        SparsifyOptions(**kwargs).validate()


def test_out_and_check_rule():
    from edgecnn.compress.sparsity import check_mode

    with pytest.raises(OptionError, match="drop --out"):
        check_mode("somewhere", True)
    with pytest.raises(OptionError, match="Missing option '--out'"):
        check_mode(None, False)
    check_mode(None, True), check_mode("somewhere", False)


@pytest.mark.parametrize(
    "kwargs, match",
    [*OPTION_RULES[:4], ({"exclude": ["classifier.9"]}, "no such layer"), ({"exclude": ["classifier.1"]}, "No layer")],
)
def test_bad_requests(lenet_digits, tmp_path, kwargs, match):
    from edgecnn.compress.sparsity import sparsify

    with pytest.raises(InvalidInput, match=match):
        sparsify(lenet_digits, tmp_path / "s", SparsifyOptions(**kwargs), progress=False)
    assert not (tmp_path / "s").exists()


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_help(cli_run):
    r = cli_run(["sparsify", "--help"])
    assert r.exit_code == 0 and "--pattern" in r.output and "--check" in r.output


def test_cli_sparsify_and_check(cli_run, lenet_digits, tmp_path):
    import json

    r = cli_run(
        ["sparsify", lenet_digits.path, "--out", tmp_path / "s", "--no-progress", "--json", tmp_path / "s.json"]
    )
    assert r.exit_code == 0, r.output
    assert "classifier.1" in r.output and "dense (" in r.output
    assert json.loads((tmp_path / "s.json").read_text())["layers"] == {"classifier.1": 0.5}
    ok = cli_run(["sparsify", tmp_path / "s", "--check"])
    assert ok.exit_code == 0 and "passed" in ok.output
    bad = cli_run(["sparsify", lenet_digits.path, "--check"])
    assert bad.exit_code == 3 and "classifier.1" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize(
    "args, code, match",
    [
        (["--out", "X", "--sparsity", "0.7"], 2, "50 %"),
        (["--out", "X", "--pattern", "3:4"], 2, "3:4"),
        (["--out", "X", "--finetune-epochs", "1"], 2, "--data"),
        ([], 2, "--out"),
        (["--out", "X", "--check"], 2, "drop --out"),
        (["--out", "X", "--exclude", "nope"], 1, "no such layer"),
    ],
)
def test_cli_errors(cli_run, lenet_digits, tmp_path, args, code, match):
    args = [str(tmp_path / "s") if a == "X" else a for a in args]
    r = cli_run(["sparsify", lenet_digits.path, *args])
    assert r.exit_code == code, r.output
    assert match in r.output and "Traceback" not in r.output
    if code == 1:
        assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
