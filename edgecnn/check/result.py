"""What the gate hands back: :class:`CheckReport` (verdict, metric rows, the measurements) and its JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..report import VERDICT_WORD, write_reports
from .decision import EXIT_CODES, Metric

REPORT_SCHEMA = "edgecnn.check-report/1"
#: Columns of :meth:`CheckReport.table_rows`.
TABLE_COLUMNS = ("metric", "original", "candidate", "value", "threshold", "status")


def finite(obj):
    """JSON has no NaN/Infinity: write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.generic):
        return finite(obj.item())
    return obj


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
    device_state: dict | None = None  # check --host: the device's state, read there (edgecnn.ondevice)
    on_device: dict | None = None  # check --host: host, profile, bundles and inputs copied or reused

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

    def with_status(self, *statuses: str) -> list[Metric]:
        """The metric rows with one of ``statuses`` (e.g. ``"fail"``, ``"inconclusive"``)."""
        return [m for m in self.metrics if m.status in statuses]

    @property
    def failing(self) -> list[Metric]:
        return self.with_status("fail")

    @property
    def inconclusive(self) -> list[Metric]:
        return self.with_status("inconclusive")

    def summary(self) -> str:
        """One line: the verdict and why."""
        head = VERDICT_WORD[self.verdict]
        name = (
            f"{self.candidate['model']} {self.candidate['format']}/{self.candidate['precision']} "
            f"({self.candidate.get('stage')}) vs original"
        )
        if self.verdict == "pass":
            gated = self.with_status("pass")
            return f"{head}: {name} - {len(gated)} gated metric(s) within threshold on {self.n_images} images."
        return f"{head}: {name} - " + "; ".join(self.reasons)

    def table_rows(self) -> list[list[str]]:
        """Rows for a table with :data:`TABLE_COLUMNS` (what the CLI and the demo print)."""
        return [
            [m.label, m.side_text(m.original), m.side_text(m.candidate), m.value_text(), m.threshold_text(), m.status]
            for m in self.metrics
        ]

    def to_dict(self) -> dict:
        d = {
            "schema": REPORT_SCHEMA,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "reasons": self.reasons,
            "notes": self.notes,
            "created": self.created,
            "seconds": round(self.seconds, 3),
            "candidate": self.candidate,
            "original": self.original,
            "data": self.data,
            "n_images": self.n_images,
            "policy": self.policy,
            "metrics": [asdict(m) for m in self.metrics],
            "per_class": self.per_class,
            "accuracy": self.accuracy,
            "latency": self.latency,
            "size": self.size,
            "baseline": self.baseline,
            "environment": self.environment,
            "reports": self.reports,
        }
        if self.on_device is not None:
            d.update(device_state=self.device_state, on_device=self.on_device)
        return finite(d)

    def write(
        self,
        *,
        json: str | Path | None = None,
        junit: str | Path | None = None,
        markdown: str | Path | None = None,
        plot: str | Path | None = None,
    ) -> dict[str, str]:
        """Write the requested reports (atomically) and remember their paths in ``reports``."""
        return write_reports(self, json=json, junit=junit, markdown=markdown, plot=plot)
