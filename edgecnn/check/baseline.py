"""Baselines: accepted metrics stored between runs, so that slow drift fails the gate.

:func:`save_baseline` stores a passing report's metrics with the environment fingerprint; a later check
given the file (:func:`load_baseline`) must be for the same model, classes, input and data
(:func:`check_identity`) and adds one row per metric (:func:`baseline_metrics`): accuracy is compared with
an absolute tolerance, latency with a relative one and only when the environment fingerprint key matches.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..artifact import Artifact, atomic_write_json
from ..data.source import DataSource
from ..errors import InvalidInput
from ..ondevice import POWER_KEYS, power_change
from .decision import Metric, not_comparable
from .policy import Policy
from .result import CheckReport, finite

BASELINE_SCHEMA = "edgecnn.check-baseline/1"


class BaselineError(InvalidInput):
    """A baseline file that is unreadable or belongs to another model / data set."""


def _identity(art_desc: dict, classes: list[str]) -> dict:
    return {"model": art_desc["model"], "classes": list(classes), "input": list(art_desc["input"])}


def _accepted_metrics(report: CheckReport) -> dict:
    acc, lat = report.accuracy, report.latency or {}
    return {
        "candidate_top1": acc["candidate"]["top1"],
        "candidate_top5": acc["candidate"]["top5"],
        "original_top1": acc["original"]["top1"],
        "top1_drop": acc["top1_drop"]["point"],
        "agreement": acc["agreement"]["point"],
        "kl_mean": acc["kl"]["mean"],
        "candidate_latency_ms": lat["candidate"]["p50_ms"] if lat else None,
        "original_latency_ms": lat["original"]["p50_ms"] if lat else None,
        "speedup": lat["speedup"]["point"] if lat else None,
        "latency_batch_size": lat.get("batch_size"),
        "candidate_bytes": report.size["candidate_bytes"],
    }


def save_baseline(report: CheckReport, path: str | Path, *, force: bool = False) -> Path:
    """Store the report's metrics as the accepted baseline (only a passing report, unless ``force``)."""
    if report.verdict != "pass" and not force:
        raise InvalidInput(
            f"Not saving baseline '{path}': the gate verdict is {report.verdict}; "
            "only accepted (passing) metrics become a baseline."
        )
    classes = Artifact.load(report.original["path"]).classes if Path(report.original["path"]).exists() else []
    data = {
        "schema": BASELINE_SCHEMA,
        "created": report.created,
        "identity": _identity(report.original, classes),
        "original": {k: report.original[k] for k in ("id", "sha256", "path", "format", "precision")},
        "candidate": {k: report.candidate[k] for k in ("id", "sha256", "path", "format", "precision", "stage")},
        "data": report.data,
        "metrics": _accepted_metrics(report),
        "environment": report.environment["fingerprint"],
        "fingerprint_key": report.environment["key"],
        "power": _power(report.device_state),
        "policy": report.policy,
    }
    path = Path(path)
    atomic_write_json(path, finite(data))
    report.reports["baseline"] = str(path)
    return path


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"Baseline file '{path}' does not exist; create one with --save-baseline {path}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(
            f"Baseline file '{path}' is not valid JSON ({exc}); re-create it with --save-baseline."
        ) from None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA or not isinstance(data.get("metrics"), dict):
        raise BaselineError(
            f"'{path}' is not an edgecnn check baseline (schema {BASELINE_SCHEMA!r}); "
            "re-create it with --save-baseline."
        )
    return data


def check_identity(base: dict, orig: Artifact, source: DataSource, path) -> None:
    """BaselineError unless the baseline was saved for this model (classes, input) on this data."""
    ident = base.get("identity") or {}
    want = {"model": orig.model, "classes": orig.classes, "input": list(orig.input_shape)}
    if (
        ident.get("model") != want["model"]
        or list(ident.get("input") or []) != want["input"]
        or (ident.get("classes") and ident.get("classes") != want["classes"])
    ):

        def show(i):
            shape = "x".join(map(str, i.get("input") or []))
            return f"{i.get('model')} ({len(i.get('classes') or [])} classes, input {shape})"

        raise BaselineError(
            f"Baseline '{path}' was saved for {show(ident)}, but this check is for {show(want)}; "
            "pass the baseline of this model or save a new one with --save-baseline."
        )
    src = source.describe("val")
    bsrc = base.get("data") or {}
    if bsrc.get("source") != src.get("source"):
        raise BaselineError(
            f"Baseline '{path}' was measured on data '{bsrc.get('source')}', this check uses "
            f"'{src.get('source')}'; compare on the same data or save a new baseline."
        )


def _fingerprint_diff(a: dict, b: dict) -> list[str]:
    out = []
    for key in ("cpu", "cpu_count", "gpu"):
        if a.get(key) != b.get(key):
            out.append(f"{key} {b.get(key)!r} vs {a.get(key)!r}")
    va, vb = a.get("versions") or {}, b.get("versions") or {}
    for key in sorted(set(va) | set(vb)):
        if va.get(key) != vb.get(key):
            out.append(f"{key} {vb.get(key)} vs {va.get(key)}")
    return out


def baseline_metrics(report: CheckReport, base: dict, policy: Policy) -> list[Metric]:
    """One row per metric compared with the baseline: top-1, top-5, agreement, latency, speed-up."""
    return _accuracy_rows(report, base, policy) + _latency_rows(report, base, policy)


def _accuracy_rows(report: CheckReport, base: dict, policy: Policy) -> list[Metric]:
    bm, acc, tol = base["metrics"], report.accuracy, policy.baseline_accuracy_tolerance
    out = []
    for key, label, now, unit_scale in (
        ("top1", "top-1 vs baseline", acc["candidate"]["top1"], 1.0),
        ("top5", "top-5 vs baseline", acc["candidate"]["top5"], 1.0),
        ("agreement", "agreement vs baseline", acc["agreement"]["point"], 100.0),
    ):
        was = bm.get(f"candidate_{key}") if key != "agreement" else bm.get("agreement")
        m = Metric(f"baseline_{key}", label, "pt", None, threshold=-tol, op=">=")
        if not isinstance(was, (int, float)):
            m.status, m.detail = "skipped", "not in the baseline"
        else:
            m.value = (now - was) * unit_scale
            m.judge()
            shown = f"{was:.2f} % -> {now:.2f} %" if unit_scale == 1.0 else f"{was:.4f} -> {now:.4f}"
            m.detail = f"change since the baseline of {base.get('created')}: {shown} (absolute tolerance {tol:.2f} pt)"
        out.append(m)
    return out


def _latency_skip(report: CheckReport, base: dict, was) -> str | None:
    """Why latency cannot be compared with the baseline (None when it can)."""
    lat, bm = report.latency, base["metrics"]
    if lat is None:
        return "latency not measured in this run (--no-latency)"
    if not isinstance(was, (int, float)) or not was:
        return "the baseline has no latency"
    if bm.get("latency_batch_size") not in (None, lat["batch_size"]):
        return f"baseline measured at batch {bm.get('latency_batch_size')}, this run at {lat['batch_size']}"
    diff = _fingerprint_diff(report.environment["key"], base.get("fingerprint_key") or {})
    if diff:
        return "environment differs from the baseline's, latency not comparable: " + "; ".join(diff[:4])
    return None


def _power(state: dict | None) -> dict | None:
    """The power settings a latency was measured under (check --host), or None (measured here)."""
    return {k: state.get(k) for k in POWER_KEYS} if state else None


def _power_change(report: CheckReport, base: dict) -> str | None:
    """Why the baseline's latency is not comparable: taken under other power settings of the device."""
    was, now = base.get("power"), _power(report.device_state)
    return power_change(was, now, "at the baseline", "now") if was and now else None


def _latency_rows(report: CheckReport, base: dict, policy: Policy) -> list[Metric]:
    bm, lat, ltol = base["metrics"], report.latency, policy.baseline_latency_tolerance
    out = []
    for key, label, thr, op in (
        ("latency", "latency vs baseline", 1.0 + ltol, "<="),
        ("speedup", "speedup vs baseline", 1.0 - ltol, ">="),
    ):
        m = Metric(f"baseline_{key}", label, "x", None, threshold=thr, op=op)
        was = bm.get("candidate_latency_ms" if key == "latency" else "speedup")
        skip = _latency_skip(report, base, was)
        if skip:
            m.status, m.detail = "skipped", skip
        else:
            now = lat["candidate"]["p50_ms"] if key == "latency" else lat["speedup"]["point"]
            m.value = now / was
            m.judge()
            unit = " ms" if key == "latency" else "x"
            m.detail = f"{was:.3f}{unit} at the baseline -> {now:.3f}{unit} now (relative tolerance {100 * ltol:.0f} %)"
        out.append(m)
    power = _power_change(report, base)
    if power:
        not_comparable(out, ("baseline_latency", "baseline_speedup"), power)
    return out
