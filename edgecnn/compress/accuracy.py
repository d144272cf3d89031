"""Accuracy-aware INT8: measure quantized variants of one model against its FP32 original on the held-out
split of ``--data``, rank the quantized layers by the top-1 each gives back when kept in floating point,
and keep the most sensitive ones in float until a budget is met.

The held-out split is built once (:class:`HeldOut`, with the one class-count check) and streamed in
batches through :func:`edgecnn.evaluation.batches` - several variants share each pass, so peak memory is
bounded by the batch (plus the FP32 logits and labels), never by the images of the split. A split whose
preprocessed images fit in :data:`CACHE_BYTES` is kept after its first pass, so a small folder is decoded
once per quantize run.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..artifact import Artifact
from ..data.source import DataSource
from ..evaluation import batches, top1
from ..runtime.onnxrt import create_session, run_batches
from . import qdq

#: preprocessed held-out images kept in memory after the first pass when they fit (else streamed each pass)
CACHE_BYTES = 256 << 20
#: model variants measured per pass over the held-out split (each holds an ONNX Runtime session)
VARIANTS_PER_PASS = 8


class HeldOut:
    """The held-out split every INT8 variant is measured on, and the FP32 model's logits on it."""

    def __init__(self, dataset, *, threads: int | None = None, batch_size: int = 64, progress: bool = False):
        self.dataset, self.threads, self.batch_size, self.progress = dataset, threads, batch_size, progress
        self.labels: np.ndarray | None = None
        self.reference: np.ndarray | None = None  # FP32 logits
        self._cached: list | None = None

    @classmethod
    def from_source(
        cls,
        source: DataSource,
        src: Artifact,
        *,
        val_split: float = 0.2,
        skip_corrupt: bool = False,
        threads: int | None = None,
        progress: bool = False,
    ) -> HeldOut:
        """The held-out split of ``source`` preprocessed for ``src``; its classes must be the model's."""
        dataset = source.dataset(
            src.input, "val", val_split=val_split, skip_corrupt=skip_corrupt, num_classes=src.num_classes
        )
        source.check_classes(dataset.classes, src.num_classes, fix="pass data with the model's classes")
        return cls(dataset, threads=threads, progress=progress)

    @property
    def cached(self) -> bool:
        return self._cached is not None

    def _batches(self):
        if self._cached is not None:
            yield from self._cached
            return
        keep: list | None = []
        size = 0
        for x, y in batches(self.dataset, self.batch_size):
            if keep is not None:
                size += x.nbytes
                keep = keep if size <= CACHE_BYTES else None
                if keep is not None:
                    keep.append((x, y))
            yield x, y
        if keep is not None:
            self._cached = keep

    def set_reference(self, fp32_model) -> float:
        """Run the FP32 model once over the split; its logits are what agreement is measured against."""
        session = create_session(fp32_model, threads=self.threads)
        outs, ys = [], []
        for x, y in self._batches():
            outs.append(run_batches(session, x))
            ys.append(y)
        self.reference, self.labels = np.concatenate(outs), np.concatenate(ys)
        return self.fp32_top1

    @property
    def fp32_top1(self) -> float:
        return top1(self.reference, self.labels)

    def measure(self, models: Iterable, *, desc: str = "INT8 variants") -> list[dict]:
        """top1, agreement with FP32 and logit MSE of each model (a ModelProto), ``VARIANTS_PER_PASS`` per pass."""
        if self.reference is None:
            raise RuntimeError("bug: HeldOut.measure before set_reference")
        rows: list[dict] = []
        it = iter(models)
        while chunk := list(itertools.islice(it, VARIANTS_PER_PASS)):
            sessions = [create_session(m, threads=self.threads) for m in chunk]
            correct, agree, sq = (np.zeros(len(chunk)) for _ in range(3))
            start = 0
            for x, y in tqdm(self._batches(), desc=desc, leave=False, disable=not self.progress):
                ref = self.reference[start : start + len(y)].argmax(1)
                ref_logits = self.reference[start : start + len(y)]
                for i, s in enumerate(sessions):
                    logits = run_batches(s, x)
                    pred = logits.argmax(1)
                    correct[i] += int((pred == y).sum())
                    agree[i] += int((pred == ref).sum())
                    sq[i] += float(((logits - ref_logits) ** 2).sum())
                start += len(y)
            n = max(len(self.labels), 1)
            rows += [
                {"top1": correct[i] / n, "agreement": agree[i] / n, "logit_mse": sq[i] / (n * self.reference.shape[1])}
                for i in range(len(chunk))
            ]
        return rows


def _with_float(int8_model, layers: Sequence[str]):
    variant = copy.deepcopy(int8_model)
    qdq.keep_float(variant, list(layers))
    return variant


def sensitivity(
    int8_model, held: HeldOut, *, layers: Sequence[str] | None = None, base: dict | None = None
) -> list[dict]:
    """For every quantized layer: top-1 and agreement with FP32 when only that layer is kept in floating
    point (all others INT8), measured in ONNX Runtime on ``held``. Sorted most helpful first."""
    base = base or held.measure([int8_model])[0]
    names = list(layers or qdq.quantized_layers(int8_model))
    measured = held.measure((_with_float(int8_model, [n]) for n in names), desc="layer sensitivity")
    rows = [
        {
            "layer": name,
            "top1": m["top1"],
            "top1_gain_pt": 100 * (m["top1"] - base["top1"]),
            "agreement": m["agreement"],
            "agreement_gain_pt": 100 * (m["agreement"] - base["agreement"]),
            "logit_mse_reduction": base["logit_mse"] - m["logit_mse"],
        }
        for name, m in zip(names, measured)
    ]
    rows.sort(key=lambda r: (-r["top1_gain_pt"], -r["agreement_gain_pt"], -r["logit_mse_reduction"]))
    return rows


def restore_accuracy(
    int8_model, held: HeldOut, *, max_drop_pt: float, max_layers: int | None = None, rank: bool = True
) -> tuple[object, dict]:
    """Keep the most sensitive layers in floating point, one at a time in measured order, until the INT8
    model's top-1 is within ``max_drop_pt`` points of FP32 (``held.set_reference`` ran). Returns (model, report).

    With ``max_layers=0`` nothing is kept, but the layers are still ranked (``rank``) so a missed
    budget can name the most sensitive ones."""
    fp32_top1 = held.fp32_top1
    base = held.measure([int8_model], desc="INT8")[0]
    int8_top1 = base["top1"]
    report = {
        "max_drop_pt": None if max_drop_pt == float("inf") else max_drop_pt,
        "fp32_top1": fp32_top1,
        "int8_top1": int8_top1,
        "ptq_drop_pt": 100 * (fp32_top1 - int8_top1),
        "kept_float": [],
        "ranking": [],
        "met": 100 * (fp32_top1 - int8_top1) <= max_drop_pt + 1e-9,
        "steps": [],
    }
    report.update(final_top1=int8_top1, final_drop_pt=report["ptq_drop_pt"])
    if report["met"] or (max_layers == 0 and not rank):
        return int8_model, report
    ranking = sensitivity(int8_model, held, base=base)
    report["ranking"] = ranking
    limit = len(ranking) if max_layers is None else min(max_layers, len(ranking))
    best_top1, model, kept = _keep_until_met(
        int8_model, held, [r["layer"] for r in ranking[:limit]], report, max_drop_pt=max_drop_pt, int8_top1=int8_top1
    )
    why = {r["layer"]: r for r in ranking}
    report["kept_float"] = [
        {
            "layer": k,
            "reason": f"alone in FP32 it gives back {why[k]['top1_gain_pt']:+.2f} pt "
            f"top-1 and {why[k]['agreement_gain_pt']:+.2f} pt agreement with FP32",
            **{x: why[k][x] for x in ("top1_gain_pt", "agreement_gain_pt")},
        }
        for k in kept
    ]
    report.update(
        final_top1=best_top1,
        final_drop_pt=100 * (fp32_top1 - best_top1),
        met=100 * (fp32_top1 - best_top1) <= max_drop_pt + 1e-9,
    )
    return model, report


def measure_with_float(int8_model, layers: Sequence[str], held: HeldOut) -> tuple[object, float]:
    """``int8_model`` with ``layers`` kept in floating point (layers chosen on another layout of the same
    calibration) and its own top-1 on ``held``: lowering changes numerics, so it is measured, never assumed."""
    model = _with_float(int8_model, layers) if layers else int8_model
    return model, held.measure([model], desc="INT8 (second layout)")[0]["top1"]


def _keep_until_met(
    int8_model, held: HeldOut, order: list[str], report: dict, *, max_drop_pt: float, int8_top1: float
) -> tuple[float, object, list[str]]:
    """Keep ``order[:1]``, ``order[:2]``, ... in float until the budget is met; the best seen otherwise.
    A cached split measures one prefix per pass (no wasted inference); a streamed one several (fewer decodes)."""
    fp32_top1 = held.fp32_top1
    best = (int8_top1, int8_model, [])
    per_pass = 1 if held.cached else max(1, VARIANTS_PER_PASS // 2)
    for at in range(0, len(order), per_pass):
        prefixes = [order[: i + 1] for i in range(at, min(at + per_pass, len(order)))]
        variants = [_with_float(int8_model, p) for p in prefixes]
        for kept, variant, m in zip(prefixes, variants, held.measure(variants, desc="keeping layers in FP32")):
            report["steps"].append({"kept": list(kept), "top1": m["top1"], "drop_pt": 100 * (fp32_top1 - m["top1"])})
            if m["top1"] > best[0]:
                best = (m["top1"], variant, list(kept))
            if 100 * (fp32_top1 - m["top1"]) <= max_drop_pt + 1e-9:
                return m["top1"], variant, list(kept)
    return best
