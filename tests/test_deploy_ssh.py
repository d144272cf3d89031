"""deploy --host against a real OpenSSH server started on 127.0.0.1 for these tests (temporary host key,
temporary authorized_keys with a freshly generated key): the bundle is copied with scp and verified
there with ONNX Runtime. An unreachable host fails fast with a clear message."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pytest
from _deploy_support import LoopbackSshd, free_port, sshd_binary

from edgecnn.deploy import RemoteError, deploy_remote, make_bundle

SKIP = None
if sshd_binary() is None:
    SKIP = "OpenSSH server (sshd) is not installed; 'make test' installs openssh-server with apt-get"
elif os.geteuid() != 0 and not os.access("/run/sshd", os.W_OK):
    SKIP = "sshd needs /run/sshd (privilege separation directory), which only root can create here"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if SKIP:
        pytest.skip(SKIP)
    server = LoopbackSshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


def _remote_args(sshd, tmp_path):
    return [
        "--host",
        f"{os.environ.get('USER', 'root')}@127.0.0.1" if os.geteuid() else "root@127.0.0.1",
        "--port",
        sshd.port,
        "--identity",
        sshd.key,
        "--remote-dir",
        tmp_path / "remote" / "bundle",
        "--remote-python",
        sys.executable,
        *sum((["--ssh-option", o] for o in sshd.ssh_options), []),
    ]


def test_deploy_host_cpu_bundle(sshd, cli_run, lenet_onnx13, tmp_path):
    js = tmp_path / "deploy.json"
    r = cli_run(
        [
            "deploy",
            lenet_onnx13.path,
            "--target",
            "cpu",
            "--out",
            tmp_path / "bundle",
            "--json",
            js,
            *_remote_args(sshd, tmp_path),
        ]
    )
    assert r.exit_code == 0, r.output
    assert "on the device" in r.output and "PASSED" in r.output
    remote = json.loads(js.read_text())["remote"]
    assert (
        remote["passed"]
        and remote["verify"]["passed"]
        and remote["verify"]["files_checked"]
        == len(json.loads((tmp_path / "bundle" / "manifest.json").read_text())["files"])
    )
    assert remote["verify"]["runner"].startswith("onnxruntime") and remote["verify"]["max_abs_error"] <= 1e-4
    assert [s["step"] for s in remote["steps"]] == ["copy", "run.py --verify"]
    copied = tmp_path / "remote" / "bundle"
    assert (copied / "manifest.json").is_file() and (copied / "golden" / "expected.npy").is_file()


def test_deploy_host_jetson_bundle_onnxruntime_path(sshd, cli_run, lenet_qdq, tmp_path):
    """A Jetson INT8 bundle verified on the host through run.py's ONNX Runtime path (no TensorRT there)."""
    js = tmp_path / "deploy.json"
    r = cli_run(
        [
            "deploy",
            lenet_qdq.path,
            "--target",
            "jetson",
            "--device",
            "jetson-orin-nano",
            "--runtime",
            "onnxruntime",
            "--out",
            tmp_path / "bundle",
            "--json",
            js,
            *_remote_args(sshd, tmp_path),
        ]
    )
    assert r.exit_code == 0, r.output
    remote = json.loads(js.read_text())["remote"]
    assert remote["passed"] and remote["runtime"] == "onnxruntime" and "build_engine.sh" not in str(remote["steps"])
    assert (tmp_path / "remote" / "bundle" / "build_engine.sh").is_file()


def test_remote_verification_failure_is_reported(sshd, lenet_onnx13, tmp_path):
    art = make_bundle(lenet_onnx13, tmp_path / "bundle", target="cpu")
    arr = np.load(art.path / "golden" / "inputs.npy")
    np.save(art.path / "golden" / "inputs.npy", arr * 0.5)  # corrupted after it was written
    with pytest.raises(RemoteError, match="Verification on 127.0.0.1.* failed .*inputs.npy does not match its sha256"):
        deploy_remote(
            art,
            "127.0.0.1",
            port=sshd.port,
            identity=str(sshd.key),
            remote_python=sys.executable,
            remote_dir=str(tmp_path / "remote"),
            options=sshd.ssh_options,
        )


def test_build_step_failure_is_reported(sshd, lenet_onnx13, tmp_path):
    """A TensorRT bundle on a host without trtexec: the build step fails and says why."""
    art = make_bundle(lenet_onnx13, tmp_path / "bundle", target="jetson", device="jetson-orin-nano")
    if os.path.exists("/usr/src/tensorrt/bin/trtexec"):
        pytest.skip("this host has trtexec")
    with pytest.raises(RemoteError, match="build_engine.sh failed on 127.0.0.1 .*trtexec not found"):
        deploy_remote(
            art,
            "127.0.0.1",
            port=sshd.port,
            identity=str(sshd.key),
            remote_python=sys.executable,
            remote_dir=str(tmp_path / "remote"),
            options=sshd.ssh_options,
        )


def test_unreachable_host_fails_fast(cli_run, lenet_onnx13, tmp_path):
    art = make_bundle(lenet_onnx13, tmp_path / "bundle", target="cpu")
    port = free_port()  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(
        RemoteError, match=rf"Cannot reach root@127.0.0.1 \(port {port}\) over ssh: .*Connection refused"
    ):
        deploy_remote(
            art, "root@127.0.0.1", port=port, options=["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null"]
        )
    assert time.perf_counter() - t0 < 15
    key = tmp_path / "nokey"
    r = cli_run(
        [
            "deploy",
            lenet_onnx13.path,
            "--target",
            "cpu",
            "--out",
            tmp_path / "b2",
            "--host",
            "root@127.0.0.1",
            "--port",
            port,
            "--identity",
            key,
        ]
    )
    assert r.exit_code == 1 and "--identity" in r.output and "does not exist" in r.output
    assert not (tmp_path / "b2").exists()
    r = cli_run(
        [
            "deploy",
            lenet_onnx13.path,
            "--target",
            "cpu",
            "--out",
            tmp_path / "b3",
            "--host",
            "root@127.0.0.1",
            "--port",
            port,
            "--ssh-option",
            "StrictHostKeyChecking=no",
        ]
    )
    assert r.exit_code == 1 and "Cannot reach" in r.output and len(r.output.strip().splitlines()) == 1
