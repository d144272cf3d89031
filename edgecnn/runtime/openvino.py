"""OpenVINO runner for onnx artifacts (FP32 or Q/DQ INT8) on a CPU.

OpenVINO reads edgecnn's own ONNX directly (the file :func:`edgecnn.layouts.choose` picks for the ``cpu``
family, sha256 checked; ``layout`` records it). No IR is cached next to it: an artifact holds only the files
its manifest lists and hashes, and reading the ONNX takes well under a second for the zoo's networks.
Everything that changes latency or numbers is set explicitly and recorded in ``settings`` (the compiled
model's own read-back values) and ``description``:

- ``INFERENCE_NUM_THREADS`` (default: the physical cores), ``PERFORMANCE_HINT`` (LATENCY | THROUGHPUT) and
  ``NUM_STREAMS`` (default 1 for LATENCY, one per two threads for THROUGHPUT);
- ``INFERENCE_PRECISION_HINT``: on a BF16-capable CPU OpenVINO runs FP32 models in bf16 unless told
  otherwise, so ``precision="fp32"`` (the default) pins ``f32``; ``precision="bf16"`` asks for bf16 and is
  refused where the CPU plugin does not list BF16 in OPTIMIZATION_CAPABILITIES. A bf16 run is never
  called FP32: ``precision`` and the read-back hint are in every record.

The model is compiled once per batch size with that static shape (dynamic shapes are slower in
OpenVINO's CPU plugin), the first one at load time so a model OpenVINO cannot compile fails there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..envinfo import cpu_flags, physical_cores
from ..errors import ArtifactError, InvalidInput, MissingDependency
from ..layouts import choose
from .base import Runner, check_batch, require_onnx

KIND = "openvino"
HINTS = ("LATENCY", "THROUGHPUT")
#: inference precisions of the float parts of a model (INT8 Q/DQ layers stay INT8 either way)
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
INSTALL = "pip install openvino (or run 'make test', which installs it)"
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def import_openvino(purpose: str = "--runtime openvino"):
    """The openvino module, or one line naming how to install it."""
    try:
        import openvino
    except ImportError:
        raise MissingDependency(  # noqa: B904 - one line for the user, not the import chain
            f"OpenVINO is not installed, so {purpose} cannot run; install it with: {INSTALL}."
        )
    return openvino


def openvino_version() -> str:
    return import_openvino().get_version().split("-")[0]


@functools.cache
def shared_core():
    """The process's one ``ov.Core``, kept until exit; every OpenVINO runner of edgecnn uses it.

    OpenVINO's CPU plugin gives the thread that creates it a new signal stack (``sigaltstack``) and, when it
    is destroyed, puts back the one it found - if its own is still current - and unmaps its own. Two Cores
    freed in the order they were made (what Python's garbage collection does) therefore leave the thread
    on a signal stack that is already unmapped, and the next signal that has a Python handler kills the
    process with SIGSEGV and no traceback (the fault handler runs on that stack too): the test suite died
    so, minutes after its OpenVINO tests. One Core that lives as long as the process nests every other."""
    return import_openvino().Core()


def _core():
    return shared_core()


def cpu_capabilities(core=None) -> list[str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES (FP32, INT8, BF16, FP16, ...)."""
    core = core or _core()
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def bf16_support(core=None) -> tuple[bool, str]:
    """(whether OpenVINO can run bf16 on this CPU, why - with the capabilities and CPU flags it read)."""
    caps = cpu_capabilities(core)
    flags = [f for f in cpu_flags() if f in _BF16_FLAGS]
    said = f"OpenVINO CPU OPTIMIZATION_CAPABILITIES: {', '.join(caps)}; bf16 CPU flags: {', '.join(flags) or 'none'}"
    if "BF16" in caps:
        return True, f"this CPU has BF16 ({said})"
    return False, f"this CPU has no BF16 ({said}; bf16 needs avx512_bf16 or amx_bf16)"


def compile_config(*, threads: int, hint: str, streams: int, precision: str) -> dict:
    """The compile properties, every one explicit."""
    if hint not in HINTS:
        raise InvalidInput(f"OpenVINO performance hint must be one of {', '.join(HINTS)}, got {hint!r}.")
    if precision not in PRECISIONS:
        raise InvalidInput(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if threads < 1 or streams < 1:
        raise InvalidInput(f"OpenVINO threads and streams must be >= 1, got {threads} / {streams}.")
    return {
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": hint,
        "NUM_STREAMS": int(streams),
        "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
    }


#: the compiled model's properties recorded with every result
RECORDED = ("INFERENCE_NUM_THREADS", "PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_PRECISION_HINT")


class OpenVinoRunner(Runner):
    """OpenVINO CPU inference of an onnx artifact.

    Options (keyword): ``hint`` ('LATENCY' | 'THROUGHPUT'), ``streams`` (default 1 for LATENCY, threads // 2
    for THROUGHPUT), ``precision`` ('fp32' pins f32; 'bf16' where the CPU has it), ``verify`` (True: the
    file's sha256 against the manifest first). ``threads`` sets INFERENCE_NUM_THREADS (default: physical cores).
    """

    kind = KIND

    def _load(self) -> None:
        art = self.artifact
        require_onnx(art, "OpenVINO", ", or use --runtime onnxruntime")
        if self.device != "cpu":
            raise InvalidInput(f"edgecnn runs OpenVINO on the CPU only; got --device {self.device}.")
        opts = dict(self.options)
        self.hint = str(opts.pop("hint", "LATENCY")).upper()
        self.precision = str(opts.pop("precision", "fp32"))
        threads = int(self.threads or physical_cores())
        streams = opts.pop("streams", None)
        streams = int(streams) if streams else (1 if self.hint == "LATENCY" else max(1, threads // 2))
        verify = bool(opts.pop("verify", True))
        if opts:
            raise InvalidInput(f"Unknown OpenVINO option(s): {', '.join(sorted(opts))}.")
        self.config = compile_config(threads=threads, hint=self.hint, streams=streams, precision=self.precision)
        ov = import_openvino()
        self.version = ov.get_version().split("-")[0]
        self.core = shared_core()
        if self.precision == "bf16":
            ok, why = bf16_support(self.core)
            if not ok:
                raise InvalidInput(f"--precision bf16 on OpenVINO: {why}; use fp32.")
        if verify:
            art.verify()
        self.layout = choose(art, "cpu", purpose="OpenVINO on cpu")  # the CPU INT8 layout when there are two
        self.model_path = Path(self.layout.file)
        self._read()
        self._compiled: dict[int, object] = {}
        self._requests: dict[int, object] = {}
        first = self.fixed_batch or 1
        self.compiled_model(first)
        self.settings = {k: _plain(self._compiled[first].get_property(k)) for k in RECORDED}
        self.settings.update(runtime=KIND, version=self.version, precision=self.precision, model=self.model_path.name)

    def _read(self) -> None:
        try:
            self.model = self.core.read_model(str(self.model_path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError / its own classes with long text
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ArtifactError(
                f"OpenVINO cannot read '{self.model_path}' ({detail}); re-create it with 'edgecnn export'."
            ) from exc
        inputs = self.model.inputs
        if len(inputs) != 1 or len(self.model.outputs) < 1:
            raise ArtifactError(
                f"'{self.model_path}' has {len(inputs)} inputs; edgecnn runs single-input classifiers - "
                "re-create it with 'edgecnn export'."
            )
        shape = inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise ArtifactError(f"'{self.model_path}' does not take an N,C,H,W image batch; re-export it.")
        dims = [d.get_length() if d.is_static else None for d in shape]
        self.fixed_batch = dims[0]
        self.image_shape = tuple(dims[1:])
        self.input_name = inputs[0].any_name

    def compiled_model(self, batch: int):
        """The model compiled for batch size ``batch`` (static shape), compiled on first use."""
        compiled = self._compiled.get(batch)
        if compiled is None:
            model = self.model.clone()
            if self.fixed_batch is None:
                model.reshape({self.input_name: [batch, *(d if d is not None else -1 for d in self.image_shape)]})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self._compiled[batch] = compiled
        return compiled

    @property
    def description(self) -> str:
        c = self.settings
        return (
            f"openvino {self.version} CPU (threads {c['INFERENCE_NUM_THREADS']}, {c['PERFORMANCE_HINT']}, "
            f"{c['NUM_STREAMS']} stream{'s' * (int(c['NUM_STREAMS']) != 1)}, inference precision "
            f"{c['INFERENCE_PRECISION_HINT']}, static shape per batch)"
        )

    def _request(self, n: int):
        """The infer request for batch size ``n`` (one per size, made on first use)."""
        if self._compiled is None:
            raise InvalidInput("This OpenVINO runner was closed; open the artifact again.")
        req = self._requests.get(n)
        if req is None:
            req = self._requests[n] = self.compiled_model(n).create_infer_request()
        return req

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        check_batch(self.artifact, batch, self.image_shape, self.fixed_batch)
        req = self._request(int(batch.shape[0]))
        req.infer({0: np.ascontiguousarray(batch, dtype=np.float32)}, share_inputs=True)
        return req.get_output_tensor(0).data.copy()

    def async_queue(self, batch: int, jobs: int | None = None):
        """An AsyncInferQueue of ``jobs`` requests (default: the compiled model's optimal number) for
        throughput runs at batch size ``batch``."""
        compiled = self.compiled_model(batch)
        n = jobs or int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        return import_openvino().AsyncInferQueue(compiled, max(1, n))

    def close(self) -> None:
        self._requests, self._compiled = {}, None


def _plain(value):
    """A compiled model's property as JSON-able text/number (OpenVINO returns enums and Type objects)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    text = str(value)
    if hasattr(value, "name") and not isinstance(value, type):
        text = str(getattr(value, "name", text))
    if text.startswith("<Type: "):
        text = text[len("<Type: '") : -2]
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(text, text)
