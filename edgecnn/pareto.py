"""What a sweep compares: candidates, budgets, the Pareto front, and how a sweep is shown (table,
Markdown, plot). Pure functions of measured numbers; :mod:`edgecnn.sweep` builds and measures."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

from .artifact import atomic_file
from .errors import OptionError, suggest
from .estimator import RATIO_ESTIMATOR
from .limits import MAX_LIST

PRECISIONS = ("fp32", "fp16", "int8", "bf16")  # bf16: the FP32 model in OpenVINO's bf16, CPUs that have it
TARGETS = ("cpu", "gpu", "jetson")
BUDGET_KEYS = {
    "top1": "top-1 accuracy in percent",
    "top1_drop": "top-1 drop against the original in percentage points",
    "agreement": "fraction of predictions equal to the original's",
    "latency_ms": "median latency at batch 1 in milliseconds",
    "speedup": f"1 / the latency ratio candidate / reference (prune 0, fp32, same runtime): {RATIO_ESTIMATOR}",
    "size_mb": "model file size in MB",
}
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


# -- budgets --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    key: str
    op: str
    value: float

    def holds(self, metrics: dict) -> bool:
        v = metrics.get(self.key)
        return v is not None and _OPS[self.op](v, self.value)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}"


def parse_budget(text: str | None) -> list[Condition]:
    """'top1_drop<=0.5, speedup>=2' -> conditions. Unknown keys are an error with a suggestion."""
    if not text:
        return []
    conds = []
    for part in re.split(r"[,;]|\band\b", text):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(
            r"([a-z0-9_]+)\s*(<=|>=|<|>)\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|pt|ms|mb|x)?", part, re.I
        )
        if not m:
            raise OptionError(f"Cannot read budget '{part}'; write KEY<=VALUE or KEY>=VALUE, e.g. 'top1_drop<=0.5'.")
        key = m.group(1).lower()
        if key not in BUDGET_KEYS:
            raise OptionError(
                f"Unknown budget key '{key}'.{suggest(key, BUDGET_KEYS)} Known: {', '.join(BUDGET_KEYS)}."
            )
        value = float(m.group(3))
        if not math.isfinite(value):
            raise OptionError(f"Budget '{part}': the value must be a finite number.")
        conds.append(Condition(key, m.group(2), value))
    return conds


# -- candidates ------------------------------------------------------------------------------------
@dataclass
class Candidate:
    name: str  # e.g. "p0.30-int8"
    prune: float
    precision: str
    path: str | None = None  # artifact directory
    sha256: str | None = None
    status: str = "pending"  # pending | built | failed | not-measured | measured
    reason: str | None = None  # why not built / not measured
    metrics: dict = field(default_factory=dict)
    pareto: bool = False
    runtime: str | None = None  # CPU runtime it is measured in (None: the target's own; edgecnn.sweep_runtime)

    @property
    def measured(self) -> bool:
        return (
            self.status == "measured"
            and self.metrics.get("latency_ms") is not None
            and self.metrics.get("top1") is not None
        )


def candidate_name(prune: float, precision: str) -> str:
    return f"p{prune:.2f}-{precision}"


def dominates(a: dict, b: dict) -> bool:
    """a dominates b: no slower and no less accurate, and strictly better on one of the two."""
    return (
        a["latency_ms"] <= b["latency_ms"]
        and a["top1"] >= b["top1"]
        and (a["latency_ms"] < b["latency_ms"] or a["top1"] > b["top1"])
    )


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Measured candidates not dominated by any other measured candidate, fastest first."""
    measured = [c for c in candidates if c.measured]
    front = [c for c in measured if not any(dominates(o.metrics, c.metrics) for o in measured if o is not c)]
    for c in candidates:
        c.pareto = c in front
    return sorted(front, key=lambda c: c.metrics["latency_ms"])


def choose(candidates: list[Candidate], budget: list[Condition]) -> Candidate | None:
    """The fastest measured candidate that meets every condition of the budget."""
    ok = [c for c in candidates if c.measured and all(cond.holds(c.metrics) for cond in budget)]
    return min(ok, key=lambda c: c.metrics["latency_ms"]) if ok else None


def parse_list(text: str, *, kind: str, choices: tuple[str, ...] | None = None) -> list:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise OptionError(f"--{kind} needs at least one value.")
    if len(items) > MAX_LIST:
        raise OptionError(f"--{kind} takes at most {MAX_LIST} values (each is a candidate to build), got {len(items)}.")
    if choices is None:
        try:
            values = [float(t) for t in items]
        except ValueError:
            raise OptionError(f"--{kind} takes comma-separated numbers, e.g. 0,0.3,0.5; got '{text}'.") from None
        bad = [v for v in values if not 0.0 <= v < 1.0]
        if bad:
            raise OptionError(f"--{kind} ratios must be in [0, 1); got {bad[0]:g}.")
        return sorted(set(values))
    for t in items:
        if t not in choices:
            raise OptionError(f"Unknown {kind} '{t}'.{suggest(t, choices)} Choose from {', '.join(choices)}.")
    return list(dict.fromkeys(items))


def candidate_rows(candidates: list[Candidate]) -> tuple[list[list[str]], list[str]]:
    cols = [
        "candidate",
        "prune",
        "precision",
        "top-1",
        "drop (pt)",
        "agreement",
        "latency ms",
        "speed-up",
        "size MB",
        "pareto",
        "status",
    ]
    rows = []
    for c in sorted(candidates, key=lambda c: (c.prune, PRECISIONS.index(c.precision))):
        m = c.metrics

        def f(key, fmt, m=m):
            return "-" if m.get(key) is None else fmt.format(m[key])

        rows.append(
            [
                c.name,
                f"{c.prune:.2f}",
                c.precision,
                f("top1", "{:.2f}%"),
                f("top1_drop", "{:+.2f}"),
                f("agreement", "{:.3f}"),
                f("latency_ms", "{:.3f}"),
                f("speedup", "{:.2f}x") + ("!" if m.get("speedup_flags") else ""),
                f("size_mb", "{:.2f}"),
                "*" if c.pareto else "",
                c.status if not c.reason else f"{c.status}: {c.reason}",
            ]
        )
    return rows, cols


def markdown(report: dict) -> str:
    cands = [Candidate(**c) for c in report["candidates"]]
    rows, cols = candidate_rows(cands)
    lines = [
        f"# Sweep: {report['model']} on {report['target']}",
        "",
        f"Data: {report['data']} (held-out split, {report.get('n_images', '?')} images). "
        + (
            f"Latency: batch 1, {report.get('threads', '?')} threads, all candidates interleaved in one run; "
            f"reference ({report['latency_reference']}) = {report['original_latency_ms']:.3f} ms; "
            f"speed-up = 1 / latency ratio against it, {RATIO_ESTIMATOR} (`!`: multi-modal rounds or a "
            "disagreeing p50 ratio - the interval in sweep.json is widened and the point is the slower estimate)."
            if report.get("original_latency_ms") is not None
            else "Latency: not measured on this machine (see each candidate's status)."
        ),
        "",
    ]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append("`*` = on the Pareto front (no other measured candidate is both faster and more accurate).")
    if report.get("budget"):
        best = report.get("best")
        lines.append(
            f"Budget `{report['budget']}`: "
            + (
                f"fastest candidate meeting it is **{best['name']}** "
                f"({best['metrics']['latency_ms']:.3f} ms, top-1 {best['metrics']['top1']:.2f}%)."
                if best
                else "no measured candidate meets it."
            )
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Accuracy vs latency, all measured candidates, front connected, one marker per precision."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only when a plot is drawn

    cands = [Candidate(**c) for c in report["candidates"]]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    for prec in PRECISIONS:
        pts = [c for c in cands if c.measured and c.precision == prec]
        if pts:
            ax.scatter(
                [c.metrics["latency_ms"] for c in pts],
                [c.metrics["top1"] for c in pts],
                marker=markers[prec],
                s=45,
                label=prec,
                zorder=3,
            )
            for c in pts:
                ax.annotate(
                    f"{c.prune:.0%}",
                    (c.metrics["latency_ms"], c.metrics["top1"]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                )
    front = sorted((c for c in cands if c.pareto and c.measured), key=lambda c: c.metrics["latency_ms"])
    if front:
        ax.step(
            [c.metrics["latency_ms"] for c in front],
            [c.metrics["top1"] for c in front],
            where="post",
            color="gray",
            lw=1,
            ls="--",
            label="Pareto front",
            zorder=2,
        )
    best = report.get("best")
    if best:
        ax.scatter(
            [best["metrics"]["latency_ms"]],
            [best["metrics"]["top1"]],
            s=160,
            facecolors="none",
            edgecolors="red",
            lw=1.5,
            label=f"chosen ({report['budget']})",
            zorder=4,
        )
    ax.set_xlabel("latency, batch 1 (ms) - measured, interleaved")
    ax.set_ylabel("top-1 on held-out data (%)")
    ax.set_title(f"{report['model']} on {report['target']}: labels = prune ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def as_dicts(candidates: list[Candidate]) -> list[dict]:
    return [asdict(c) for c in candidates]
