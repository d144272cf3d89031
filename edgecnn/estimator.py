"""The one name of the latency-ratio estimator, and its rule in words.

``bench``, ``compress``, ``check`` and ``sweep`` print :data:`RATIO_ESTIMATOR` next to every latency ratio
and speed-up, in their tables, help texts and reports; nothing else spells it. The statistics live in
:mod:`edgecnn.stats` (:func:`~edgecnn.stats.ratio_estimate`). This module imports nothing, so the command
line can use the words without loading numpy (``edgecnn --help`` stays instant).
"""

from __future__ import annotations

#: THE estimator of a latency ratio (a model's latency over a reference's, measured in the same rounds).
RATIO_ESTIMATOR = "median of per-round ratios"
#: Flag: the per-round ratios form two groups (some rounds caught one model busy).
MULTIMODAL = "multi-modal rounds"
#: Flag: the ratio of the p50 columns lies outside the paired estimate's interval.
DISAGREE = "p50 ratio disagrees"
#: A ratio's interval is "tight" when it is within this fraction of its point (the adaptive rounds' goal).
RATIO_TOLERANCE = 0.05

#: The rule, for help texts and reports.
RATIO_RULE = (
    f"ratio = {RATIO_ESTIMATOR}: every round times each model for one short block, back to back, and a "
    "round's ratio is the model's block median over the reference's; the interval is the order-statistic "
    "95% confidence interval of the median. Rounds continue past the minimum time until that interval is "
    f"within +-{100 * RATIO_TOLERANCE:.0f}% or the time budget is spent. When the rounds are multi-modal or "
    "the ratio of the p50 columns lies outside that interval, the row is flagged, the interval is widened to cover "
    "every estimate, and the point is the least favourable estimate for the model; speed-up = 1 / ratio."
)
