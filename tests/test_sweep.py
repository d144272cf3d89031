"""edgecnn sweep: Pareto front over pruning x precision, measured on the digits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecnn.errors import InvalidInput
from edgecnn.sweep import Candidate, choose, dominates, pareto_front, parse_budget, parse_list


def _cand(name, lat, top1):
    return Candidate(
        name=name, prune=0.0, precision="fp32", status="measured", metrics={"latency_ms": lat, "top1": top1}
    )


def test_budget_parsing():
    conds = parse_budget("top1_drop<=0.5, speedup>=2x")
    assert [(c.key, c.op, c.value) for c in conds] == [("top1_drop", "<=", 0.5), ("speedup", ">=", 2.0)]
    with pytest.raises(InvalidInput, match="Did you mean 'top1_drop'"):
        parse_budget("top1_dorp<=0.5")
    with pytest.raises(InvalidInput, match="KEY<=VALUE"):
        parse_budget("top1 is small")


def test_front_and_choice_logic():
    a, b, c, d = _cand("a", 1.0, 90), _cand("b", 2.0, 95), _cand("c", 2.5, 94), _cand("d", 3.0, 99)
    unmeasured = Candidate(
        name="e", prune=0.5, precision="int8", status="not-measured", reason="no GPU", metrics={"top1": 99.9}
    )
    front = pareto_front([a, b, c, d, unmeasured])
    assert [x.name for x in front] == ["a", "b", "d"]  # c is dominated by b
    assert dominates(b.metrics, c.metrics) and not dominates(a.metrics, b.metrics)
    assert not unmeasured.pareto
    for x in (a, b, c, d):
        x.metrics["top1_drop"] = 99 - x.metrics["top1"]
    assert choose([a, b, c, d, unmeasured], parse_budget("top1_drop<=5")).name == "b"
    assert choose([a, b, c, d], parse_budget("top1_drop<=0")).name == "d"
    assert choose([a, b, c, d], parse_budget("latency_ms<0.5")) is None


def test_parse_list_errors():
    assert parse_list("0.5,0,0.3,0.3", kind="prune") == [0.0, 0.3, 0.5]
    with pytest.raises(InvalidInput, match=r"\[0, 1\)"):
        parse_list("0,1.2", kind="prune")
    with pytest.raises(InvalidInput, match="Did you mean 'int8'"):
        parse_list("fp32,int9", kind="precision", choices=("fp32", "fp16", "int8"))


def _assert_front_consistent(report):
    measured = [c for c in report["candidates"] if c["status"] == "measured"]
    front = [c for c in measured if c["name"] in report["front"]]
    assert front, "a sweep with measured candidates has a non-empty front"
    for p in front:  # no listed Pareto point is dominated by another measured point
        assert not any(dominates(o["metrics"], p["metrics"]) for o in measured if o is not p), p["name"]
    for c in measured:  # and every measured point off the front is dominated by one on it
        if c["name"] not in report["front"]:
            assert any(dominates(p["metrics"], c["metrics"]) for p in front), c["name"]


def test_resnet18_sweep_cpu(resnet18_digits, tmp_path):
    from edgecnn.sweep import sweep

    t0 = time.perf_counter()
    report = sweep(
        str(resnet18_digits.path),
        data="digits",
        out=tmp_path / "sw",
        prune_ratios=(0.0, 0.3, 0.5),
        precisions=("fp32", "int8"),
        subset_size=64,
        min_time_s=0.3,
        budget="top1_drop<=1",
        progress=False,
    )
    elapsed = time.perf_counter() - t0
    assert len(report["candidates"]) == 6
    assert all(c["status"] == "measured" for c in report["candidates"]), report["candidates"]
    _assert_front_consistent(report)
    # accuracy is measured on the 360 held-out digits, and the unpruned fp32 ONNX matches the torch original
    assert report["n_images"] == 360
    ref = next(c for c in report["candidates"] if c["name"] == "p0.00-fp32")
    assert abs(ref["metrics"]["top1_drop"]) < 1e-9 and ref["metrics"]["agreement"] == 1.0
    best = report["best"]
    if best is not None:
        assert best["metrics"]["top1_drop"] <= 1
        ok = [c for c in report["candidates"] if c["status"] == "measured" and c["metrics"]["top1_drop"] <= 1]
        assert best["metrics"]["latency_ms"] == min(c["metrics"]["latency_ms"] for c in ok)
    out = tmp_path / "sw"
    assert json.loads((out / "sweep.json").read_text())["front"] == report["front"]
    assert "Pareto" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert elapsed < 240


def test_resume_reuses_finished_candidates(lenet_digits, tmp_path):
    from edgecnn.sweep import sweep

    out = tmp_path / "sw"
    first = sweep(
        str(lenet_digits.path),
        data="digits",
        out=out,
        prune_ratios=(0.0, 0.3),
        precisions=("fp32",),
        min_time_s=0.1,
        progress=False,
    )
    shas = {c["name"]: c["sha256"] for c in first["candidates"]}
    second = sweep(
        str(lenet_digits.path),
        data="digits",
        out=out,
        prune_ratios=(0.0, 0.3, 0.5),
        precisions=("fp32",),
        min_time_s=0.1,
        progress=False,
    )
    by_name = {c["name"]: c for c in second["candidates"]}
    for name, sha in shas.items():
        assert by_name[name]["sha256"] == sha and by_name[name]["metrics"].get("reused") is True
    assert "reused" not in by_name["p0.50-fp32"]["metrics"]
    # a candidate changed on disk is rebuilt, not trusted
    victim = Path(by_name["p0.30-fp32"]["path"]) / "model.onnx"
    victim.write_bytes(victim.read_bytes() + b"\0")
    third = sweep(
        str(lenet_digits.path),
        data="digits",
        out=out,
        prune_ratios=(0.0, 0.3, 0.5),
        precisions=("fp32",),
        min_time_s=0.1,
        progress=False,
    )
    assert "reused" not in {c["name"]: c for c in third["candidates"]}["p0.30-fp32"]["metrics"]
    # different settings in the same folder are refused
    with pytest.raises(InvalidInput, match="different settings"):
        sweep(
            str(lenet_digits.path),
            data="digits",
            out=out,
            prune_ratios=(0.0,),
            precisions=("fp32",),
            finetune_epochs=1,
            progress=False,
        )


def test_interrupted_sweep_continues(lenet_digits, tmp_path):
    """Kill a real `edgecnn sweep` process after its first candidate, then run it again to completion."""
    out = tmp_path / "sw"
    cmd = [
        sys.executable,
        "-m",
        "edgecnn.cli",
        "sweep",
        str(lenet_digits.path),
        "--data",
        "digits",
        "--prune",
        "0,0.3,0.5",
        "--precision",
        "fp32",
        "--min-time",
        "0.1",
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    state = out / "sweep-state.json"
    deadline = time.time() + 120
    done_before = set()
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            try:
                done_before = {
                    k for k, v in json.loads(state.read_text())["candidates"].items() if v["status"] == "built"
                }
            except (json.JSONDecodeError, KeyError):
                done_before = set()
            if done_before:
                proc.send_signal(signal.SIGINT)
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert done_before, "the sweep recorded no finished candidate before it was interrupted"
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "sweep.json").read_text())
    by_name = {c["name"]: c for c in report["candidates"]}
    assert set(by_name) == {"p0.00-fp32", "p0.30-fp32", "p0.50-fp32"}
    if proc.returncode != 0:  # it really stopped early: what it had finished was reused
        for name in done_before:
            assert by_name[name]["metrics"].get("reused") is True


def test_gpu_target_without_tensorrt_is_not_measured(lenet_digits, tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; this test covers machines without it")
    except ImportError:
        pass
    from edgecnn.sweep import sweep

    report = sweep(
        str(lenet_digits.path),
        data="digits",
        out=tmp_path / "sw",
        prune_ratios=(0.0,),
        precisions=("fp32", "int8"),
        target="gpu",
        subset_size=32,
        budget="top1_drop<=5",
        progress=False,
    )
    assert {c["status"] for c in report["candidates"]} == {"not-measured"}
    assert all("TensorRT" in c["reason"] for c in report["candidates"])
    assert all(c["metrics"].get("latency_ms") is None for c in report["candidates"])  # never estimated
    assert report["front"] == [] and report["best"] is None
    assert all(c["metrics"]["top1"] > 90 for c in report["candidates"])  # accuracy still measured (ORT)


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["--prune", "0,1.5"], 2, "[0, 1)"),
        (["--precision", "fp32,int4"], 2, "Unknown precision 'int4'"),
        (["--budget", "acc>=0.9"], 2, "Unknown budget key 'acc'"),
        (["--deploy-out", "x"], 2, "--deploy-out needs --budget"),
    ],
)
def test_cli_usage_errors(cli_run, lenet_digits, tmp_path, args, code, text):
    res = cli_run(["sweep", lenet_digits.path, "--data", "digits", "--out", tmp_path / "sw", *args])
    assert res.exit_code == code, res.output
    assert text in res.output and "Traceback" not in res.output


def test_cli_model_name_without_weights(cli_run, tmp_path):
    res = cli_run(["sweep", "resnet18", "--data", "digits", "--out", tmp_path / "sw"])
    assert res.exit_code == 1
    assert "needs trained weights" in res.output and len(res.output.strip().splitlines()) == 1
    res = cli_run(["sweep", "resnet81", "--data", "digits", "--weights", "random", "--out", tmp_path / "sw"])
    assert res.exit_code == 1 and "Did you mean 'resnet18'" in res.output


def test_cli_help(cli_run):
    res = cli_run(["sweep", "--help"])
    assert res.exit_code == 0 and "--budget" in res.output and "Pareto" in res.output
