"""How a :func:`edgecnn.bench.measure_latency` result is shown: the table ``edgecnn bench`` prints (and its
Markdown form), its title and the environment line. Every ratio printed is the one estimator's
(:data:`~edgecnn.estimator.RATIO_ESTIMATOR`) point and interval; a flagged row says why in its last
column and in the notes under the table."""

from __future__ import annotations

import math

from .estimator import RATIO_ESTIMATOR

#: The ratio column: the estimator's point with its interval, against the first candidate.
RATIO_COLUMN = "ratio vs first [95% CI]"
SPEEDUP_COLUMN = "speed-up [95% CI]"
FLAGS_COLUMN = "flags"


def format_ms(v: float) -> str:
    """Milliseconds to 4 significant digits (0.02213, 1.234, 123.4), so that sub-millisecond columns
    still show the ratio they imply."""
    if not math.isfinite(v) or v <= 0:
        return f"{v:g}"
    decimals = max(0, 3 - math.floor(math.log10(v)))
    return f"{v:.{decimals}f}"


def format_ratio(v: float) -> str:
    """A latency ratio: 3 decimals, or 3 significant digits below 0.1 (0.000275, not 0.000)."""
    if not math.isfinite(v):
        return f"{v:g}"
    return f"{v:.3f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3g}"


def format_speedup(v: float) -> str:
    """A speed-up (1 / ratio) with its 'x'."""
    if not math.isfinite(v):
        return f"{v:g}x"
    return f"{v:.0f}x" if v >= 100 else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def table_title(result: dict) -> str:
    return f"edgecnn bench: ratio = latency / {result['baseline']}'s, {RATIO_ESTIMATOR} [95% CI]"


def results_table(result: dict) -> tuple[list[list[str]], list[str]]:
    """Rows and columns for print_table / Markdown: one row per (candidate, batch size)."""
    rows = []
    for r in result["results"]:
        s = r["latency_ms"]
        low, high = r["ratio_ci"]
        slow, shigh = r["speedup_ci"]
        rows.append(
            [
                r["label"],
                str(r["batch_size"]),
                format_ms(s["p50"]),
                format_ms(s["p90"]),
                format_ms(s["p99"]),
                f"{format_ms(s['mean'])} ± {format_ms(s['std'])}",
                f"{r['throughput']:.1f}",
                str(r["n"]),
                str(r["rounds"]),
                f"{format_ratio(r['ratio'])} [{format_ratio(low)}, {format_ratio(high)}]",
                f"{format_speedup(r['speedup'])} [{format_speedup(slow)[:-1]}, {format_speedup(shigh)[:-1]}]",
                "; ".join(r.get("flags") or []),
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
        "rounds",
        RATIO_COLUMN,
        SPEEDUP_COLUMN,
        FLAGS_COLUMN,
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
        f"{st['threads']} threads, {mode}, >= {st['min_time_s']} s and >= {st['min_repeats']} runs per candidate"
        + (
            f" (up to {st['max_time_s']:g} s while a ratio's interval is wider than +-{100 * st['tolerance']:g}%)"
            if st.get("max_time_s") is not None and st["interleave"]
            else ""
        )
        + f"; {versions}"
    )
