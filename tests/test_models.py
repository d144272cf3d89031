"""The model zoo: every network builds and runs at its default and its smallest input, LeNet-5 is the
1998 network, torchvision configurations match torchvision (parameter counts, state_dicts, logits), and
weights loading fails with messages that say what to do."""

from __future__ import annotations

import pytest
import torch

from edgecnn.errors import InvalidInput, UnknownModel, WeightsError
from edgecnn.models import build_model, count_macs, count_params, create_model, get_spec, list_models

TV_MODELS = [n for n in list_models() if get_spec(n).torchvision]


def test_registry_has_the_whole_zoo():
    expected = {
        "lenet5",
        "alexnet",
        "googlenet",
        *(f"vgg{d}{b}" for d in (11, 13, 16, 19) for b in ("", "_bn")),
        *(f"resnet{d}" for d in (18, 34, 50, 101, 152)),
        *(f"densenet{d}" for d in (121, 161, 169, 201)),
    }
    assert set(list_models()) == expected
    assert len(TV_MODELS) == 19


def test_unknown_model_suggests_the_nearest_name():
    with pytest.raises(UnknownModel, match=r"Unknown model 'resnet5'\. Did you mean 'resnet50'\?"):
        get_spec("resnet5")


def test_lenet5_is_the_1998_network():
    model = create_model("lenet5", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 6, (5, 5)), (6, 16, (5, 5))]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(400, 120), (120, 84), (84, 10)]
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in model.modules()) == 2  # S2, S4 subsampling
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.modules()) == 4
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.MaxPool2d)) for m in model.modules())
    # C1 156 + C3 2,416 + F5 48,120 + F6 10,164 + output 850
    assert count_params(model) == 156 + 2416 + 48120 + 10164 + 850 == 61706
    assert count_macs(model, (1, 32, 32)) == 117600 + 240000 + 48000 + 10080 + 840


@pytest.mark.parametrize("name", list_models())
def test_builds_and_runs_at_default_and_min_input(name):
    spec = get_spec(name)
    c, h, w = spec.default_input
    m = spec.min_input
    with torch.inference_mode():
        model = spec.build(num_classes=10).eval()
        assert model(torch.randn(1, c, h, w)).shape == (1, 10)
        if spec.torchvision:
            # adaptive pooling: the same weights serve every input size, so one build covers both sizes
            small = model
        else:
            small = spec.build(num_classes=10, input_size=m).eval()
        assert small(torch.randn(1, c, m, m)).shape == (1, 10)
        if m > 1:
            # The limit is the architecture's: one pixel less breaks the forward pass itself ...
            raw = small if spec.torchvision else spec.builder(num_classes=10, in_channels=c, input_size=(m - 1, m - 1))
            with pytest.raises(RuntimeError):
                raw(torch.randn(1, c, m - 1, m - 1))
            # ... and edgecnn refuses it up front, with the fix in the message.
            with pytest.raises(InvalidInput, match=f"at least {m}x{m}.*--input-size {m}"):
                spec.build(num_classes=10, input_size=m - 1)


@pytest.mark.parametrize("name", TV_MODELS)
def test_parameter_counts_equal_torchvision(name):
    import torchvision

    extra = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        ours = create_model(name, num_classes=1000)
        theirs = torchvision.models.get_model(name, weights=None, **extra)
    assert count_params(ours) == count_params(theirs)
    # ... and equal to the count torchvision publishes with its ImageNet weights.
    assert count_params(ours) == torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_non_rgb_input_replaces_only_the_stem():
    rgb, gray = create_model("resnet18", num_classes=10), create_model("resnet18", num_classes=10, in_channels=1)
    assert gray.conv1.weight.shape == (64, 1, 7, 7)
    diff = [k for k, v in gray.state_dict().items() if v.shape != rgb.state_dict()[k].shape]
    assert diff == ["conv1.weight"]


def _torchvision_model(name: str):
    import warnings

    import torchvision

    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(torchvision.models, name)().eval()  # torchvision's own defaults (googlenet: with aux heads)


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "googlenet"])
def test_torchvision_state_dict_loads_with_identical_logits(name, tmp_path):
    theirs = _torchvision_model(name)
    path = tmp_path / f"{name}.pth"
    torch.save(theirs.state_dict(), path)
    ours, info = build_model(name, weights=str(path))
    if name == "googlenet":
        assert any("aux" in s for s in info["report"]["ignored"])
        assert any(k.startswith("aux1.") for k in theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs(x))


def test_num_classes_change_reinitialises_only_the_classifier(tmp_path):
    theirs = _torchvision_model("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(theirs.state_dict(), path)
    ours, info = build_model("resnet18", weights=str(path), num_classes=10, in_channels=1)
    assert "fc" in info["report"]["reinitialised"][0]
    assert any("conv1.weight" in a for a in info["report"]["adapted"])
    src, dst = theirs.state_dict(), ours.state_dict()
    assert dst["fc.weight"].shape == (10, 512)
    for k, v in dst.items():
        if k.startswith("fc."):
            continue
        expected = src[k].sum(1, keepdim=True) if k == "conv1.weight" else src[k]
        assert torch.equal(v, expected), k


def test_artifact_weights_keep_classes_and_can_change_them(lenet_digits):
    model, info = build_model("lenet5", weights=str(lenet_digits.path))
    assert info["classes"] == lenet_digits.classes
    assert info["parent"].id == lenet_digits.id
    five, info5 = build_model("lenet5", weights=str(lenet_digits.path), num_classes=5)
    assert five.classifier[5].out_features == 5
    assert torch.equal(five.features[0].weight, model.features[0].weight)
    with pytest.raises(InvalidInput, match="holds lenet5, not resnet18"):
        build_model("resnet18", weights=str(lenet_digits.path))


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="random weights - accuracy means nothing"):
        build_model("lenet5", weights="random", num_classes=10)


def test_mismatched_weights_list_the_first_keys(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(create_model("resnet18", num_classes=10).state_dict(), path)
    with pytest.raises(WeightsError) as exc:
        build_model("resnet34", weights=str(path), num_classes=10)
    msg = str(exc.value)
    assert "do not fit resnet34" in msg and "missing key(s): layer1.2.conv1.weight" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "kind", ["garbage", "truncated", "pickled-module", "not-tensors", "bad-safetensors", "missing"]
)
def test_unreadable_weights_files_fail_clearly(tmp_path, kind):
    path = tmp_path / ("w.safetensors" if kind == "bad-safetensors" else "w.pth")
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint" * 10)
    elif kind == "truncated":
        torch.save(create_model("lenet5", num_classes=10).state_dict(), path)
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "pickled-module":
        torch.save(create_model("lenet5", num_classes=10), path)  # a whole pickled nn.Module
    elif kind == "not-tensors":
        torch.save({"epoch": 3, "note": "hello"}, path)
    elif kind == "bad-safetensors":
        path.write_bytes(b"\x00" * 64)
    expected = {
        "garbage": "Cannot read weights file",
        "truncated": "Cannot read weights file",
        "pickled-module": "refuses to unpickle",
        "not-tensors": "is not a state_dict",
        "bad-safetensors": "not a valid safetensors file",
        "missing": "does not exist",
    }[kind]
    with pytest.raises(WeightsError, match=expected):
        build_model("lenet5", weights=str(path), num_classes=10)


def test_wrapped_and_prefixed_state_dicts_load(tmp_path):
    src = create_model("lenet5", num_classes=10)
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    model, _ = build_model("lenet5", weights=str(path))
    assert torch.equal(model.features[0].weight, src.features[0].weight)


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"


def test_imagenet_offline_names_the_cache_path(monkeypatch, tmp_path):
    expected = _offline(monkeypatch, tmp_path)
    with pytest.raises(WeightsError) as exc:
        build_model("resnet18", weights="imagenet")
    msg = str(exc.value)
    assert "Could not download ImageNet weights for resnet18" in msg
    assert "copy resnet18-f37072fd.pth" in msg and str(expected) in msg
    assert not expected.exists()


def test_imagenet_from_the_cache(monkeypatch, tmp_path):
    expected = _offline(monkeypatch, tmp_path)
    theirs = _torchvision_model("resnet18")
    expected.parent.mkdir(parents=True)
    torch.save(theirs.state_dict(), expected)
    ours, info = build_model("resnet18", weights="imagenet")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), theirs(x))
    # lenet5 has no published weights: say so instead of trying a download.
    with pytest.raises(WeightsError, match="no published ImageNet weights"):
        build_model("lenet5", weights="imagenet")


def test_describe_models_counts_at_a_chosen_input():
    from edgecnn.models import describe_models

    rows = {
        r["name"]: r
        for r in describe_models(["lenet5", "resnet18"], input_size=(64, 64), in_channels=1, num_classes=10)
    }
    assert rows["lenet5"]["input"] == [1, 64, 64]
    real = create_model("resnet18", num_classes=10, in_channels=1)
    assert rows["resnet18"]["params"] == count_params(real)
    assert rows["resnet18"]["macs"] == count_macs(real, (1, 64, 64))  # meta-device count == real count
    default = {r["name"]: r for r in describe_models(["lenet5", "vgg16"])}
    assert (default["lenet5"]["classes"], default["lenet5"]["params"]) == (10, 61706)
    assert default["vgg16"]["classes"] == 1000 and default["vgg16"]["input"] == [3, 224, 224]


@pytest.mark.parametrize("first", ["edgecnn.models.zoo", "edgecnn.models.lenet", "edgecnn.models.registry"])
def test_registry_is_full_whichever_module_is_imported_first(first):
    """The builders register from their own modules, imported by the package: no import back from the registry."""
    import subprocess
    import sys

    code = f"import {first}; from edgecnn.models.registry import list_models; print(len(list_models()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(len(list_models()))


def test_layer_names_and_torch_artifacts(tmp_path):
    from edgecnn.artifact import Artifact
    from edgecnn.errors import ArtifactError
    from edgecnn.models import save_torch_artifact, torch_artifact, unknown_layer

    model = create_model("lenet5", num_classes=10)
    assert unknown_layer(model, ["features.0", "classifier.5"]) is None
    assert unknown_layer(model, ["features.0", "features.9"]) == ("features.9", " Did you mean 'features.5'?")
    assert unknown_layer(model, [""])[0] == ""  # the root is not a layer
    spec = get_spec("lenet5")
    art = save_torch_artifact(
        model,
        tmp_path / "l",
        name="lenet5",
        input_spec=spec.input_spec(),
        classes=[str(i) for i in range(10)],
        stage="random-init",
    )
    assert torch_artifact(tmp_path / "l", why="-").id == art.id
    other = Artifact(path=art.path, manifest={**art.manifest, "format": "onnx"})
    with pytest.raises(ArtifactError, match="The teacher '.*' is a onnx artifact; use the torch one"):
        torch_artifact(other, who="The teacher ", why="use the torch one")
