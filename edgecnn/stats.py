"""Statistics for comparing a candidate model with its original on the same images.

Everything here is paired: both models saw the same images, so their per-image outcomes are compared
image by image. That is what makes a few hundred images informative: only the images on which the two
models *disagree* carry evidence about a difference in accuracy.

- :func:`paired_bootstrap` - confidence interval of an accuracy difference (percentile bootstrap over
  images, seeded, hence deterministic).
- :func:`mcnemar` - test of "both models are equally accurate" from the discordant pairs; the exact
  binomial form for small counts, chi-square with continuity correction otherwise.
- :func:`kl_divergence` - KL(original || candidate) of the softmax outputs, per image.
- :func:`wilson_interval` - interval of a proportion (prediction agreement).
- :func:`ratio_estimate` - a latency ratio from interleaved rounds (the one estimator of
  :mod:`edgecnn.estimator`), robust to multi-modal rounds and cross-checked against the p50s.

Only numpy and the standard library are used, so the results do not depend on a scipy version.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from .estimator import DISAGREE, MULTIMODAL, RATIO_ESTIMATOR, RATIO_RULE, RATIO_TOLERANCE

__all__ = ["DISAGREE", "MULTIMODAL", "RATIO_ESTIMATOR", "RATIO_RULE", "RATIO_TOLERANCE"]  # re-exported

#: Below this many discordant pairs McNemar's chi-square approximation is poor; use the exact test.
EXACT_MCNEMAR_BELOW = 25
#: ``method`` of McNemar's test with the chi-square approximation.
CHI2 = "chi-square (continuity corrected)"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    point: float
    low: float
    high: float
    confidence: float
    method: str

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. fractions -> percentage points)."""
        lo, hi = sorted((self.low * factor, self.high * factor))
        return Interval(self.point * factor, lo, hi, self.confidence, self.method)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=bool).ravel()
    b = np.asarray(b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need equal lengths, got {a.size} and {b.size}")
    return a, b


def paired_bootstrap(
    a_correct, b_correct, *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> Interval:
    """Confidence interval of ``mean(a_correct) - mean(b_correct)`` (e.g. original minus candidate
    accuracy = the candidate's accuracy *drop*) by the percentile bootstrap over images.

    Resampling n images with replacement and taking the mean paired difference only depends on how many
    of the resampled images are of each kind: +1 (only ``a`` right), -1 (only ``b`` right) or 0. So each
    resample is drawn directly as a multinomial over those three counts - the same distribution as
    resampling indices, in O(n_resamples) instead of O(n_resamples * n). The generator is seeded, so the
    interval is identical on every run. Bounds use the conservative order statistics (lower/higher).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be >= 100, got {n_resamples}")
    a, b = _check_pair(a_correct, b_correct)
    n = a.size
    if n == 0:
        raise ValueError("no images to compare")
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    point = (only_a - only_b) / n
    if only_a == 0 and only_b == 0:
        # Every image has the same outcome for both: every resample gives 0.
        return Interval(0.0, 0.0, 0.0, confidence, "paired percentile bootstrap")
    rng = np.random.default_rng(seed)
    probs = np.array([only_a, only_b, n - only_a - only_b], dtype=np.float64) / n
    counts = rng.multinomial(n, probs, size=n_resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    alpha = 1.0 - confidence
    low = float(np.quantile(diffs, alpha / 2, method="lower"))
    high = float(np.quantile(diffs, 1 - alpha / 2, method="higher"))
    method = f"paired percentile bootstrap ({n_resamples} resamples, seed {seed})"
    return Interval(float(point), low, high, confidence, method)


def discordant(a_correct, b_correct) -> tuple[int, int]:
    """(images only ``a`` got right, images only ``b`` got right)."""
    a, b = _check_pair(a_correct, b_correct)
    return int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact (integer arithmetic)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)


def mcnemar(b: int, c: int, *, exact: bool | None = None) -> dict:
    """McNemar's test of equal accuracy from the discordant counts ``b`` (only the first model right)
    and ``c`` (only the second right).

    ``exact=None`` picks the exact two-sided binomial test when ``b + c`` is below
    :data:`EXACT_MCNEMAR_BELOW` (where the chi-square approximation is unreliable) and the chi-square
    statistic with Edwards' continuity correction otherwise. With no discordant pairs p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if exact is None:
        exact = n < EXACT_MCNEMAR_BELOW
    if n == 0:
        return {"b": b, "c": c, "statistic": 0.0, "p_value": 1.0, "method": "exact binomial" if exact else CHI2}
    if exact:
        p = min(1.0, 2.0 * _binom_cdf_half(min(b, c), n))
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": p, "method": "exact binomial"}
    stat = (abs(b - c) - 1.0) ** 2 / n if abs(b - c) >= 1 else 0.0
    p = math.erfc(math.sqrt(stat / 2.0))  # survival function of chi-square with 1 degree of freedom
    return {"b": b, "c": c, "statistic": float(stat), "p_value": float(p), "method": CHI2}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def kl_divergence(p_logits, q_logits) -> np.ndarray:
    """Per-image KL(softmax(p) || softmax(q)) in nats, computed in float64 from log-softmax (stable for
    large logits; never negative beyond rounding, which is clipped to 0)."""
    p_logits = np.asarray(p_logits)
    q_logits = np.asarray(q_logits)
    if p_logits.shape != q_logits.shape or p_logits.ndim != 2:
        raise ValueError(f"logits must both be (N, classes), got {p_logits.shape} and {q_logits.shape}")
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=1)
    return np.maximum(kl, 0.0)


def wilson_interval(k: int, n: int, *, confidence: float = 0.95) -> Interval:
    """Wilson score interval of a proportion k/n (well-behaved at 0 and 1, unlike the normal one)."""
    if n <= 0:
        raise ValueError("n must be > 0")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high, confidence, "Wilson score")


def images_needed(interval: Interval, n: int, threshold: float) -> int | None:
    """Rough number of images at which an interval of this width would exclude ``threshold``, assuming
    the point estimate stays where it is and the width shrinks as 1/sqrt(n). None when the point
    estimate sits on the threshold (no finite number of images decides it)."""
    gap = abs(interval.point - threshold)
    half = max(interval.high - interval.point, interval.point - interval.low)
    if gap <= 0 or half <= 0:
        return None
    return int(math.ceil(n * (half / gap) ** 2))


def _median_rank(n: int, confidence: float) -> tuple[int, float]:
    """Largest 1-based j with P(X_(j) <= median <= X_(n-j+1)) = 1 - 2 P(B <= j-1) >= confidence, and that
    coverage. Exact for up to 200 values; above, the normal approximation of Binomial(n, 1/2)."""
    if n > 200:
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        return max(1, math.floor((n - z * math.sqrt(n)) / 2)), confidence
    best_j, achieved = 1, 1.0 - 2.0 * 0.5**n
    for j in range(1, n // 2 + 1):
        cover = 1.0 - 2.0 * _binom_cdf_half(j - 1, n)
        if cover >= confidence:
            best_j, achieved = j, cover
        else:
            break
    return best_j, achieved


def median_interval(values, *, confidence: float = 0.95) -> Interval:
    """Distribution-free confidence interval of the median of ``values`` from order statistics (the
    number of values below the median is Binomial(n, 1/2)). With too few values for the requested
    confidence the interval is [min, max] and ``confidence`` reports what that range actually achieves."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ValueError("no values")
    median = float(np.median(x))
    if n == 1:
        return Interval(median, float(x[0]), float(x[0]), 0.0, "single value")
    best_j, achieved = _median_rank(n, confidence)
    return Interval(
        median,
        float(x[best_j - 1]),
        float(x[n - best_j]),
        float(achieved),
        f"order-statistic interval of the median ({n} values)",
    )


# --------------------------------------------------------------------------------------------------
# Latency ratios (the one estimator: edgecnn.estimator.RATIO_ESTIMATOR)
# --------------------------------------------------------------------------------------------------
#: Each of two modes holds at least this share of the rounds (and 2 rounds); fewer are outliers.
MODE_MIN_SHARE = 0.15
#: Two modes are this far apart at least (as a ratio, 1.25 = 25 %) ...
MODE_MIN_GAP = math.log(1.25)
#: ... and their gap is this many robust standard deviations of the wider group.
MODE_GAP_SPREADS = 4.0


@dataclass(frozen=True)
class RatioEstimate:
    """A latency ratio (model / reference) by :data:`RATIO_ESTIMATOR`, with what was checked on the way.

    ``point``/``low``/``high`` are what to print and judge. ``paired`` is the plain median of the per-round
    ratios with its order-statistic interval, ``p50`` the ratio of the pooled p50s (None without them);
    ``modes`` summarises the two groups of rounds when ``flags`` has :data:`MULTIMODAL`."""

    point: float
    low: float
    high: float
    confidence: float
    rounds: int
    paired: Interval
    p50: Interval | None = None
    modes: tuple[dict, ...] = ()
    flags: tuple[str, ...] = ()
    method: str = RATIO_ESTIMATOR

    def tight(self, tolerance: float = RATIO_TOLERANCE) -> bool:
        """Unflagged, and the interval within ``tolerance`` (a fraction) of the point on both sides."""
        if self.flags or self.point <= 0:
            return False
        return self.high / self.point - 1 <= tolerance and 1 - self.low / self.point <= tolerance

    def speedup(self) -> Interval:
        """1 / ratio, its interval turned around."""
        inv = [1 / v if v > 0 else math.inf for v in (self.point, self.high, self.low)]
        return Interval(inv[0], inv[1], inv[2], self.confidence, f"1 / ({self.method})")

    def notes(self, label: str, reference: str = "the reference") -> list[str]:
        """What a reader must know about this estimate, one line per flag."""
        out = []
        if MULTIMODAL in self.flags:
            lo, hi = self.modes
            out.append(
                f"{label}: {MULTIMODAL} against {reference}: {lo['rounds']} of {self.rounds} rounds at ratio "
                f"~{lo['median']:.4g}, {hi['rounds']} at ~{hi['median']:.4g} (a block caught one model busy); "
                f"interval widened to cover both, point = the slower mode for {label}"
            )
        if DISAGREE in self.flags and self.p50 is not None:
            out.append(
                f"{label}: {DISAGREE} with the paired estimate against {reference}: p50/p50 {self.p50.point:.4g} "
                f"[{self.p50.low:.4g}, {self.p50.high:.4g}] vs {RATIO_ESTIMATOR} {self.paired.point:.4g} "
                f"[{self.paired.low:.4g}, {self.paired.high:.4g}]; interval widened to cover both, point = "
                f"the less favourable for {label}"
            )
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d["flags"] = list(self.flags)
        d["modes"] = list(self.modes)
        return d


def _robust_sd(x: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(x - np.median(x)))) if x.size > 1 else 0.0


def split_modes(ratios) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-round ratios in two groups (lower, upper) when they are multi-modal, else None.

    Sorted, log-scaled ratios are split at the widest gap that leaves at least :data:`MODE_MIN_SHARE` of
    the rounds (and 2) on each side; it is a split when that gap is wider than :data:`MODE_MIN_GAP` and
    :data:`MODE_GAP_SPREADS` robust standard deviations (1.4826 x MAD) of either group. A few outlier
    rounds are not a mode: the median already ignores them."""
    x = np.sort(np.log(np.asarray(ratios, dtype=np.float64).ravel()))
    n = x.size
    k = max(2, math.ceil(MODE_MIN_SHARE * n))
    best, best_gap = None, 0.0
    for i in range(k, n - k + 1):  # split before index i
        gap = x[i] - x[i - 1]
        spread = max(_robust_sd(x[:i]), _robust_sd(x[i:]))
        if gap > max(MODE_MIN_GAP, MODE_GAP_SPREADS * spread) and gap > best_gap:
            best, best_gap = i, gap
    if best is None:
        return None
    return np.exp(x[:best]), np.exp(x[best:])


def ratio_estimate(
    model_blocks,
    reference_blocks,
    *,
    model_p50: Interval | None = None,
    reference_p50: Interval | None = None,
    confidence: float = 0.95,
) -> RatioEstimate:
    """The ratio model / reference by :data:`RATIO_ESTIMATOR` (see :data:`~edgecnn.estimator.RATIO_RULE`).

    ``*_blocks``: the two models' block medians, round by round (paired by position). ``*_p50``: each
    model's pooled p50 with its interval, for the cross-check. The point is the median of the per-round
    ratios and the interval its order-statistic interval. When the rounds are multi-modal
    (:func:`split_modes`) or the ratio of the p50s lies outside that interval, the estimate is flagged,
    the interval covers every estimate (and, multi-modal, every round), and the point is the largest
    ratio among the estimates - the least favourable for the model."""
    pairs = [(m, r) for m, r in zip(model_blocks, reference_blocks) if r > 0 and m > 0]
    if not pairs:
        raise ValueError("no rounds with both block medians > 0")
    per_round = np.array([m / r for m, r in pairs])
    paired = median_interval(per_round, confidence=confidence)
    p50 = None
    if model_p50 is not None and reference_p50 is not None and reference_p50.low > 0:
        p50 = Interval(
            model_p50.point / reference_p50.point,
            model_p50.low / reference_p50.high,
            model_p50.high / reference_p50.low,
            confidence,
            "ratio of the p50s (pooled samples)",
        )
    groups = split_modes(per_round)
    flags = ((MULTIMODAL,) if groups is not None else ()) + (
        (DISAGREE,) if p50 is not None and not paired.low <= p50.point <= paired.high else ()
    )
    estimates = [paired.point] + ([p50.point] if p50 is not None else [])
    modes: tuple[dict, ...] = ()
    if groups is not None:
        modes = tuple({"rounds": int(g.size), "median": float(np.median(g))} for g in groups)
        estimates += [m["median"] for m in modes]
    if flags:
        point = max(estimates)
        bounds = [paired.low, paired.high, point] + ([p50.low, p50.high] if p50 is not None else [])
        bounds += [float(per_round.min()), float(per_round.max())] if groups is not None else []
    else:
        point = paired.point
        bounds = [paired.low, paired.high]
    return RatioEstimate(
        float(point),
        float(min(bounds)),
        float(max(bounds)),
        paired.confidence,
        int(per_round.size),
        paired,
        p50,
        modes,
        flags,
    )
