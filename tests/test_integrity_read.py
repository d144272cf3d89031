"""Issue 14, the read side of artifacts: every command that reads an artifact checks the sha256 of every
file it uses against a manifest that lists them, model files stay inside the artifact, manifests are
validated against a schema (one-line errors naming the key), and deploy never writes a hash it did not
first verify. Each test copies a session artifact to tmp_path before tampering with it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_helpers import one_line_error
from safetensors.torch import load_file, save_file

from edgecnn.artifact import MANIFEST, Artifact, sha256_file
from edgecnn.errors import ArtifactError, OptionError, WeightsError


def _error_line(result, code: int = 1) -> str:
    """The command failed with ``code`` and no traceback; its error line (train prints its plan first)."""
    assert result.exit_code == code and "Traceback" not in result.output, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def _copy(art, tmp_path: Path, name: str = "src") -> Path:
    dst = tmp_path / name
    shutil.copytree(art.path, dst)
    return dst


def _edit(path: Path, fn) -> None:
    """Rewrite ``path``'s manifest.json through ``fn(manifest)`` (the files map and hashes untouched)."""
    m = json.loads((path / MANIFEST).read_text())
    fn(m)
    (path / MANIFEST).write_text(json.dumps(m))


def _flip_weights(path: Path) -> None:
    """Flip bytes in the middle of an ONNX file: it still parses and runs, only the sha256 tells."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 32] = bytes(b ^ 0x55 for b in data[mid : mid + 32])
    path.write_bytes(bytes(data))


def _tamper_safetensors(path: Path) -> None:
    state = load_file(str(path))
    key = next(iter(state))
    state[key] = state[key] * 1.5  # a valid file with other weights
    save_file(state, str(path))


# -- 1. deploy / quantize launder a tampered model ---------------------------------------------------
def test_deploy_refuses_a_tampered_onnx_artifact(lenet_onnx, tmp_path, cli_run):
    src = _copy(lenet_onnx, tmp_path)
    _flip_weights(src / "model.onnx")
    r = cli_run(["deploy", src, "--target", "cpu", "--out", tmp_path / "bundle"])
    line = one_line_error(r)
    assert "model.onnx does not match its sha256" in line and "re-create" in line
    assert not (tmp_path / "bundle").exists()


def test_deploy_refuses_a_tampered_torch_artifact(lenet_digits, tmp_path, cli_run):
    src = _copy(lenet_digits, tmp_path)
    _tamper_safetensors(src / "model.safetensors")
    r = cli_run(["deploy", src, "--target", "cpu", "--out", tmp_path / "bundle"])
    assert "model.safetensors does not match its sha256" in one_line_error(r)
    assert not (tmp_path / "bundle").exists()


def test_quantize_refuses_a_tampered_onnx_artifact(lenet_onnx, tmp_path, cli_run):
    src = _copy(lenet_onnx, tmp_path)
    _flip_weights(src / "model.onnx")
    r = cli_run(["quantize", src, "--fp16", "--out", tmp_path / "q"])
    assert "does not match its sha256" in one_line_error(r)
    assert not (tmp_path / "q").exists()


def test_make_bundle_verifies_an_artifact_object_tampered_after_loading(lenet_onnx, tmp_path):
    """An Artifact already in memory is checked again (cached per file identity) before it is bundled."""
    from edgecnn.deploy import make_bundle

    src = Artifact.load(_copy(lenet_onnx, tmp_path))
    _flip_weights(src.model_file)
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        make_bundle(src, tmp_path / "bundle", target="cpu")
    assert not (tmp_path / "bundle").exists()


def test_bundle_model_is_the_verified_source(lenet_onnx, tmp_path):
    from edgecnn.deploy import make_bundle

    b = make_bundle(lenet_onnx, tmp_path / "bundle", target="cpu")
    assert b.manifest["files"]["model.onnx"] == lenet_onnx.sha256 == sha256_file(lenet_onnx.model_file)


def test_bundle_may_hold_its_device_build_outputs_but_nothing_else(lenet_onnx, tmp_path):
    from edgecnn.deploy import check_bundle, make_bundle

    b = make_bundle(lenet_onnx, tmp_path / "bundle", target="cpu")
    (b.path / "model.engine").write_bytes(b"built on the device by build_engine.sh")
    (b.path / "build_engine.log").write_text("trtexec ...")
    check_bundle(b.path)
    (b.path / "numpy.py").write_text("print('shadowed')")
    with pytest.raises(ArtifactError, match="numpy.py, not listed in manifest.json"):
        check_bundle(b.path)


# -- 2. the files map is required and complete; torch artifacts are checked too -------------------------
@pytest.mark.parametrize("files", [{}, {"other.bin": "0" * 64}, None, "model.onnx"])
def test_empty_or_partial_files_map_is_refused(lenet_onnx, tmp_path, files):
    src = _copy(lenet_onnx, tmp_path)
    _edit(src, lambda m: m.update(files=files))
    with pytest.raises(ArtifactError, match="files"):
        Artifact.load(src)


def test_eval_and_check_refuse_an_empty_files_map(lenet_onnx, lenet_digits, tmp_path, cli_run):
    src = _copy(lenet_onnx, tmp_path)
    _flip_weights(src / "model.onnx")
    _edit(src, lambda m: m.update(files={}))
    line = one_line_error(cli_run(["eval", src, "--data", "digits", "-q"]))
    assert "'files'" in line and "model.onnx" in line
    line = one_line_error(cli_run(["check", src, "--against", lenet_digits.path, "--data", "digits"]))
    assert "'files'" in line


def test_files_map_disagreeing_with_sha256_is_refused(lenet_onnx, tmp_path):
    src = _copy(lenet_onnx, tmp_path)
    _edit(src, lambda m: m.update(sha256="0" * 64))
    with pytest.raises(ArtifactError, match="sha256"):
        Artifact.load(src)


def test_eval_refuses_a_tampered_torch_artifact(lenet_digits, tmp_path, cli_run):
    src = _copy(lenet_digits, tmp_path)
    _tamper_safetensors(src / "model.safetensors")
    line = one_line_error(cli_run(["eval", src, "--data", "digits", "-q"]))
    assert "model.safetensors does not match its sha256" in line


def test_unlisted_file_in_the_artifact_is_refused(lenet_onnx, tmp_path):
    """ONNX Runtime reads external-data files next to model.onnx: a file the manifest does not list is refused."""
    src = _copy(lenet_onnx, tmp_path)
    (src / "model.onnx.data").write_bytes(b"x")
    with pytest.raises(ArtifactError, match="model.onnx.data.*not listed"):
        Artifact.load(src)


def test_verification_hashes_once_per_process(lenet_onnx, tmp_path, monkeypatch):
    import edgecnn.integrity as integrity

    src = _copy(lenet_onnx, tmp_path)
    Artifact.load(src)
    calls = []
    real = integrity._hash_open_file
    monkeypatch.setattr(integrity, "_hash_open_file", lambda fd: calls.append(fd) or real(fd))
    for _ in range(3):
        Artifact.load(src).verify()
    assert calls == []  # same file identity: the digest is reused
    time.sleep(0.01)
    _flip_weights(src / "model.onnx")  # new size/mtime: hashed again, and caught
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        Artifact.load(src)
    assert len(calls) == 1


# -- 3. model files are confined to the artifact -------------------------------------------------------
def _outside(tmp_path: Path, lenet_onnx) -> Path:
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(lenet_onnx.model_file, outside)
    return outside


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "dir-symlink"])
def test_model_file_outside_the_artifact_is_refused(lenet_onnx, tmp_path, cli_run, how):
    outside = _outside(tmp_path, lenet_onnx)
    src = _copy(lenet_onnx, tmp_path)
    digest = sha256_file(outside)
    if how == "dotdot":
        _edit(src, lambda m: m.update(file="../outside.onnx", files={"../outside.onnx": digest}))
    elif how == "absolute":
        _edit(src, lambda m: m.update(file=str(outside), files={str(outside): digest}))
    elif how == "symlink":
        (src / "model.onnx").unlink()
        (src / "model.onnx").symlink_to(outside)
    else:
        (src / "sub").symlink_to(tmp_path)
        _edit(src, lambda m: m.update(file="sub/outside.onnx", files={"sub/outside.onnx": digest}))
    with pytest.raises(ArtifactError, match="outside|inside"):
        Artifact.load(src)
    for args in (["eval", src, "--data", "digits", "-q"], ["quantize", src, "--fp16", "--out", tmp_path / "q"]):
        assert "artifact" in one_line_error(cli_run(args))
    r = cli_run(["deploy", src, "--target", "cpu", "--out", tmp_path / "bundle"])
    one_line_error(r)
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "q").exists()


def test_symlink_inside_the_artifact_is_allowed(lenet_onnx, tmp_path):
    src = _copy(lenet_onnx, tmp_path)
    (src / "model.onnx").rename(src / "real.onnx")
    (src / "model.onnx").symlink_to("real.onnx")
    _edit(src, lambda m: m["files"].update({"real.onnx": m["sha256"]}))
    assert Artifact.load(src).model_file.name == "model.onnx"


def test_model_file_that_is_a_directory_is_refused(lenet_onnx, tmp_path, cli_run):
    src = _copy(lenet_onnx, tmp_path)
    (src / "model.onnx").unlink()
    (src / "model.onnx").mkdir()
    line = one_line_error(cli_run(["eval", src, "--data", "digits", "-q"]))
    assert "model.onnx" in line and "not a regular file" in line


def test_fifo_model_file_is_refused_without_blocking(lenet_onnx, tmp_path):
    src = _copy(lenet_onnx, tmp_path)
    (src / "model.onnx").unlink()
    os.mkfifo(src / "model.onnx")
    cmd = [sys.executable, "-m", "edgecnn", "deploy", str(src), "--target", "cpu", "--out", str(tmp_path / "b")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 1 and "not a regular file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()


# -- 4. the manifest schema: one-line errors naming the key ---------------------------------------------
def _set(path: str, value):
    def fn(m):
        *parents, last = path.split(".")
        node = m
        for p in parents:
            node = node[p]
        node[last] = value

    return fn


BAD_VALUES = [
    ("classes", "0123456789", "classes"),
    ("classes", [1, 2, 3], "classes"),
    ("classes", [], "classes"),
    ("input", [1, 32, 32], "input"),
    ("input.channels", "one", "input.channels"),
    ("input.channels", 0, "input.channels"),
    ("input.channels", True, "input.channels"),
    ("input.height", 0, "input.height"),
    ("input.height", 1e9, "input.height"),
    ("input.width", 1_000_000_000, "input.width"),
    ("input.width", 32.5, "input.width"),
    ("input.std", [0], "input.std"),
    ("input.std", [0.5, 0.5], "input.std"),
    ("input.mean", ["a"], "input.mean"),
    ("input.mean", 0.5, "input.mean"),
    ("input.scale", -1, "input.scale"),
    ("input.resize", 0, "input.resize"),
    ("input.crop", [0, 32], "input.crop"),
    ("format", "zip", "format"),
    ("file", 5, "file"),
    ("file", "", "file"),
    ("id", 5, "id"),
    ("model", None, "model"),
    ("precision", 8, "precision"),
    ("sha256", "xyz", "sha256"),
    ("stage", "train", "stage"),
    ("stage.name", 3, "stage.name"),
    ("metrics", [], "metrics"),
    ("lineage", "x", "lineage"),
    ("parent", "x", "parent"),
    ("architecture", "lenet", "architecture"),
    ("architecture.num_classes", "ten", "architecture.num_classes"),
    ("files.model.onnx", "abc", "files"),
]


@pytest.mark.parametrize("key,value,named", BAD_VALUES, ids=[f"{k}={v!r}"[:40] for k, v, _ in BAD_VALUES])
def test_wrong_manifest_values_are_one_line_errors(lenet_onnx, tmp_path, key, value, named):
    src = _copy(lenet_onnx, tmp_path)
    if key.startswith("files."):
        _edit(src, lambda m: m["files"].update({"model.onnx": value}))
    else:
        _edit(src, _set(key, value))
    with pytest.raises(ArtifactError) as err:
        Artifact.load(src)
    text = str(err.value)
    assert f"'{named}'" in text and str(src / MANIFEST) in text and "\n" not in text, text


def test_missing_input_key_is_named(lenet_onnx, tmp_path):
    src = _copy(lenet_onnx, tmp_path)
    _edit(src, lambda m: m["input"].pop("channels"))
    with pytest.raises(ArtifactError, match="'input.channels'.*missing"):
        Artifact.load(src)


def test_wrong_values_through_the_cli(lenet_onnx, tmp_path, cli_run):
    src = _copy(lenet_onnx, tmp_path)
    _edit(src, _set("input.channels", "one"))
    assert "'input.channels'" in one_line_error(cli_run(["eval", src, "--data", "digits", "-q"]))
    _edit(src, _set("input.channels", 1))
    _edit(src, _set("classes", "0123456789"))
    assert "'classes'" in one_line_error(cli_run(["deploy", src, "--target", "cpu", "--out", tmp_path / "b"]))


def test_deeply_nested_manifest_is_refused(lenet_onnx, tmp_path):
    src = _copy(lenet_onnx, tmp_path)
    text = (src / MANIFEST).read_text()
    deep = "[" * 200_000 + "]" * 200_000
    (src / MANIFEST).write_text(text.rstrip().rstrip("}") + f', "junk": {deep}}}')
    with pytest.raises(ArtifactError, match="nest"):
        Artifact.load(src)


def test_huge_manifest_is_refused_before_parsing(lenet_onnx, tmp_path):
    src = _copy(lenet_onnx, tmp_path)
    text = (src / MANIFEST).read_text()
    (src / MANIFEST).write_text(text.rstrip().rstrip("}") + ', "junk": "' + "x" * (17 << 20) + '"}')
    with pytest.raises(ArtifactError, match="MiB"):
        Artifact.load(src)


def test_every_written_artifact_passes_the_schema(lenet_digits, lenet_onnx, lenet_qdq):
    for art in (lenet_digits, lenet_onnx, lenet_qdq):
        Artifact.load(art.path)


# -- 5. class count vs the model's outputs --------------------------------------------------------------
def test_deploy_refuses_a_class_count_that_differs_from_the_outputs(lenet_onnx, tmp_path, cli_run):
    src = _copy(lenet_onnx, tmp_path)
    _edit(src, _set("classes", list("01234")))  # the schema compares with the recorded architecture ...
    assert "'architecture.num_classes' is 10" in one_line_error(
        cli_run(["deploy", src, "--target", "cpu", "--out", tmp_path / "b"])
    )
    _edit(src, lambda m: m.pop("architecture"))  # ... and deploy with the model's outputs
    line = one_line_error(cli_run(["deploy", src, "--target", "cpu", "--out", tmp_path / "b"]))
    assert "5 classes" in line and "10 outputs" in line
    assert not (tmp_path / "b").exists()


# -- 6. weights files: our own refusal, never torch's unsafe advice ---------------------------------------
class _Reduce:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_pickled_weights_are_refused_without_unsafe_advice(tmp_path, cli_run):
    from edgecnn.checkpoint import read_checkpoint
    from edgecnn.models.weights import read_state_dict

    torch.save({"a": _Reduce()}, tmp_path / "evil.pth")
    with open(tmp_path / "raw.pth", "wb") as fh:
        pickle.dump(_Reduce(), fh)
    for name in ("evil.pth", "raw.pth"):
        for read in (read_state_dict, read_checkpoint):
            with pytest.raises(WeightsError) as err:
                read(tmp_path / name)
            text = str(err.value)
            assert "weights_only" not in text and "False" not in text and "\n" not in text, text
            assert "refuses to unpickle" in text or name == "raw.pth", text  # raw pickle: "Unsupported operand"
    r = cli_run(["train", "lenet5", "--data", "digits", "--weights", tmp_path / "evil.pth", "--out", tmp_path / "o"])
    line = _error_line(r)
    assert "posix.system" in line and "weights_only" not in line


@pytest.mark.parametrize("kind", ["sparse", "meta"])
def test_sparse_or_meta_tensors_are_one_line_errors(tmp_path, cli_run, kind):
    from edgecnn.models import create_model

    state = create_model("lenet5", num_classes=10).state_dict()
    key = next(iter(state))
    state[key] = state[key].to_sparse() if kind == "sparse" else torch.empty(state[key].shape, device="meta")
    torch.save(state, tmp_path / "w.pth")
    r = cli_run(["train", "lenet5", "--data", "digits", "--weights", tmp_path / "w.pth", "--out", tmp_path / "o"])
    line = _error_line(r)
    assert key in line and kind in line
    assert not (tmp_path / "o").exists()


# -- 7. --resume with other settings than the checkpoint's ---------------------------------------------
def test_resume_with_other_settings_is_refused(tmp_path):
    from edgecnn.checkpoint import checkpoint_path
    from edgecnn.train import TrainConfig, train

    out = tmp_path / "r"
    train("lenet5", data="digits", out=out, config=TrainConfig(epochs=1, seed=3), progress=False)
    ckpt = checkpoint_path(out)
    with pytest.raises(OptionError) as err:
        train("lenet5", data="digits", out=out, overrides={"epochs": 3, "lr": 0.2, "seed": 3}, resume=ckpt)
    text = str(err.value)
    assert "epochs 1 -> 3" in text and "lr" in text and "seed" not in text and "--weights" in text, text
    # the checkpoint's own settings (given again, or not at all) resume fine
    art = train("lenet5", data="digits", out=out, overrides={"seed": 3}, resume=ckpt, progress=False)
    assert art.manifest["stage"]["params"]["epochs"] == 1


def test_resume_refusal_through_the_cli(tmp_path, cli_run):
    out = tmp_path / "r"
    assert cli_run(["train", "lenet5", "--data", "digits", "--epochs", "1", "--out", out, "-q"]).exit_code == 0
    ckpt = out.parent / "r.ckpt.pt"
    r = cli_run(["train", "lenet5", "--data", "digits", "--epochs", "2", "--seed", "9", "--out", out, "--resume", ckpt])
    line = _error_line(r, code=2)
    assert "epochs 1 -> 2" in line and "seed 0 -> 9" in line and "--weights" in line
