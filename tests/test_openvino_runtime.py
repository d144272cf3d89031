"""Issue 17, runtime parts: OpenVINO as a CPU runtime beside ONNX Runtime, measured per machine.

Real OpenVINO and ONNX Runtime sessions on the lenet fixtures (FP32 ONNX and Q/DQ INT8), real bundles
and real subprocesses; nothing under test is mocked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_line_error

pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parent.parent
BLOCK_OPENVINO = "import sys; sys.modules['openvino'] = None; "


def _digits_batch(art, n=64):
    from edgecnn.bench import bench_inputs

    return bench_inputs(art.input, n, "digits")


# -- the runner ------------------------------------------------------------------------------------
def test_fp32_on_openvino_is_pinned_to_f32_and_matches_onnxruntime(lenet_onnx):
    from edgecnn.runtime import open_runner

    x = _digits_batch(lenet_onnx)
    with open_runner(lenet_onnx, threads=2, runtime="openvino") as ov, open_runner(lenet_onnx, threads=2) as ort:
        got, want = ov.infer(x), ort.infer(x)
        compiled = ov.compiled_model(len(x))
        hint = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        assert "f32" in hint or "float32" in hint, hint
        assert ov.settings["INFERENCE_PRECISION_HINT"] == "f32"
        assert ov.settings["INFERENCE_NUM_THREADS"] == 2
        assert ov.settings["PERFORMANCE_HINT"] == "LATENCY" and int(ov.settings["NUM_STREAMS"]) == 1
        assert "openvino" in ov.description and "f32" in ov.description
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_openvino_runs_qdq_int8_and_records_throughput_settings(lenet_qdq, lenet_onnx13):
    from edgecnn.runtime import open_runner

    x = _digits_batch(lenet_qdq)
    with open_runner(lenet_qdq, threads=2, runtime="openvino", hint="THROUGHPUT", streams=2) as ov:
        assert ov.settings["PERFORMANCE_HINT"] == "THROUGHPUT" and int(ov.settings["NUM_STREAMS"]) == 2
        got = ov.infer(x)
    with open_runner(lenet_onnx13, threads=2) as ort:
        ref = ort.infer(x)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_bf16_is_its_own_precision_and_refused_where_the_cpu_lacks_it(lenet_onnx):
    from edgecnn.errors import InvalidInput
    from edgecnn.runtime import open_runner
    from edgecnn.runtime.openvino import bf16_support

    ok, why = bf16_support()
    if ok:
        with open_runner(lenet_onnx, threads=2, runtime="openvino", precision="bf16") as ov:
            assert ov.settings["INFERENCE_PRECISION_HINT"] == "bf16" and ov.settings["precision"] == "bf16"
    else:
        assert "no BF16" in why and "OPTIMIZATION_CAPABILITIES" in why
        with pytest.raises(InvalidInput, match="no BF16"):
            open_runner(lenet_onnx, threads=2, runtime="openvino", precision="bf16")


def test_torch_artifact_keeps_its_runner_and_open_runner_refuses_openvino(cli_run, lenet_digits):
    result = cli_run(["eval", lenet_digits.path, "--data", "digits", "--runtime", "openvino", "-q"])
    # a torch artifact keeps its torch runner: the runtime choice is for onnx artifacts
    assert result.exit_code == 0, result.output
    from edgecnn.errors import ArtifactError
    from edgecnn.runtime import open_runner

    with pytest.raises(ArtifactError, match="export it to ONNX first"):
        open_runner(lenet_digits, runtime="openvino")


# -- eval ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["lenet_onnx", "lenet_qdq"])
def test_eval_runtime_openvino_top1_within_a_point_of_onnxruntime(cli_run, request, tmp_path, fixture):
    art = request.getfixturevalue(fixture)
    res = {}
    for rt in ("onnxruntime", "openvino"):
        out = tmp_path / f"{rt}.json"
        result = cli_run(["eval", art.path, "--data", "digits", "--runtime", rt, "--threads", "2", "-q", "--json", out])
        assert result.exit_code == 0, result.output
        assert rt in result.output
        res[rt] = json.loads(out.read_text())
        assert res[rt]["runtime"] == rt and rt in res[rt]["runner"]
    assert res["openvino"]["n"] == res["onnxruntime"]["n"] > 300
    assert abs(res["openvino"]["top1"] - res["onnxruntime"]["top1"]) <= 0.01
    assert res["openvino"]["top1"] > 0.9


def test_eval_runtime_auto_measures_both_and_names_the_choice(cli_run, lenet_onnx, tmp_path):
    out = tmp_path / "auto.json"
    result = cli_run(["eval", lenet_onnx.path, "--data", "digits", "--runtime", "auto", "-q", "--json", out])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    choice = r["runtime_choice"]
    assert choice["chosen"] == r["runtime"] in ("onnxruntime", "openvino")
    assert set(choice["p50_ms"]) == {"onnxruntime", "openvino"} and all(v > 0 for v in choice["p50_ms"].values())
    low, high = choice["ratio_ci"]
    assert low <= choice["ratio"] <= high
    assert (choice["ratio"] < 1) == (choice["chosen"] == "openvino")
    assert "runtime choice" in result.output and "p50" in result.output


def test_runtime_openvino_on_a_gpu_device_is_an_option_error(cli_run, lenet_onnx):
    result = cli_run(["eval", lenet_onnx.path, "--runtime", "openvino", "--device", "cuda"])
    assert result.exit_code == 2 and "--runtime openvino runs on the CPU" in result.output


# -- missing OpenVINO ------------------------------------------------------------------------------
def test_missing_openvino_is_one_line_and_edgecnn_still_imports(lenet_onnx):
    code = (
        BLOCK_OPENVINO + "import edgecnn, edgecnn.runtime, edgecnn.runtime.openvino, edgecnn.runtime_choice; "
        "from edgecnn.cli import cli; "
        f"cli(['eval', {str(lenet_onnx.path)!r}, '--data', 'digits', '--runtime', 'openvino', '-q'])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = [ln for ln in (proc.stdout + proc.stderr).strip().splitlines() if ln.strip()]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert "pip install openvino" in lines[0] and "make test" in lines[0]


# -- bench -----------------------------------------------------------------------------------------
def test_bench_reports_peak_rss_of_a_fresh_process_and_throughput(cli_run, lenet_onnx, tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", lenet_onnx.path, "--runtime", "auto", "--threads", "2", "--min-time", "0.1", "--warmup", "2"]
    result = cli_run([*args, "--min-repeats", "5", "--throughput-batch", "4", "--streams", "2", "--json", out])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert [c["runtime"] for c in r["candidates"]] == ["onnxruntime", "openvino"]
    assert r["candidates"][1]["runner_settings"]["INFERENCE_PRECISION_HINT"] == "f32"
    mem = {m["runtime"]: m for m in r["memory"]}
    for rt in ("onnxruntime", "openvino"):
        # a fresh process holds python + numpy + one runtime: far below this test process (torch, both runtimes)
        assert 10 < mem[rt]["peak_rss_mib"] < 600, mem[rt]
        assert mem[rt]["peak_rss_mib"] >= mem[rt]["before_load_rss_mib"] and mem[rt]["model_rss_mib"] > 1
    thr = {t["runtime"]: t for t in r["throughput_mode"]}
    for rt in ("onnxruntime", "openvino"):
        assert thr[rt]["batch_size"] == 4 and thr[rt]["streams"] == 2 and thr[rt]["images_per_s"] > 0
        assert len(thr[rt]["rounds_images_per_s"]) == 3
    assert "THROUGHPUT" in thr["openvino"]["how"]
    choice = r["runtime_choices"][0]
    assert choice["chosen"] in ("onnxruntime", "openvino") and "p50" in choice["why"]
    assert "peak RSS MiB" in result.output and "throughput img/s" in result.output
    assert "runtime auto:" in result.output


# -- deploy --runtime auto and the bundle's run.py -------------------------------------------------
def _verify(bundle: Path, *, block_openvino: bool = False):
    code = (BLOCK_OPENVINO if block_openvino else "") + (
        "import runpy, sys; sys.argv = ['run.py', '--verify']; runpy.run_path('run.py', run_name='__main__')"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True, timeout=300)


def _result_line(proc) -> dict:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("edgecnn-verify-result: "))
    return json.loads(line.split(": ", 1)[1])


@pytest.mark.parametrize("fixture", ["lenet_qdq", "lenet_onnx"])
def test_deploy_cpu_runtime_auto_picks_says_why_and_verifies_with_it(cli_run, request, tmp_path, fixture):
    art = request.getfixturevalue(fixture)
    out = tmp_path / "bundle"
    result = cli_run(["deploy", art.path, "--target", "cpu", "--runtime", "auto", "--out", out])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "bundle.json").read_text())
    choice = info["runtime_choice"]
    assert info["runtime"] == choice["chosen"] in ("onnxruntime", "openvino")
    assert set(choice["p50_ms"]) == {"onnxruntime", "openvino"}
    assert choice["ratio_ci"][0] <= choice["ratio"] <= choice["ratio_ci"][1]
    assert choice["estimator"] == "median of per-round ratios" and choice["rounds"] >= 9
    assert f"runtime auto: {choice['chosen']}: p50" in result.output and "ms vs" in result.output
    assert info["openvino"]["INFERENCE_PRECISION_HINT"] == "f32"
    proc = _verify(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = _result_line(proc)
    assert got["passed"] and got["runtime"] == info["runtime"] and info["runtime"] in got["runner"]


def test_bundle_runs_either_runtime_and_falls_back_without_openvino(cli_run, lenet_qdq, tmp_path):
    out = tmp_path / "bundle"
    result = cli_run(["deploy", lenet_qdq.path, "--target", "cpu", "--runtime", "openvino", "--out", out])
    assert result.exit_code == 0, result.output
    proc = _verify(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _result_line(proc)["runtime"] == "openvino"
    proc = _verify(out, block_openvino=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "running with onnxruntime instead" in proc.stderr
    assert _result_line(proc)["runtime"] == "onnxruntime"


def test_deploy_runtime_openvino_for_a_gpu_target_is_refused(cli_run, lenet_onnx, tmp_path):
    result = cli_run(["deploy", lenet_onnx.path, "--target", "gpu", "--runtime", "auto", "--out", tmp_path / "b"])
    assert "--runtime auto is for --target cpu" in one_line_error(result)
    assert not (tmp_path / "b").exists()


# -- check and sweep -------------------------------------------------------------------------------
def test_check_runs_both_models_in_the_runtime_asked(cli_run, lenet_qdq, lenet_onnx13, tmp_path):
    out = tmp_path / "check.json"
    args = ["check", lenet_qdq.path, "--against", lenet_onnx13.path, "--data", "digits", "--runtime", "openvino"]
    result = cli_run([*args, "--threads", "2", "--latency-min-time", "0.1", "--max-top1-drop", "5", "--json", out])
    assert result.exit_code in (0, 4), result.output
    r = json.loads(out.read_text())
    assert r["candidate"]["runner"].startswith("openvino") and r["original"]["runner"].startswith("openvino")


def test_sweep_gains_the_runtime_dimension_and_states_why_bf16_is_skipped(cli_run, lenet_onnx, tmp_path):
    from edgecnn.runtime.openvino import bf16_support

    out = tmp_path / "sweep"
    args = ["sweep", lenet_onnx.path, "--data", "digits", "--precision", "fp32,bf16", "--runtime", "auto"]
    result = cli_run([*args, "--threads", "2", "--min-time", "0.1", "--out", out, "--json", tmp_path / "s.json"])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "s.json").read_text())
    cands = {c["name"]: c for c in r["candidates"]}
    assert cands["p0.00-fp32"]["runtime"] == "onnxruntime" and cands["p0.00-fp32-openvino"]["runtime"] == "openvino"
    assert cands["p0.00-fp32-openvino"]["status"] == "measured"
    assert abs(cands["p0.00-fp32-openvino"]["metrics"]["top1"] - cands["p0.00-fp32"]["metrics"]["top1"]) <= 1.0
    bf16 = cands["p0.00-bf16-openvino"]
    ok, why = bf16_support()
    if ok:
        assert bf16["status"] == "measured"
    else:
        assert bf16["status"] == "skipped" and bf16["reason"] == why and "no BF16" in why


def test_sweep_runtime_openvino_for_a_gpu_target_is_an_option_error(cli_run, lenet_onnx, tmp_path):
    result = cli_run(["sweep", lenet_onnx.path, "--target", "gpu", "--runtime", "openvino", "--out", tmp_path / "s"])
    assert result.exit_code == 2 and "--runtime openvino is for --target cpu" in result.output


_SIGNAL_AFTER_RUNNERS = """
import gc, os, signal, sys
import numpy as np
from edgecnn.runtime import open_runner
first = open_runner(sys.argv[1], runtime="openvino")
second = open_runner(sys.argv[1], runtime="openvino")
x = np.zeros((1, *first.image_shape), np.float32)
first.infer(x); second.infer(x)
first.close(); del first; gc.collect()  # freed in the order they were made, as garbage collection does
second.close(); del second; gc.collect()
signal.signal(signal.SIGUSR1, lambda *_: print("handled", flush=True))
os.kill(os.getpid(), signal.SIGUSR1)
print("alive", flush=True)
"""


def test_runners_freed_in_creation_order_leave_signal_handling_intact(lenet_onnx):
    """OpenVINO's CPU plugin swaps the creating thread's signal stack and restores it only last-in first-out;
    with a Core per runner, two runners freed first-in first-out left an unmapped signal stack and the next
    Python signal handler died with SIGSEGV (the full test suite did, with no traceback). edgecnn shares one
    Core per process (runtime.openvino.shared_core), so this survives."""
    p = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AFTER_RUNNERS, str(lenet_onnx.path)], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    assert p.stdout.split() == ["handled", "alive"]
