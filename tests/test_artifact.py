"""Artifacts: atomic writes, manifest contents (input spec, lineage, environment), integrity checks, and
torch artifacts that round-trip - pruned structures included - without pickles."""

from __future__ import annotations

import json

import pytest
import torch

from edgecnn.artifact import (
    MANIFEST,
    Artifact,
    atomic_write_json,
    is_artifact,
    new_manifest,
    sha256_file,
    write_artifact,
)
from edgecnn.errors import ArtifactError
from edgecnn.models import create_model, get_spec, load_torch_model, save_torch_artifact

SPEC = get_spec("lenet5").input_spec()


def _manifest(**kw):
    return new_manifest(
        model="lenet5",
        format="torch",
        file="model.bin",
        precision="fp32",
        input=SPEC,
        classes=list("0123456789"),
        stage="test",
        **kw,
    )


def _write(tmp):
    (tmp / "model.bin").write_bytes(b"weights")


def test_write_and_load_round_trip(tmp_path):
    art = write_artifact(tmp_path / "a", _manifest(params={"p": 1}), _write)
    loaded = Artifact.load(tmp_path / "a", verify=True)
    assert loaded.id == art.id and loaded.sha256 == sha256_file(tmp_path / "a" / "model.bin")
    assert loaded.input_shape == (1, 32, 32) and loaded.num_classes == 10 and loaded.stage == "test"
    m = loaded.manifest
    assert m["input"]["mean"] == [0.5] and m["input"]["layout"] == "NCHW" and m["stage"]["params"] == {"p": 1}
    assert m["environment"]["versions"]["torch"] and m["lineage"] == [] and m["parent"] is None
    assert is_artifact(tmp_path / "a") and is_artifact(tmp_path / "a" / MANIFEST)
    assert Artifact.load(tmp_path / "a" / MANIFEST).id == art.id


def test_lineage_goes_back_to_the_original(tmp_path):
    a = write_artifact(tmp_path / "a", _manifest(metrics={"top1": 0.9}), _write)
    b = write_artifact(tmp_path / "b", _manifest(parent=a), _write)
    c = write_artifact(tmp_path / "c", _manifest(parent=b), _write)
    assert [ref["id"] for ref in c.manifest["lineage"]] == [a.id, b.id]
    assert c.manifest["parent"]["sha256"] == b.sha256 and c.root_id == a.id and a.root_id == a.id


def test_failed_write_leaves_nothing(tmp_path):
    def boom(tmp):
        (tmp / "model.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_artifact(tmp_path / "x", _manifest(), boom)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="did not write its model file"):
        write_artifact(tmp_path / "x", _manifest(), lambda tmp: None)
    assert list(tmp_path.iterdir()) == []


def test_replaces_artifacts_but_never_user_files(tmp_path):
    first = write_artifact(tmp_path / "a", _manifest(), _write)
    second = write_artifact(tmp_path / "a", _manifest(), _write)
    assert Artifact.load(tmp_path / "a").id == second.id != first.id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ArtifactError, match="exists and is not an edgecnn artifact"):
        write_artifact(tmp_path / "mine", _manifest(), _write)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_load_errors_say_what_to_do(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        Artifact.load(tmp_path / "none")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Artifact.load(tmp_path / "plain")
    (tmp_path / "plain" / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Artifact.load(tmp_path / "plain")
    (tmp_path / "plain" / MANIFEST).write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ArtifactError, match="not an edgecnn manifest"):
        Artifact.load(tmp_path / "plain")
    write_artifact(tmp_path / "a", _manifest(), _write)
    with pytest.raises(
        ArtifactError, match="is a torch artifact but this command needs onnx; make one with 'edgecnn export'"
    ):
        Artifact.load(tmp_path / "a", formats=("onnx",))
    (tmp_path / "a" / "model.bin").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        Artifact.load(tmp_path / "a", verify=True)
    (tmp_path / "a" / "model.bin").unlink()
    with pytest.raises(ArtifactError, match="file is missing"):
        Artifact.load(tmp_path / "a")


def test_update_metrics_and_atomic_json(tmp_path):
    art = write_artifact(tmp_path / "a", _manifest(metrics={"top1": 0.5}), _write)
    art.update_metrics({"latency_ms": 1.5})
    again = Artifact.load(tmp_path / "a", verify=True)
    assert again.metrics == {"top1": 0.5, "latency_ms": 1.5}
    atomic_write_json(tmp_path / "r" / "x.json", {"a": 1, "p": tmp_path})
    assert json.loads((tmp_path / "r" / "x.json").read_text()) == {"a": 1, "p": str(tmp_path)}
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["x.json"]


def test_torch_artifact_round_trip_is_safetensors(tmp_path):
    model = create_model("lenet5", num_classes=10).eval()
    art = save_torch_artifact(
        model,
        tmp_path / "t",
        name="lenet5",
        input_spec=SPEC,
        classes=list("0123456789"),
        stage="train",
        metrics={"top1": 0.1},
    )
    assert art.model_file.name == "model.safetensors" and art.metrics["params"] == 61706 and art.metrics["macs"] > 0
    assert art.manifest["architecture"] == {
        "name": "lenet5",
        "num_classes": 10,
        "in_channels": 1,
        "input_size": [32, 32],
        "structure": None,
    }
    loaded = load_torch_model(Artifact.load(art.path, verify=True))
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_pruned_structure_rebuilds_from_the_manifest(tmp_path):
    from edgecnn.models.structure import describe_structure

    model = create_model("lenet5", num_classes=10).eval()
    # remove 2 of C1's 6 maps by hand (what structured pruning does) and the matching C3 inputs
    keep = [0, 2, 3, 5]
    c1, c3 = model.features[0], model.features[3]
    new_c1 = torch.nn.Conv2d(1, 4, 5)
    new_c1.weight.data, new_c1.bias.data = c1.weight.data[keep].clone(), c1.bias.data[keep].clone()
    new_c3 = torch.nn.Conv2d(4, 16, 5)
    new_c3.weight.data, new_c3.bias.data = c3.weight.data[:, keep].clone(), c3.bias.data.clone()
    model.features[0], model.features[3] = new_c1, new_c3
    structure = describe_structure(model, create_model("lenet5", num_classes=10))
    assert set(structure) == {"features.0", "features.3"}
    art = save_torch_artifact(
        model,
        tmp_path / "p",
        name="lenet5",
        input_spec=SPEC,
        classes=list("0123456789"),
        stage="prune",
        structure=structure,
    )
    assert art.metrics["params"] < 61706
    loaded = load_torch_model(Artifact.load(art.path))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # a manifest whose structure does not belong to the model is refused
    manifest = json.loads((art.path / MANIFEST).read_text())
    manifest["architecture"]["structure"] = {"features.9": {"type": "Conv2d"}}
    (art.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not belong to this model"):
        load_torch_model(Artifact.load(art.path))
