"""Latency benchmark: statistics, interleaving, self-ratio ~1, fingerprint, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import one_line_error

from edgecnn.errors import InvalidInput

FAST = dict(warmup=3, min_time_s=0.3, min_repeats=5, threads=1, progress=False)


def test_latency_stats_from_samples():
    from edgecnn.bench import LatencyStats

    s = LatencyStats.from_samples([0.001, 0.002, 0.003, 0.004, 0.010], batch_size=4)
    assert s.n == 5 and s.batch_size == 4
    assert s.p50 == pytest.approx(3.0) and s.min == pytest.approx(1.0) and s.max == pytest.approx(10.0)
    assert s.mean == pytest.approx(4.0) and s.std == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert s.p90 == pytest.approx(np.percentile([1, 2, 3, 4, 10], 90))
    assert s.throughput == pytest.approx(4 / 0.004)
    assert set(s.to_dict()) >= {"p50", "p90", "p99", "mean", "std", "min", "throughput", "n"}
    with pytest.raises(ValueError):
        LatencyStats.from_samples([], 1)


@pytest.mark.parametrize("which", ["onnx", "torch"])
def test_same_artifact_twice_gives_ratio_one(which, lenet_onnx, lenet_digits):
    """Two runners of the same model, interleaved: any ratio away from 1 is measurement error."""
    from edgecnn.bench import measure_latency

    art = lenet_onnx if which == "onnx" else lenet_digits
    result = measure_latency(
        [art, art], batch_sizes=(1,), warmup=20, min_time_s=1.5, min_repeats=50, threads=1, progress=False
    )
    first, second = result["results"]
    assert first["label"].endswith("#1") and second["label"].endswith("#2")
    assert first["ratio"] == 1.0
    assert 0.9 <= second["ratio"] <= 1.1, second
    rr = second["ratio_rounds"]
    assert rr["n"] == first["rounds"] >= 3 and rr["q25"] <= rr["median"] <= rr["q75"]
    assert second["max_abs_diff_vs_first"] == 0.0  # same file, same input: bitwise the same logits


def test_torch_and_onnx_at_two_batch_sizes(lenet_digits, lenet_onnx):
    from edgecnn.bench import measure_latency

    result = measure_latency(
        [lenet_digits, lenet_onnx],
        batch_sizes=(1, 4),
        warmup=5,
        min_time_s=0.3,
        min_repeats=10,
        threads=1,
        progress=False,
    )
    by = {(r["label"], r["batch_size"]): r for r in result["results"]}
    labels = [c["label"] for c in result["candidates"]]
    assert len(by) == 4 and labels == ["lenet5 (torch fp32)", "lenet5-onnx (onnx fp32)"]
    for b in (1, 4):
        assert by[(labels[0], b)]["ratio"] == 1.0
        onnx_row = by[(labels[1], b)]
        assert onnx_row["max_abs_diff_vs_first"] <= 1e-4  # the same model in both runtimes
        stats = onnx_row["latency_ms"]
        assert stats["n"] >= 10 and stats["batch_size"] == b
        assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
        assert onnx_row["speedup"] == pytest.approx(1 / onnx_row["ratio"])
        assert onnx_row["throughput"] == pytest.approx(b * 1e3 / stats["mean"])
    env = result["environment"]
    assert env["cpu"] and env["cpu_count"] >= 1 and env["versions"]["onnxruntime"] and env["versions"]["torch"]
    assert result["settings"]["threads"] == 1 and result["settings"]["interleave"] is True
    assert result["fingerprint_key"]["cpu"] == env["cpu"]
    json.dumps(result)  # JSON-able as is


def test_sequential_mode_and_seconds_warmup(lenet_onnx):
    from edgecnn.bench import measure_latency

    result = measure_latency(
        [lenet_onnx],
        batch_sizes=(2,),
        warmup=0.2,
        min_time_s=0.2,
        min_repeats=5,
        threads=1,
        interleave=False,
        progress=False,
    )
    (row,) = result["results"]
    assert row["ratio"] == 1.0 and row["ratio_rounds"] is None and row["n"] >= 5
    assert result["settings"]["warmup_unit"] == "s"


def test_runner_like_candidates(lenet_onnx):
    """Benchmark scripts add runtimes that are not edgecnn artifacts (OpenVINO) as runner-like objects."""
    from edgecnn.bench import measure_latency
    from edgecnn.runtime import open_runner

    class Doubled:
        label = "ORT, logits x2"
        input_spec = lenet_onnx.input

        def __init__(self):
            self.inner = open_runner(lenet_onnx, threads=1)
            self.description = "wrapped " + self.inner.description

        def infer(self, batch):
            return self.inner.infer(batch) * 2

    cand = Doubled()
    result = measure_latency([lenet_onnx, cand], **FAST)
    assert [c["label"] for c in result["candidates"]][1] == "ORT, logits x2"
    assert result["candidates"][1]["runner"].startswith("wrapped onnxruntime")
    assert result["results"][1]["max_abs_diff_vs_first"] > 0
    assert cand.inner.session is not None  # not ours to close


def test_bench_errors(lenet_digits, tmp_path):
    from edgecnn.bench import measure_latency
    from edgecnn.export import export_onnx

    static = export_onnx(lenet_digits, tmp_path / "b1", dynamic_batch=False, parity_images_n=2, progress=False)
    with pytest.raises(InvalidInput, match="fixed batch size of 1, so it cannot run a batch of 4"):
        measure_latency([lenet_digits, static], batch_sizes=(4,), **FAST)
    with pytest.raises(InvalidInput, match="at least one artifact"):
        measure_latency([], **FAST)
    with pytest.raises(InvalidInput, match="batch sizes must be >= 1"):
        measure_latency([static], batch_sizes=(0,), **FAST)
    with pytest.raises(InvalidInput, match="warm-up"):
        measure_latency([static], **{**FAST, "warmup": -1})


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_bench_help(cli_run):
    result = cli_run(["bench", "--help"])
    assert result.exit_code == 0
    for opt in ("--batch-size", "--threads", "--warmup", "--min-time", "--min-repeats", "--interleave", "--json"):
        assert opt in result.output


def test_cli_bench_happy_path(cli_run, lenet_digits, lenet_onnx, tmp_path):
    js = tmp_path / "bench.json"
    result = cli_run(
        [
            "bench",
            lenet_digits.path,
            lenet_onnx.path,
            "--batch-size",
            "1",
            "--batch-size",
            "2",
            "--threads",
            "1",
            "--warmup",
            "3",
            "--min-time",
            "0.3",
            "--min-repeats",
            "5",
            "--label",
            "torch",
            "--label",
            "onnx",
            "--json",
            js,
        ]
    )
    assert result.exit_code == 0, result.output
    for text in ("p50 ms", "ratio vs first", "torch", "onnx", "1 threads, interleaved"):
        assert text in result.output
    data = json.loads(js.read_text())
    assert data["schema"] == "edgecnn.bench/1" and data["baseline"] == "torch"
    assert [(r["label"], r["batch_size"]) for r in data["results"]] == [
        ("torch", 1),
        ("onnx", 1),
        ("torch", 2),
        ("onnx", 2),
    ]


def test_cli_bench_errors(cli_run, lenet_onnx, tmp_path):
    msg = one_line_error(cli_run(["bench", tmp_path / "missing"]))
    assert "does not exist" in msg
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(lenet_onnx.path, bad)
    (bad / "model.onnx").write_bytes(b"truncated")
    msg = one_line_error(cli_run(["bench", bad, "--min-time", "0", "--warmup", "0"]))
    assert "sha256" in msg
    assert cli_run(["bench", lenet_onnx.path, "--warmup", "soon"]).exit_code == 2
    assert cli_run(["bench", lenet_onnx.path, "--batch-size", "0"]).exit_code == 2
    assert cli_run(["bench", lenet_onnx.path, "--label", "a", "--label", "b"]).exit_code == 2
    assert cli_run(["bench"]).exit_code == 2


def test_cli_bench_ort_spinning(cli_run, lenet_onnx, tmp_path):
    """--ort-spinning runs ONNX Runtime with its own default (as a deployed bundle does); the runner says so."""
    js = tmp_path / "spin.json"
    for flag, expected in ((["--ort-spinning"], ", spinning)"), ([], ", no spinning)")):
        r = cli_run(
            [
                "bench",
                lenet_onnx.path,
                "--threads",
                "1",
                "--warmup",
                "3",
                "--min-time",
                "0.2",
                "--min-repeats",
                "5",
                "--json",
                js,
                *flag,
            ]
        )
        assert r.exit_code == 0, r.output
        assert json.loads(js.read_text())["candidates"][0]["runner"].endswith(expected)
