"""Bring your own model (issue 16): torchvision:NAME, timm:NAME, FILE.py:factory / module:factory and a network in
memory (edgecnn.from_module) go wherever a zoo name goes; the manifest records the source exactly enough to rebuild
it; pruned networks of any source persist as structure + safetensors and reload with identical logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from cli_helpers import one_line_error

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_model.py"


def _random_original(ref, out, *, channels=1, size=32, classes=10):
    """``ref`` built with random weights and saved as a torch artifact (compress's source step), BatchNorm
    statistics randomised so that a reload that mixed up channels would change the logits."""
    from edgecnn.compress.source import load_original
    from edgecnn.models import load_torch_model, save_torch_artifact

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art, _ = load_original(
            str(ref), out / "built", weights="random", num_classes=classes, in_channels=channels, input_size=size
        )
    net = load_torch_model(art)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    arch = art.manifest["architecture"]
    return save_torch_artifact(
        net, out / "orig", name=art.model, input_spec=art.input, classes=art.classes, stage="random-init",
        source=arch.get("source"),
    )  # fmt: skip


def _factory_file(tmp_path, body: str, name: str = "net.py") -> Path:
    path = tmp_path / name
    path.write_text("import torch\nfrom torch import nn\n\n" + body)
    return path


FIXED_HEAD = """
def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, num_classes))
"""


# -- parsing and recording ---------------------------------------------------------------------------------
def test_every_kind_parses_to_a_source_with_a_record():
    from edgecnn.models import ModelSource

    zoo = ModelSource.parse("resnet18")
    assert zoo.kind == "zoo" and zoo.record() is None and zoo.name == "resnet18"
    tv = ModelSource.parse("torchvision:mobilenet_v2")
    assert tv.record()["kind"] == "torchvision" and tv.name == "torchvision:mobilenet_v2"
    assert tv.spec().classifier == "classifier.1" and tv.spec().first_conv == "features.0.0"
    tm = ModelSource.parse("timm:resnet18d")
    assert tm.record()["ref"] == "resnet18d" and tm.spec().classifier == "fc"
    f = ModelSource.parse(f"{EXAMPLE}:build")
    rec = f.record()
    assert rec["kind"] == "file" and rec["ref"] == str(EXAMPLE) and rec["factory"] == "build"
    assert len(rec["sha256"]) == 64 and f.name == "custom_model.py:build"
    m = ModelSource.parse("torchvision.models:mobilenet_v3_small")
    assert m.kind == "module" and m.spec().classifier == "classifier.3"


@pytest.mark.parametrize(
    "ref, needle",
    [
        ("torchvision:mobilenetv2", "Did you mean torchvision:mobilenet_v2"),
        ("timm:resnet18dd", "Did you mean timm:resnet18d"),
        ("mobilenet_v2", "Did you mean 'torchvision:mobilenet_v2'?"),
    ],
)
def test_unknown_names_suggest_the_nearest(cli_run, ref, needle):
    line = one_line_error(cli_run(["models", ref]), 1)
    assert needle in line


def test_models_lists_any_source(cli_run, tmp_path):
    out = tmp_path / "models.json"
    args = ["models", "torchvision:mobilenet_v3_small", "timm:resnet18d", f"{EXAMPLE}:build"]
    r = cli_run([*args, "--input-size", "32", "--in-channels", "1", "--num-classes", "10", "--json", out])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"torchvision:mobilenet_v3_small", "timm:resnet18d", "custom_model.py:build"}
    assert all(row["params"] > 0 and row["macs"] > 0 and row["input"] == [1, 32, 32] for row in rows.values())


# -- bad input: one line, exit 1 ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, needle",
    [
        ("def build(num_classes=10):\n    raise ValueError('no such width')\n", "raised ValueError: no such width"),
        ("def build(num_classes=10):\n    return 42\n", "returned int, not a torch.nn.Module"),
        (FIXED_HEAD, "cannot take 1x48x48 inputs"),
        ("raise ImportError('missing dependency foo')\n", "Cannot import"),
    ],
    ids=["raises", "not-a-module", "input-size", "import-fails"],
)
def test_bad_factories_fail_in_one_line(cli_run, tmp_path, body, needle):
    path = _factory_file(tmp_path, body)
    args = ["train", f"{path}:build", "--data", "digits", "--epochs", "1", "--in-channels", "1", "--input-size", "48"]
    line = one_line_error(cli_run([*args, "--out", tmp_path / "o", "-q"]), 1)
    assert needle in line
    assert not (tmp_path / "o").exists()


def test_missing_factory_file_and_name(cli_run, tmp_path):
    line = one_line_error(cli_run(["train", "nope/net.py:build", "--data", "digits", "--out", tmp_path / "o"]), 1)
    assert "Model file 'nope/net.py' does not exist" in line
    path = _factory_file(tmp_path, FIXED_HEAD)
    line = one_line_error(cli_run(["train", f"{path}:bulid", "--data", "digits", "--out", tmp_path / "o"]), 1)
    assert "has no callable 'bulid'" in line and "Did you mean 'build'?" in line


def test_timm_imagenet_offline_says_what_to_do(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HTTPS_PROXY": "http://127.0.0.1:9"}
    args = ["compress", "timm:resnet18d", "--weights", "imagenet", "--int8", "--calib", "digits", "-o", tmp_path / "c"]
    r = subprocess.run(
        [sys.executable, "-m", "edgecnn.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "Could not download ImageNet weights for timm:resnet18d" in lines[0]
    assert "huggingface-cli download timm/resnet18d.ra2_in1k" in lines[0] and "--weights FILE" in lines[0]


# -- the factory file and its card -------------------------------------------------------------------------
CARDED = """
def build(num_classes=10, width=4):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes),
    )
"""


def test_card_sets_input_and_kwargs_and_a_changed_factory_is_refused(tmp_path):
    from edgecnn.artifact import Artifact
    from edgecnn.errors import ArtifactError
    from edgecnn.models import load_torch_model

    path = _factory_file(tmp_path, CARDED)
    (tmp_path / "net.card.yaml").write_text(
        "input-size: 24\nin-channels: 1\nmean: [0.5]\nstd: [0.25]\nkwargs:\n  width: 6\n"
    )
    art = _random_original(f"{path}:build", tmp_path, channels=None, size=None, classes=3)
    arch = art.manifest["architecture"]
    assert art.model == "net.py:build" and art.input_shape == (1, 24, 24)
    assert art.input["mean"] == [0.5] and art.input["std"] == [0.25]
    assert arch["source"]["kwargs"] == {"width": 6} and arch["source"]["ref"] == str(path)
    assert load_torch_model(art)[0].out_channels == 6  # rebuilt from the record, with the card's kwargs
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(ArtifactError) as exc:
        load_torch_model(Artifact.load(art.path))
    line = str(exc.value)
    assert "changed since" in line and "restore that version" in line and "\n" not in line


def test_card_with_an_unknown_key_is_refused(tmp_path, cli_run):
    path = _factory_file(tmp_path, CARDED)
    (tmp_path / "net.yaml").write_text("input-sise: 24\n")
    line = one_line_error(cli_run(["models", f"{path}:build"]), 1)
    assert "input-sise" in line and "input-size" in line


# -- pruning any source: structure + safetensors, identical logits -----------------------------------------
@pytest.mark.parametrize(
    "ref", ["torchvision:mobilenet_v3_small", pytest.param("torchvision:efficientnet_b0", marks=pytest.mark.slow)]
)
def test_pruned_networks_with_se_and_depthwise_reload_identically(tmp_path, ref):
    from edgecnn.artifact import Artifact
    from edgecnn.compress.prune import PruneOptions, prune
    from edgecnn.models import load_torch_model

    src = _random_original(ref, tmp_path, channels=3)
    art = prune(src, tmp_path / "p", PruneOptions(ratio=0.3), progress=False)
    assert art.metrics["reload_max_abs_diff"] == 0.0  # prune's own check: rebuilt from disk == pruned in memory
    structure = art.manifest["architecture"]["structure"]
    grouped = [d for d in structure.values() if d["type"] == "Conv2d" and d["attrs"].get("groups", 1) > 1]
    assert grouped, "depthwise convolutions were pruned and recorded with their new groups"
    assert art.manifest["architecture"]["source"]["ref"] == ref.split(":")[1]
    assert not list(Path(art.path).glob("*.pt*")) and Path(art.model_file).suffix == ".safetensors"
    fresh = load_torch_model(Artifact.load(art.path))
    again = load_torch_model(Artifact.load(art.path))
    x = torch.randn(3, *src.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(fresh(x), again(x))
        assert not torch.equal(fresh(x), load_torch_model(src)(x))  # it really is another network


def test_unprunable_parameters_are_named(tmp_path):
    from edgecnn.compress.prune import PruneOptions, prune

    path = _factory_file(
        tmp_path,
        """
class Scaled(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.gamma = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x):
        return self.conv(x) * self.gamma


def build(num_classes=10):
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), Scaled(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes)
    )
""",
    )
    src = _random_original(f"{path}:build", tmp_path)
    with pytest.raises(Exception, match=r"Cannot prune net.py:build safely: 1.gamma .*\(Scaled\)"):
        prune(src, tmp_path / "p", PruneOptions(ratio=0.3), progress=False)
    assert not (tmp_path / "p").exists()


# -- timm: export with parity, quantize ---------------------------------------------------------------------
@pytest.mark.slow
def test_timm_model_exports_with_parity_and_quantizes(tmp_path):
    from edgecnn.compress.quantize import QuantizeOptions, quantize
    from edgecnn.data.source import DataSource
    from edgecnn.export import export_onnx

    src = _random_original("timm:resnet18d", tmp_path)
    assert src.manifest["architecture"]["source"]["kind"] == "timm"
    onnx = export_onnx(src, tmp_path / "onnx", progress=False)
    parity = onnx.metrics["parity"] if "parity" in onnx.metrics else onnx.manifest["parity"]
    assert parity["max_abs"] < 1e-3
    q = quantize(
        onnx, tmp_path / "q", QuantizeOptions(calib=DataSource.parse("digits"), subset_size=32), progress=False
    )
    assert q.precision == "int8" and q.model == "timm:resnet18d"


# -- Python API --------------------------------------------------------------------------------------------
def test_from_module_gives_an_artifact_that_prunes_and_exports(tmp_path):
    import edgecnn
    from edgecnn.compress.prune import PruneOptions, prune
    from edgecnn.export import export_onnx
    from edgecnn.models import load_torch_model

    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import custom_model
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    net = custom_model.build(num_classes=4, in_channels=1, width=8)
    art = edgecnn.from_module(net, input=(1, 32, 32), classes=["a", "b", "c", "d"], out=tmp_path / "m")
    assert art.model == "module:TinyNet" and art.manifest["architecture"]["source"]["kind"] == "object"
    assert art.manifest["architecture"]["source"]["ref"] == "custom_model:TinyNet"
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_torch_model(art)(x), net.eval()(x))
    pruned = prune(art, tmp_path / "p", PruneOptions(ratio=0.3), progress=False)
    assert pruned.metrics["reload_max_abs_diff"] == 0.0
    assert export_onnx(pruned, tmp_path / "o", progress=False).format == "onnx"
    with pytest.raises(Exception, match="from_module takes a torch.nn.Module"):
        edgecnn.from_module(42, input=(1, 32, 32), classes=3, out=tmp_path / "bad")


# -- the whole chain, from the command line ----------------------------------------------------------------
def _chain(cli_run, ref, out: Path, *extra_train):
    r = cli_run(["train", ref, "--data", "digits", "--epochs", "1", *extra_train, "--out", out / "t", "-q"])
    assert r.exit_code == 0, r.output
    trained = json.loads((out / "t" / "manifest.json").read_text())
    assert trained["architecture"]["source"]["kind"] in ("torchvision", "file")
    args = ["--prune", "0.3", "--distill", "--finetune-epochs", "1", "--data", "digits", "--int8", "--calib", "digits"]
    r = cli_run(["compress", out / "t", *args, "--subset-size", "32", "--no-bench", "--out", out / "c"])
    assert r.exit_code == 0, r.output
    r = cli_run(["check", out / "c" / "final", "--against", out / "t", "--no-latency", "--max-top1-drop", "100"])
    assert r.exit_code in (0, 4), r.output
    r = cli_run(["deploy", out / "c" / "final", "--target", "cpu", "--out", out / "b"])
    assert r.exit_code == 0, r.output
    v = subprocess.run([sys.executable, out / "b" / "run.py", "--verify"], capture_output=True, text=True, timeout=300)
    assert v.returncode == 0, v.stdout + v.stderr


@pytest.mark.slow
def test_torchvision_mobilenet_v2_through_the_whole_chain(cli_run, tmp_path):
    _chain(cli_run, "torchvision:mobilenet_v2", tmp_path, "--input-size", "64")  # 224 px would take minutes per epoch


@pytest.mark.slow
def test_custom_model_example_through_the_whole_chain(cli_run, tmp_path):
    _chain(cli_run, f"{EXAMPLE.relative_to(ROOT)}:build", tmp_path)


def test_structures_written_before_the_generic_format_still_load(tmp_path):
    from edgecnn.artifact import Artifact
    from edgecnn.models import create_model, load_torch_model, save_torch_artifact
    from edgecnn.models.structure import apply_structure

    legacy = {
        "features.0": {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "groups": 1},
        "features.3": {"type": "Conv2d", "in_channels": 4, "out_channels": 16, "groups": 1},
    }
    net = apply_structure(create_model("lenet5", num_classes=10, in_channels=1, input_size=32), legacy)
    for p in net.parameters():
        torch.nn.init.normal_(p)
    spec = {"channels": 1, "height": 32, "width": 32, "mean": [0.5], "std": [0.5]}
    art = save_torch_artifact(
        net, tmp_path / "a", name="lenet5", input_spec=spec, classes=list("0123456789"), stage="t", structure=legacy
    )
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_torch_model(Artifact.load(art.path))(x), net.eval()(x))


def test_sweep_and_distill_take_model_sources(cli_run, tmp_path, lenet_digits):
    args = ["sweep", "torchvision:mobilenetv2", "--data", "digits", "--weights", "random", "--out", tmp_path / "s"]
    line = one_line_error(cli_run(args))
    assert "Did you mean torchvision:mobilenet_v2" in line
    path = _factory_file(tmp_path, CARDED)
    r = cli_run(["distill", f"{path}:build", "--teacher", lenet_digits.path, "--data", "digits", "--epochs", "1",
                 "--out", tmp_path / "d"])  # fmt: skip
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["model"] == "net.py:build" and manifest["architecture"]["source"]["sha256"]
