"""What a TensorRT engine is, decided without TensorRT: version families, the build request and its
rules, the resolved :class:`EngineOptions`, and the trtexec flags of each TensorRT generation.

:mod:`edgecnn.runtime.tensorrt` builds and runs engines from these; ``edgecnn deploy`` renders the trtexec
flags into bundles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from ..devices import parse_version
from ..doctor import describe_onnx
from ..errors import InvalidInput, OptionError
from ..limits import MAX_BATCH
from ..options import Options, bounded

ENGINE_FILE = "model.engine"


# -- versions ------------------------------------------------------------------------------------
def trt_version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def trt_family(version: str) -> str:
    """The trtexec/API generation of a TensorRT version: '8.0' (8.0-8.3), '8.4' (8.4-8.6), '10' (9.x-10.x), '11'."""
    major, minor = parse_version(version)
    if major < 8:
        raise InvalidInput(f"TensorRT {version} is too old for edgecnn (8.0 or newer is needed).")
    if major == 8:
        return "8.0" if minor < 4 else "8.4"
    if major in (9, 10):
        return "10"
    return "11"


FAMILY_RANGES = {
    "8.0": ((8, 0), (8, 3)),
    "8.4": ((8, 4), (8, 6)),
    "10": ((9, 0), (10, 999)),
    "11": ((11, 0), (11, 999)),
}


def families_in_range(lo: tuple[int, int], hi: tuple[int, int]) -> list[str]:
    """Families whose versions intersect [lo, hi] (inclusive, (major, minor) tuples)."""
    return [f for f, (a, b) in FAMILY_RANGES.items() if not (b < lo or a > hi)]


# -- what to build -------------------------------------------------------------------------------
@dataclass
class EngineRequest(Options):
    """What a user asks of an engine (``edgecnn build`` and the TensorRT part of ``edgecnn deploy``).
    :meth:`validate` holds the option rules; :func:`plan_engine` checks them against the model and device."""

    precision: Literal["fp32", "fp16", "int8"] | None = None
    batch: tuple[int, int, int] | None = bounded(None, 1, MAX_BATCH)
    dla_core: int | None = bounded(None, 0, 15)
    gpu_fallback: bool = False
    workspace_gb: float | None = bounded(None, 0, 1024, lo_open=True)

    def validate(self) -> None:
        if self.gpu_fallback and self.dla_core is None:
            raise OptionError("--gpu-fallback only applies to DLA builds; add --dla-core N or drop --gpu-fallback.")


@dataclass(frozen=True)
class EngineOptions:
    """Everything that decides an engine, independent of how it is built (Python API or trtexec)."""

    precision: str  # fp32 | fp16 | int8 (Q/DQ model)
    input_name: str
    input_chw: tuple[int, int, int]
    batch: tuple[int, int, int] | None  # (min, opt, max); None = the ONNX has a fixed batch
    static_batch: int = 1  # the ONNX's fixed batch when batch is None
    dla_core: int | None = None
    gpu_fallback: bool = False
    workspace_mb: int = 1024
    timing_cache: str | None = None
    fp16_fallback: bool = True  # INT8 builds: let non-quantized layers run in FP16
    model_is_fp16: bool = False  # the ONNX itself carries FP16 tensors
    sparse_weights: bool = False  # 2:4-sparse source: trtexec --sparsity=enable / BuilderFlag.SPARSE_WEIGHTS

    def shape(self, n: int) -> str:
        return "x".join(str(d) for d in (n, *self.input_chw))

    @property
    def max_batch(self) -> int:
        return self.batch[2] if self.batch else self.static_batch

    def to_dict(self) -> dict:
        return asdict(self)


def trtexec_args(
    opts: EngineOptions, version: str, *, onnx: str = "model.onnx", engine: str = ENGINE_FILE
) -> list[str]:
    """trtexec arguments that build ``opts`` on TensorRT ``version`` (``--sparsity=enable`` for a 2:4 model).

    8.0-8.3: --explicitBatch, --workspace=MiB. 8.4-8.6: --memPoolSize=workspace:MiB (--workspace is
    deprecated). 10.x: --explicitBatch no longer exists (networks are always explicit batch); Q/DQ INT8
    still needs --int8. 11.x: --stronglyTyped, no precision flags (FP16 comes from an FP16 ONNX).
    """
    fam = trt_family(version)
    args = [f"--onnx={onnx}", f"--saveEngine={engine}"]
    if fam in ("8.0", "8.4"):
        args.append("--explicitBatch")
    args.append(f"--workspace={opts.workspace_mb}" if fam == "8.0" else f"--memPoolSize=workspace:{opts.workspace_mb}")
    if fam == "11":
        args.append("--stronglyTyped")
        if opts.precision == "fp32":
            args.append("--noTF32")
    elif opts.precision == "fp32":
        args.append("--noTF32")  # keep FP32 engines FP32 (TF32 is on by default on Ampere and newer)
    elif opts.precision == "fp16":
        args.append("--fp16")
    elif opts.precision == "int8":
        args.append("--int8")  # explicit quantization: scales come from the Q/DQ nodes, no calibrator
        if opts.fp16_fallback:
            args.append("--fp16")
    if opts.batch:
        lo, opt, hi = (opts.batch[1],) * 3 if opts.dla_core is not None else opts.batch
        name = opts.input_name
        args += [
            f"--minShapes={name}:{opts.shape(lo)}",
            f"--optShapes={name}:{opts.shape(opt)}",
            f"--maxShapes={name}:{opts.shape(hi)}",
        ]
    if opts.dla_core is not None:
        if fam == "11":
            raise InvalidInput(
                "DLA is not supported by TensorRT 11 (10.7 is the last DLA-capable release for "
                "JetPack); build for the GPU or use TensorRT 10."
            )
        args.append(f"--useDLACore={opts.dla_core}")
        if opts.gpu_fallback:
            args.append("--allowGPUFallback")
    if opts.sparse_weights:
        args.append("--sparsity=enable")  # every trtexec since 8.0: sparse tactics where the weights are 2:4
    if opts.timing_cache:
        args.append(f"--timingCacheFile={opts.timing_cache}")
    return args


def is_2to4(src) -> bool:
    """Whether artifact ``src`` holds 2:4-sparse weights: its manifest's ``sparsity`` record (written by
    ``edgecnn sparsify --pattern 2:4`` and carried by export, FP16, INT8 and deploy) says pattern 2:4."""
    record = (getattr(src, "manifest", None) or {}).get("sparsity") or {}
    return isinstance(record, dict) and record.get("pattern") == "2:4" and bool(record.get("layers"))


def plan_engine(
    src,
    profile,
    *,
    precision: str | None = None,
    batch: tuple[int, int, int] | None = None,
    dla_core: int | None = None,
    gpu_fallback: bool = False,
    workspace_gb: float | None = None,
    timing_cache: str | None = None,
) -> EngineOptions:
    """Validate a build request against the model and the device; raise InvalidInput naming the fix
    (OptionError for options that contradict each other whatever the model)."""
    req = EngineRequest().merged(
        dict(precision=precision, batch=batch, dla_core=dla_core, gpu_fallback=gpu_fallback, workspace_gb=workspace_gb),
        where="build",
    )
    if not profile.uses_tensorrt:
        raise InvalidInput(
            f"{profile.name} runs {profile.runtime}, not TensorRT; pick a TensorRT device "
            "(see 'edgecnn devices') or deploy with --target cpu."
        )
    info = describe_onnx(src.model_file)
    precision = _engine_precision(src, profile, req.precision, info)
    profile.check_dla_core(dla_core)
    if dla_core is not None and precision == "fp32":
        raise InvalidInput("DLA runs FP16 or INT8 only; add --fp16 (or --int8 with a Q/DQ model) to use --dla-core.")
    dynamic = info["dynamic_batch"]
    if batch is not None:
        lo, opt, hi = batch
        if not 1 <= lo <= opt <= hi:
            raise InvalidInput(f"--batch {lo},{opt},{hi}: need 1 <= MIN <= OPT <= MAX.")
        if not dynamic:
            raise InvalidInput(
                f"'{src.path}' has a fixed batch of {info['batch']}; re-export it with a dynamic batch "
                "to use --batch (edgecnn export keeps the batch dynamic by default)."
            )
        if dla_core is not None and not lo == opt == hi:
            raise InvalidInput("DLA needs static shapes; pass --batch N,N,N (min = opt = max) with --dla-core.")
    elif dynamic:
        batch = (1, 1, 1) if dla_core is not None else (1, 1, 16)
    ws = workspace_gb if workspace_gb is not None else (profile.default_workspace_gb or 1.0)
    if ws > profile.memory_gb:
        raise InvalidInput(
            f"--workspace {ws} GB exceeds {profile.name}'s {profile.memory_gb:g} GB of memory; use less."
        )
    return EngineOptions(
        precision=precision,
        input_name=info["input_name"],
        input_chw=tuple(info["input_chw"]),
        batch=batch if dynamic else None,
        static_batch=int(info["batch"] or 1),
        dla_core=dla_core,
        gpu_fallback=gpu_fallback,
        workspace_mb=int(round(ws * 1024)),
        timing_cache=timing_cache,
        fp16_fallback=profile.supports("fp16"),
        model_is_fp16=info["fp16"],
        sparse_weights=is_2to4(src),
    )


def _engine_precision(src, profile, requested: str | None, info: dict) -> str:
    """The precision the engine computes in: the model's unless asked, and only what the model allows."""
    precision = requested or src.precision
    profile.check_precision(precision)
    if precision == "int8" and not info["qdq"]:
        raise InvalidInput(
            f"INT8 needs a Q/DQ-quantized model, but '{src.path}' has no QuantizeLinear/"
            "DequantizeLinear nodes; quantize it first ('edgecnn quantize') - edgecnn does not use "
            "implicit calibration."
        )
    if info["qdq"] and precision != "int8":
        raise InvalidInput(f"'{src.path}' is a Q/DQ (INT8) model; build it with --int8 (or deploy the FP32 model).")
    if src.precision == "fp16" and precision == "fp32":
        raise InvalidInput(f"'{src.path}' is an FP16 model; build it with --fp16.")
    return precision
