"""TensorRT: build an engine from an ONNX artifact, and run engines for ``eval`` / ``bench``.

Three TensorRT generations differ in ways a build must respect:

* 8.x - networks need the EXPLICIT_BATCH creation flag; the workspace is ``max_workspace_size`` before
  8.4 and ``set_memory_pool_limit`` from 8.4; I/O goes through bindings until 8.5 added the named
  tensor API; Q/DQ (explicit) INT8 still needs the INT8 builder flag.
* 10.x - explicit batch is implicit (the flag is deprecated), named tensors only
  (``num_io_tensors`` / ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``);
  implicit INT8 calibration is deprecated (10.1), Q/DQ + INT8 flag (or a strongly typed network) is the way.
* 11.x - every network is strongly typed: the FP16/INT8 builder flags and trtexec's --fp16/--int8/--best
  are gone; precision comes from the ONNX tensor types (an FP16 ONNX, or Q/DQ nodes for INT8).

``tensorrt`` (and ModelOpt, for FP16 on 11.x) is imported inside functions only, so this module works
without it; a missing package raises MissingDependency with the install command. GPU buffers are torch CUDA
tensors, so no pycuda is needed. An engine is a raw plan file: its manifest records the TensorRT
version, GPU and compute capability, and loading it anywhere else fails with DeviceMismatch before
TensorRT is asked to deserialize it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm.auto import tqdm

from ..artifact import Artifact, check_out, derived_manifest, write_artifact
from ..devices import load_profile
from ..doctor import diagnose
from ..errors import ArtifactError, DeviceMismatch, InvalidInput, MissingDependency
from .base import Runner
from .engine_plan import (  # noqa: F401 - engine planning stays importable from edgecnn.runtime.tensorrt
    ENGINE_FILE,
    FAMILY_RANGES,
    EngineOptions,
    EngineRequest,
    _engine_precision,
    families_in_range,
    is_2to4,
    plan_engine,
    trt_family,
    trt_version_tuple,
    trtexec_args,
)

log = logging.getLogger("edgecnn")


# -- local machine -------------------------------------------------------------------------------
def import_tensorrt(purpose: str):
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError as exc:
        raise MissingDependency(
            f"TensorRT is needed for {purpose} but its Python package is not importable ({exc}); install it with "
            "pip install 'edgecnn[tensorrt]' (x86, NVIDIA's index) or 'sudo apt install python3-libnvinfer' (JetPack)."
        ) from exc
    return trt


def local_gpu() -> dict:
    """{'gpu': name, 'compute_capability': 'M.m', 'index': i} of the current CUDA device, or MissingDependency."""
    if not torch.cuda.is_available():
        raise MissingDependency(
            "TensorRT needs an NVIDIA GPU with a working CUDA driver, and torch sees none here; "
            "run this on the target machine, or deploy a bundle (edgecnn deploy) and build there."
        )
    idx = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(idx)
    return {"gpu": torch.cuda.get_device_name(idx), "compute_capability": f"{major}.{minor}", "index": idx}


def check_engine_compatible(
    meta: dict, *, trt_version: str, compute_capability: str | None, gpu: str | None = None, where: str = "engine"
) -> None:
    """Raise DeviceMismatch unless the engine described by ``meta`` (manifest['tensorrt']) loads here.

    A plan only deserializes in the TensorRT version that built it (same major.minor.patch.build) and on
    the compute capability it was built for, so both are checked before TensorRT sees the file.
    """
    built = str(meta.get("version") or "")
    if not built:
        raise ArtifactError(
            f"{where} does not record the TensorRT version that built it; rebuild it with 'edgecnn build'."
        )
    a, b = trt_version_tuple(built), trt_version_tuple(trt_version)
    n = min(len(a), len(b))
    if a[:n] != b[:n]:
        raise DeviceMismatch(
            f"{where} was built with TensorRT {built} but this machine has TensorRT {trt_version}; engines only "
            f"load in the TensorRT version that built them - rebuild it here with 'edgecnn build' from its ONNX "
            "parent."
        )
    want = meta.get("compute_capability")
    if want and compute_capability and want != compute_capability:
        raise DeviceMismatch(
            f"{where} was built for compute capability {want} ({meta.get('gpu') or 'unknown GPU'}) but this GPU is "
            f"{gpu or 'a GPU'} with compute capability {compute_capability}; rebuild it on this machine with "
            "'edgecnn build'."
        )


# -- building ------------------------------------------------------------------------------------
class _Logger:
    """A TensorRT logger that forwards to Python logging (keeps the last errors for the message)."""

    def __new__(cls, trt):
        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity, msg):
                if severity <= trt.ILogger.Severity.ERROR:
                    self.errors.append(str(msg))
                    log.error("TensorRT: %s", msg)
                elif severity <= trt.ILogger.Severity.WARNING:
                    log.warning("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)

        return Logger()


def _progress_monitor(trt):
    """tqdm bars for TensorRT's top-level build phases (IProgressMonitor exists from TensorRT 10)."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.bars = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"TensorRT: {phase_name}", leave=False, unit="step")

        def step_complete(self, phase_name, step):
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.n = step + 1
                bar.refresh()
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Monitor()


def serialize_network(
    trt, onnx_path: Path, opts: EngineOptions, *, cache: bytes = b"", progress: bool = False
) -> tuple[bytes, bytes]:
    """Parse ``onnx_path`` and build a serialized plan with the TensorRT Python API: (plan, timing cache)."""
    major = trt_version_tuple(trt.__version__)[0]
    logger = _Logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if major < 10:
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if major >= 11 and hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if hasattr(parser, "parse_from_file"):
        ok = parser.parse_from_file(str(onnx_path))
    else:  # pragma: no cover - very old bindings
        ok = parser.parse(Path(onnx_path).read_bytes(), str(onnx_path))
    if not ok:
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "; ".join(logger.errors)
        raise InvalidInput(
            f"TensorRT {trt.__version__} cannot parse {onnx_path}: {errs[:500]} - run 'edgecnn doctor' "
            "for the unsupported ops."
        )
    config = builder.create_builder_config()
    workspace = int(opts.workspace_mb) << 20
    if hasattr(config, "set_memory_pool_limit"):  # 8.4+
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # 8.0-8.3
        config.max_workspace_size = workspace
    if major < 11:  # 11.x: strongly typed, no precision flags
        if opts.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif opts.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ scales; no IInt8Calibrator is ever set
            if opts.fp16_fallback:
                config.set_flag(trt.BuilderFlag.FP16)
    if opts.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if opts.sparse_weights and hasattr(trt.BuilderFlag, "SPARSE_WEIGHTS"):  # 8.0+: 2:4 layers may run sparse
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if opts.batch:
        lo, opt, hi = (opts.batch[1],) * 3 if opts.dla_core is not None else opts.batch
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = list(tensor.shape)
            rest = [d if d > 0 else c for d, c in zip(dims[1:], opts.input_chw)]
            profile.set_shape(tensor.name, (lo, *rest), (opt, *rest), (hi, *rest))
        config.add_optimization_profile(profile)
    timing = config.create_timing_cache(cache or b"")
    config.set_timing_cache(timing, False)
    if opts.dla_core is not None:
        if builder.num_DLA_cores <= opts.dla_core:
            raise DeviceMismatch(
                f"This machine has {builder.num_DLA_cores} DLA core(s); --dla-core {opts.dla_core} "
                "is not one of them - build on the device the profile describes."
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        if opts.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if progress and hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = "; ".join(logger.errors[-3:]) or "see the TensorRT log (edgecnn -v build ...)"
        raise InvalidInput(f"TensorRT {trt.__version__} could not build the engine: {detail[:500]}.")
    new_cache = bytes(config.get_timing_cache().serialize())
    return bytes(plan), new_cache


def _fp16_onnx_for_strong_typing(onnx_path: Path, tmp: Path) -> Path:
    """TensorRT 11 takes precision from the graph: convert an FP32 ONNX to FP16 with ModelOpt AutoCast."""
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision  # noqa: PLC0415 - heavy, optional (NVIDIA)
    except ImportError as exc:
        raise MissingDependency(
            f"TensorRT 11 builds strongly typed networks only, so FP16 needs an FP16 ONNX; ModelOpt converts it "
            f"({exc}): pip install nvidia-modelopt[onnx] - or deploy an FP16 ONNX."
        ) from exc
    model = convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True)
    out = tmp / "model_fp16.onnx"
    onnx.save(model, str(out))
    return out


def build_engine(
    src,
    out,
    *,
    device: str,
    precision: str | None = None,
    batch: tuple[int, int, int] | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = False,
    timing_cache: str | Path | None = None,
    workspace_gb: float | None = None,
    preflight: bool = True,
    progress: bool = True,
):
    """The build stage: ONNX artifact -> TensorRT engine artifact (raw plan + manifest) for ``device``.

    The engine only runs on this machine's GPU model and TensorRT version, so the machine must match the
    device profile (compute capability, TensorRT version range). A pre-flight ``doctor`` check runs first
    and refuses models with ops this TensorRT cannot parse.
    """
    if out is not None:
        check_out(out, src)
    profile = load_profile(device)
    src = _onnx_source(src)
    cache_path = Path(timing_cache) if timing_cache else None
    opts = plan_engine(
        src,
        profile,
        precision=precision,
        batch=batch,
        dla_core=dla_core,
        gpu_fallback=gpu_fallback,
        workspace_gb=workspace_gb,
        timing_cache=str(cache_path) if cache_path else None,
    )
    trt, gpu = _check_build_machine(
        src, profile, opts, dla_core=dla_core, gpu_fallback=gpu_fallback, preflight=preflight
    )
    plan, cache_out = _build_plan(trt, src, profile, opts, cache_path, progress=progress)
    art = _write_engine(src, out, profile, opts, trt, gpu, plan, dla_core=dla_core, gpu_fallback=gpu_fallback)
    if cache_path:
        tmp_cache = cache_path.with_name(f".{cache_path.name}.tmp")
        tmp_cache.parent.mkdir(parents=True, exist_ok=True)
        tmp_cache.write_bytes(cache_out)
        tmp_cache.replace(cache_path)
    return art


def _onnx_source(src) -> Artifact:
    if not isinstance(src, Artifact):
        return Artifact.load(src, formats=("onnx",))
    if src.format != "onnx":
        raise ArtifactError(
            f"'{src.path}' is a {src.format} artifact; 'edgecnn build' takes an ONNX artifact "
            "(make one with 'edgecnn export')."
        )
    src.verify()  # loaded earlier: checked again (cached unless a file changed)
    return src


def _check_build_machine(
    src: Artifact, profile, opts: EngineOptions, *, dla_core: int | None, gpu_fallback: bool, preflight: bool
) -> tuple[object, dict]:
    """This machine's TensorRT module and GPU, once both match the profile (and the pre-flight check passed)."""
    trt = import_tensorrt("building engines (edgecnn build)")
    if not profile.trt_in_range(trt.__version__):
        raise DeviceMismatch(
            f"TensorRT {trt.__version__} is outside what {profile.name} ships "
            f"({profile.trt_range_text}); install a TensorRT in that range or edit the profile."
        )
    if preflight:
        report = diagnose(src, profile.name, tensorrt=trt.__version__, dla_core=dla_core, precision=opts.precision)
        report.require_buildable(gpu_fallback=gpu_fallback, source=src.path)
    gpu = local_gpu()
    if gpu["compute_capability"] not in profile.compute_capability:
        raise DeviceMismatch(
            f"This GPU ({gpu['gpu']}, compute capability {gpu['compute_capability']}) is not a {profile.name} "
            f"(compute capability {', '.join(profile.compute_capability)}); an engine only runs on the GPU it was "
            f"built on - build on the device itself (see 'edgecnn deploy') or pass a matching --device."
        )
    return trt, gpu


def _build_plan(
    trt, src: Artifact, profile, opts: EngineOptions, cache_path: Path | None, *, progress: bool
) -> tuple[bytes, bytes]:
    """(serialized plan, timing cache), reading the timing cache at ``cache_path`` when there is one."""
    cache_in = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    onnx_path = src.model_file
    with tempfile.TemporaryDirectory() as tmpdir:
        if trt_version_tuple(trt.__version__)[0] >= 11 and opts.precision == "fp16" and not opts.model_is_fp16:
            onnx_path = _fp16_onnx_for_strong_typing(onnx_path, Path(tmpdir))
        log.info(
            "building a %s TensorRT %s engine for %s (this can take minutes)",
            opts.precision,
            trt.__version__,
            profile.name,
        )
        return serialize_network(trt, onnx_path, opts, cache=cache_in, progress=progress)


def _write_engine(
    src: Artifact,
    out,
    profile,
    opts: EngineOptions,
    trt,
    gpu: dict,
    plan: bytes,
    *,
    dla_core: int | None,
    gpu_fallback: bool,
) -> Artifact:
    """The engine artifact: the raw plan, and a manifest recording what built it and for which GPU."""
    meta = {
        "version": trt.__version__,
        "gpu": gpu["gpu"],
        "compute_capability": gpu["compute_capability"],
        "device_profile": profile.name,
        "options": opts.to_dict(),
        "max_batch": opts.max_batch,
        "dla_core": dla_core,
        "plan_bytes": len(plan),
    }
    params = {
        "device": profile.name,
        "precision": opts.precision,
        "batch": list(opts.batch) if opts.batch else None,
        "dla_core": dla_core,
        "gpu_fallback": gpu_fallback,
        "workspace_mb": opts.workspace_mb,
        "timing_cache": opts.timing_cache,
    }
    keep = {k: v for k, v in src.metrics.items() if k in ("params", "macs")}
    manifest = derived_manifest(
        src,
        stage="build",
        precision=opts.precision,
        params=params,
        format="engine",
        file=ENGINE_FILE,
        metrics=keep,
        extra={"tensorrt": meta},
    )

    def write(tmp: Path) -> None:
        (tmp / ENGINE_FILE).write_bytes(plan)

    return write_artifact(out, manifest, write)


# -- running -------------------------------------------------------------------------------------
class TensorRTRunner(Runner):
    """Runs an engine artifact on the local GPU; batches larger than the engine's profile are chunked."""

    kind = "tensorrt"

    def _load(self) -> None:
        trt = import_tensorrt("running engines")
        meta = self.artifact.manifest.get("tensorrt") or {}
        gpu = local_gpu()
        check_engine_compatible(
            meta,
            trt_version=trt.__version__,
            compute_capability=gpu["compute_capability"],
            gpu=gpu["gpu"],
            where=f"Engine '{self.artifact.path}'",
        )
        self._trt = trt
        dev = self.device if str(self.device).startswith("cuda") else f"cuda:{gpu['index']}"
        self._dev = torch.device(dev)
        self._logger = _Logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if meta.get("dla_core") is not None:
            self._runtime.DLA_core = int(meta["dla_core"])
        self.artifact.verify()  # an Artifact handed in (not loaded here) is checked too; cached
        self._engine = self._runtime.deserialize_cuda_engine(self.artifact.model_file.read_bytes())
        if self._engine is None:
            raise DeviceMismatch(
                f"TensorRT {trt.__version__} could not deserialize '{self.artifact.model_file}' "
                f"({'; '.join(self._logger.errors[-2:])}); rebuild it here with 'edgecnn build'."
            )
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self._dev)
        self._tensor_api = hasattr(self._engine, "num_io_tensors")  # 8.5+
        self._inputs, self._outputs = self._io_names()
        if len(self._inputs) != 1:
            raise ArtifactError(
                f"'{self.artifact.path}' has {len(self._inputs)} inputs; edgecnn runs single-input classifiers."
            )
        self._max_batch = int(meta.get("max_batch") or self._profile_max_batch())

    @property
    def description(self) -> str:
        return f"tensorrt {self._trt.__version__} on {torch.cuda.get_device_name(self._dev)}"

    def _io_names(self) -> tuple[list[str], list[str]]:
        trt, eng = self._trt, self._engine
        ins, outs = [], []
        if self._tensor_api:
            for i in range(eng.num_io_tensors):
                name = eng.get_tensor_name(i)
                (ins if eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(name)
        else:
            for i in range(eng.num_bindings):
                (ins if eng.binding_is_input(i) else outs).append(eng.get_binding_name(i))
        return ins, outs

    def _profile_max_batch(self) -> int:
        eng, name = self._engine, self._inputs[0]
        shape = eng.get_tensor_shape(name) if self._tensor_api else eng.get_binding_shape(eng.get_binding_index(name))
        if shape[0] > 0:
            return int(shape[0])
        prof = (
            eng.get_tensor_profile_shape(name, 0)
            if self._tensor_api
            else eng.get_profile_shape(0, eng.get_binding_index(name))
        )
        return int(prof[2][0])

    def _dtype(self, name: str):
        eng = self._engine
        dt = eng.get_tensor_dtype(name) if self._tensor_api else eng.get_binding_dtype(eng.get_binding_index(name))
        return torch.from_numpy(np.empty(0, dtype=self._trt.nptype(dt))).dtype

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        outs = [self._run(batch[i : i + self._max_batch]) for i in range(0, len(batch), self._max_batch)]
        return np.concatenate(outs) if outs else np.zeros((0, self.artifact.num_classes), np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        ctx, eng = self._context, self._engine
        name = self._inputs[0]
        xin = torch.from_numpy(x).to(self._dev).to(self._dtype(name)).contiguous()
        buffers = {name: xin}
        if self._tensor_api:
            ctx.set_input_shape(name, tuple(xin.shape))
            for out in self._outputs:
                buffers[out] = torch.empty(tuple(ctx.get_tensor_shape(out)), dtype=self._dtype(out), device=self._dev)
            for n, t in buffers.items():
                ctx.set_tensor_address(n, int(t.data_ptr()))
            ok = ctx.execute_async_v3(self._stream.cuda_stream)
        else:
            idx = eng.get_binding_index(name)
            ctx.set_binding_shape(idx, tuple(xin.shape))
            bindings = [0] * eng.num_bindings
            bindings[idx] = int(xin.data_ptr())
            for out in self._outputs:
                j = eng.get_binding_index(out)
                buffers[out] = torch.empty(tuple(ctx.get_binding_shape(j)), dtype=self._dtype(out), device=self._dev)
                bindings[j] = int(buffers[out].data_ptr())
            ok = ctx.execute_async_v2(bindings, self._stream.cuda_stream)
        self._stream.synchronize()
        if not ok:
            raise RuntimeError("TensorRT execution failed (see the TensorRT log)")
        return buffers[self._outputs[0]].float().cpu().numpy()

    def close(self) -> None:
        for attr in ("_context", "_engine", "_runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
