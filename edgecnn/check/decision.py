"""How the gate decides: one :class:`Metric` per row, the decision rule (:func:`decide`), the metric rows
built from what was measured, and the verdict (:func:`finish`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..report import format_value, human_bytes
from ..stats import Interval, images_needed
from .policy import Policy

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 3, 4
EXIT_CODES = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}
LATENCY_KEYS = ("speedup", "latency_ratio")
#: how the detail of a row that could not be judged (latency under other power settings) begins
NOT_COMPARABLE = "not comparable"


@dataclass
class Metric:
    """One row of the gate. ``status``: pass | fail | inconclusive | skipped | info (no threshold)."""

    key: str
    label: str
    unit: str
    value: float | None
    original: float | None = None
    candidate: float | None = None
    threshold: float | None = None
    op: str | None = None  # "<=" or ">=": value op threshold must hold
    low: float | None = None  # interval of value, when there is one
    high: float | None = None
    status: str = "info"
    detail: str = ""
    side_unit: str | None = None  # unit of ``original`` / ``candidate`` when it differs from ``unit``

    @property
    def gated(self) -> bool:
        return self.status in ("pass", "fail", "inconclusive")

    def fmt(self, v: float | None) -> str:
        return format_value(v, self.unit)

    def side_text(self, v: float | None) -> str:
        return format_value(v, self.side_unit or self.unit)

    def value_text(self) -> str:
        text = self.fmt(self.value)
        if self.low is not None and self.high is not None:
            low, high = (format_value(x, self.unit, with_unit=False) for x in (self.low, self.high))
            text += f" [{low}, {high}]"
        return text

    def threshold_text(self) -> str:
        return "-" if self.threshold is None else f"{self.op} {self.fmt(self.threshold)}"

    def judge(self, decide_on: str = "point") -> Metric:
        """Set ``status`` from value, threshold and (with ``decide_on='ci'``) the interval."""
        self.status = decide(self.value, self.threshold, self.op, self.low, self.high, decide_on)
        return self


def decide(
    value: float | None,
    threshold: float | None,
    op: str | None,
    low: float | None = None,
    high: float | None = None,
    decide_on: str = "ci",
) -> str:
    """The status of one metric (see :mod:`edgecnn.check` for the rule)."""
    if threshold is None or op is None:
        return "info"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "fail"

    def good(x: float) -> bool:
        return x <= threshold if op == "<=" else x >= threshold

    if decide_on == "point" or low is None or high is None:
        return "pass" if good(value) else "fail"
    worst, best = (high, low) if op == "<=" else (low, high)
    if good(worst):
        return "pass"
    if not good(best):
        return "fail"
    return "inconclusive"


# --------------------------------------------------------------------------------------------------
# Rows from the measurements
# --------------------------------------------------------------------------------------------------
def metrics(
    accuracy: dict, per_class: list[dict], latency: dict | None, size: dict, policy: Policy, n_images: int
) -> list[Metric]:
    """The gate's rows, in report order: accuracy, agreement, classes, KL, McNemar, latency, size."""
    return (
        _drop_metrics(accuracy, policy, n_images)
        + _agreement_metrics(accuracy, per_class, policy, n_images)
        + latency_metrics(latency, policy)
        + _size_metrics(size, policy)
    )


def _drop_metrics(acc: dict, policy: Policy, n_images: int) -> list[Metric]:
    out = []
    for key, label, thr in (("top1", "top-1 drop", policy.max_top1_drop), ("top5", "top-5 drop", policy.max_top5_drop)):
        iv = acc[f"{key}_drop"]
        m = Metric(
            f"{key}_drop",
            label,
            "pt",
            iv["point"],
            original=acc["original"][key],
            candidate=acc["candidate"][key],
            threshold=thr,
            op="<=",
            low=iv["low"],
            high=iv["high"],
            side_unit="%",
        ).judge(policy.decide_on)
        m.detail = (
            f"original {acc['original'][key]:.2f} %, candidate {acc['candidate'][key]:.2f} %; "
            f"{100 * iv['confidence']:.0f}% CI of the drop [{iv['low']:.2f}, {iv['high']:.2f}] pt"
        )
        if m.status == "inconclusive":
            m.detail += _inconclusive_hint(iv, thr, n_images)
        out.append(m)
    return out


def _agreement_metrics(acc: dict, per_class: list[dict], policy: Policy, n_images: int) -> list[Metric]:
    ag = acc["agreement"]
    agree = Metric("agreement", "agreement", "fraction", ag["point"], threshold=policy.min_agreement, op=">=").judge()
    agree.detail = (
        f"{acc['disagreements']} of {n_images} images predicted differently; "
        f"Wilson {100 * ag['confidence']:.0f}% CI [{ag['low']:.4f}, {ag['high']:.4f}]"
    )
    worst = acc["worst_class"]
    cls = Metric(
        "worst_class_drop",
        "worst class drop",
        "pt",
        worst["drop"] if worst else None,
        threshold=policy.max_class_drop,
        op="<=",
        side_unit="%",
    ).judge()
    if worst:
        row = next(r for r in per_class if r["class"] == worst["class"])
        cls.original, cls.candidate = row["original"], row["candidate"]
        cls.detail = (
            f"class '{worst['class']}' ({row['n']} images): {row['original']:.2f} % -> {row['candidate']:.2f} %"
        )
    kl = acc["kl"]
    klm = Metric("kl_mean", "mean KL", "nats", kl["mean"], threshold=policy.max_kl, op="<=").judge()
    klm.detail = (
        f"KL(original || candidate) of the softmax outputs; p95 {format_value(kl['p95'], 'nats')}, "
        f"max {format_value(kl['max'], 'nats')}"
    )
    mc = acc["mcnemar"]
    mcn = Metric(
        "mcnemar_p",
        "McNemar p",
        "p",
        mc["p_value"],
        detail=f"{mc['method']}: {mc['b']} images only the original got right, {mc['c']} only the candidate",
    )
    return [agree, cls, klm, mcn]


def latency_metrics(lat: dict | None, policy: Policy) -> list[Metric]:
    """Speed-up and latency ratio of the candidate against the original (gated), and, when measured, its
    speed-up against the FP32 model of its own runtime (information: the compression gain alone). Each
    row names the runtimes it compares and the estimator; a flagged estimate says so in its detail."""
    out = []
    sides = f" ({lat['original'].get('format')})" if lat and lat["original"].get("format") else ""
    for key, label, thr, op in (
        ("speedup", f"speedup vs original{sides}", policy.min_speedup, ">="),
        ("latency_ratio", f"latency ratio vs original{sides}", policy.max_latency_ratio, "<="),
    ):
        m = Metric(key, label, "x", None, threshold=thr, op=op, side_unit="ms")
        if lat is None:
            m.status = "skipped"
            m.detail = "latency not measured (--no-latency)"
        else:
            r = lat[key]
            m.value, m.low, m.high = r["point"], r["low"], r["high"]
            m.original, m.candidate = lat["original"]["p50_ms"], lat["candidate"]["p50_ms"]
            m.judge(policy.decide_on)
            m.detail = (
                f"p50 {lat['original']['p50_ms']:.4g} ms -> {lat['candidate']['p50_ms']:.4g} ms at batch "
                f"{lat['batch_size']}, interleaved; {r['spread']}"
            )
            if r.get("flags"):
                m.detail += ". " + "; ".join(lat.get("notes") or r["flags"])
        out.append(m)
    same = (lat or {}).get("same_runtime")
    if same:
        ref, r = same["reference"], same["speedup"]
        m = Metric(
            "speedup_same_runtime",
            f"speedup vs {ref['format']} {ref['precision']} (same runtime)",
            "x",
            r["point"],
            original=same["p50_ms"],
            candidate=lat["candidate"]["p50_ms"],
            low=r["low"],
            high=r["high"],
            side_unit="ms",
        )
        m.detail = (
            f"against {ref['label']} ({ref['artifact']}), timed in the same rounds: the compression gain "
            f"without the runtime's; {r['spread']}"
        )
        out.append(m)
    return out


def _size_metrics(size: dict, policy: Policy) -> list[Metric]:
    m = Metric(
        "size_ratio",
        "size ratio",
        "x",
        size["size_ratio"],
        original=size["original_bytes"],
        candidate=size["candidate_bytes"],
        threshold=policy.max_size_ratio,
        op="<=",
        side_unit="bytes",
    ).judge()
    m.detail = f"model file bytes {human_bytes(size['original_bytes'])} -> {human_bytes(size['candidate_bytes'])}"
    out = [m]
    for key, label in (("macs", "MACs ratio"), ("params", "params ratio")):
        m = Metric(
            f"{key}_ratio",
            label,
            "x",
            size[f"{key}_ratio"],
            original=size[f"original_{key}"],
            candidate=size[f"candidate_{key}"],
            side_unit="count",
        )
        m.detail = f"{key} from the manifests" + ("" if m.value is not None else " (not recorded)")
        out.append(m)
    return out


def _inconclusive_hint(iv: dict, threshold: float, n: int) -> str:
    need = images_needed(Interval(iv["point"], iv["low"], iv["high"], iv["confidence"], iv["method"]), n, threshold)
    side = "within" if iv["point"] <= threshold else "over"
    more = f"; about {need:,} images would decide at this drop" if need and need > n else ""
    return f"; the interval straddles the {threshold:.2f} pt budget (point estimate {side} it){more}"


# --------------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------------
def not_comparable(metric_rows: list[Metric], keys, why: str) -> None:
    """Rows ``keys`` that have a threshold become inconclusive: their values cannot be judged, for ``why``."""
    for m in metric_rows:
        if m.key in keys and m.gated:
            m.status, m.detail = "inconclusive", f"{NOT_COMPARABLE}: {why}"


def verdict(metric_rows: list[Metric]) -> str:
    statuses = {m.status for m in metric_rows}
    return "fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass"


def reasons(metric_rows: list[Metric], policy: Policy, n_images: int, latency: dict | None) -> list[str]:
    """Why the verdict is not a pass: one line per failing or undecided metric, with what would decide it."""
    out = []
    for m in metric_rows:
        if m.status == "fail":
            out.append(f"{m.label} {m.value_text()} violates {m.threshold_text()}")
        elif m.status == "inconclusive":
            if m.detail.startswith(NOT_COMPARABLE):
                out.append(f"{m.label} {m.value_text()} is {m.detail}")
                continue
            if m.key in LATENCY_KEYS:
                r = (latency or {}).get(m.key, {})
                flagged = f", {' and '.join(r['flags'])}" if r.get("flags") else ""
                why = (
                    f"with {r.get('rounds')} interleaved timing rounds{flagged} (raise latency_min_time_s, run on a "
                    "quieter machine, loosen the threshold, or set decide_on: point)"
                )
            else:
                why = (
                    f"with {n_images} images at {100 * policy.confidence:.0f}% confidence "
                    "(add images, loosen the threshold, or set decide_on: point)"
                )
            out.append(f"{m.label} {m.value_text()} cannot be decided against {m.threshold_text()} {why}")
    return out
