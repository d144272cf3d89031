"""Issue 14, the scripts side: nothing from a manifest or a device profile reaches a shell unquoted (the
generated build_engine.sh is executed here with a stand-in trtexec, the README's commands are parsed and
run), names are checked against a safe character set where they come in, the bundle's run.py checks its
own files before it imports anything a stray file could shadow and reports files its manifest does not
list, and --device takes a profile file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import one_line_error
from test_deploy_ssh import sshd  # noqa: F401 - the real OpenSSH server on 127.0.0.1
from test_devices import GOOD

from edgecnn.artifact import Artifact
from edgecnn.deploy import RemoteError, build_script, deploy_remote, make_bundle
from edgecnn.devices import ProfileError, load_profile
from edgecnn.errors import EdgeCnnError, OptionError
from edgecnn.runtime.engine_plan import EngineOptions

TRTEXEC_STUB = """#!/usr/bin/env bash
# Stand-in for NVIDIA's trtexec (TensorRT is not installed here): prints its version banner and writes
# the engine file it is asked for. It is not what these tests check.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec $*"
for a in "$@"; do
  case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}";; esac
done
"""


def _hostile(marker: Path) -> str:
    """Text that runs ``touch MARKER-n`` wherever a shell reads it unquoted (or reads past a comment)."""
    m = shlex.quote(str(marker))
    return f"lenet5\ntouch {m}-1\n$(touch {m}-2) `touch {m}-3`; touch {m}-4 'q' \"q\" # it's valid bash"


def _injected(marker: Path) -> list[str]:
    return sorted(p.name for p in marker.parent.glob(marker.name + "*"))


def _copy_with(art: Artifact, dst: Path, **manifest_changes) -> Path:
    """A copy of ``art`` whose manifest.json has ``manifest_changes`` (its files untouched)."""
    shutil.copytree(art.path, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(manifest_changes)
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dst


def _rehash(bundle: Path, rel: str) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][rel] = hashlib.sha256((bundle / rel).read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _run_build_engine(bundle: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """./build_engine.sh run with bash as a user would, a stand-in trtexec first on PATH."""
    stub = tmp_path / "stub-bin" / "trtexec"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text(TRTEXEC_STUB)
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TRTEXEC", "TRT_VERSION")}
    env.update(PATH=f"{stub.parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}", PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(bundle / "build_engine.sh")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )


def _run_py(bundle: Path, *args, flags=()) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *flags, str(bundle / "run.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=str(bundle),
        env=env,
        timeout=120,
    )


def profile_text(description: str) -> str:
    """test_devices' valid jetson profile 'my-board' with another description (YAML text)."""
    return GOOD.replace("description: test board", f"description: {description}")


# -- 1. build_engine.sh ------------------------------------------------------------------------------
def test_build_engine_sh_runs_no_text_from_manifest_or_profile(lenet_onnx13, tmp_path):
    """The model name and the profile's description used to be written into a header comment: a line
    break ended the comment and the next line ran on the device, before the file check, with `bash -n`
    passing. Rendered with hostile values (the profile not validated, as if read by another tool), the
    script must run to the end and execute none of them."""
    art = make_bundle(lenet_onnx13, tmp_path / "b", target="jetson", device="jetson-orin-nano", build_now="never")
    info = json.loads((art.path / "bundle.json").read_text())
    marker = tmp_path / "INJECTED"
    profile = dataclasses.replace(load_profile("jetson-orin-nano"), description=_hostile(marker))
    opts = EngineOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["tensorrt"]["options"].items()})
    text = build_script(
        profile=profile,
        opts=opts,
        families=info["tensorrt"]["trtexec"],
        selected=info["tensorrt"]["selected"],
        model_name=_hostile(marker),
    )
    (art.path / "build_engine.sh").write_text(text)
    _rehash(art.path, "build_engine.sh")
    assert subprocess.run(["bash", "-n", str(art.path / "build_engine.sh")]).returncode == 0
    r = _run_build_engine(art.path, tmp_path)
    assert _injected(marker) == [], r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert (art.path / "model.engine").read_text() == "engine\n"


def test_deploy_refuses_a_model_name_with_a_line_break(cli_run, lenet_onnx13, tmp_path):
    """At the edge: a manifest whose 'model' holds a line break (or shell syntax) is refused before a
    script is written; a script written anyway must not run it."""
    marker = tmp_path / "INJECTED"
    src = _copy_with(lenet_onnx13, tmp_path / "src", model=_hostile(marker))
    out = tmp_path / "b"
    try:
        make_bundle(src, out, target="jetson", device="jetson-orin-nano", build_now="never")
    except EdgeCnnError as exc:
        assert "model" in str(exc) and "\n" not in str(exc)
    else:
        _run_build_engine(out, tmp_path)
        pytest.fail(f"deploy accepted the model name; build_engine.sh then ran: {_injected(marker)}")
    assert not out.exists() and _injected(marker) == []
    r = cli_run(["deploy", src, "--target", "jetson", "--out", out])
    assert "model" in one_line_error(r) and not out.exists()


@pytest.mark.parametrize(
    "description, key",
    [
        ('"board\\ntouch INJECTED"', "description"),
        ('"board\\rtouch INJECTED"', "description"),
        ('"board \\e[2J"', "description"),
    ],
)
def test_profile_text_with_control_characters_is_refused(cli_run, lenet_onnx13, tmp_path, description, key):
    f = tmp_path / "my-board.yaml"
    f.write_text(profile_text(description))
    with pytest.raises(ProfileError, match=f"'{key}'"):
        load_profile(f)
    r = cli_run(["deploy", lenet_onnx13.path, "--target", "jetson", "--device", f, "--out", tmp_path / "b"])
    assert key in one_line_error(r) and not (tmp_path / "b").exists()


def test_profile_name_outside_the_safe_set_is_refused(tmp_path):
    name = "my-board$(touch INJECTED)"
    f = tmp_path / f"{name}.yaml"
    f.write_text(profile_text("a board").replace("name: my-board", f"name: '{name}'"))
    with pytest.raises(ProfileError, match="'name'"):
        load_profile(f)
    assert not (tmp_path / "INJECTED").exists()


# -- 2. README -----------------------------------------------------------------------------------
def test_readme_commands_quote_the_bundle_name(lenet_onnx13, tmp_path):
    """The README's `scp -r NAME` / `cd ~/NAME` lines, pasted into a shell, copy and enter the bundle
    whatever its name (spaces, `;`, `$( )`), and run nothing else."""
    marker = tmp_path / "home" / "INJECTED"
    marker.parent.mkdir()
    name = "my bundle; touch INJECTED-1 $(touch INJECTED-2)"
    art = make_bundle(lenet_onnx13, tmp_path / "home" / name, target="cpu")
    lines = (art.path / "README.md").read_text().splitlines()
    scp = next(ln for ln in lines if ln.startswith("scp "))
    cd = next(ln for ln in lines if ln.startswith("cd "))
    assert shlex.split(scp) == ["scp", "-r", name, "user@device:~/"]
    r = subprocess.run(
        ["bash", "-c", f"{cd} && pwd"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(marker.parent)},
        cwd=marker.parent,
    )
    assert _injected(marker) == [], r.stdout + r.stderr
    assert r.returncode == 0 and r.stdout.strip() == str(art.path), r.stderr


# -- 3. run.py: its own files first, nothing shadowed, unlisted files reported ---------------------------
SHADOW = "open({marker!r}, 'w').write('imported')\n"


@pytest.mark.parametrize(
    "stray, mode, flags",
    [
        ("numpy.py", "--verify", ()),
        ("json.py", "--check-files", ()),
        ("hashlib.py", "--check-files", ()),
        ("argparse.py", "--verify", ("-I",)),
        ("json.py", "--check-files", ("-S",)),
        ("numpy/__init__.py", "--verify", ()),
    ],
)
def test_stray_module_in_the_bundle_is_never_imported(lenet_onnx13, tmp_path, stray, mode, flags):
    art = make_bundle(lenet_onnx13, tmp_path / "b", target="cpu")
    marker = tmp_path / "IMPORTED"
    path = art.path / stray
    path.parent.mkdir(exist_ok=True)
    path.write_text(SHADOW.format(marker=str(marker)))
    r = _run_py(art.path, mode, flags=flags)
    assert not marker.exists(), f"{stray} was imported: {r.stdout}{r.stderr}"
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and stray in err[0] and "not listed in manifest.json" in err[0], r.stderr
    (tmp_path / "b" / stray).unlink()
    assert _run_py(art.path, mode, flags=flags).returncode == 0


def test_unlisted_files_are_reported(lenet_onnx13, tmp_path):
    """A file the manifest does not list is named in a warning (not a failure unless Python could import
    it); what build_engine.sh and Python write on the device are not reported."""
    art = make_bundle(lenet_onnx13, tmp_path / "b", target="cpu")
    (art.path / "notes.txt").write_text("mine")
    (art.path / "golden" / "extra.png").write_bytes(b"x")
    for device_output in ("model.engine", "engine.json", "build_engine.log", "timing.cache"):
        (art.path / device_output).write_text("x")
    (art.path / "__pycache__").mkdir()
    (art.path / "__pycache__" / "run.cpython-38.pyc").write_bytes(b"x")
    r = _run_py(art.path, "--check-files")
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if "not listed in manifest.json" in ln]
    assert len(warnings) == 1 and "golden/extra.png" in warnings[0] and "notes.txt" in warnings[0], r.stderr
    assert not any(x in warnings[0] for x in ("model.engine", "build_engine.log", "run.cpython")), warnings
    r = _run_py(art.path, "--verify")
    assert r.returncode == 0 and "VERIFY PASSED" in r.stdout and "notes.txt" in r.stderr


# -- 4. --device path/to/board.yaml --------------------------------------------------------------------
def test_deploy_to_a_profile_file(cli_run, lenet_onnx13, tmp_path, monkeypatch):
    board = tmp_path / "boards" / "my-board.yaml"
    board.parent.mkdir()
    board.write_text(profile_text("a board of mine"))
    monkeypatch.chdir(tmp_path)
    r = cli_run(["deploy", lenet_onnx13.path, "--target", "jetson", "--device", "boards/my-board.yaml"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "runs" / "deploy" / "lenet5-my-board-fp32"
    info = json.loads((out / "bundle.json").read_text())
    assert info["device"]["name"] == "my-board" and info["tensorrt"]["selected"] == "10.3"
    assert "a board of mine" in (out / "README.md").read_text()


# -- 5. non-UTF-8 profile ----------------------------------------------------------------------------
def test_non_utf8_profile_is_one_line_error(cli_run, lenet_onnx13, tmp_path):
    f = tmp_path / "my-board.yaml"
    f.write_bytes(profile_text("carte \xe9lectronique").encode("latin-1"))
    with pytest.raises(ProfileError, match="UTF-8"):
        load_profile(f)
    r = cli_run(["deploy", lenet_onnx13.path, "--target", "jetson", "--device", f, "--out", tmp_path / "b"])
    assert "UTF-8" in one_line_error(r) and not (tmp_path / "b").exists()
    assert "UTF-8" in one_line_error(cli_run(["devices", f]))


@pytest.fixture(scope="module")
def cpu_bundle(lenet_onnx13, tmp_path_factory):
    """A CPU bundle the tests below only read."""
    return make_bundle(lenet_onnx13, tmp_path_factory.mktemp("bundle") / "b", target="cpu")


# -- remote: names reach ssh / scp only as safe words ----------------------------------------------------
@pytest.mark.parametrize(
    "host, remote_dir, message",
    [
        ("-oProxyCommand=touch INJECTED", None, "--host"),
        ("user@127.0.0.1", "b; touch INJECTED", "--remote-dir"),
        ("user@127.0.0.1", "my bundles/b", "--remote-dir"),
        ("user@127.0.0.1", "-rf", "--remote-dir"),
        ("user@127.0.0.1", "../b", "--remote-dir"),
        ("user@127.0.0.1", "/", "--remote-dir"),
    ],
)
def test_remote_names_are_checked_before_connecting(cli_run, cpu_bundle, tmp_path, host, remote_dir, message):
    with pytest.raises(OptionError, match=message):
        deploy_remote(cpu_bundle, host, port=1, remote_dir=remote_dir, connect_timeout=1, timeout=5)
    args = ["deploy", cpu_bundle.path, "--target", "cpu", "--out", tmp_path / "c", "--host", host]
    r = cli_run([*args, *(["--remote-dir", remote_dir] if remote_dir else []), "--port", "1"])
    assert r.exit_code == 2 and f"Error: {message}" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "c").exists()
    assert not (tmp_path / "INJECTED").exists() and not Path("INJECTED").exists()


def test_remote_folder_is_replaced_only_when_it_is_a_bundle(sshd, cpu_bundle, tmp_path):  # noqa: F811
    """deploy --host used to `rm -rf` whatever --remote-dir named; now only an earlier bundle is replaced."""
    ssh = dict(port=sshd.port, identity=str(sshd.key), remote_python=sys.executable, options=sshd.ssh_options)
    again = tmp_path / "remote" / "b"
    assert deploy_remote(cpu_bundle, "127.0.0.1", remote_dir=str(again), **ssh)["passed"]
    assert deploy_remote(cpu_bundle, "127.0.0.1", remote_dir=str(again), **ssh)["passed"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    with pytest.raises(RemoteError, match="mine exists and is not an edgecnn bundle"):
        deploy_remote(cpu_bundle, "127.0.0.1", remote_dir=str(mine), **ssh)
    assert (mine / "thesis.tex").read_text() == "keep"
