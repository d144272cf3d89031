"""ONNX Runtime runner for onnx artifacts (FP32 or QDQ INT8), CPU first; CUDA / TensorRT execution
providers when the installed onnxruntime has them.

Everything that changes latency is explicit and recorded in ``description``: intra-/inter-op threads,
graph optimisation level (default: all, which on CPU includes the NCHWc layout transformation),
execution mode, thread spinning and the providers actually used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifact import sha256_file
from ..errors import ArtifactError, InvalidInput, MissingDependency, require
from ..layouts import choose
from .base import Runner, check_batch, require_onnx

OPT_LEVELS = ("disable", "basic", "extended", "all")


def _ort():
    return require("onnxruntime", purpose="running ONNX models")


def ort_version() -> str:
    """The installed ONNX Runtime's version (MissingDependency when it is not installed)."""
    return _ort().__version__


def session_options(
    *,
    threads: int | None = None,
    inter_threads: int = 1,
    opt_level: str = "all",
    spinning: bool | None = None,
    sequential: bool = True,
):
    """SessionOptions with every knob that matters for latency set explicitly.

    ``threads`` None keeps ONNX Runtime's default (one per physical core). ``spinning`` None keeps its
    default (worker threads spin briefly between runs: lowest latency on a dedicated machine);
    False yields the cores to other work at some latency cost.
    """
    ort = _ort()
    if opt_level not in OPT_LEVELS:
        raise InvalidInput(f"graph optimisation level must be one of {', '.join(OPT_LEVELS)}, got {opt_level!r}.")
    if threads is not None and threads < 1:
        raise InvalidInput(f"threads must be >= 1, got {threads}.")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    so.intra_op_num_threads = int(threads or 0)
    so.inter_op_num_threads = int(inter_threads)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL if sequential else ort.ExecutionMode.ORT_PARALLEL
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3  # errors only; warnings about unused initialisers are noise for users
    return so


def resolve_providers(device: str = "cpu", providers: list | None = None) -> list:
    """Execution providers for ``device``: cpu, cuda[:N] or tensorrt[:N] (each with CPU fallback)."""
    ort = _ort()
    if providers:
        return list(providers)
    available = ort.get_available_providers()
    kind, _, index = device.partition(":")
    device_id = int(index) if index.isdigit() else 0
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    wanted = {"cuda": ["CUDAExecutionProvider"], "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}
    if kind not in wanted:
        raise InvalidInput(f"Unknown device {device!r} for ONNX Runtime; use cpu, cuda[:N] or tensorrt[:N].")
    missing = [p for p in wanted[kind] if p not in available]
    if missing:
        raise MissingDependency(
            f"onnxruntime {ort.__version__} here has no {missing[0]} (available: {', '.join(available)}); "
            "install onnxruntime-gpu (pip uninstall -y onnxruntime && pip install onnxruntime-gpu) on a machine "
            "with a CUDA GPU, or use --device cpu."
        )
    return [(p, {"device_id": device_id}) for p in wanted[kind]] + ["CPUExecutionProvider"]


def create_session(
    model,
    *,
    threads: int | None = None,
    inter_threads: int = 1,
    opt_level: str = "all",
    spinning: bool | None = False,
    device: str = "cpu",
    providers: list | None = None,
    expected_sha256: str | None = None,
):
    """The one ONNX Runtime session factory: an InferenceSession for ``model`` (a path or an in-memory
    ModelProto). A file ONNX Runtime cannot load becomes an ArtifactError that says whether it is
    truncated/modified (sha256 differs from the manifest) or simply not a usable ONNX model."""
    ort = _ort()
    so = session_options(threads=threads, inter_threads=inter_threads, opt_level=opt_level, spinning=spinning)
    chosen = resolve_providers(device, providers)
    if hasattr(model, "SerializeToString"):  # an in-memory graph (a variant being measured, not a user's file)
        return ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=chosen)
    path = Path(model)
    if not path.is_file():
        raise ArtifactError(f"ONNX file '{path}' does not exist; re-export it with 'edgecnn export'.")
    if path.stat().st_size == 0:
        raise ArtifactError(f"ONNX file '{path}' is empty (0 bytes); re-export it with 'edgecnn export'.")
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=chosen)
    except Exception as exc:  # noqa: BLE001 - ORT raises pybind classes (InvalidProtobuf, Fail, InvalidGraph...)
        text = str(exc).strip().splitlines()
        detail = (text[0] if text else type(exc).__name__)[:300]
        hint = "it is not a valid ONNX model"
        if expected_sha256 is not None and sha256_file(path) != expected_sha256:
            hint = (
                "the file does not match the sha256 recorded in manifest.json, so it was truncated, "
                "corrupted or modified after export"
            )
        raise ArtifactError(
            f"ONNX Runtime cannot load '{path}' ({detail}): {hint}; re-create it with 'edgecnn export'."
        ) from exc


def run_batches(session, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of ``images`` (N, C, H, W) through ``session`` in batches; a fixed-batch model gets padded
    batches. float16 images are fed as float16 (an FP16-I/O model), anything else as float32."""
    inp = session.get_inputs()[0]
    fixed = inp.shape[0]
    bs = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
    outs = []
    for i in range(0, len(images), bs):
        x = images[i : i + bs]
        x = np.ascontiguousarray(x, dtype=np.float16 if x.dtype == np.float16 else np.float32)
        if len(x) < bs and isinstance(fixed, int) and fixed > 0:
            pad = np.zeros((bs - len(x),) + x.shape[1:], x.dtype)
            outs.append(session.run(None, {inp.name: np.concatenate([x, pad])})[0][: len(x)])
        else:
            outs.append(session.run(None, {inp.name: x})[0])
    return np.concatenate(outs)


class OrtRunner(Runner):
    """ONNX Runtime inference session for an onnx artifact.

    Options (keyword): ``inter_threads`` (1), ``opt_level`` ('all'), ``spinning`` (False, see below),
    ``providers`` (explicit provider list, overrides ``device``), ``verify`` (True: check the file's sha256
    against the manifest before loading). ``threads`` sets intra-op threads.

    Which file: an INT8 artifact with both layouts runs its cpu layout (``model.cpu.onnx``), the fast one for
    ONNX Runtime on a CPU; with the TensorRT execution provider (``device`` tensorrt[:N]) the tensorrt layout
    (:func:`edgecnn.layouts.choose`, sha256 checked). ``layout`` records the choice; ``description`` says it.

    Why intra-op spinning is off by default: spinning worker threads keep the cores busy between
    parallel sections. On an idle, dedicated machine that saves a little per layer - measured on this
    project's idle 2-core machine, ResNet-50: spinning on was about 5-10 % faster at batch 1 and 8
    (benchmarks/results/fp32_resnet50.md runs both). On a shared machine (CI runners, dev boxes, or
    several runtimes interleaved in one ``edgecnn bench`` process) the spinning threads steal the cores
    the next job or the next candidate needs, which distorts comparisons far more than that. Pass
    ``spinning=True`` for ONNX Runtime's own default on a dedicated device.
    """

    kind = "onnxruntime"

    def _load(self) -> None:
        art = self.artifact
        require_onnx(art, "ONNX Runtime")
        opts = dict(self.options)
        self.inter_threads = int(opts.pop("inter_threads", 1))
        self.opt_level = str(opts.pop("opt_level", "all"))
        self.spinning = opts.pop("spinning", False)
        providers = opts.pop("providers", None)
        verify = bool(opts.pop("verify", True))
        if opts:
            raise InvalidInput(f"Unknown ONNX Runtime option(s): {', '.join(sorted(opts))}.")
        ort = _ort()
        if verify:  # a truncated or bit-flipped file may still parse; the manifest's sha256 catches it
            art.verify()
        family = "tensorrt" if str(self.device).startswith("tensorrt") else "cpu"
        self.layout = choose(art, family, purpose=f"ONNX Runtime on {self.device}", verify=verify)
        self.model_path = self.layout.file
        self.session = create_session(
            self.model_path,
            threads=self.threads,
            inter_threads=self.inter_threads,
            opt_level=self.opt_level,
            spinning=self.spinning,
            device=self.device,
            providers=providers,
            expected_sha256=self.layout.sha256,
        )
        self.version = ort.__version__
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ArtifactError(
                f"'{self.model_path}' has {len(inputs)} inputs; edgecnn runs single-input "
                "classifiers - re-create it with 'edgecnn export'."
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise ArtifactError(
                f"'{self.model_path}' takes a {len(shape)}-D input {shape}, not an N,C,H,W image batch; "
                "re-create it with 'edgecnn export'."
            )
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.image_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])
        self.providers = self.session.get_providers()

    @property
    def description(self) -> str:
        threads = self.threads or "default"
        spin = {None: "", True: ", spinning", False: ", no spinning"}[self.spinning]
        layout = self.layout
        which = f", INT8 layout {layout.layout} ({layout.file.name})" if layout.layout is not None else ""
        return (
            f"onnxruntime {self.version} {self.providers[0]} (intra {threads}, inter {self.inter_threads}, "
            f"opt {self.opt_level}{spin}{which})"
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise InvalidInput("This ONNX Runtime runner was closed; open the artifact again.")
        batch = np.asarray(batch)
        check_batch(self.artifact, batch, self.image_shape, self.fixed_batch)
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None
