"""Which CPU runtime runs an onnx artifact: ONNX Runtime, OpenVINO, or ``auto`` - the faster of the two,
measured on this machine in one interleaved run (:func:`edgecnn.bench.measure_latency`) and recorded.

``--runtime`` on ``eval``, ``bench``, ``check``, ``sweep`` and ``deploy --target cpu`` means the same
everywhere: ``onnxruntime`` or ``openvino`` run every onnx artifact in that runtime (a torch artifact keeps
its torch runner); ``auto`` measures both and uses the faster. Accuracy is always measured in the runtime
that is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .artifact import Artifact
from .bench import measure_latency, ratio_between
from .bench_table import format_ms, format_ratio, format_speedup
from .errors import MissingDependency, OptionError
from .estimator import RATIO_ESTIMATOR
from .options import Options, bounded
from .runtime import open_runner

RUNTIMES = ("onnxruntime", "openvino")
CHOICES = (*RUNTIMES, "auto")
Runtime = Literal["onnxruntime", "openvino", "auto"]


@dataclass
class RuntimeOptions(Options):
    """``--runtime`` and what it needs: OpenVINO (and so ``auto``) runs on the CPU only."""

    runtime: Runtime | None = None  # None: the artifact format's own runner
    device: str = "cpu"
    min_time_s: float = bounded(1.0, 0.0, 3600.0, lo_open=True)  # auto: timed seconds per runtime

    def validate(self) -> None:
        if self.runtime in ("openvino", "auto") and self.device != "cpu":
            raise OptionError(
                f"--runtime {self.runtime} runs on the CPU (OpenVINO's CPU plugin); drop --device {self.device} "
                "or use --runtime onnxruntime."
            )


def applies(artifact: Artifact, runtime: str | None) -> bool:
    """Whether ``runtime`` changes how ``artifact`` runs (only onnx artifacts have a runtime choice)."""
    return runtime is not None and artifact.format == "onnx"


def open_in(artifact, runtime: str | None, *, device: str = "cpu", threads: int | None = None, **options):
    """``artifact`` opened in ``runtime`` ('onnxruntime' | 'openvino'; None: its format's runner). A torch
    artifact keeps its torch runner whatever the runtime (there is nothing else to run it in)."""
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    if runtime == "auto":
        raise OptionError("resolve --runtime auto with choose_runtime first.")
    rt = runtime if applies(artifact, runtime) else None
    return open_runner(artifact, device=device, threads=threads, runtime=rt, **options)


def choose_runtime(
    artifact,
    *,
    threads: int | None = None,
    batch_size: int = 1,
    min_time_s: float = 1.0,
    data="digits",
    progress: bool = False,
) -> dict:
    """Measure ONNX Runtime and OpenVINO on ``artifact`` in one interleaved run here and pick the faster.

    Returns the record that goes into reports and bundle.json: ``chosen``, ``why`` (in words, with the
    numbers), per-runtime ``p50_ms`` / ``p50_ci_ms``, ``ratio`` (openvino / onnxruntime latency, the
    project's estimator) with ``ratio_ci`` and ``flags``, and how it was measured. Without OpenVINO
    installed the choice is ONNX Runtime, and ``why`` says so."""
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    if artifact.format != "onnx":
        raise OptionError(f"--runtime auto chooses between runtimes of onnx artifacts; '{artifact.path}' is torch.")
    try:
        ov = open_runner(artifact, threads=threads, runtime="openvino")
    except MissingDependency as exc:
        return {"chosen": "onnxruntime", "why": f"onnxruntime: the only CPU runtime here ({exc})", "measured": False}
    with open_runner(artifact, threads=threads, runtime="onnxruntime") as ort, ov:
        result = measure_latency(
            [ort, ov],
            labels=list(RUNTIMES),
            batch_sizes=(batch_size,),
            warmup=0.2,
            min_time_s=min_time_s,
            threads=threads,
            data=data,
            progress=progress,
        )
        runners = {"onnxruntime": ort.description, "openvino": ov.description}
        ov_settings = dict(ov.settings)
    return record_choice(result, runners, ov_settings)


def record_choice(result: dict, runners: dict, ov_settings: dict) -> dict:
    rows = {r["label"]: r for r in result["results"]}
    est = ratio_between(rows["openvino"], rows["onnxruntime"])
    chosen = "openvino" if est.point < 1.0 else "onnxruntime"
    other = "onnxruntime" if chosen == "openvino" else "openvino"
    p50 = {rt: rows[rt]["latency_ms"]["p50"] for rt in RUNTIMES}
    speed = 1.0 / est.point if chosen == "openvino" else est.point
    settings = result["settings"]
    env = result["environment"]
    why = (
        f"{chosen}: p50 {format_ms(p50[chosen])} ms vs {other} {format_ms(p50[other])} ms at batch "
        f"{rows['openvino']['batch_size']}, {settings['threads']} threads; latency ratio openvino/onnxruntime "
        f"{format_ratio(est.point)} [{format_ratio(est.low)}, {format_ratio(est.high)}] ({RATIO_ESTIMATOR}, "
        f"{rows['openvino']['rounds']} interleaved rounds) -> {chosen} is {format_speedup(speed)} as fast"
        + (f"; flagged: {', '.join(est.flags)}" if est.flags else "")
        + (" (within the interval's noise: either runtime would do)" if est.low <= 1.0 <= est.high else "")
    )
    return {
        "chosen": chosen,
        "why": why,
        "measured": True,
        "p50_ms": p50,
        "p50_ci_ms": {rt: rows[rt]["p50_ci_ms"] for rt in RUNTIMES},
        "ratio": est.point,
        "ratio_ci": [est.low, est.high],
        "ratio_of": "openvino / onnxruntime latency",
        "estimator": RATIO_ESTIMATOR,
        "flags": list(est.flags),
        "rounds": rows["openvino"]["rounds"],
        "batch_size": rows["openvino"]["batch_size"],
        "threads": settings["threads"],
        "runners": runners,
        "openvino": ov_settings,
        "cpu": env.get("cpu"),
        "cpu_flags": env.get("cpu_flags"),
        "versions": {k: v for k, v in (env.get("versions") or {}).items() if k in ("onnxruntime", "openvino")},
    }


def resolve(artifact, runtime: str | None, *, threads: int | None = None, min_time_s: float = 1.0, data="digits"):
    """(the runtime to run ``artifact`` in, the auto measurement or None). ``auto`` measures; a torch
    artifact has no choice (None, None)."""
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    if not applies(artifact, runtime):
        return None, None
    if runtime != "auto":
        return runtime, None
    choice = choose_runtime(artifact, threads=threads, min_time_s=min_time_s, data=data)
    return choice["chosen"], choice


def measured_tolerance(artifact, inputs: np.ndarray, expected: np.ndarray, tol: dict, max_batch: int = 64) -> dict:
    """A CPU bundle's OpenVINO tolerance: ``tol`` (the precision's bound against the ONNX Runtime golden
    outputs), widened to what OpenVINO actually gives on the golden inputs here when that is more - INT8
    kernels differ between runtimes (e.g. u8*s8 products on AVX2 CPUs without VNNI) - and saying so.
    Top-1 agreement on unambiguous inputs is still required."""
    tol = dict(tol)
    try:
        with open_in(artifact, "openvino", threads=1) as ov:
            got = np.concatenate([ov.infer(inputs[i : i + max_batch]) for i in range(0, len(inputs), max_batch)])
    except MissingDependency:
        tol["basis"] += "; OpenVINO not installed on the host: not measured here"
        return tol
    err = np.abs(got.astype(np.float64) - expected)
    needed = float(np.max(err - tol["rtol"] * np.abs(expected))) if err.size else 0.0
    tol["measured_max_abs_error"] = float(err.max()) if err.size else 0.0
    if needed > tol["atol"]:
        tol["atol"] = round(1.25 * needed, 6)
        tol["basis"] += (
            f"; widened to 1.25x what OpenVINO gives on the host ({float(err.max()):.3g} max |diff| against the "
            "ONNX Runtime golden outputs)"
        )
    return tol
