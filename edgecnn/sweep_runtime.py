"""The runtime dimension of a CPU sweep (issue 17): every built candidate measured in each CPU runtime asked
for (``--runtime onnxruntime | openvino | auto`` = both), and ``bf16`` - the FP32 model run by OpenVINO in
bf16 - where the CPU has it, else listed as skipped with the reason. Speed-ups stay against the prune-0
FP32 candidate in the candidate's own runtime."""

from __future__ import annotations

from .errors import MissingDependency, OptionError
from .pareto import Candidate, candidate_name
from .runtime.openvino import bf16_support
from .runtime_choice import RUNTIMES, open_in


def check_options(runtime: str | None, target: str, precisions) -> None:
    """SweepOptions.validate's runtime rules (OptionError, exit 2)."""
    if runtime in ("openvino", "auto") and target != "cpu":
        raise OptionError(f"--runtime {runtime} is for --target cpu (OpenVINO runs on the CPU); drop it for {target}.")
    if "bf16" in precisions and target != "cpu":
        raise OptionError(f"--precision bf16 is OpenVINO on a CPU (--target cpu); {target} has fp16 / int8 instead.")


def runtimes(runtime: str | None, target: str) -> list[str | None]:
    """The runtimes every candidate is measured in (None: the target's own - ONNX Runtime on a CPU)."""
    if target != "cpu" or runtime in (None, "onnxruntime"):
        return [None]
    return list(RUNTIMES) if runtime == "auto" else [runtime]


def build_precisions(precisions) -> list[str]:
    """What is built: bf16 is the FP32 model in OpenVINO's bf16, so it needs the FP32 candidate, not a build."""
    return list(dict.fromkeys("fp32" if p == "bf16" else p for p in precisions))


def name(prune: float, precision: str, runtime: str | None) -> str:
    """p0.30-int8 (ONNX Runtime, as before), p0.30-int8-openvino, p0.00-bf16-openvino."""
    base = candidate_name(prune, precision)
    return base if runtime in (None, "onnxruntime") else f"{base}-{runtime}"


def reference_name(cand: Candidate) -> str:
    """The candidate its speed-up is measured against: prune 0, fp32, same runtime."""
    return name(0.0, "fp32", cand.runtime)


def runner_options(cand: Candidate) -> dict:
    return {"precision": "bf16"} if cand.precision == "bf16" else {}


def open_candidate(cand: Candidate, art, threads: int | None):
    """The candidate's artifact opened in its runtime (bf16: OpenVINO with INFERENCE_PRECISION_HINT bf16)."""
    return open_in(art, cand.runtime, threads=threads, **runner_options(cand))


def variants(built: list[Candidate], runtime: str | None, target: str, precisions) -> list[Candidate]:
    """The measured set: each built candidate once per runtime, plus bf16 from each FP32 one (skipped with
    the reason where this CPU or the chosen runtimes cannot run bf16). Scores are filled by the caller."""
    rts = runtimes(runtime, target)
    out = []
    for c in built:
        for rt in rts:
            if rt in (None, "onnxruntime"):
                c.runtime = rt
                out.append(c)
            else:
                out.append(_copy(c, c.precision, rt))
    if "bf16" not in precisions:
        return out
    ok, why = _bf16_here()
    for c in built:
        if c.precision != "fp32":
            continue
        v = _copy(c, "bf16", "openvino")
        if "openvino" not in rts:
            v.status, v.reason = "skipped", "bf16 runs in OpenVINO: add --runtime openvino or --runtime auto"
        elif not ok:
            v.status, v.reason = "skipped", why
        out.append(v)
    return out


def _bf16_here() -> tuple[bool, str]:
    try:
        return bf16_support()
    except MissingDependency as exc:
        return False, str(exc)


def _copy(c: Candidate, precision: str, runtime: str) -> Candidate:
    return Candidate(
        name=name(c.prune, precision, runtime),
        prune=c.prune,
        precision=precision,
        path=c.path,
        sha256=c.sha256,
        status=c.status if c.status in ("built", "failed") else "built",
        reason=c.reason,
        metrics={k: v for k, v in c.metrics.items() if k in ("size_mb", "build_seconds")},
        runtime=runtime,
    )
