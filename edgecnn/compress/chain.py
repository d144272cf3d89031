"""The compression chain, composed once: source -> [prune (+ fine-tune / distil)] -> export -> [INT8 | FP16].

``edgecnn compress`` runs one :class:`ChainPlan`; ``edgecnn sweep`` runs one per candidate (pruning ratio
x precision) and lets a :class:`StepCache` hand back steps it already built (a pruned network shared by
the INT8 and FP32 candidates of one ratio, a sweep resumed after an interrupt). Every stage is a
function ``stage(src, out, options) -> Artifact``; this module is the only place that strings them
together, so adding a stage means: its options on the plan (and the recipe keys that fill them), and
one step below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..artifact import Artifact
from ..data.calibration import CalibrationSet
from ..export.onnx import export_onnx
from ..layouts import recorded_layouts
from .fp16 import Fp16Options, convert_fp16
from .precision import check_precision_flags
from .prune import PruneOptions, prune
from .quantize import QuantizeOptions, quantize

#: step name -> folder name inside a compress run (a sweep passes its own layout)
COMPRESS_LAYOUT = {
    "prune": "pruned",
    "export original": "original-onnx",
    "export pruned": "pruned-onnx",
    "int8": "int8",
    "fp16": "fp16",
}


@dataclass
class ChainPlan:
    """Which stages run, each with its own options object (None: the stage is skipped)."""

    prune: PruneOptions | None = None
    int8: QuantizeOptions | None = None
    fp16: Fp16Options | None = None
    export_original: bool = True  # compress compares against the original in ONNX Runtime; a sweep need not

    def validate(self) -> None:
        check_precision_flags(self.int8 is not None, self.fp16 is not None, False, {})
        for options in (self.prune, self.int8, self.fp16):
            if options is not None:
                options.validate()

    @property
    def precision(self) -> str:
        return "int8" if self.int8 is not None else "fp16" if self.fp16 is not None else "fp32"


class StepCache(Protocol):
    """Where a chain finds steps it built before (a sweep's state file) and records new ones."""

    def get(self, key: str) -> Artifact | None: ...

    def put(self, key: str, artifact: Artifact) -> None: ...


@dataclass
class ChainResult:
    original: Artifact
    original_onnx: Artifact | None = None
    pruned: Artifact | None = None
    pruned_onnx: Artifact | None = None
    final: Artifact | None = None
    steps: list[dict] = field(default_factory=list)

    @property
    def current_onnx(self) -> Artifact | None:
        """The FP32 ONNX the precision step starts from (the pruned one when there is one)."""
        return self.pruned_onnx or self.original_onnx

    def columns(self) -> list[tuple[str, Artifact]]:
        """(label, onnx artifact) of every ONNX step, original first: the comparison table's columns."""
        cols = [("original", self.original_onnx)]
        if self.pruned_onnx is not None:
            cols.append(("pruned", self.pruned_onnx))
        if self.final is not None and self.final is not self.current_onnx:
            cols.append((self.final.precision, self.final))
        return cols


class _Runner:
    """Runs one step: reuse it from the cache, or build it into its folder and record it."""

    def __init__(
        self, result: ChainResult, layout: Callable[[str], Path], cache: StepCache | None, keys: dict[str, str]
    ):
        self.result, self.layout, self.cache, self.keys = result, layout, cache, keys

    def __call__(self, name: str, build: Callable[[Path], Artifact], **extra) -> Artifact:
        t0 = time.perf_counter()
        key = self.keys.get(name, name)
        art = self.cache.get(key) if self.cache is not None else None
        reused = art is not None
        if art is None:
            art = build(self.layout(name))
            if self.cache is not None:
                self.cache.put(key, art)
        self.result.steps.append(
            {
                "step": name,
                "artifact": str(art.path),
                "id": art.id,
                "format": art.format,
                "precision": art.precision,
                "seconds": round(time.perf_counter() - t0, 2),
                **({"reused": True} if reused else {}),
                **extra,
            }
        )
        return art


def run_chain(
    original: Artifact,
    plan: ChainPlan,
    layout: Callable[[str], Path],
    *,
    cache: StepCache | None = None,
    keys: dict[str, str] | None = None,
    calib_set: CalibrationSet | None = None,
    progress: bool = True,
) -> ChainResult:
    """Run ``plan`` on ``original``; ``layout(step)`` is the folder of each step's artifact.

    ``keys`` names steps in ``cache`` (e.g. one pruned network per ratio, shared by candidates);
    ``calib_set``: calibration batches the caller already read (the INT8 step then reads none)."""
    plan.validate()
    result = ChainResult(original=original)
    step = _Runner(result, layout, cache, keys or {})
    current = original
    if plan.prune is not None:
        p = plan.prune
        current = result.pruned = step(
            "prune",
            lambda d: prune(original, d, p, progress=progress),
            ratio=p.ratio,
            finetune_epochs=p.finetune_epochs,
            distill=p.distill,
        )
    if original.format == "onnx":
        result.original_onnx = original
    elif plan.export_original or current is original:
        result.original_onnx = step("export original", lambda d: export_onnx(original, d, progress=False))
    if current is not original:
        result.pruned_onnx = step("export pruned", lambda d: export_onnx(current, d, progress=False))
    result.final = result.current_onnx
    if plan.int8 is not None:
        q = plan.int8
        src = current if q.qat else result.current_onnx
        result.final = step("int8", lambda d: quantize(src, d, q, calib_set=calib_set, progress=progress))
        q = result.final.manifest["quantization"]
        result.steps[-1].update(
            target=q["target"],
            route=q["route"],
            layouts=recorded_layouts(result.final.manifest),  # family -> file
        )
    elif plan.fp16 is not None:
        h = plan.fp16
        result.final = step("fp16", lambda d: convert_fp16(result.current_onnx, d, h, progress=progress))
    return result
