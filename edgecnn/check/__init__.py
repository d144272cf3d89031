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

Decision rule (``decide_on``, :func:`decide`), for a metric with a threshold T and a confidence
interval [lo, hi]:

- ``ci`` (default) - pass when the whole interval is on the good side of T (for a drop budget:
  hi <= T), fail when the whole interval is on the bad side (lo > T), otherwise inconclusive. The
  accuracy drops (top-1/top-5) carry a paired bootstrap interval; latency ratios carry the interval of
  :data:`edgecnn.estimator.RATIO_ESTIMATOR` over the interleaved rounds (widened, and the point made the
  slower estimate, when the rounds are multi-modal or disagree with the p50s). So a PASS means "within
  budget at the stated confidence", a FAIL means "over budget at the stated confidence".
- ``point`` - pass/fail on the point estimate alone (intervals are still reported). Never inconclusive.

Agreement, worst per-class drop, KL and size are descriptive properties of the given images and are
always judged on their point value.

Baselines (:func:`save_baseline` / ``baseline=``) guard against slow drift between runs: accepted
metrics are stored with the environment fingerprint; a later check fails when a metric regresses
beyond its tolerance (absolute percentage points for accuracy, relative for latency). Latency is only
compared when the environment fingerprint key matches; otherwise it is reported as skipped.

Modules: :mod:`.policy` (thresholds), :mod:`.decision` (metric rows, the rule, the verdict), :mod:`.gate`
(the runner), :mod:`.measure` (paired accuracy, interleaved latency), :mod:`.compare` (are the two
comparable, what they cost), :mod:`.baseline` (drift between runs), :mod:`.result` (the report and its
JSON). Markdown, JUnit and the plot are written by :mod:`edgecnn.report`.
"""

from __future__ import annotations

from ..report import format_value
from .baseline import BASELINE_SCHEMA, BaselineError, baseline_metrics, load_baseline, save_baseline
from .compare import IncompatibleModels, artifact_bytes, describe_artifact, ensure_comparable
from .decision import EXIT_CODES, EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, Metric, decide
from .gate import check
from .measure import measure_pair_latency, pair_from_bench, paired_accuracy
from .policy import Policy, PolicyError, resolve_policy
from .result import REPORT_SCHEMA, TABLE_COLUMNS, CheckReport

__all__ = [
    "BASELINE_SCHEMA",
    "EXIT_CODES",
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_PASS",
    "REPORT_SCHEMA",
    "TABLE_COLUMNS",
    "BaselineError",
    "CheckReport",
    "IncompatibleModels",
    "Metric",
    "Policy",
    "PolicyError",
    "artifact_bytes",
    "baseline_metrics",
    "check",
    "decide",
    "describe_artifact",
    "ensure_comparable",
    "format_value",
    "load_baseline",
    "measure_pair_latency",
    "pair_from_bench",
    "paired_accuracy",
    "resolve_policy",
    "save_baseline",
]
