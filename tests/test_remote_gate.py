"""eval / bench / check --host: the bundle's own runner on a device over ssh, against a real OpenSSH server
started on 127.0.0.1 for these tests (as test_deploy_ssh.py does). The device runs the whole held-out set
and its latency loop; logits and timings come back and are judged exactly as a local check judges them.
Bad input: an unreachable host, a device Python without numpy / onnxruntime, a bundle or inputs changed on
the device, an interrupted copy."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import test_deploy_ssh
from _deploy_support import free_port
from cli_helpers import one_line_error

sshd = test_deploy_ssh.sshd  # the same real sshd on 127.0.0.1 (a module-scoped fixture), skipped the same way
USER = f"{os.environ.get('USER', 'root')}@127.0.0.1" if os.geteuid() else "root@127.0.0.1"
FAST = ["--latency-min-time", "0.2", "--max-top1-drop", "5"]


@pytest.fixture(scope="module")
def device_dir(tmp_path_factory) -> Path:
    """The folder the 'device' keeps bundles and inputs in, shared by this module's tests."""
    return tmp_path_factory.mktemp("device") / "edgecnn-gate"


def host_args(sshd, remote_dir, python=sys.executable):
    return [
        "--host",
        USER,
        "--port",
        sshd.port,
        "--identity",
        sshd.key,
        "--remote-dir",
        remote_dir,
        "--remote-python",
        python,
        *sum((["--ssh-option", o] for o in sshd.ssh_options), []),
    ]


def bundle_dirs(remote_dir: Path) -> list[Path]:
    return sorted(p for p in (remote_dir / "bundles").iterdir() if p.is_dir())


@pytest.mark.slow
def test_check_on_device_gives_the_local_verdict_and_numbers(
    sshd, device_dir, cli_run, lenet_onnx, lenet_qdq, tmp_path
):
    args = ["check", lenet_qdq.path, "--against", lenet_onnx.path, "--data", "digits", *FAST]
    local = cli_run([*args, "--json", tmp_path / "l.json"])
    remote = cli_run([*args, "--json", tmp_path / "r.json", *host_args(sshd, device_dir)])
    assert remote.exit_code == local.exit_code == 0, remote.output
    lj, rj = (json.loads((tmp_path / n).read_text()) for n in ("l.json", "r.json"))
    assert rj["verdict"] == lj["verdict"] == "pass" and rj["n_images"] == lj["n_images"] > 300
    for side in ("original", "candidate"):
        assert rj["accuracy"][side] == lj["accuracy"][side]  # the same top-1 / top-5, to the last digit
    assert rj["accuracy"]["top1_drop"] == lj["accuracy"]["top1_drop"]
    assert [m["status"] for m in rj["metrics"]] == [m["status"] for m in lj["metrics"]]
    # timings measured on the device by the bundles' own runner, judged by the same estimator
    lat = rj["latency"]
    assert lat["estimator"] == lj["latency"]["estimator"] and lat["candidate"]["p50_ms"] > 0
    assert lat["latency_ratio"]["rounds"] >= 9 and USER in rj["candidate"]["runner"]
    state = rj["device_state"]
    for key in ("board", "l4t", "jetpack", "nvpmodel", "jetson_clocks", "gpu_clock", "emc_clock", "tensorrt"):
        assert state[key] == "unavailable", (key, state[key])  # not a Jetson: nothing invented
    assert state["cpu_model"] and state["cpu_model"] != "unavailable" and len(state["load_average"]) == 3
    assert state["onnxruntime"] not in (None, "unavailable") and "after" in state
    on = rj["on_device"]
    assert on["host"] == USER and on["profile"] == "x86-cpu" and len(on["bundles"]) == 2
    assert "device state" in remote.output and "on the device" in remote.output
    # a baseline taken in another power mode: its latency is not comparable (inconclusive, said why)
    base = tmp_path / "base.json"
    args += host_args(sshd, device_dir)
    assert cli_run([*args, "--save-baseline", base]).exit_code == 0
    saved = json.loads(base.read_text())
    assert saved["power"] == {"nvpmodel": "unavailable", "jetson_clocks": "unavailable"}
    saved["power"] = {"nvpmodel": {"name": "MAXN", "id": 0}, "jetson_clocks": "on"}
    base.write_text(json.dumps(saved))
    r = cli_run([*args, "--baseline", base, "--json", tmp_path / "b.json"])
    assert r.exit_code == 4, r.output
    rows = {m["key"]: m for m in json.loads((tmp_path / "b.json").read_text())["metrics"]}
    for key in ("baseline_latency", "baseline_speedup"):
        assert rows[key]["status"] == "inconclusive" and "not comparable" in rows[key]["detail"]
        assert "nvpmodel MAXN at the baseline vs unavailable now" in rows[key]["detail"]
    assert rows["baseline_top1"]["status"] == "pass"  # accuracy still compared
    assert "reused (sha256)" in r.output and "copied" not in r.output.split("on the device:")[1].split("\n")[0]


def test_power_settings_changed_during_the_run_make_latency_not_comparable():
    from edgecnn.check.decision import Metric, not_comparable, reasons
    from edgecnn.check.policy import Policy
    from edgecnn.ondevice import power_change

    before = {"nvpmodel": {"name": "MAXN", "id": 0}, "jetson_clocks": "on", "temperature_c": {"cpu": 50.0}}
    assert power_change(before, dict(before, temperature_c={"cpu": 70.0}), "at the start", "at the end") is None
    why = power_change(before, dict(before, nvpmodel={"name": "15W", "id": 1}), "at the start", "at the end")
    assert why == "power settings differ: nvpmodel MAXN at the start vs 15W at the end"
    rows = [Metric("speedup", "speedup vs original", "x", 1.5, threshold=1.2, op=">=").judge()]
    not_comparable(rows, ("speedup",), why)
    assert rows[0].status == "inconclusive"
    assert reasons(rows, Policy(), 100, None) == [f"speedup vs original 1.500x is not comparable: {why}"]


def test_eval_on_device_matches_local_and_reuses_the_bundle(sshd, device_dir, cli_run, lenet_qdq, tmp_path):
    r = cli_run(["eval", lenet_qdq.path, "--data", "digits", "-q", "--json", tmp_path / "l.json"])
    assert r.exit_code == 0, r.output
    runs = []
    for i in range(2):
        r = cli_run(
            ["eval", lenet_qdq.path, "--data", "digits", "-q", "--json", tmp_path / f"r{i}.json"]
            + host_args(sshd, device_dir)
        )
        assert r.exit_code == 0, r.output
        runs.append(json.loads((tmp_path / f"r{i}.json").read_text()))
    local = json.loads((tmp_path / "l.json").read_text())
    for res in runs:
        assert res["top1"] == local["top1"] and res["top5"] == local["top5"] and res["n"] == local["n"]
        assert res["per_class"] == local["per_class"] and res["device_state"]["board"] == "unavailable"
    assert runs[1]["on_device"]["bundles"][0]["copied"] is False  # the same bundle: reused by its sha256
    assert runs[1]["on_device"]["inputs"]["copied"] is False
    assert "reused" in r.output


def test_bench_on_device_reports_remote_latency(sshd, device_dir, cli_run, lenet_onnx, lenet_qdq, tmp_path):
    js = tmp_path / "bench.json"
    r = cli_run(
        ["bench", lenet_onnx.path, lenet_qdq.path, "--min-time", "0.2", "--min-repeats", "5", "--json", js]
        + host_args(sshd, device_dir)
    )
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert len(res["results"]) == 2 and all(row["latency_ms"]["p50"] > 0 for row in res["results"])
    assert all(USER in c["runner"] for c in res["candidates"]) and res["results"][1]["ratio"] > 0
    assert res["device_state"]["nvpmodel"] == "unavailable" and res["settings"]["device"].startswith(USER)
    assert "device state" in r.output


# -- bad input ------------------------------------------------------------------------------------------
def test_unreachable_host_fails_in_seconds(cli_run, lenet_qdq, tmp_path):
    port = free_port()  # nothing listens there
    t0 = time.perf_counter()
    r = cli_run(
        [
            "check",
            lenet_qdq.path,
            "--against",
            lenet_qdq.path,
            "--host",
            "root@127.0.0.1",
            "--port",
            port,
            "--connect-timeout",
            "3",
            "--ssh-option",
            "StrictHostKeyChecking=no",
            "--ssh-option",
            "UserKnownHostsFile=/dev/null",
        ]
    )
    line = one_line_error(r)
    assert "Cannot reach root@127.0.0.1" in line and f"port {port}" in line
    assert time.perf_counter() - t0 < 15


def test_host_options_are_validated(cli_run, lenet_qdq, tmp_path):
    r = cli_run(["eval", lenet_qdq.path, "--port", "22"])
    assert r.exit_code == 2 and "need --host" in r.output
    r = cli_run(["bench", lenet_qdq.path, "--host", "-oProxyCommand=x"])
    assert r.exit_code == 2 and "is not USER@HOST" in r.output
    r = cli_run(["eval", lenet_qdq.path, "--host", "root@127.0.0.1", "--identity", tmp_path / "nokey"])
    assert "does not exist" in one_line_error(r)
    r = cli_run(["eval", lenet_qdq.path, "--host", "root@127.0.0.1", "--device", "jetson-orin-nanoo"])
    assert r.exit_code == 2 and "Did you mean 'jetson-orin-nano'?" in r.output


def test_device_python_without_numpy_or_onnxruntime(sshd, cli_run, lenet_qdq, tmp_path):
    bare = shutil.which("python3", path="/usr/bin:/bin")
    probe = os.popen(f"{bare} -c 'import numpy, onnxruntime' 2>&1").read() if bare else "no python3"
    if bare is None or not probe:
        pytest.skip("no system python3 without numpy/onnxruntime here")
    r = cli_run(["eval", lenet_qdq.path, "-q"] + host_args(sshd, tmp_path / "dev", python=bare))
    line = one_line_error(r)
    assert "onnxruntime" in line and "pip3 install" in line and bare in line
    r = cli_run(["eval", lenet_qdq.path, "-q"] + host_args(sshd, tmp_path / "dev", python="/nonexistent/python3"))
    line = one_line_error(r)
    assert "/nonexistent/python3" in line and "--remote-python" in line
    assert not (tmp_path / "dev" / "bundles").exists()  # nothing copied to a device that cannot run it


@pytest.mark.slow
def test_bundle_changed_on_the_device_is_refused(sshd, cli_run, lenet_onnx, tmp_path):
    dev = tmp_path / "dev"
    args = ["eval", lenet_onnx.path, "-q"] + host_args(sshd, dev)
    assert cli_run(args).exit_code == 0
    (bundle,) = bundle_dirs(dev)
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    line = one_line_error(cli_run(args))
    assert "model.onnx does not match its sha256" in line and "delete" in line
    (bundle / "model.onnx").unlink()
    shutil.rmtree(bundle)
    assert cli_run(args).exit_code == 0  # copied again
    (data,) = (dev / "data").iterdir()
    flipped = bytearray(data.read_bytes())
    flipped[-100] ^= 0xFF
    data.write_bytes(bytes(flipped))
    line = one_line_error(cli_run(args))
    assert data.name in line and "sha256" in line


@pytest.mark.slow
def test_interrupted_copy_is_redone_never_used(sshd, cli_run, lenet_onnx, tmp_path):
    dev = tmp_path / "dev"
    args = ["eval", lenet_onnx.path, "-q", "--json", tmp_path / "r.json"] + host_args(sshd, dev)
    assert cli_run(args).exit_code == 0
    (bundle,) = bundle_dirs(dev)
    (data,) = (dev / "data").iterdir()
    # as if the copies had been cut off: the .part folder / file left behind, truncated, nothing final
    part = bundle.with_name(bundle.name + ".part")
    bundle.rename(part)
    (part / "model.onnx").write_bytes((part / "model.onnx").read_bytes()[:100])
    data_part = data.with_name(data.name + ".part")
    data.rename(data_part)
    data_part.write_bytes(data_part.read_bytes()[:1000])
    r = cli_run(args)
    assert r.exit_code == 0, r.output
    on = json.loads((tmp_path / "r.json").read_text())["on_device"]
    assert on["bundles"][0]["copied"] is True and on["inputs"]["copied"] is True
    assert not part.exists() and not data_part.exists() and bundle.is_dir() and data.is_file()
    # a truncated file in a finished folder is never used: refused by its sha256
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes()[:100])
    assert "model.onnx does not match its sha256" in one_line_error(cli_run(args))
