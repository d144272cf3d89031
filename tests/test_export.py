"""ONNX export: every zoo model exports with torch/ORT parity <= 1e-4 on real images; the stage writes a
complete, checked artifact; errors are one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import one_line_error

from edgecnn.errors import ArtifactError, InvalidInput


def _zoo_model(name: str, size: int, images: np.ndarray):
    """The zoo network at ``size`` with 10 classes and random weights that behave numerically like a
    trained network's, plus its torch outputs on ``images``.

    Why not torchvision's init as is: an untrained ResNet-152 outputs logits of ~1e5 (a 1e-4 tolerance
    is then below float32 resolution), GoogLeNet's std-0.01 init makes the output the same for every
    image (agreement would prove nothing), and identity BatchNorm statistics would not test folding.
    So: He-initialised convolutions/linears, BatchNorm with non-trivial statistics and affine
    parameters, and the classifier scaled so the largest logit is 10 (a trained classifier's range).
    Built on the meta device first so the big VGG classifiers are initialised only once.
    """
    import math

    import torch
    from torch import nn

    from edgecnn.models import create_model, get_spec

    with torch.device("meta"):
        model = create_model(name, num_classes=10, input_size=size)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0, math.sqrt(2 / m.weight[0].numel()), generator=g)
                if m.bias is not None:
                    m.bias.normal_(0, 0.01, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.num_batches_tracked.zero_()
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    model.eval()
    head = model.get_submodule(get_spec(name).classifier)
    captured = {}
    hook = head.register_forward_hook(lambda mod, args, out: captured.__setitem__("features", args[0]))
    with torch.no_grad():
        logits = model(torch.from_numpy(images))
        hook.remove()
        scale = 10.0 / float(logits.abs().max())
        head.weight.mul_(scale)
        head.bias.mul_(scale)
        reference = head(captured["features"]).numpy()  # = the scaled model's output, without a 2nd pass
    return model, reference


def _zoo_cases():
    from edgecnn.models import get_spec, list_models

    cases = []
    for name in list_models():
        spec = get_spec(name)
        size = spec.default_input[1] if name == "lenet5" else max(32, spec.min_input)
        cases.append(pytest.param(name, size, id=f"{name}@{size}"))
    return cases


@pytest.mark.parametrize("name,size", _zoo_cases())
def test_every_zoo_model_exports_with_parity(name, size, tmp_path):
    """export_onnx's path (fold BN -> exportable rewrites -> legacy export -> onnxslim -> checker -> ONNX
    Runtime) on each zoo network at its smallest sensible input, 10 classes, on real digits."""
    import onnx
    from torch import nn

    from edgecnn.export.onnx import fold_batchnorm, make_exportable, measure_parity, parity_images, to_onnx
    from edgecnn.models import get_spec

    spec = get_spec(name)
    input_spec = spec.input_spec(input_size=size)
    images, desc = parity_images(input_spec, "digits", 4)
    assert desc["source"] == "digits" and len(images) == 4
    model, reference = _zoo_model(name, size, images)
    assert reference.std(0).mean() > 0.05  # the output depends on the image: agreement means something
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model)
    assert bool(folded) == has_bn
    assert type(model).__name__ != "GraphModule"
    rewrites = make_exportable(model, (input_spec["channels"], size, size))
    path = tmp_path / "model.onnx"
    info = to_onnx(model, path, input_shape=(input_spec["channels"], size, size))
    del model
    assert info["simplified"] and info["input_shape"] == ["batch", input_spec["channels"], size, size]
    onnx.checker.check_model(str(path))
    parity = measure_parity(path, images, reference)
    assert parity["runs"] == 5  # the batch of 4 and a batch of 1: the dynamic batch works
    assert parity["max_abs"] <= 1e-4, parity
    assert parity["top1_agreement"] == 1.0
    if name.startswith("densenet"):
        assert info["bn_remaining"] > 0  # pre-activation BatchNorms have no conv in front of them
    else:
        assert info["bn_remaining"] == 0
    assert bool(rewrites) == (spec.family in ("alexnet", "vgg"))  # 1x1 maps pooled to 7x7 / 6x6
    path.unlink()


def test_fold_batchnorm_in_place_keeps_outputs():
    import torch
    from torch import nn

    from edgecnn.export import fold_batchnorm

    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    model, _ = _zoo_model("densenet121", 32, x.numpy())
    with torch.no_grad():
        ref = model(x)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model)
    left = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert type(model).__name__ == "DenseNet"
    assert "features.conv0+features.norm0" in folded
    assert "features.denseblock1.denselayer1.conv1+features.denseblock1.denselayer1.norm2" in folded
    assert left == n_bn - len(folded) and left > 0  # norm1 / transition norms / norm5 stay
    assert isinstance(model.features.norm0, nn.Identity)
    with torch.no_grad():
        assert torch.allclose(model(x), ref, atol=2e-5)


@pytest.mark.parametrize("h_in,w_in,h_out,w_out", [(1, 1, 7, 7), (5, 3, 7, 7), (10, 9, 3, 4), (2, 2, 6, 6)])
def test_fixed_adaptive_pool_is_exact(h_in, w_in, h_out, w_out):
    import torch

    from edgecnn.export.onnx import _fixed_adaptive_pool

    x = torch.randn(2, 3, h_in, w_in)
    want = torch.nn.functional.adaptive_avg_pool2d(x, (h_out, w_out))
    got = _fixed_adaptive_pool(h_in, w_in, h_out, w_out)(x)
    assert torch.allclose(got, want, atol=1e-6)


def test_export_stage_writes_complete_artifact(lenet_onnx, lenet_digits):
    import onnx

    art = lenet_onnx
    m = art.manifest
    assert (art.format, m["file"], art.precision) == ("onnx", "model.onnx", "fp32")
    assert m["parent"]["id"] == lenet_digits.id and m["lineage"][-1]["sha256"] == lenet_digits.sha256
    assert art.input == lenet_digits.input and art.classes == lenet_digits.classes
    info = m["onnx"]
    assert info["opset"] == 17 and info["dynamic_batch"] is True
    assert (info["input_name"], info["output_name"]) == ("input", "logits")
    assert info["input_shape"] == ["batch", 1, 32, 32] and info["simplified"] is True
    parity = m["metrics"]["parity"]
    assert parity["max_abs"] <= 1e-4 and parity["within_atol"] and parity["n_images"] == 16
    assert parity["data"]["source"] == "digits" and parity["top1_agreement"] == 1.0
    assert m["stage"]["name"] == "export" and m["stage"]["params"]["opset"] == 17
    proto = onnx.load(str(art.model_file))
    assert proto.opset_import[0].version == 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["edgecnn.model"] == "lenet5" and meta["edgecnn.id"] == art.id
    art.verify()  # sha256 of model.onnx as recorded


def test_eval_onnx_equals_torch(lenet_onnx, lenet_digits):
    """edgecnn eval's library function on the ONNX artifact: the same accuracy, class by class."""
    from edgecnn.evaluation import evaluate

    torch_scores = evaluate(lenet_digits, "digits")
    onnx_scores = evaluate(lenet_onnx, "digits")
    assert onnx_scores["n"] == torch_scores["n"] == 360
    assert torch_scores["top1"] > 0.9
    assert onnx_scores["top1"] == torch_scores["top1"]
    assert onnx_scores["per_class"] == torch_scores["per_class"]
    assert onnx_scores["runner"].startswith("onnxruntime")


def test_eval_resnet_with_folded_bn_equals_torch(resnet18_digits, tmp_path):
    from edgecnn.evaluation import evaluate
    from edgecnn.export import export_onnx

    art = export_onnx(resnet18_digits, tmp_path / "r18", progress=False)
    assert art.manifest["onnx"]["bn_folded"] == 20 and art.manifest["onnx"]["bn_remaining"] == 0
    assert art.manifest["metrics"]["parity"]["max_abs"] <= 1e-4
    torch_scores, onnx_scores = evaluate(resnet18_digits, "digits"), evaluate(art, "digits")
    assert onnx_scores["top1"] == torch_scores["top1"] and onnx_scores["per_class"] == torch_scores["per_class"]


def test_static_batch_and_opset(lenet_digits, tmp_path):
    import onnx

    from edgecnn.export import export_onnx
    from edgecnn.runtime import open_runner

    art = export_onnx(lenet_digits, tmp_path / "b4", opset=13, dynamic_batch=False, batch_size=4, progress=False)
    assert art.manifest["onnx"]["input_shape"] == [4, 1, 32, 32] and art.manifest["onnx"]["batch_size"] == 4
    assert onnx.load(str(art.model_file)).opset_import[0].version == 13
    parity = art.manifest["metrics"]["parity"]
    assert parity["max_abs"] <= 1e-4 and parity["runs"] == 16
    with open_runner(art, threads=1) as runner:
        assert runner.infer(np.zeros((4, 1, 32, 32), np.float32)).shape == (4, 10)
        with pytest.raises(InvalidInput, match="fixed batch size of 4.*--dynamic-batch"):
            runner.infer(np.zeros((1, 1, 32, 32), np.float32))


def test_export_without_fold_or_simplify_still_matches(lenet_digits, tmp_path):
    from edgecnn.export import export_onnx

    art = export_onnx(lenet_digits, tmp_path / "plain", fold_bn=False, simplify=False, progress=False)
    info = art.manifest["onnx"]
    assert info["simplified"] is False and info["bn_folded"] == 0
    assert art.manifest["metrics"]["parity"]["max_abs"] <= 1e-4


def test_parity_failure_is_caught(lenet_digits, tmp_path):
    """A model whose forward branches on the data: tracing bakes in the branch of the (zero) example
    input, real digits take the other one. Parity on real images must refuse to write the artifact."""
    from torch import nn

    from edgecnn.export import ParityError, export_onnx
    from edgecnn.models import load_torch_model

    class Branchy(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            y = self.net(x)
            return -y if float(x.mean()) < -0.1 else y  # digits have a dark background: mean ~ -0.7

    out = tmp_path / "bad"
    with pytest.raises(ParityError, match="disagrees with torch on 16 real images"):
        export_onnx(lenet_digits, out, model=Branchy(load_torch_model(lenet_digits)), progress=False)
    assert not out.exists() and not list(tmp_path.glob(".bad*"))  # nothing half-written


def test_export_refuses_bad_input(lenet_onnx, lenet_digits, tmp_path):
    from edgecnn.export import export_onnx

    with pytest.raises(ArtifactError, match="is a onnx artifact but this command needs torch"):
        export_onnx(lenet_onnx.path, tmp_path / "x", progress=False)
    with pytest.raises(InvalidInput, match="needs a torch artifact"):
        export_onnx(lenet_onnx, tmp_path / "x", progress=False)
    with pytest.raises(InvalidInput, match="opset 5 is not supported"):
        export_onnx(lenet_digits, tmp_path / "x", opset=5, progress=False)
    with pytest.raises(InvalidInput, match="real images, not synthetic"):
        export_onnx(lenet_digits, tmp_path / "x", parity_data="synthetic", progress=False)
    with pytest.raises(ArtifactError, match="does not exist"):
        export_onnx(tmp_path / "missing", tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_export_help(cli_run):
    result = cli_run(["export", "--help"])
    assert result.exit_code == 0
    for opt in (
        "--out",
        "--opset",
        "--dynamic-batch / --static-batch",
        "--simplify / --no-simplify",
        "--fold-bn",
        "--parity-data",
        "--json",
    ):
        assert opt in result.output


def test_cli_export_happy_path(cli_run, lenet_digits, tmp_path):
    out, js = tmp_path / "cli-onnx", tmp_path / "export.json"
    result = cli_run(
        [
            "export",
            lenet_digits.path,
            "--out",
            out,
            "--static-batch",
            "--batch-size",
            "2",
            "--parity-images",
            "8",
            "--json",
            js,
        ]
    )
    assert result.exit_code == 0, result.output
    assert "parity max abs" in result.output and "onnx.checker" in result.output
    data = json.loads(js.read_text())
    assert data["onnx"]["input_shape"] == [2, 1, 32, 32]
    assert data["parity"]["max_abs"] <= 1e-4 and data["parity"]["n_images"] == 8
    assert (out / "model.onnx").is_file() and (out / "manifest.json").is_file()


def test_cli_export_errors(cli_run, lenet_onnx, lenet_digits, tmp_path):
    msg = one_line_error(cli_run(["export", tmp_path / "nope", "--out", tmp_path / "o"]))
    assert "does not exist" in msg
    msg = one_line_error(cli_run(["export", lenet_onnx.path, "--out", tmp_path / "o"]))
    assert "onnx artifact" in msg and "torch" in msg
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    msg = one_line_error(cli_run(["export", lenet_digits.path, "--out", tmp_path / "taken", "--parity-images", "2"]))
    assert "not an edgecnn artifact" in msg and (tmp_path / "taken" / "notes.txt").exists()
    assert cli_run(["export", lenet_digits.path, "--out", tmp_path / "o", "--opset", "5"]).exit_code == 2
    assert cli_run(["export", lenet_digits.path, "--out", tmp_path / "o", "--batch-size", "0"]).exit_code == 2
    assert cli_run(["export", lenet_digits.path]).exit_code == 2  # --out missing


def test_cli_eval_onnx_equals_torch(cli_run, lenet_onnx, lenet_digits, tmp_path):
    results = {}
    for name, art in (("torch", lenet_digits), ("onnx", lenet_onnx)):
        js = tmp_path / f"{name}.json"
        r = cli_run(["eval", art.path, "--data", "digits", "--threads", "1", "--quiet", "--json", js])
        assert r.exit_code == 0, r.output
        results[name] = json.loads(js.read_text())
    assert results["onnx"]["top1"] == results["torch"]["top1"] > 0.9
    assert results["onnx"]["per_class"] == results["torch"]["per_class"]


def test_cli_eval_static_batch_says_what_to_do(cli_run, lenet_digits, tmp_path):
    from edgecnn.export import export_onnx

    art = export_onnx(lenet_digits, tmp_path / "b1", dynamic_batch=False, parity_images_n=2, progress=False)
    msg = one_line_error(cli_run(["eval", art.path, "--data", "digits", "--quiet"]))
    assert "fixed batch size of 1" in msg and "--batch-size 1" in msg
    r = cli_run(["eval", art.path, "--data", "digits", "--batch-size", "1", "--quiet"])
    assert r.exit_code == 0, r.output
