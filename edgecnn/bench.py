"""Latency you can trust on a shared machine: interleaved, warmed-up, pinned, fingerprinted.

Why interleaving: on a shared or thermally throttling machine absolute times drift by tens of percent
within minutes (up to ~35 % within an hour on the shared machine this was developed on), so "A measured,
then B measured" compares the machine's moods, not A and B. ``measure_latency`` runs all candidates in
one process in rounds (A B C, B C A, C A B, ... - the order rotates so nobody always runs first), each
round a short timed block per candidate. Every round yields a paired ratio candidate/first measured under the same load;
the reported ratio is :data:`~edgecnn.estimator.RATIO_ESTIMATOR` with its 95 % order-statistic interval
(:func:`edgecnn.stats.ratio_estimate`), cross-checked against the ratio of the p50 columns (``ratio_p50``)
and against multi-modal rounds: either is flagged, widens the interval and makes the point the least
favourable estimate. Rounds go on past the minimum time until every ratio's interval is within
``tolerance`` of its point or ``max_time_s`` is spent. A candidate measured against itself must come out
at ~1.0 (tested).

Also: warm-up before timing (int = iterations, float = seconds), a minimum timed duration *and* a
minimum number of repeats, a thread count pinned for every runtime, a short untimed pre-roll at the
start of each block for sub-20 ms models (so one runtime's spinning worker threads from the previous
block do not leak into the next), the same real images for every candidate (the bundled digits
preprocessed with each artifact's input spec), gc disabled while timing, and the environment
fingerprint (CPU model, cores, library versions) in the result.
"""

from __future__ import annotations

import datetime as _dt
import gc
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import stats
from .artifact import Artifact
from .bench_table import RATIO_COLUMN, environment_line, format_speedup, markdown_table, results_table, table_title
from .data.source import DataSource
from .envinfo import fingerprint, fingerprint_key, physical_cores
from .errors import InvalidInput, OptionError
from .estimator import RATIO_ESTIMATOR, RATIO_TOLERANCE
from .runtime import open_runner

__all__ = ["RATIO_COLUMN", "environment_line", "format_speedup", "markdown_table", "results_table", "table_title"]

SCHEMA = "edgecnn.bench/1"
PREROLL_BELOW_S = 0.02  # models faster than this get an untimed pre-roll at the start of each block
PREROLL_S = 0.005
MIN_ROUNDS = 9  # interleaved: the fewest rounds whose 95 % interval of the median drops the extreme rounds
SEQUENTIAL_MIN_BLOCKS = 3
#: without ``max_time_s``, extra rounds (until the ratio is tight) may take this many times ``min_time_s``
BUDGET_FACTOR = 3.0


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one batch (milliseconds) and throughput (images per second) over ``n`` timed runs."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    throughput: float
    n: int
    batch_size: int

    @classmethod
    def from_samples(cls, seconds: Sequence[float], batch_size: int) -> LatencyStats:
        if len(seconds) == 0:
            raise ValueError("no latency samples")
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
        mean = float(ms.mean())
        return cls(
            p50=p50,
            p90=p90,
            p99=p99,
            mean=mean,
            std=float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
            min=float(ms.min()),
            max=float(ms.max()),
            throughput=batch_size * 1e3 / mean if mean > 0 else math.inf,
            n=int(len(ms)),
            batch_size=int(batch_size),
        )

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    label: str
    runner: Any
    artifact: Any = None
    input_spec: dict | None = None
    owned: bool = False
    load_s: float = 0.0

    def describe(self) -> dict:
        art = self.artifact
        spec = self.input_spec or {}
        return {
            "label": self.label,
            "artifact": str(art.path) if art is not None else None,
            "id": art.id if art is not None else None,
            "model": art.model if art is not None else getattr(self.runner, "model_name", None),
            "format": art.format if art is not None else getattr(self.runner, "format", None),
            "precision": art.precision if art is not None else getattr(self.runner, "precision", None),
            "runner": getattr(self.runner, "description", type(self.runner).__name__),
            **self._layout(),
            "input": [spec.get("channels"), spec.get("height"), spec.get("width")] if spec else None,
            "load_seconds": round(self.load_s, 3),
        }

    def _layout(self) -> dict:
        """Which INT8 layout of the artifact the runner loaded (edgecnn.layouts), when it has several."""
        layout = getattr(self.runner, "layout", None)
        return {"int8_layout": layout.record()} if layout is not None and layout.layout is not None else {}


def _is_runner_like(obj) -> bool:
    return hasattr(obj, "infer") and callable(obj.infer)


def _unique_labels(labels: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if counts[lab] > 1:
            seen[lab] = seen.get(lab, 0) + 1
            out.append(f"{lab} #{seen[lab]}")
        else:
            out.append(lab)
    return out


def _open_candidates(
    items: Sequence, labels: Sequence[str] | None, *, device: str, threads: int, runner_options: dict | None
) -> list[_Candidate]:
    if labels is not None and len(labels) != len(items):
        raise OptionError(f"{len(labels)} labels for {len(items)} artifacts; give one --label per artifact.")
    cands: list[_Candidate] = []
    try:
        for item in items:
            if _is_runner_like(item):
                art = getattr(item, "artifact", None)
                spec = getattr(item, "input_spec", None) or (art.input if art is not None else None)
                label = getattr(item, "label", None) or (art.path.name if art is not None else type(item).__name__)
                cands.append(_Candidate(label, item, art, spec, owned=False))
                continue
            art = item if isinstance(item, Artifact) else Artifact.load(item)
            opts = dict((runner_options or {}).get(art.format, {}))
            t0 = time.perf_counter()
            runner = open_runner(art, device=device, threads=threads, **opts)
            cands.append(
                _Candidate(
                    f"{art.path.name} ({art.format} {art.precision})",
                    runner,
                    art,
                    art.input,
                    owned=True,
                    load_s=time.perf_counter() - t0,
                )
            )
    except BaseException:
        for c in cands:
            if c.owned:
                c.runner.close()
        raise
    names = list(labels) if labels is not None else [c.label for c in cands]
    for c, name in zip(cands, _unique_labels(names)):
        c.label = name
    return cands


def bench_inputs(input_spec: dict, batch_size: int, data: DataSource | str = "digits") -> np.ndarray:
    """``batch_size`` images (float32 N,C,H,W): held-out images of ``data`` (default: the digits)
    preprocessed with ``input_spec`` (the same images for every candidate, cycled when the batch is larger
    than the split), or seeded noise for a synthetic source."""
    source = DataSource.parse(data)
    if source.is_synthetic:
        rng = np.random.default_rng(0)
        shape = (batch_size, int(input_spec["channels"]), int(input_spec["height"]), int(input_spec["width"]))
        return rng.standard_normal(shape, dtype=np.float32)
    dataset = source.dataset(input_spec, "val")
    if len(dataset) == 0:
        raise InvalidInput(f"Data '{source}' has no held-out images to benchmark with; pass --data digits.")
    idx = np.resize(np.arange(len(dataset)), batch_size)
    return np.stack([np.asarray(dataset[int(i)][0], dtype=np.float32) for i in idx])


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------
class _Timer:
    """Per-candidate state for one batch size: its input, pre-roll need and the samples so far.

    Blocks are time-based (iterate until ``block_time_s`` of timed inference), so two identical
    candidates get identical blocks whatever their noisy warm-up estimates said.
    """

    def __init__(self, cand: _Candidate, x: np.ndarray, block_time_s: float):
        self.cand, self.x, self.block_time_s = cand, x, block_time_s
        self.samples: list[float] = []
        self.block_medians: list[float] = []
        self.spent = 0.0
        self.preroll = False
        self.output = None

    def warm(self, warmup: int | float) -> None:
        remote = getattr(self.cand.runner, "timed_calls", None)  # timed where it runs: a device over ssh
        times = remote(self.x, warmup=warmup) if remote else self._warm_here(warmup)
        self.preroll = float(np.median(times[len(times) // 2 :])) < PREROLL_BELOW_S

    def _warm_here(self, warmup: int | float) -> list[float]:
        infer, x = self.cand.runner.infer, self.x
        times = []
        t_end = time.perf_counter() + warmup if isinstance(warmup, float) else None
        while True:
            t = time.perf_counter()
            out = infer(x)
            times.append(time.perf_counter() - t)
            if self.output is None:
                self.output = np.asarray(out)
            if (time.perf_counter() >= t_end) if t_end is not None else len(times) >= max(1, warmup):
                break
        return times

    def run_block(self) -> float:
        infer, x = self.cand.runner.infer, self.x
        clock = time.perf_counter
        remote = getattr(self.cand.runner, "timed_calls", None)
        if remote is not None:
            block = remote(x, block_s=self.block_time_s, preroll=PREROLL_S if self.preroll else 0.0)
            return self._record(block, sum(block))
        if self.preroll:  # untimed: whatever the previous candidate left behind (spinning threads, caches)
            t_end = clock() + PREROLL_S
            while clock() < t_end:
                infer(x)
        block: list[float] = []
        spent = 0.0
        while spent < self.block_time_s or not block:
            t = clock()
            infer(x)
            dt = clock() - t
            block.append(dt)
            spent += dt
        return self._record(block, spent)

    def _record(self, block: list[float], spent: float) -> float:
        self.samples += block
        self.spent += spent
        self.block_medians.append(float(np.median(block)))
        return spent

    def p50_interval(self, confidence: float) -> stats.Interval:
        """p50 of all timed samples (ms) with its order-statistic interval."""
        return stats.median_interval(np.asarray(self.samples) * 1e3, confidence=confidence)

    def done(self, min_time_s: float, min_repeats: int) -> bool:
        return self.spent >= min_time_s and len(self.samples) >= min_repeats

    def progress(self, min_time_s: float, min_repeats: int) -> float:
        by_time = min(1.0, self.spent / min_time_s) if min_time_s > 0 else 1.0
        return min(by_time, min(1.0, len(self.samples) / min_repeats))


def _quantiles(values: list[float]) -> dict | None:
    if not values:
        return None
    q = np.percentile(values, [25, 50, 75])
    return {
        "median": float(q[1]),
        "q25": float(q[0]),
        "q75": float(q[2]),
        "min": float(min(values)),
        "max": float(max(values)),
        "n": len(values),
    }


@dataclass(frozen=True)
class _Plan:
    """How long to time: the minimums, then extra rounds until every ratio is tight or the budget is spent."""

    warmup: int | float
    min_time_s: float
    min_repeats: int
    max_time_s: float
    tolerance: float
    confidence: float
    interleave: bool


def measure_latency(
    artifacts: Sequence,
    *,
    batch_sizes: Sequence[int] = (1,),
    warmup: int | float = 10,
    min_time_s: float = 5.0,
    min_repeats: int = 20,
    max_time_s: float | None = None,
    tolerance: float = RATIO_TOLERANCE,
    confidence: float = 0.95,
    threads: int | None = None,
    device: str = "cpu",
    interleave: bool = True,
    progress: bool = True,
    data: DataSource | str = "digits",
    labels: Sequence[str] | None = None,
    block_time_s: float | None = None,
    runner_options: dict | None = None,
) -> dict:
    """Latency of each artifact at each batch size; ratios against the first one.

    ``artifacts``: artifacts, artifact paths, or already-open runner-like objects (anything with
    ``infer(batch)`` and ``description``; optional ``label`` / ``input_spec``), e.g. an OpenVINO model in
    a benchmark script. ``threads`` None pins every runtime to the number of physical cores.
    ``warmup``: int = iterations, float = seconds, per candidate and batch size. Each candidate runs at
    least ``min_time_s`` seconds of timed inference and ``min_repeats`` runs (and, interleaved,
    :data:`MIN_ROUNDS` rounds); then rounds continue until every ratio's interval is within ``tolerance``
    of its point (unflagged) or a candidate has spent ``max_time_s`` (default :data:`BUDGET_FACTOR` x
    ``min_time_s``). Blocks last ``block_time_s`` (default ``min_time_s / 10`` within [0.01, 0.1] s).
    ``runner_options`` maps a format to extra runner options (e.g. ``{"onnx": {"opt_level": "extended"}}``).
    ``data`` is a DataSource or its text: the images every candidate runs on.

    Returns a JSON-able dict: settings (with ``estimator``), environment fingerprint, candidates, ``notes``
    (flagged ratios, in words) and one result per (candidate, batch size) with ``latency_ms``
    (LatencyStats), ``ratio`` / ``ratio_ci`` (the estimator's point and interval against the first),
    ``speedup`` / ``speedup_ci`` (1 / ratio), ``flags``, ``ratio_estimate`` (everything it checked),
    ``ratio_p50`` (ratio of the p50s), ``block_medians_ms`` and ``p50_ci_ms`` (for :func:`ratio_between`)
    and ``stopped`` (``tight`` | ``budget`` | ``minimum``).
    """
    batch_sizes, threads = _check_settings(artifacts, batch_sizes, warmup, min_time_s, min_repeats, threads)
    if max_time_s is None:
        max_time_s = BUDGET_FACTOR * min_time_s
    if block_time_s is None:
        block_time_s = min(0.1, max(0.01, min_time_s / 10))
    plan = _Plan(warmup, min_time_s, min_repeats, max(max_time_s, min_time_s), tolerance, confidence, interleave)
    source = DataSource.parse(data)
    t_start = time.perf_counter()
    cands = _open_candidates(artifacts, labels, device=device, threads=threads, runner_options=runner_options)
    results: list[dict] = []
    try:
        fallback_spec = next((c.input_spec for c in cands if c.input_spec), None)
        if fallback_spec is None:
            raise InvalidInput("None of the candidates has an input spec; pass at least one edgecnn artifact.")
        inputs_cache: dict = {}
        for b in batch_sizes:
            timers = []
            for c in cands:
                spec = c.input_spec or fallback_spec
                key = (repr(sorted(spec.items())), b)
                if key not in inputs_cache:
                    inputs_cache[key] = bench_inputs(spec, b, source)
                timers.append(_Timer(c, inputs_cache[key], block_time_s))
            rounds, stopped = _time_candidates(timers, plan, desc=f"bench batch {b}", progress=progress)
            results += _summarise(timers, b, rounds, stopped, plan)
    finally:
        for c in cands:
            if c.owned:
                c.runner.close()
    env = fingerprint(with_gpu=device != "cpu")
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "batch_sizes": batch_sizes,
            "warmup": warmup,
            "warmup_unit": "s" if isinstance(warmup, float) else "runs",
            "min_time_s": min_time_s,
            "min_repeats": min_repeats,
            "max_time_s": plan.max_time_s,
            "tolerance": tolerance,
            "confidence": confidence,
            "estimator": RATIO_ESTIMATOR,
            "threads": threads,
            "device": device,
            "interleave": interleave,
            "block_time_s": block_time_s,
            "data": str(source),
        },
        "environment": env,
        "fingerprint_key": fingerprint_key(env),
        "baseline": cands[0].label,
        "candidates": [c.describe() for c in cands],
        "results": results,
        "notes": [n for r in results for n in r["notes"]],
        "seconds": round(time.perf_counter() - t_start, 2),
    }


def _check_settings(
    artifacts, batch_sizes, warmup, min_time_s: float, min_repeats: int, threads: int | None
) -> tuple[list[int], int]:
    """(batch sizes, threads) after checking every setting; InvalidInput names the bad one."""
    if not artifacts:
        raise InvalidInput("Nothing to benchmark; pass at least one artifact.")
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 1:
        raise InvalidInput(f"batch sizes must be >= 1, got {batch_sizes}.")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or warmup < 0:
        raise InvalidInput(f"warm-up must be a number of iterations (int) or seconds (float) >= 0, got {warmup!r}.")
    if min_time_s < 0 or min_repeats < 1:
        raise InvalidInput(f"min time must be >= 0 s and min repeats >= 1, got {min_time_s} s / {min_repeats}.")
    if threads is not None and threads < 1:
        raise InvalidInput(f"threads must be >= 1, got {threads}.")
    return batch_sizes, int(threads or physical_cores())


def stop_reason(
    blocks: Sequence[Sequence[float]], spent: Sequence[float], *, max_time_s: float, tolerance: float, confidence: float
) -> str | None:
    """Once the minimums are met: ``tight`` when every candidate's ratio against the first (from the block
    medians so far, ``blocks[i]``) is unflagged and within ``tolerance``; else ``budget`` when a candidate
    has spent ``max_time_s`` timed seconds (``spent[i]``); else None: time another round."""
    base = blocks[0]
    if all(stats.ratio_estimate(b, base, confidence=confidence).tight(tolerance) for b in blocks[1:]):
        return "tight"
    return "budget" if max(spent) >= max_time_s else None


def _stop(timers: list[_Timer], rounds: int, plan: _Plan) -> str | None:
    """Why the interleaved rounds may stop now (``tight`` | ``budget``), or None to go on."""
    if rounds < MIN_ROUNDS or not all(t.done(plan.min_time_s, plan.min_repeats) for t in timers):
        return None
    return stop_reason(
        [t.block_medians for t in timers],
        [t.spent for t in timers],
        max_time_s=plan.max_time_s,
        tolerance=plan.tolerance,
        confidence=plan.confidence,
    )


def _time_candidates(timers: list[_Timer], plan: _Plan, *, desc: str, progress: bool) -> tuple[int, str]:
    """Warm every candidate up, then time blocks (gc off). Interleaved: rounds of one block per candidate,
    the order rotating, until :func:`_stop`; else candidate after candidate, each to its minimums.
    Returns (rounds, why they stopped)."""
    for t in timers:
        t.warm(plan.warmup)
    bar = tqdm(total=100, desc=desc, unit="%", leave=False, disable=not progress)

    def advance() -> None:
        pct = int(100 * sum(t.progress(plan.min_time_s, plan.min_repeats) for t in timers) / len(timers))
        if pct > bar.n:
            bar.update(pct - bar.n)

    rounds, stopped = 0, "minimum"
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if plan.interleave:
            while (why := _stop(timers, rounds, plan)) is None:
                k = rounds % len(timers)
                for t in timers[k:] + timers[:k]:
                    t.run_block()
                rounds += 1
                advance()
            stopped = why
        else:
            for t in timers:
                n = 0
                while n < SEQUENTIAL_MIN_BLOCKS or not t.done(plan.min_time_s, plan.min_repeats):
                    t.run_block()
                    n += 1
                    advance()
                rounds = max(rounds, n)
    finally:
        if gc_was_enabled:
            gc.enable()
        bar.close()
    return rounds, stopped


def ratio_between(row: dict, reference: dict, *, confidence: float = 0.95) -> stats.RatioEstimate:
    """The ratio ``row`` / ``reference`` of two results of one :func:`measure_latency` run (same batch size)
    by the one estimator: their block medians paired round by round, cross-checked with their p50s."""
    return stats.ratio_estimate(
        row["block_medians_ms"],
        reference["block_medians_ms"],
        model_p50=stats.Interval(row["latency_ms"]["p50"], *row["p50_ci_ms"], confidence, "p50"),
        reference_p50=stats.Interval(reference["latency_ms"]["p50"], *reference["p50_ci_ms"], confidence, "p50"),
        confidence=confidence,
    )


def _summarise(timers: list[_Timer], batch_size: int, rounds: int, stopped: str, plan: _Plan) -> list[dict]:
    base = timers[0]
    rows = [_row(t, batch_size, rounds, stopped, plan.confidence) for t in timers]
    for t, row in zip(timers, rows):
        est = ratio_between(row, rows[0], confidence=plan.confidence)
        per_round = [a / b for a, b in zip(t.block_medians, base.block_medians) if b > 0]
        diff = None
        if t.output is not None and base.output is not None and t.output.shape == base.output.shape:
            diff = float(np.abs(t.output.astype(np.float64) - base.output.astype(np.float64)).max())
        row.update(
            ratio=est.point,
            ratio_ci=[est.low, est.high],
            speedup=1.0 / est.point,
            speedup_ci=[1.0 / est.high, 1.0 / est.low],
            estimator=RATIO_ESTIMATOR,
            flags=list(est.flags),
            notes=est.notes(t.cand.label, base.cand.label),
            ratio_estimate=est.as_dict(),
            ratio_p50=row["latency_ms"]["p50"] / rows[0]["latency_ms"]["p50"],
            ratio_rounds=_quantiles(per_round) if plan.interleave else None,
            round_ratios=[round(r, 5) for r in per_round],
            max_abs_diff_vs_first=diff,
        )
    return rows


def _row(t: _Timer, batch_size: int, rounds: int, stopped: str, confidence: float) -> dict:
    stats_ = LatencyStats.from_samples(t.samples, batch_size)
    p50 = t.p50_interval(confidence)
    return {
        "label": t.cand.label,
        "batch_size": batch_size,
        "latency_ms": stats_.to_dict(),
        "p50_ci_ms": [p50.low, p50.high],
        "throughput": stats_.throughput,
        "n": stats_.n,
        "rounds": rounds,
        "blocks": len(t.block_medians),
        "stopped": stopped,
        "block_medians_ms": [m * 1e3 for m in t.block_medians],
    }
