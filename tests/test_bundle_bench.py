"""run.py --bench in a CPU bundle: the file check first, then timed calls of the bundle's own runtime, a JSON
report written atomically, and one-line errors (exit 2) for bad options and batches the model cannot take."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecnn.artifact import atomic_write_json
from edgecnn.deploy import make_bundle


def run_py(bundle: Path, *args):
    """run.py inside the bundle's folder, as a user on the device runs it."""
    return subprocess.run(
        [sys.executable, "run.py", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=str(bundle),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=120,
    )


@pytest.fixture(scope="module")
def cpu_bundle(lenet_onnx, tmp_path_factory):
    return make_bundle(lenet_onnx, tmp_path_factory.mktemp("bench") / "cpu", target="cpu")


def test_bench_writes_sane_json(cpu_bundle):
    out = cpu_bundle.path / "out.json"
    r = run_py(cpu_bundle.path, "--bench", "--batch-sizes", "1", "--min-time", "0.2", "--threads", "1", "--json", out)
    assert r.returncode == 0, r.stderr
    assert "p50 ms" in r.stdout and "latency" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["runtime"] == "onnxruntime" and rep["runtime_version"]
    assert rep["batch_sizes"] == [1] and rep["warmup"] == 10 and rep["min_time_s"] == 0.2
    assert rep["estimator"] == "sample percentiles of per-call wall time"
    assert "golden inputs" in rep["inputs"] and "tiled" in rep["inputs"]
    assert rep["files_checked"] > 0 and rep["threads"]["intra_op_num_threads"] == 1
    assert rep["host"]["cpu_count"] >= 1 and "cpu_model" in rep["host"]
    (row,) = rep["results"]
    lat = row["latency_ms"]
    assert "compute_ms" not in row  # no host<->device copies to separate on a CPU bundle
    assert lat["n"] >= 10
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert row["images_per_s"] == pytest.approx(1 * 1000.0 / lat["p50"], rel=1e-9)
    assert lat["n"] * lat["mean"] >= 200 * 0.9  # at least --min-time of timed calls
    assert not list(cpu_bundle.path.glob(".run-py-*"))  # the temporary file was renamed into place
    out.unlink()


def test_bench_batches_tile_the_golden_inputs(cpu_bundle, tmp_path):
    out = tmp_path / "b.json"
    r = run_py(
        cpu_bundle.path, "--bench", "--batch-sizes", "1,40", "--warmup", "2", "--min-time", "0.05", "--json", out
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert [row["batch"] for row in rep["results"]] == [1, 40]
    big = rep["results"][1]
    assert big["images_per_s"] == pytest.approx(40 * 1000.0 / big["latency_ms"]["p50"], rel=1e-9)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--min-time", "nan"], "--min-time"),
        (["--min-time", "inf"], "--min-time"),
        (["--min-time", "1e9"], "--min-time"),
        (["--warmup", "-1"], "--warmup"),
        (["--batch-sizes", "0"], "--batch-sizes"),
        (["--batch-sizes", "1,x"], "--batch-sizes"),
        (["--batch-sizes", "100000"], "--batch-sizes"),
        (["--verify"], "runs alone"),
    ],
)
def test_bench_bad_options_exit_2_with_one_line(cpu_bundle, args, message):
    r = run_py(cpu_bundle.path, "--bench", *args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr and r.stdout == ""


def test_bench_refuses_a_tampered_bundle_before_timing(cpu_bundle):
    exp = cpu_bundle.path / "golden" / "inputs.npy"
    original = exp.read_bytes()
    try:
        exp.write_bytes(original[:-4] + b"\0\0\0\1")
        r = run_py(cpu_bundle.path, "--bench", "--min-time", "0.05", "--json", "tampered.json")
        assert r.returncode == 1
        assert "golden/inputs.npy does not match its sha256 in manifest.json" in r.stderr
        assert "p50" not in r.stdout and not (cpu_bundle.path / "tampered.json").exists()
    finally:
        exp.write_bytes(original)


def test_fixed_batch_model_refuses_larger_batches(lenet_onnx, tmp_path):
    """An ONNX whose batch dimension is fixed at 1: --batch-sizes 8 is a one-line error, not a crash."""
    import onnx

    art = make_bundle(lenet_onnx, tmp_path / "fixed", target="cpu")
    model = onnx.load(str(art.path / "model.onnx"))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(art.path / "model.onnx"))
    art.manifest["files"]["model.onnx"] = hashlib.sha256((art.path / "model.onnx").read_bytes()).hexdigest()
    atomic_write_json(art.path / "manifest.json", art.manifest)
    r = run_py(art.path, "--bench", "--batch-sizes", "1,8", "--min-time", "0.05")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "fixed at 1" in r.stderr
    r = run_py(art.path, "--bench", "--batch-sizes", "1", "--min-time", "0.05", "--warmup", "1")
    assert r.returncode == 0, r.stderr


def test_tensorrt_bench_times_with_and_without_copies(cpu_bundle, tmp_path, monkeypatch):
    """The TensorRT path against stand-ins for tensorrt and libcudart (no GPU here): buffers bound once per
    batch, latency_ms = H2D + enqueue/sync + D2H, compute_ms = enqueue/sync alone, the profile's batch range."""
    import importlib.util
    import shutil
    import types

    import numpy as np

    bundle = tmp_path / "gpu"
    shutil.copytree(cpu_bundle.path, bundle)
    (bundle / "model.engine").write_bytes(b"plan")  # a device output: not in the manifest, not hash-checked
    spec = importlib.util.spec_from_file_location("bundle_run_py", bundle / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    calls = []

    class Cuda:
        def malloc(self, n):
            calls.append("malloc")
            return types.SimpleNamespace(value=len(calls))

        def free(self, p):
            calls.append("free")

        def to_device(self, p, a):
            calls.append("h2d")

        def to_host(self, a, p):
            calls.append("d2h")

        def stream(self):
            return types.SimpleNamespace(value=0)

        def sync(self, s):
            calls.append("sync")

        def device_name(self):
            return "Stand-in GPU"

    class Context:
        def set_input_shape(self, name, shape):
            self.batch = shape[0]

        def set_tensor_address(self, name, addr):
            pass

        def get_tensor_shape(self, name):
            return (self.batch, 10)

        def execute_async_v3(self, stream):
            calls.append("exec")
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["x", "y"][i]

        def get_tensor_mode(self, name):
            return "IN" if name == "x" else "OUT"

        def get_tensor_shape(self, name):
            return [-1, 1, 32, 32] if name == "x" else [-1, 10]

        def get_tensor_profile_shape(self, name, i):
            return [[1, 1, 32, 32], [4, 1, 32, 32], [8, 1, 32, 32]]

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context()

    trt = types.SimpleNamespace(
        __version__="10.3.0",
        TensorIOMode=types.SimpleNamespace(INPUT="IN"),
        Logger=type("Logger", (), {"WARNING": 0, "__init__": lambda self, level: None}),
        Runtime=lambda logger: types.SimpleNamespace(deserialize_cuda_engine=lambda plan: Engine()),
        nptype=lambda dtype: np.float32,
    )
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(run, "CudaRT", Cuda)
    rep = run.bench([1, 8], 1, 0.01, "tensorrt")
    assert rep["runtime"] == "tensorrt" and rep["runtime_version"] == "10.3.0" and rep["host"]["gpu"] == "Stand-in GPU"
    assert rep["batch_range"] == [1, 8] and set(rep["measures"]) == {"latency_ms", "compute_ms"}
    for row in rep["results"]:
        assert row["latency_ms"]["n"] >= 10 and row["compute_ms"]["n"] >= 10
    assert calls.count("malloc") == calls.count("free") == 4  # input + output per batch size, freed after it
    n_lat = sum(r["latency_ms"]["n"] + 1 for r in rep["results"])  # + 1 warm-up call each
    assert calls.count("h2d") == calls.count("d2h") == n_lat  # copies only in latency_ms
    assert calls.count("exec") == n_lat + sum(r["compute_ms"]["n"] + 1 for r in rep["results"])
    with pytest.raises(run.UsageError, match=r"takes batch 1\.\.8 \(the engine's optimisation profile 0\)"):
        run.bench([16], 0, 0.01, "tensorrt")
