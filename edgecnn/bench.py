"""Latency you can trust on a shared machine: interleaved, warmed-up, pinned, fingerprinted.

Why interleaving: on a shared or thermally throttling machine absolute times drift by tens of percent
within minutes (up to ~35 % within an hour on the shared machine this was developed on), so "A measured,
then B measured" compares the machine's moods, not A and B. ``measure_latency`` runs all candidates in
one process in rounds (A B C, B C A, C A B, ... - the order rotates so nobody always runs first), each
round a short timed block per candidate. Every round yields a paired ratio candidate/first measured under the same load;
the reported ratio is the median of those paired ratios (``ratio_p50`` keeps the ratio of the overall
medians) and its spread is the inter-quartile range of the per-round ratios. A candidate measured
against itself must come out at ~1.0 (tested).

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
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .artifact import Artifact
from .data.source import DataSource
from .envinfo import fingerprint, fingerprint_key
from .errors import InvalidInput, OptionError
from .runtime import open_runner

SCHEMA = "edgecnn.bench/1"
PREROLL_BELOW_S = 0.02  # models faster than this get an untimed pre-roll at the start of each block
PREROLL_S = 0.005
MIN_ROUNDS = 3


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


def physical_cores() -> int:
    """Physical cores (torch's and ONNX Runtime's default thread count); logical CPUs as fallback."""
    cores, phys, core = set(), None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in list(fh) + [""]:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":", 1)[1].strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((phys, core))
                    phys = core = None
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


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
            "input": [spec.get("channels"), spec.get("height"), spec.get("width")] if spec else None,
            "load_seconds": round(self.load_s, 3),
        }


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
        self.preroll = float(np.median(times[len(times) // 2 :])) < PREROLL_BELOW_S

    def run_block(self) -> float:
        infer, x = self.cand.runner.infer, self.x
        clock = time.perf_counter
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
        self.samples += block
        self.spent += spent
        self.block_medians.append(float(np.median(block)))
        return spent

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


def measure_latency(
    artifacts: Sequence,
    *,
    batch_sizes: Sequence[int] = (1,),
    warmup: int | float = 10,
    min_time_s: float = 5.0,
    min_repeats: int = 20,
    threads: int | None = None,
    device: str = "cpu",
    interleave: bool = True,
    progress: bool = True,
    data: DataSource | str = "digits",
    labels: Sequence[str] | None = None,
    block_time_s: float = 0.1,
    runner_options: dict | None = None,
) -> dict:
    """Latency of each artifact at each batch size; ratios against the first one.

    ``artifacts``: artifacts, artifact paths, or already-open runner-like objects (anything with
    ``infer(batch)`` and ``description``; optional ``label`` / ``input_spec``), e.g. an OpenVINO model in
    a benchmark script. ``threads`` None pins every runtime to the number of physical cores.
    ``warmup``: int = iterations, float = seconds, per candidate and batch size. Each candidate runs at
    least ``min_time_s`` seconds of timed inference and ``min_repeats`` runs. ``runner_options`` maps a
    format to extra runner options (e.g. ``{"onnx": {"opt_level": "extended"}}``). ``data`` is a
    DataSource or its text: the images every candidate runs on.

    Returns a JSON-able dict: settings, environment fingerprint, candidates and one result per
    (candidate, batch size) with ``latency_ms`` (LatencyStats), ``ratio`` (interleaved: median of the
    paired per-round ratios, else its p50 / the first's p50), ``speedup`` (the inverse) and, interleaved,
    ``ratio_rounds`` (median and IQR of the per-round ratios).
    """
    batch_sizes, threads = _check_settings(artifacts, batch_sizes, warmup, min_time_s, min_repeats, threads)
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
            rounds = _time_candidates(
                timers,
                warmup=warmup,
                min_time_s=min_time_s,
                min_repeats=min_repeats,
                interleave=interleave,
                desc=f"bench batch {b}",
                progress=progress,
            )
            results += _summarise(timers, b, rounds, interleave)
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


def _time_candidates(
    timers: list[_Timer],
    *,
    warmup: int | float,
    min_time_s: float,
    min_repeats: int,
    interleave: bool,
    desc: str,
    progress: bool,
) -> int:
    """Warm every candidate up, then time blocks until each has its minimum time and runs (gc off). Interleaved:
    rounds of one block per candidate, the order rotating; else candidate after candidate. Returns the rounds."""
    for t in timers:
        t.warm(warmup)
    bar = tqdm(total=100, desc=desc, unit="%", leave=False, disable=not progress)

    def advance() -> None:
        pct = int(100 * sum(t.progress(min_time_s, min_repeats) for t in timers) / len(timers))
        if pct > bar.n:
            bar.update(pct - bar.n)

    rounds = 0
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if interleave:
            while rounds < MIN_ROUNDS or not all(t.done(min_time_s, min_repeats) for t in timers):
                k = rounds % len(timers)
                for t in timers[k:] + timers[:k]:
                    t.run_block()
                rounds += 1
                advance()
        else:
            for t in timers:
                n = 0
                while n < MIN_ROUNDS or not t.done(min_time_s, min_repeats):
                    t.run_block()
                    n += 1
                    advance()
                rounds = max(rounds, n)
    finally:
        if gc_was_enabled:
            gc.enable()
        bar.close()
    return rounds


def _summarise(timers: list[_Timer], batch_size: int, rounds: int, interleave: bool) -> list[dict]:
    base = timers[0]
    base_stats = LatencyStats.from_samples(base.samples, batch_size)
    out = []
    for t in timers:
        stats = LatencyStats.from_samples(t.samples, batch_size)
        per_round = [a / b for a, b in zip(t.block_medians, base.block_medians) if b > 0] if interleave else []
        ratio = float(np.median(per_round)) if per_round else stats.p50 / base_stats.p50
        diff = None
        if t.output is not None and base.output is not None and t.output.shape == base.output.shape:
            diff = float(np.abs(t.output.astype(np.float64) - base.output.astype(np.float64)).max())
        out.append(
            {
                "label": t.cand.label,
                "batch_size": batch_size,
                "latency_ms": stats.to_dict(),
                "throughput": stats.throughput,
                "n": stats.n,
                "rounds": rounds,
                "blocks": len(t.block_medians),
                # interleaved: the median of the paired per-round ratios (each round runs every candidate
                # back to back, so drift between rounds cancels); otherwise the ratio of the p50s
                "ratio": ratio,
                "speedup": 1.0 / ratio,
                "ratio_p50": stats.p50 / base_stats.p50,
                "ratio_rounds": _quantiles(per_round),
                "round_ratios": [round(r, 5) for r in per_round],
                "max_abs_diff_vs_first": diff,
            }
        )
    return out


def results_table(result: dict) -> tuple[list[list[str]], list[str]]:
    """Rows and columns for print_table / Markdown: one row per (candidate, batch size)."""
    rows = []
    for r in result["results"]:
        s = r["latency_ms"]
        rr = r.get("ratio_rounds")
        spread = f" [{rr['q25']:.2f}-{rr['q75']:.2f}]" if rr and r["label"] != result["baseline"] else ""
        rows.append(
            [
                r["label"],
                str(r["batch_size"]),
                f"{s['p50']:.3f}",
                f"{s['p90']:.3f}",
                f"{s['p99']:.3f}",
                f"{s['mean']:.3f} ± {s['std']:.3f}",
                f"{r['throughput']:.1f}",
                str(r["n"]),
                f"{r['ratio']:.3f}{spread}",
                f"{r['speedup']:.2f}x",
            ]
        )
    cols = [
        "candidate",
        "batch",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean ± std ms",
        "img/s",
        "runs",
        "ratio vs first [IQR]",
        "speed-up",
    ]
    return rows, cols


def markdown_table(result: dict) -> str:
    rows, cols = results_table(result)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def environment_line(result: dict) -> str:
    env, st = result["environment"], result["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if k != "edgecnn")
    mode = "interleaved" if st["interleave"] else "sequential"
    flags = ", ".join(env.get("cpu_flags") or []) or "no SIMD flags"
    return (
        f"{env.get('cpu')} ({env.get('cpu_count')} CPUs, {flags}); "
        f"{st['threads']} threads, {mode}, >= {st['min_time_s']} s and >= {st['min_repeats']} runs per candidate; "
        f"{versions}"
    )
