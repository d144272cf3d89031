"""The regression gate: a candidate (compressed) artifact against its original, on the same images.

``check(candidate, original, data, policy)`` runs both models on the SAME preprocessed images (their
manifests must agree on classes and input spec), measures their latency interleaved in one run, and
judges every metric against a :class:`Policy`. The result is a :class:`CheckReport` with a verdict:

==============  ====  ===============================================================================
verdict         exit  meaning
==============  ====  ===============================================================================
pass            0     every gated metric is within its threshold
fail            3     at least one gated metric is outside its threshold (named in the report)
inconclusive    4     nothing failed, but for at least one metric the evidence cannot decide: its
                      confidence interval straddles the threshold (usually: too few images)
==============  ====  ===============================================================================

Decision rule (``decide_on``), for a metric with a threshold T and a confidence interval [lo, hi]:

- ``ci`` (default) - pass when the whole interval is on the good side of T (for a drop budget:
  hi <= T), fail when the whole interval is on the bad side (lo > T), otherwise inconclusive. The
  accuracy drops (top-1/top-5) carry a paired bootstrap interval; latency ratios carry the spread of
  the interleaved rounds. So a PASS means "within budget at the stated confidence", a FAIL means
  "over budget at the stated confidence".
- ``point`` - pass/fail on the point estimate alone (intervals are still reported). Never inconclusive.

Agreement, worst per-class drop, KL and size are descriptive properties of the given images and are
always judged on their point value.

Baselines (:func:`save_baseline` / ``baseline=``) guard against slow drift between runs: accepted
metrics are stored with the environment fingerprint; a later check fails when a metric regresses
beyond its tolerance (absolute percentage points for accuracy, relative for latency). Latency is only
compared when the environment fingerprint key matches; otherwise it is reported as skipped.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInput, suggest

EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE = 0, 3, 4
EXIT_CODES = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}
BASELINE_SCHEMA = "edgecnn.check-baseline/1"
REPORT_SCHEMA = "edgecnn.check-report/1"
#: Columns of :meth:`CheckReport.table_rows`.
TABLE_COLUMNS = ("metric", "original", "candidate", "value", "threshold", "status")


class IncompatibleModels(InvalidInput):
    """Candidate and original cannot be compared on the same images (classes or input differ)."""


class BaselineError(InvalidInput):
    """A baseline file that is unreadable or belongs to another model / data set."""


# --------------------------------------------------------------------------------------------------
# Policy
# --------------------------------------------------------------------------------------------------
@dataclass
class Policy:
    """Thresholds of the gate. ``None`` switches a check off. Accuracy drops are in percentage points
    (``max_top1_drop: 1.0`` = at most 1 point, e.g. 98.0 % -> 97.0 %); agreement is a fraction."""

    max_top1_drop: float | None = 1.0        # pt; original top-1 minus candidate top-1
    max_top5_drop: float | None = None       # pt
    min_agreement: float | None = None       # fraction of images with the same top-1 prediction
    max_class_drop: float | None = None      # pt; worst per-class accuracy drop
    max_kl: float | None = None              # nats; mean KL(original || candidate) of the softmax outputs
    min_speedup: float | None = None         # x; original latency / candidate latency
    max_latency_ratio: float | None = None   # x; candidate latency / original latency
    max_size_ratio: float | None = None      # x; candidate file bytes / original file bytes
    decide_on: str = "ci"                    # ci | point (see module docstring)
    confidence: float = 0.95
    bootstrap_resamples: int = 10_000
    seed: int = 0
    latency_batch_size: int = 1
    latency_min_time_s: float = 1.0
    latency_warmup: int = 10
    latency_min_repeats: int = 20
    latency_threads: int | None = None
    baseline_accuracy_tolerance: float = 0.5   # pt, absolute
    baseline_latency_tolerance: float = 0.15   # relative (0.15 = 15 % slower is a regression)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "policy") -> "Policy":
        if not isinstance(data, dict):
            raise InvalidInput(f"{source}: a policy is a mapping of key: value, got {type(data).__name__}; "
                               f"see examples/policies/*.yaml.")
        values: dict[str, Any] = {}
        known = cls.keys()
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key == "version":
                if value != 1:
                    raise InvalidInput(f"{source}: policy version {value!r} is not supported; use version: 1.")
                continue
            if key not in known:
                raise InvalidInput(f"{source}: unknown key '{raw_key}'.{suggest(key, known)} "
                                   f"Known keys: {', '.join(known)}.")
            values[key] = value
        policy = cls()
        for key, value in values.items():
            setattr(policy, key, _coerce(key, value, source))
        policy.validate(source=source)
        return policy

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        """Read a YAML (or JSON) policy file; unknown keys are rejected with the nearest known key."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"Policy file '{path}' does not exist; pass a YAML file like examples/policies/default.yaml.")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InvalidInput(f"Policy file '{path}' is not valid YAML{at} ({problem}); fix the file.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"Cannot read policy file '{path}' ({exc}); pass a readable YAML file.") from None
        if data is None:
            data = {}
        return cls.from_dict(data, source=f"Policy file '{path}'")

    def merged(self, **overrides) -> "Policy":
        """A copy with the given (non-None) values replaced - command-line options over a policy file."""
        values = asdict(self)
        unknown = [k for k in overrides if k not in values]
        if unknown:
            raise TypeError(f"unknown policy keys {unknown}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        policy = Policy(**values)
        policy.validate()
        return policy

    def validate(self, *, source: str = "policy") -> None:
        def bad(key: str, why: str):
            raise InvalidInput(f"{source}: {key} {why}.")

        for key in ("max_top1_drop", "max_top5_drop", "max_class_drop"):
            v = getattr(self, key)
            if v is not None and not -100.0 <= v <= 100.0:
                bad(key, f"is in percentage points and must be within [-100, 100], got {v}")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            bad("min_agreement", f"is a fraction and must be within [0, 1], got {self.min_agreement} (0.98 = 98 %)")
        for key in ("max_kl",):
            v = getattr(self, key)
            if v is not None and v < 0:
                bad(key, f"must be >= 0, got {v}")
        for key in ("min_speedup", "max_latency_ratio", "max_size_ratio", "latency_min_time_s"):
            v = getattr(self, key)
            if v is not None and v <= 0:
                bad(key, f"must be > 0, got {v}")
        if self.decide_on not in ("ci", "point"):
            bad("decide_on", f"must be 'ci' or 'point', got {self.decide_on!r}")
        if not 0.5 <= self.confidence < 1.0:
            bad("confidence", f"must be within [0.5, 1), got {self.confidence}")
        if self.bootstrap_resamples < 1000:
            bad("bootstrap_resamples", f"must be >= 1000 for a stable interval, got {self.bootstrap_resamples}")
        for key in ("latency_batch_size", "latency_min_repeats"):
            if getattr(self, key) < 1:
                bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.latency_warmup < 0:
            bad("latency_warmup", f"must be >= 0, got {self.latency_warmup}")
        if self.latency_threads is not None and self.latency_threads < 1:
            bad("latency_threads", f"must be >= 1, got {self.latency_threads}")
        if self.baseline_accuracy_tolerance < 0 or self.baseline_latency_tolerance < 0:
            bad("baseline tolerances", "must be >= 0")

    @property
    def needs_latency(self) -> bool:
        return self.min_speedup is not None or self.max_latency_ratio is not None

    def as_dict(self) -> dict:
        return asdict(self)


_TYPES = {f.name: f.type for f in fields(Policy)}


def _coerce(key: str, value, source: str):
    kind = _TYPES[key]
    if value is None:
        if "None" in kind:
            return None
        raise InvalidInput(f"{source}: {key} cannot be null; give a value or leave the key out.")
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise InvalidInput(f"{source}: {key} must be a string, got {value!r}.")
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{source}: {key} must be an integer, got {value!r}.")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{source}: {key} must be a number, got {value!r}.")
    return float(value)


def resolve_policy(policy) -> Policy:
    """Accept a Policy, a dict, a path to a YAML file, or None (defaults)."""
    if policy is None:
        return Policy()
    if isinstance(policy, Policy):
        policy.validate()
        return policy
    if isinstance(policy, dict):
        return Policy.from_dict(policy)
    return Policy.load(policy)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
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
    op: str | None = None               # "<=" or ">=": value op threshold must hold
    low: float | None = None            # interval of value, when there is one
    high: float | None = None
    status: str = "info"
    detail: str = ""
    side_unit: str | None = None        # unit of ``original`` / ``candidate`` when it differs from ``unit``

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
            text += f" [{format_value(self.low, self.unit, with_unit=False)}, {format_value(self.high, self.unit, with_unit=False)}]"
        return text

    def threshold_text(self) -> str:
        return "-" if self.threshold is None else f"{self.op} {self.fmt(self.threshold)}"



def format_value(v: float | None, unit: str, *, with_unit: bool = True) -> str:
    """Human form of a metric value in its unit (used by the table, Markdown and JUnit messages)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "inf" if isinstance(v, float) and math.isinf(v) else "-"
    suffix = ""
    if unit == "pt":
        text, suffix = f"{v:.2f}", " pt"
    elif unit == "%":
        text, suffix = f"{v:.2f}", " %"
    elif unit == "x":
        text, suffix = f"{v:.3f}", "x"
    elif unit == "ms":
        text, suffix = f"{v:.3f}", " ms"
    elif unit == "nats":
        text = f"{v:.4g}"
    elif unit == "fraction":
        text = f"{v:.4f}"
    elif unit == "bytes":
        text = _human_bytes(v)
    elif unit == "count":
        text = _human_count(v)
    elif unit == "p":
        text = f"{v:.3g}"
    else:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
    return text + (suffix if with_unit else "")


def _human_bytes(n: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f} B"


def _human_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def decide(value: float | None, threshold: float | None, op: str | None, low: float | None = None,
           high: float | None = None, decide_on: str = "ci") -> str:
    """The status of one metric (see the module docstring for the rule)."""
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


@dataclass
class CheckReport:
    """Everything the gate measured and decided. ``to_dict()`` is the JSON report."""

    candidate: dict
    original: dict
    data: dict
    n_images: int
    policy: dict
    metrics: list[Metric]
    per_class: list[dict]
    accuracy: dict
    latency: dict | None
    size: dict
    baseline: dict | None
    environment: dict
    verdict: str = "pass"
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: str = ""
    seconds: float = 0.0
    reports: dict = field(default_factory=dict)

    # -- verdict -----------------------------------------------------------------------------------
    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(f"no metric {key!r}; have {[m.key for m in self.metrics]}")

    @property
    def failing(self) -> list[Metric]:
        return [m for m in self.metrics if m.status == "fail"]

    @property
    def inconclusive(self) -> list[Metric]:
        return [m for m in self.metrics if m.status == "inconclusive"]

    def summary(self) -> str:
        """One line: the verdict and why."""
        head = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}[self.verdict]
        name = f"{self.candidate['model']} {self.candidate['format']}/{self.candidate['precision']} " \
               f"({self.candidate.get('stage')}) vs original"
        if self.verdict == "pass":
            gated = [m for m in self.metrics if m.status == "pass"]
            return f"{head}: {name} - {len(gated)} gated metric(s) within threshold on {self.n_images} images."
        return f"{head}: {name} - " + "; ".join(self.reasons)

    def table_rows(self) -> list[list[str]]:
        """Rows for a table with :data:`TABLE_COLUMNS` (what the CLI and the demo print)."""
        return [[m.label, m.side_text(m.original), m.side_text(m.candidate), m.value_text(), m.threshold_text(), m.status]
                for m in self.metrics]

    def to_dict(self) -> dict:
        d = {"schema": REPORT_SCHEMA, "verdict": self.verdict, "exit_code": self.exit_code, "summary": self.summary(),
             "reasons": self.reasons, "notes": self.notes, "created": self.created, "seconds": round(self.seconds, 3),
             "candidate": self.candidate, "original": self.original, "data": self.data, "n_images": self.n_images,
             "policy": self.policy, "metrics": [asdict(m) for m in self.metrics], "per_class": self.per_class,
             "accuracy": self.accuracy, "latency": self.latency, "size": self.size, "baseline": self.baseline,
             "environment": self.environment, "reports": self.reports}
        return _finite(d)

    def write(self, *, json: str | Path | None = None, junit: str | Path | None = None,
              markdown: str | Path | None = None, plot: str | Path | None = None) -> dict[str, str]:
        """Write the requested reports (atomically) and remember their paths in ``reports``."""
        from . import report

        return report.write_reports(self, json=json, junit=junit, markdown=markdown, plot=plot)


def _finite(obj):
    """JSON has no NaN/Infinity: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return _finite(obj.item())
    return obj


# --------------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------------
_SPEC_IGNORE = {"formula"}


def ensure_comparable(candidate, original) -> None:
    """Raise IncompatibleModels unless both artifacts predict the same classes from the same input."""
    if candidate.num_classes != original.num_classes:
        raise IncompatibleModels(
            f"Candidate '{candidate.path}' predicts {candidate.num_classes} classes but original '{original.path}' "
            f"predicts {original.num_classes}; compare a candidate derived from this original.")
    if candidate.classes != original.classes:
        diff = next(i for i, (a, b) in enumerate(zip(candidate.classes, original.classes)) if a != b)
        raise IncompatibleModels(
            f"Candidate '{candidate.path}' and original '{original.path}' name their classes differently "
            f"(class {diff}: {candidate.classes[diff]!r} vs {original.classes[diff]!r}); compare models trained on the same classes.")
    a, b = candidate.input, original.input
    differ = []
    for key in sorted((set(a) | set(b)) - _SPEC_IGNORE):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)) and len(va) == len(vb) \
                and all(isinstance(x, (int, float)) and isinstance(y, (int, float)) for x, y in zip(va, vb)):
            if all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(va, vb)):
                continue
        elif isinstance(va, (int, float)) and isinstance(vb, (int, float)) and math.isclose(va, vb, rel_tol=1e-6):
            continue
        elif va == vb:
            continue
        differ.append(f"{key} {va!r} vs {vb!r}")
    if differ:
        raise IncompatibleModels(
            f"Candidate '{candidate.path}' and original '{original.path}' expect different inputs ({'; '.join(differ[:4])}); "
            "the gate feeds both the same images, so compare a candidate exported at the original's input spec.")


def describe_artifact(art) -> dict:
    """Identity and cost of an artifact as the report records it."""
    size = artifact_bytes(art)
    params, params_from = _lineage_metric(art, "params")
    macs, macs_from = _lineage_metric(art, "macs")
    return {"path": str(art.path), "id": art.id, "model": art.model, "format": art.format, "precision": art.precision,
            "stage": art.stage, "sha256": art.sha256, "root_id": art.root_id, "num_classes": art.num_classes,
            "input": list(art.input_shape), "size_bytes": size, "params": params, "macs": macs,
            "params_from": params_from, "macs_from": macs_from}


def artifact_bytes(art) -> int:
    """Bytes of the model file(s) a deployment ships (manifest excluded)."""
    files = art.manifest.get("files") or {art.manifest["file"]: None}
    total = 0
    for rel in files:
        f = art.path / rel
        if f.is_file():
            total += f.stat().st_size
    return total


def _lineage_metric(art, key: str, depth: int = 8):
    """A manifest metric, or the nearest ancestor's (an export or quantization keeps params and MACs)."""
    from .artifact import Artifact

    current = art
    for _ in range(depth):
        value = (current.manifest.get("metrics") or {}).get(key)
        if isinstance(value, (int, float)):
            return value, (None if current is art else current.stage)
        parent = current.manifest.get("parent")
        if not parent or not parent.get("path"):
            break
        try:
            current = Artifact.load(parent["path"])
        except Exception:  # noqa: BLE001 - a moved parent only means the number is unknown
            break
        if parent.get("sha256") and current.sha256 != parent["sha256"]:
            break
    return None, None


def check(candidate, original, data: str, policy=None, *, latency: bool = True, baseline: str | Path | None = None,
          batch_size: int = 64, device: str = "cpu", threads: int | None = None, val_split: float = 0.2,
          skip_corrupt: bool = False, progress: bool = False) -> CheckReport:
    """Gate ``candidate`` against ``original`` on the held-out split of ``data``.

    ``policy`` is a :class:`Policy`, a dict of its keys, a YAML file path or None (defaults: top-1 drop
    at most 1 point, decided on the confidence interval). ``latency=False`` skips the latency
    measurement (latency thresholds are then reported as skipped). ``baseline`` is a file written by
    :func:`save_baseline`. Raises EdgeCnnError for anything the user must fix; returns a report whose
    ``verdict`` / ``exit_code`` say whether the candidate passed.
    """
    from .artifact import Artifact
    from .data import describe_source, load_dataset
    from .envinfo import fingerprint, fingerprint_key
    from .errors import DataError

    t0 = time.perf_counter()
    policy = resolve_policy(policy)
    if batch_size < 1:
        raise InvalidInput(f"batch size must be >= 1, got {batch_size}.")
    cand = candidate if isinstance(candidate, Artifact) else Artifact.load(candidate)
    orig = original if isinstance(original, Artifact) else Artifact.load(original)
    ensure_comparable(cand, orig)
    base = load_baseline(baseline) if baseline is not None else None
    if base is not None:
        _check_baseline_identity(base, orig, data, baseline)

    dataset = load_dataset(data, orig.input, "val", val_split=val_split, skip_corrupt=skip_corrupt,
                           num_classes=orig.num_classes)
    if len(dataset) == 0:
        raise DataError(f"Data '{data}' has no held-out images to check on; pass a folder with images in every class.")
    names = list(dataset.classes)
    if len(names) != orig.num_classes:
        raise DataError(f"Data '{data}' has {len(names)} classes but the models predict {orig.num_classes}; "
                        "check on data with the models' classes.")
    notes: list[str] = []
    if names != orig.classes and not str(data).startswith("synthetic"):
        raise DataError(f"Data '{data}' names its classes {names[:5]}... but the models were trained on "
                        f"{orig.classes[:5]}...; check on data with the same class folders.")
    if str(data).startswith("synthetic"):
        notes.append("synthetic data: plumbing only, the accuracy numbers mean nothing")

    o_logits, labels, o_runner = _predict(orig, dataset, batch_size, device, threads, progress, "original")
    c_logits, c_labels, c_runner = _predict(cand, dataset, batch_size, device, threads, progress, "candidate")
    if not np.array_equal(labels, c_labels):  # pragma: no cover - same dataset object, same order
        raise RuntimeError("labels differ between the two passes over the same dataset")

    accuracy, per_class = _accuracy(o_logits, c_logits, labels, orig.classes, policy)
    if not np.isfinite(c_logits).all():
        notes.append("the candidate produced non-finite outputs (NaN/inf) on some images")

    lat = None
    if latency:
        lat = measure_pair_latency(orig, cand, policy, device=device, data=data, progress=progress)
    report = CheckReport(
        candidate={**describe_artifact(cand), "runner": c_runner}, original={**describe_artifact(orig), "runner": o_runner},
        data={**describe_source(data, "val"), "n_images": int(len(labels)), "val_split": val_split},
        n_images=int(len(labels)), policy=policy.as_dict(), metrics=[], per_class=per_class, accuracy=accuracy,
        latency=lat, size={}, baseline=None,
        environment={"fingerprint": fingerprint(), "key": fingerprint_key(fingerprint())}, notes=notes,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    report.size = _size(report.original, report.candidate)
    report.metrics = _metrics(report, policy, latency_measured=latency)
    if base is not None:
        report.baseline = {"path": str(baseline), "created": base.get("created"), "metrics": base.get("metrics"),
                           "candidate": base.get("candidate")}
        report.metrics += _baseline_metrics(report, base, policy)
    _finish(report, policy)
    report.seconds = time.perf_counter() - t0
    return report


def _predict(art, dataset, batch_size, device, threads, progress, role):
    from .runtime import open_runner
    from .evaluation import predict

    with open_runner(art, device=device, threads=threads) as runner:
        logits, labels, _ = predict(runner, dataset, batch_size=batch_size, progress=progress)
        kind = runner.description
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != art.num_classes or logits.shape[0] != len(labels):
        raise InvalidInput(f"The {role} '{art.path}' returned outputs of shape {logits.shape}, expected "
                           f"({len(labels)}, {art.num_classes}); re-create the artifact.")
    return logits, np.asarray(labels), kind


def _accuracy(o_logits, c_logits, labels, classes, policy: Policy) -> tuple[dict, list[dict]]:
    from . import stats

    n = len(labels)
    k = min(5, o_logits.shape[1])
    o_pred, c_pred = o_logits.argmax(1), c_logits.argmax(1)
    o1, c1 = o_pred == labels, c_pred == labels
    o5 = (np.argsort(-o_logits, axis=1, kind="stable")[:, :k] == labels[:, None]).any(1)
    c5 = (np.argsort(-c_logits, axis=1, kind="stable")[:, :k] == labels[:, None]).any(1)
    kw = {"confidence": policy.confidence, "n_resamples": policy.bootstrap_resamples, "seed": policy.seed}
    drop1 = stats.paired_bootstrap(o1, c1, **kw).scaled(100.0)
    drop5 = stats.paired_bootstrap(o5, c5, **kw).scaled(100.0)
    b, c = stats.discordant(o1, c1)
    agree = int(np.count_nonzero(o_pred == c_pred))
    with np.errstate(all="ignore"):
        kl = stats.kl_divergence(o_logits, c_logits)
    kl_finite = bool(np.isfinite(kl).all())
    per_class = []
    for i, name in enumerate(classes):
        mask = labels == i
        m = int(mask.sum())
        if m == 0:
            continue
        oa, ca = float(o1[mask].mean()), float(c1[mask].mean())
        per_class.append({"class": name, "index": i, "n": m, "original": 100 * oa, "candidate": 100 * ca,
                          "delta": 100 * (ca - oa), "agreement": float((o_pred[mask] == c_pred[mask]).mean())})
    worst = min(per_class, key=lambda r: (r["delta"], r["index"])) if per_class else None
    accuracy = {
        "n": int(n), "top_k": int(k),
        "original": {"top1": 100 * float(o1.mean()), "top5": 100 * float(o5.mean())},
        "candidate": {"top1": 100 * float(c1.mean()), "top5": 100 * float(c5.mean())},
        "top1_drop": drop1.as_dict(), "top5_drop": drop5.as_dict(),
        "mcnemar": {**stats.mcnemar(b, c), "meaning": "b: images only the original got right, c: only the candidate"},
        "agreement": stats.wilson_interval(agree, n, confidence=policy.confidence).as_dict(),
        "disagreements": int(n - agree),
        "kl": {"mean": float(kl.mean()) if kl_finite else float("inf"),
               "p95": float(np.quantile(kl, 0.95)) if kl_finite else float("inf"),
               "max": float(kl.max()) if kl_finite else float("inf"), "direction": "KL(original || candidate), nats"},
        "worst_class": ({"class": worst["class"], "drop": 0.0 - worst["delta"]} if worst else None),
    }
    return accuracy, per_class


def _size(original: dict, candidate: dict) -> dict:
    def ratio(key):
        o, c = original.get(key), candidate.get(key)
        return (c / o) if isinstance(o, (int, float)) and isinstance(c, (int, float)) and o else None

    return {"original_bytes": original["size_bytes"], "candidate_bytes": candidate["size_bytes"],
            "size_ratio": ratio("size_bytes"), "original_macs": original.get("macs"),
            "candidate_macs": candidate.get("macs"), "macs_ratio": ratio("macs"),
            "original_params": original.get("params"), "candidate_params": candidate.get("params"),
            "params_ratio": ratio("params")}


def _metrics(report: CheckReport, policy: Policy, *, latency_measured: bool) -> list[Metric]:
    acc, d = report.accuracy, policy.decide_on
    out: list[Metric] = []
    for key, label, thr in (("top1", "top-1 drop", policy.max_top1_drop), ("top5", "top-5 drop", policy.max_top5_drop)):
        iv = acc[f"{key}_drop"]
        m = Metric(f"{key}_drop", label, "pt", iv["point"], original=acc["original"][key], candidate=acc["candidate"][key],
                   threshold=thr, op="<=", low=iv["low"], high=iv["high"], side_unit="%")
        m.status = decide(m.value, thr, "<=", m.low, m.high, d)
        m.detail = (f"original {acc['original'][key]:.2f} %, candidate {acc['candidate'][key]:.2f} %; "
                    f"{100 * iv['confidence']:.0f}% CI of the drop [{iv['low']:.2f}, {iv['high']:.2f}] pt")
        if m.status == "inconclusive":
            m.detail += _inconclusive_hint(iv, thr, report.n_images)
        out.append(m)
    ag = acc["agreement"]
    m = Metric("agreement", "agreement", "fraction", ag["point"], threshold=policy.min_agreement, op=">=")
    m.status = decide(m.value, m.threshold, ">=", decide_on="point")
    m.detail = (f"{acc['disagreements']} of {report.n_images} images predicted differently; "
                f"Wilson {100 * ag['confidence']:.0f}% CI [{ag['low']:.4f}, {ag['high']:.4f}]")
    out.append(m)
    worst = acc["worst_class"]
    m = Metric("worst_class_drop", "worst class drop", "pt", worst["drop"] if worst else None,
               threshold=policy.max_class_drop, op="<=", side_unit="%")
    m.status = decide(m.value, m.threshold, "<=", decide_on="point")
    if worst:
        row = next(r for r in report.per_class if r["class"] == worst["class"])
        m.original, m.candidate = row["original"], row["candidate"]
        m.detail = f"class '{worst['class']}' ({row['n']} images): {row['original']:.2f} % -> {row['candidate']:.2f} %"
    out.append(m)
    kl = acc["kl"]
    m = Metric("kl_mean", "mean KL", "nats", kl["mean"], threshold=policy.max_kl, op="<=")
    m.status = decide(m.value, m.threshold, "<=", decide_on="point")
    m.detail = f"KL(original || candidate) of the softmax outputs; p95 {format_value(kl['p95'], 'nats')}, max {format_value(kl['max'], 'nats')}"
    out.append(m)
    mc = acc["mcnemar"]
    out.append(Metric("mcnemar_p", "McNemar p", "p", mc["p_value"],
                      detail=f"{mc['method']}: {mc['b']} images only the original got right, {mc['c']} only the candidate"))

    lat = report.latency
    for key, label, thr, op in (("speedup", "speedup", policy.min_speedup, ">="),
                                ("latency_ratio", "latency ratio", policy.max_latency_ratio, "<=")):
        m = Metric(key, label, "x", None, threshold=thr, op=op, side_unit="ms")
        if lat is None:
            m.status = "skipped"
            m.detail = "latency not measured (--no-latency)"
        else:
            r = lat[key]
            m.value, m.low, m.high = r["point"], r["low"], r["high"]
            m.original, m.candidate = lat["original"]["p50_ms"], lat["candidate"]["p50_ms"]
            m.status = decide(m.value, thr, op, m.low, m.high, d)
            m.detail = (f"p50 {lat['original']['p50_ms']:.3f} ms -> {lat['candidate']['p50_ms']:.3f} ms at batch "
                        f"{lat['batch_size']}, interleaved; spread [{r['low']:.3f}, {r['high']:.3f}] ({r['spread']})")
        out.append(m)

    size = report.size
    m = Metric("size_ratio", "size ratio", "x", size["size_ratio"], original=size["original_bytes"],
               candidate=size["candidate_bytes"], threshold=policy.max_size_ratio, op="<=", side_unit="bytes")
    m.status = decide(m.value, m.threshold, "<=", decide_on="point")
    m.detail = f"model file bytes {_human_bytes(size['original_bytes'])} -> {_human_bytes(size['candidate_bytes'])}"
    out.append(m)
    for key, label in (("macs", "MACs ratio"), ("params", "params ratio")):
        m = Metric(f"{key}_ratio", label, "x", size[f"{key}_ratio"], original=size[f"original_{key}"],
                   candidate=size[f"candidate_{key}"], side_unit="count")
        m.detail = f"{key} from the manifests" + ("" if m.value is not None else " (not recorded)")
        out.append(m)
    return out


def _inconclusive_hint(iv: dict, threshold: float, n: int) -> str:
    from .stats import Interval, images_needed

    need = images_needed(Interval(iv["point"], iv["low"], iv["high"], iv["confidence"], iv["method"]), n, threshold)
    side = "within" if iv["point"] <= threshold else "over"
    more = f"; about {need:,} images would decide at this drop" if need and need > n else ""
    return f"; the interval straddles the {threshold:.2f} pt budget (point estimate {side} it){more}"


def _finish(report: CheckReport, policy: Policy) -> None:
    statuses = {m.status for m in report.metrics}
    if not any(m.gated for m in report.metrics):
        report.notes.append("no threshold applied, so nothing was gated; set --max-top1-drop or pass --policy")
    report.verdict = "fail" if "fail" in statuses else "inconclusive" if "inconclusive" in statuses else "pass"
    reasons = []
    for m in report.metrics:
        if m.status == "fail":
            reasons.append(f"{m.label} {m.value_text()} violates {m.threshold_text()}")
        elif m.status == "inconclusive":
            if m.key in ("speedup", "latency_ratio"):
                rounds = (report.latency or {}).get(m.key, {}).get("rounds")
                why = (f"with {rounds} interleaved timing rounds (raise latency_min_time_s, loosen the threshold, "
                       "or set decide_on: point)")
            else:
                why = (f"with {report.n_images} images at {100 * policy.confidence:.0f}% confidence "
                       "(add images, loosen the threshold, or set decide_on: point)")
            reasons.append(f"{m.label} {m.value_text()} cannot be decided against {m.threshold_text()} {why}")
    report.reasons = reasons


# --------------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------------
def measure_pair_latency(original, candidate, policy: Policy, *, device: str = "cpu", data: str = "digits",
                         progress: bool = False) -> dict:
    """Latency of both models measured interleaved in one run (:func:`edgecnn.bench.measure_latency`):
    per-model p50 and the candidate/original ratio with a confidence interval.

    The point ratio is bench's ratio of the overall medians. Its interval is the distribution-free
    interval of the median of the per-round ratios (each round times both models back to back under
    the same load, so machine drift cancels within a round). Blocks are kept short so that even a
    short measurement has ~10 rounds; with fewer rounds the interval is [min, max] of the rounds.
    """
    from . import bench

    block = min(0.1, max(0.01, policy.latency_min_time_s / 10))
    result = bench.measure_latency([original, candidate], batch_sizes=(policy.latency_batch_size,),
                                   warmup=policy.latency_warmup, min_time_s=policy.latency_min_time_s,
                                   min_repeats=policy.latency_min_repeats, threads=policy.latency_threads,
                                   device=device, interleave=True, progress=progress, data=data,
                                   block_time_s=block)
    return pair_from_bench(result, policy.latency_batch_size, confidence=policy.confidence)


def pair_from_bench(result: dict, batch_size: int, *, confidence: float = 0.95) -> dict:
    """Reduce a two-candidate ``bench.measure_latency`` result to what the gate reports."""
    from .stats import median_interval

    rows = [r for r in result["results"] if r["batch_size"] == batch_size]
    if len(rows) != 2:  # pragma: no cover - bench returns one row per candidate and batch size
        raise RuntimeError(f"expected 2 latency results at batch {batch_size}, got {len(rows)}")
    orig, cand = rows
    ratio = float(cand["ratio"])
    rounds = cand.get("round_ratios") or []
    if rounds:
        iv = median_interval(rounds, confidence=confidence)
        low, high = min(iv.low, ratio), max(iv.high, ratio)
        spread = f"{iv.method}, {100 * iv.confidence:.0f}% coverage"
    else:  # pragma: no cover - the gate always interleaves
        low = high = ratio
        spread = "no per-round ratios"

    def side(r):
        s = r["latency_ms"]
        return {"label": r["label"], "p50_ms": s["p50"], "p90_ms": s["p90"], "p99_ms": s["p99"], "mean_ms": s["mean"],
                "std_ms": s["std"], "runs": r["n"], "throughput": r["throughput"]}

    return {"batch_size": batch_size, "original": side(orig), "candidate": side(cand),
            "latency_ratio": {"point": ratio, "low": low, "high": high, "spread": spread, "rounds": len(rounds)},
            "speedup": {"point": 1.0 / ratio, "low": 1.0 / high, "high": 1.0 / low, "spread": spread,
                        "rounds": len(rounds)},
            "round_ratios": rounds, "settings": result.get("settings"), "fingerprint_key": result.get("fingerprint_key"),
            "seconds": result.get("seconds")}


# --------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------
def _identity(art_desc: dict, classes: list[str]) -> dict:
    return {"model": art_desc["model"], "classes": list(classes), "input": list(art_desc["input"])}


def save_baseline(report: CheckReport, path: str | Path, *, force: bool = False) -> Path:
    """Store the report's metrics as the accepted baseline (only a passing report, unless ``force``)."""
    from .artifact import Artifact, atomic_write_json

    if report.verdict != "pass" and not force:
        raise InvalidInput(f"Not saving baseline '{path}': the gate verdict is {report.verdict}; "
                           "only accepted (passing) metrics become a baseline.")
    classes = Artifact.load(report.original["path"]).classes if Path(report.original["path"]).exists() else []
    acc, lat = report.accuracy, report.latency
    metrics = {"candidate_top1": acc["candidate"]["top1"], "candidate_top5": acc["candidate"]["top5"],
               "original_top1": acc["original"]["top1"], "top1_drop": acc["top1_drop"]["point"],
               "agreement": acc["agreement"]["point"], "kl_mean": acc["kl"]["mean"],
               "candidate_latency_ms": lat["candidate"]["p50_ms"] if lat else None,
               "original_latency_ms": lat["original"]["p50_ms"] if lat else None,
               "speedup": lat["speedup"]["point"] if lat else None, "latency_batch_size": lat["batch_size"] if lat else None,
               "candidate_bytes": report.size["candidate_bytes"]}
    data = {"schema": BASELINE_SCHEMA, "created": report.created, "identity": _identity(report.original, classes),
            "original": {k: report.original[k] for k in ("id", "sha256", "path", "format", "precision")},
            "candidate": {k: report.candidate[k] for k in ("id", "sha256", "path", "format", "precision", "stage")},
            "data": report.data, "metrics": metrics, "environment": report.environment["fingerprint"],
            "fingerprint_key": report.environment["key"], "policy": report.policy}
    path = Path(path)
    atomic_write_json(path, _finite(data))
    report.reports["baseline"] = str(path)
    return path


def load_baseline(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BaselineError(f"Baseline file '{path}' does not exist; create one with --save-baseline {path}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(f"Baseline file '{path}' is not valid JSON ({exc}); re-create it with --save-baseline.") from None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA or not isinstance(data.get("metrics"), dict):
        raise BaselineError(f"'{path}' is not an edgecnn check baseline (schema {BASELINE_SCHEMA!r}); "
                            "re-create it with --save-baseline.")
    return data


def _check_baseline_identity(base: dict, orig, data: str, path) -> None:
    from .data import describe_source

    ident = base.get("identity") or {}
    want = {"model": orig.model, "classes": orig.classes, "input": list(orig.input_shape)}
    if ident.get("model") != want["model"] or list(ident.get("input") or []) != want["input"] or \
            (ident.get("classes") and ident.get("classes") != want["classes"]):
        def show(i):
            return f"{i.get('model')} ({len(i.get('classes') or [])} classes, input {'x'.join(map(str, i.get('input') or []))})"
        raise BaselineError(f"Baseline '{path}' was saved for {show(ident)}, but this check is for {show(want)}; "
                            "pass the baseline of this model or save a new one with --save-baseline.")
    src = describe_source(data, "val")
    bsrc = (base.get("data") or {})
    if bsrc.get("source") != src.get("source"):
        raise BaselineError(f"Baseline '{path}' was measured on data '{bsrc.get('source')}', this check uses "
                            f"'{src.get('source')}'; compare on the same data or save a new baseline.")


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


def _baseline_metrics(report: CheckReport, base: dict, policy: Policy) -> list[Metric]:
    bm = base["metrics"]
    acc, tol = report.accuracy, policy.baseline_accuracy_tolerance
    out = []
    for key, label, now, unit_scale in (("top1", "top-1 vs baseline", acc["candidate"]["top1"], 1.0),
                                        ("top5", "top-5 vs baseline", acc["candidate"]["top5"], 1.0),
                                        ("agreement", "agreement vs baseline", acc["agreement"]["point"], 100.0)):
        was = bm.get(f"candidate_{key}") if key != "agreement" else bm.get("agreement")
        m = Metric(f"baseline_{key}", label, "pt", None, threshold=-tol, op=">=")
        if not isinstance(was, (int, float)):
            m.status, m.detail = "skipped", "not in the baseline"
        else:
            m.value = (now - was) * unit_scale
            m.status = decide(m.value, m.threshold, ">=", decide_on="point")
            shown = (f"{was:.2f} % -> {now:.2f} %" if unit_scale == 1.0 else f"{was:.4f} -> {now:.4f}")
            m.detail = f"change since the baseline of {base.get('created')}: {shown} (absolute tolerance {tol:.2f} pt)"
        out.append(m)
    lat, ltol = report.latency, policy.baseline_latency_tolerance
    diff = _fingerprint_diff(report.environment["key"], base.get("fingerprint_key") or {})
    for key, label, thr, op in (("latency", "latency vs baseline", 1.0 + ltol, "<="),
                                ("speedup", "speedup vs baseline", 1.0 - ltol, ">=")):
        m = Metric(f"baseline_{key}", label, "x", None, threshold=thr, op=op)
        was = bm.get("candidate_latency_ms" if key == "latency" else "speedup")
        if lat is None:
            m.status, m.detail = "skipped", "latency not measured in this run (--no-latency)"
        elif not isinstance(was, (int, float)) or not was:
            m.status, m.detail = "skipped", "the baseline has no latency"
        elif bm.get("latency_batch_size") not in (None, lat["batch_size"]):
            m.status, m.detail = "skipped", f"baseline measured at batch {bm.get('latency_batch_size')}, this run at {lat['batch_size']}"
        elif diff:
            m.status = "skipped"
            m.detail = "environment differs from the baseline's, latency not comparable: " + "; ".join(diff[:4])
        else:
            now = lat["candidate"]["p50_ms"] if key == "latency" else lat["speedup"]["point"]
            m.value = now / was
            m.status = decide(m.value, thr, op, decide_on="point")
            unit = " ms" if key == "latency" else "x"
            m.detail = f"{was:.3f}{unit} at the baseline -> {now:.3f}{unit} now (relative tolerance {100 * ltol:.0f} %)"
        out.append(m)
    return out
