"""TensorRT: flag rules per TensorRT generation, build-request validation and engine compatibility run
everywhere; real engine builds and runs are marked ``tensorrt`` and skip (with the reason) where
``import tensorrt`` fails or no CUDA GPU is visible."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.devices import load_profile
from edgecnn.errors import DeviceMismatch, InvalidInput, MissingDependency, OptionError
from edgecnn.runtime.tensorrt import (
    EngineOptions,
    check_engine_compatible,
    families_in_range,
    plan_engine,
    trt_family,
    trtexec_args,
)


def _trt_skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"TensorRT is not importable here ({exc}); these tests build and run real engines"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch; TensorRT engines need one"
    return None


TRT_SKIP = _trt_skip_reason()
needs_trt = pytest.mark.skipif(TRT_SKIP is not None, reason=TRT_SKIP or "")


def opts(**kw) -> EngineOptions:
    base = dict(
        precision="fp32",
        input_name="input",
        input_chw=(1, 32, 32),
        batch=(1, 4, 16),
        workspace_mb=512,
        timing_cache="timing.cache",
    )
    base.update(kw)
    return EngineOptions(**base)


# -- flag rules ------------------------------------------------------------------------------------
def test_families():
    assert [trt_family(v) for v in ("8.0.1", "8.2", "8.4.1", "8.5.2.2", "8.6", "9.3", "10.3.0.30", "11.2")] == [
        "8.0",
        "8.0",
        "8.4",
        "8.4",
        "8.4",
        "10",
        "10",
        "11",
    ]
    assert families_in_range((8, 0), (8, 2)) == ["8.0"]
    assert families_in_range((8, 5), (10, 7)) == ["8.4", "10"]
    assert families_in_range((8, 6), (11, 999)) == ["8.4", "10", "11"]
    with pytest.raises(InvalidInput, match="too old"):
        trt_family("7.1.3")


def test_trtexec_flags_tensorrt_8_2():
    a = trtexec_args(opts(precision="fp16"), "8.2.1")
    assert "--explicitBatch" in a and "--workspace=512" in a and "--fp16" in a
    assert not any(x.startswith("--memPoolSize") for x in a)
    assert (
        "--minShapes=input:1x1x32x32" in a
        and "--optShapes=input:4x1x32x32" in a
        and "--maxShapes=input:16x1x32x32" in a
    )
    assert "--timingCacheFile=timing.cache" in a and "--saveEngine=model.engine" in a and "--onnx=model.onnx" in a


def test_trtexec_flags_tensorrt_8_5_and_10():
    a85 = trtexec_args(opts(precision="int8"), "8.5.2")
    assert "--explicitBatch" in a85 and "--memPoolSize=workspace:512" in a85 and "--int8" in a85 and "--fp16" in a85
    assert not any(x.startswith("--workspace=") for x in a85)
    a10 = trtexec_args(opts(precision="int8", fp16_fallback=False), "10.3.0")
    assert "--explicitBatch" not in a10 and "--memPoolSize=workspace:512" in a10
    assert "--int8" in a10 and "--fp16" not in a10  # Q/DQ INT8 still needs --int8 on 10.x
    assert "--noTF32" in trtexec_args(opts(precision="fp32"), "10.3") and "--fp16" not in trtexec_args(opts(), "10.3")


def test_trtexec_flags_tensorrt_11_strongly_typed():
    for precision in ("fp16", "int8"):
        a = trtexec_args(opts(precision=precision), "11.2")
        assert "--stronglyTyped" in a and "--fp16" not in a and "--int8" not in a and "--best" not in a
        assert "--explicitBatch" not in a
    with pytest.raises(InvalidInput, match="DLA is not supported by TensorRT 11"):
        trtexec_args(opts(precision="fp16", dla_core=0), "11.0")


def test_trtexec_flags_dla():
    a = trtexec_args(opts(precision="fp16", dla_core=1, gpu_fallback=True), "8.5.2")
    assert "--useDLACore=1" in a and "--allowGPUFallback" in a
    shapes = [x for x in a if "Shapes=" in x]  # DLA: static shapes, min = opt = max
    assert shapes == ["--minShapes=input:4x1x32x32", "--optShapes=input:4x1x32x32", "--maxShapes=input:4x1x32x32"]
    assert "--allowGPUFallback" not in trtexec_args(opts(precision="fp16", dla_core=0), "10.3")
    static = trtexec_args(opts(batch=None), "10.3")
    assert not any("Shapes=" in x for x in static)


# -- build requests --------------------------------------------------------------------------------
def test_plan_engine_defaults(lenet_onnx13, lenet_qdq):
    o = plan_engine(lenet_onnx13, load_profile("jetson-orin-nano"), precision="fp16")
    assert o.precision == "fp16" and o.input_name == "input" and o.input_chw == (1, 32, 32)
    assert o.batch == (1, 1, 16) and o.workspace_mb == 1024 and o.max_batch == 16
    q = plan_engine(lenet_qdq, load_profile("jetson-orin-nano"))
    assert q.precision == "int8"
    d = plan_engine(lenet_onnx13, load_profile("jetson-agx-orin"), precision="fp16", dla_core=1, gpu_fallback=True)
    assert d.batch == (1, 1, 1) and d.dla_core == 1


@pytest.mark.parametrize(
    "device, kw, message",
    [
        ("jetson-orin-nano", {"precision": "int8"}, "INT8 needs a Q/DQ-quantized model"),
        ("jetson-nano", {"precision": "int8"}, "jetson-nano .*cannot run INT8"),
        ("jetson-agx-orin", {"precision": "fp16", "dla_core": 2}, "--dla-core 2 does not exist"),
        ("jetson-orin-nano", {"precision": "fp16", "dla_core": 0}, "has no DLA"),
        ("jetson-agx-orin", {"dla_core": 0}, "DLA runs FP16 or INT8 only"),
        ("jetson-agx-orin", {"precision": "fp16", "gpu_fallback": True}, "--gpu-fallback only applies"),
        ("jetson-orin-nano", {"batch": (4, 2, 8)}, "1 <= MIN <= OPT <= MAX"),
        ("jetson-agx-orin", {"precision": "fp16", "dla_core": 0, "batch": (1, 2, 4)}, "DLA needs static shapes"),
        ("jetson-nano", {"workspace_gb": 8.0}, "exceeds jetson-nano's 4 GB"),
        ("x86-cpu", {}, "runs onnxruntime, not TensorRT"),
    ],
)
def test_plan_engine_rejects(lenet_onnx13, device, kw, message):
    with pytest.raises((InvalidInput, OptionError), match=message):  # OptionError: options that contradict each other
        plan_engine(lenet_onnx13, load_profile(device), **kw)


def test_plan_engine_qdq_needs_int8(lenet_qdq):
    with pytest.raises(InvalidInput, match="Q/DQ .* build it with --int8"):
        plan_engine(lenet_qdq, load_profile("jetson-orin-nano"), precision="fp16")


def test_engine_compatibility():
    meta = {"version": "8.5.2.2", "gpu": "Orin", "compute_capability": "8.7"}
    check_engine_compatible(meta, trt_version="8.5.2.2", compute_capability="8.7")
    check_engine_compatible(meta, trt_version="8.5.2", compute_capability="8.7")
    with pytest.raises(DeviceMismatch, match="built with TensorRT 8.5.2.2 but this machine has TensorRT 10.3.0"):
        check_engine_compatible(meta, trt_version="10.3.0", compute_capability="8.7")
    with pytest.raises(DeviceMismatch, match="compute capability 8.7 .* compute capability 8.6"):
        check_engine_compatible(meta, trt_version="8.5.2.2", compute_capability="8.6", gpu="RTX 3090")


def test_importable_without_tensorrt():
    """TensorRT is optional: with ``import tensorrt`` failing, every module that builds, checks or ships engines
    still imports (the MissingDependency comes when an engine is built or run)."""
    code = (
        "import sys; sys.modules['tensorrt'] = None\n"
        "import edgecnn.runtime.tensorrt, edgecnn.doctor, edgecnn.deploy, edgecnn.devices, edgecnn.cli.cmd_build\n"
        "print(sys.modules['tensorrt'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr


def _fake_engine_artifact(src, out: Path, version: str = "8.5.2.2"):
    """An engine artifact as 'edgecnn build' writes it; the plan bytes are never parsed by these tests."""
    from edgecnn.artifact import new_manifest, write_artifact

    meta = {
        "version": version,
        "gpu": "Orin",
        "compute_capability": "8.7",
        "device_profile": "jetson-orin-nano",
        "max_batch": 16,
        "dla_core": None,
    }
    m = new_manifest(
        model=src.model,
        format="engine",
        file="model.engine",
        precision="fp16",
        input=src.input,
        classes=src.classes,
        stage="build",
        parent=src,
        extra={"tensorrt": meta},
    )
    return write_artifact(out, m, lambda tmp: (tmp / "model.engine").write_bytes(b"plan built on another machine"))


@pytest.mark.skipif(TRT_SKIP is None, reason="TensorRT is installed: the missing-TensorRT messages cannot be seen here")
def test_without_tensorrt_clear_errors(lenet_onnx13, tmp_path, cli_run):
    from edgecnn.runtime import open_runner
    from edgecnn.runtime.tensorrt import build_engine

    with pytest.raises(MissingDependency, match="TensorRT is needed for building engines .*pip install"):
        build_engine(lenet_onnx13, tmp_path / "engine", device="jetson-orin-nano", precision="fp16")
    assert not (tmp_path / "engine").exists()
    r = cli_run(["build", lenet_onnx13.path, "--device", "jetson-orin-nano", "--fp16", "--out", tmp_path / "e"])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "TensorRT" in r.output
    eng = _fake_engine_artifact(lenet_onnx13, tmp_path / "fake-engine")
    with pytest.raises(MissingDependency, match="running engines"):
        open_runner(eng)
    r = cli_run(["eval", eng.path, "--data", "digits"]) if _has_command(cli_run, "eval") else None
    if r is not None:
        assert r.exit_code == 1 and "Traceback" not in r.output and "TensorRT" in r.output


def _has_command(cli_run, name: str) -> bool:
    return cli_run([name, "--help"]).exit_code == 0


def test_cli_build_usage(cli_run, lenet_onnx13, tmp_path):
    assert cli_run(["build", "--help"]).exit_code == 0
    r = cli_run(["build", lenet_onnx13.path, "--device", "jetson-agx-orin", "--gpu-fallback", "--out", tmp_path / "e"])
    assert r.exit_code == 2 and "--dla-core" in r.output
    r = cli_run(
        ["build", lenet_onnx13.path, "--device", "jetson-agx-orin", "--batch", "8,1,4", "--out", tmp_path / "e"]
    )
    assert r.exit_code == 2 and "MIN,OPT,MAX" in r.output
    r = cli_run(["build", lenet_onnx13.path, "--device", "jetson-nano", "--int8", "--out", tmp_path / "e"])
    assert r.exit_code == 1 and "cannot run INT8" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli_run(["build", lenet_onnx13.path, "--device", "jetson-orin-nan", "--out", tmp_path / "e"])
    assert r.exit_code == 1 and "Did you mean 'jetson-orin-nano'" in r.output


# -- real TensorRT ---------------------------------------------------------------------------------
def _local_profile() -> str:
    import tensorrt as trt

    from edgecnn.devices import list_profiles
    from edgecnn.runtime.tensorrt import local_gpu

    cc = local_gpu()["compute_capability"]
    arch = "x86_64" if platform.machine() in ("x86_64", "AMD64") else "aarch64"
    for p in list_profiles():
        if p.uses_tensorrt and p.arch == arch and cc in p.compute_capability and p.trt_in_range(trt.__version__):
            return p.name
    pytest.skip(f"no device profile matches this GPU (compute capability {cc}, {arch}, TensorRT {trt.__version__})")


def _ort(onnx_art, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(onnx_art.model_file), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def _digits(art, n=64):
    from edgecnn.data import load_dataset

    ds = load_dataset("digits", art.input, "val")
    return np.stack([ds[i][0].numpy() for i in range(n)]).astype(np.float32), np.array([ds[i][1] for i in range(n)])


@pytest.mark.tensorrt
@needs_trt
def test_build_and_run_fp32_engine(lenet_onnx13, tmp_path):
    from edgecnn.evaluation import evaluate
    from edgecnn.runtime import open_runner
    from edgecnn.runtime.tensorrt import build_engine

    device = _local_profile()
    cache = tmp_path / "timing.cache"
    eng = build_engine(lenet_onnx13, tmp_path / "engine", device=device, batch=(1, 8, 16), timing_cache=cache)
    meta = eng.manifest["tensorrt"]
    import tensorrt as trt

    assert eng.format == "engine" and meta["version"] == trt.__version__ and meta["compute_capability"]
    assert cache.is_file() and cache.stat().st_size > 0
    x, _ = _digits(lenet_onnx13, 40)  # 40 > max batch 16: the runner chunks
    with open_runner(eng) as r:
        got = r.infer(x)
    ref = _ort(lenet_onnx13, x)
    assert np.abs(got - ref).max() < 1e-3 and (got.argmax(1) == ref.argmax(1)).all()
    top1 = evaluate(eng, "digits")["top1"]
    assert abs(top1 - evaluate(lenet_onnx13, "digits")["top1"]) < 0.01
    eng2 = build_engine(lenet_onnx13, tmp_path / "engine2", device=device, batch=(1, 8, 16), timing_cache=cache)
    assert eng2.path.is_dir()  # the saved timing cache is accepted on rebuild


@pytest.mark.tensorrt
@needs_trt
def test_build_fp16_and_int8_engines(lenet_onnx13, lenet_qdq, tmp_path):
    from edgecnn.runtime import open_runner
    from edgecnn.runtime.tensorrt import build_engine

    device = _local_profile()
    x, y = _digits(lenet_onnx13, 64)
    ref = _ort(lenet_onnx13, x)
    e16 = build_engine(lenet_onnx13, tmp_path / "fp16", device=device, precision="fp16")
    with open_runner(e16) as r:
        got = r.infer(x)
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max() + 1e-2
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.98
    if load_profile(device).supports("int8"):
        e8 = build_engine(lenet_qdq, tmp_path / "int8", device=device)
        with open_runner(e8) as r:
            got8 = r.infer(x)
        assert e8.precision == "int8" and (got8.argmax(1) == y).mean() >= (ref.argmax(1) == y).mean() - 0.05


@pytest.mark.tensorrt
@needs_trt
def test_engine_from_another_tensorrt_version(lenet_onnx13, tmp_path):
    from edgecnn.artifact import Artifact, atomic_write_json
    from edgecnn.runtime import open_runner
    from edgecnn.runtime.tensorrt import build_engine

    eng = build_engine(lenet_onnx13, tmp_path / "engine", device=_local_profile())
    eng.manifest["tensorrt"]["version"] = "8.0.1.6"
    atomic_write_json(eng.path / "manifest.json", eng.manifest)
    with pytest.raises(DeviceMismatch, match="built with TensorRT 8.0.1.6"):
        open_runner(Artifact.load(eng.path))
