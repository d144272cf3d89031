"""The gate's statistics against independent references (scipy) and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgecnn import stats


def _pair(n, p_a, p_b, rho_same, rng):
    """Paired outcomes: with prob rho_same both share a draw, else independent draws."""
    shared = rng.random(n) < rho_same
    base = rng.random(n)
    a = np.where(shared, base < p_a, rng.random(n) < p_a)
    b = np.where(shared, base < p_b, rng.random(n) < p_b)
    return a, b


def test_bootstrap_is_deterministic_and_contains_point():
    rng = np.random.default_rng(1)
    a, b = _pair(360, 0.97, 0.95, 0.9, rng)
    i1 = stats.paired_bootstrap(a, b, seed=0)
    i2 = stats.paired_bootstrap(a, b, seed=0)
    assert i1 == i2
    assert i1.point == pytest.approx(a.mean() - b.mean())
    assert i1.low <= i1.point <= i1.high
    i3 = stats.paired_bootstrap(a, b, seed=7)
    assert abs(i3.low - i1.low) < 0.01 and abs(i3.high - i1.high) < 0.01  # seed changes little


def test_bootstrap_identical_outcomes_is_degenerate():
    a = np.array([True] * 300 + [False] * 60)
    iv = stats.paired_bootstrap(a, a.copy())
    assert (iv.point, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_bootstrap_matches_index_resampling():
    """The multinomial shortcut has the same distribution as resampling image indices."""
    rng = np.random.default_rng(3)
    a, b = _pair(200, 0.9, 0.85, 0.7, rng)
    ours = stats.paired_bootstrap(a, b, n_resamples=20_000, seed=0)
    d = a.astype(float) - b.astype(float)
    idx = np.random.default_rng(5).integers(0, d.size, size=(20_000, d.size))
    means = d[idx].mean(1)
    ref_lo, ref_hi = np.quantile(means, [0.025, 0.975])
    assert ours.low == pytest.approx(ref_lo, abs=0.006)
    assert ours.high == pytest.approx(ref_hi, abs=0.006)


def test_bootstrap_coverage_by_simulation():
    """About 95 % of intervals cover the true paired difference."""
    rng = np.random.default_rng(11)
    p_a, p_b, trials, covered = 0.95, 0.92, 300, 0
    for t in range(trials):
        a, b = _pair(360, p_a, p_b, 0.8, rng)
        iv = stats.paired_bootstrap(a, b, n_resamples=2000, seed=t)
        covered += iv.low <= (p_a - p_b) <= iv.high
    assert 0.90 <= covered / trials <= 0.99


def test_bootstrap_narrows_with_more_images():
    rng = np.random.default_rng(2)
    small = stats.paired_bootstrap(*_pair(100, 0.9, 0.88, 0.8, rng))
    large = stats.paired_bootstrap(*_pair(10_000, 0.9, 0.88, 0.8, rng))
    assert (large.high - large.low) < 0.3 * (small.high - small.low)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        stats.paired_bootstrap([True, False], [True])
    with pytest.raises(ValueError):
        stats.paired_bootstrap([], [])
    with pytest.raises(ValueError):
        stats.paired_bootstrap([True], [False], confidence=1.0)


def test_interval_scaled():
    iv = stats.Interval(0.01, -0.02, 0.03, 0.95, "x").scaled(100)
    assert (iv.point, iv.low, iv.high) == pytest.approx((1.0, -2.0, 3.0))


@pytest.mark.parametrize("b,c", [(0, 0), (0, 5), (1, 9), (3, 4), (7, 2), (12, 11), (10, 30), (40, 25), (100, 60)])
def test_mcnemar_matches_scipy(b, c):
    sp = pytest.importorskip("scipy.stats")
    res = stats.mcnemar(b, c)
    n = b + c
    if n == 0:
        assert res["p_value"] == 1.0
    elif n < stats.EXACT_MCNEMAR_BELOW:
        assert res["method"] == "exact binomial"
        assert res["p_value"] == pytest.approx(sp.binomtest(b, n, 0.5).pvalue, rel=1e-9)
    else:
        assert res["method"].startswith("chi-square")
        chi = (abs(b - c) - 1) ** 2 / n
        assert res["p_value"] == pytest.approx(sp.chi2.sf(chi, 1), rel=1e-9)


def test_mcnemar_exact_known_values_and_forcing():
    assert stats.mcnemar(0, 5)["p_value"] == pytest.approx(0.0625)
    assert stats.mcnemar(1, 9)["p_value"] == pytest.approx(2 * 11 / 1024)
    assert stats.mcnemar(30, 30, exact=True)["p_value"] == pytest.approx(1.0)
    assert stats.mcnemar(5, 0, exact=False)["method"].startswith("chi-square")
    with pytest.raises(ValueError):
        stats.mcnemar(-1, 2)


def test_discordant_counts():
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 1, 0, 0], bool)
    assert stats.discordant(a, b) == (2, 1)


def test_kl_matches_scipy_and_is_stable():
    sp = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(50, 10)) * 3, rng.normal(size=(50, 10)) * 3
    ours = stats.kl_divergence(p, q)

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    ref = np.array([sp.entropy(pp, qq) for pp, qq in zip(softmax(p), softmax(q))])
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert np.all(stats.kl_divergence(p, p) == 0)
    big = stats.kl_divergence(p * 1e4, q * 1e4)
    assert np.isfinite(big).all() and (big >= 0).all()
    with pytest.raises(ValueError):
        stats.kl_divergence(p, q[:, :5])


def test_wilson_interval():
    iv = stats.wilson_interval(0, 10)
    assert iv.low == 0.0 and iv.high == pytest.approx(0.2775, abs=1e-4)
    full = stats.wilson_interval(360, 360)
    assert full.high == 1.0 and 0.985 < full.low < 0.995
    mid = stats.wilson_interval(50, 100)
    assert mid.low == pytest.approx(1 - mid.high)


def test_images_needed():
    iv = stats.Interval(0.5, -0.5, 1.5, 0.95, "x")
    need = stats.images_needed(iv, 360, 1.0)
    assert need == math.ceil(360 * (1.0 / 0.5) ** 2)
    assert stats.images_needed(stats.Interval(1.0, 0.0, 2.0, 0.95, "x"), 360, 1.0) is None


def test_median_interval():
    sp = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.normal(size=25)
    iv = stats.median_interval(x)
    xs = np.sort(x)
    assert iv.point == pytest.approx(np.median(x))
    assert iv.low < iv.point < iv.high and iv.confidence >= 0.95
    # 1-based j=8 for n=25 (P(B <= 7) = 0.0216 -> coverage 0.957)
    assert (iv.low, iv.high) == (xs[7], xs[17])
    assert iv.confidence == pytest.approx(1 - 2 * sp.binom.cdf(7, 25, 0.5))
    few = stats.median_interval([1.0, 1.2, 0.9])
    assert (few.low, few.high) == (0.9, 1.2) and few.confidence == pytest.approx(0.75)
    covered = 0  # coverage by simulation
    for _ in range(400):
        v = rng.normal(size=15)
        m = stats.median_interval(v)
        covered += m.low <= 0.0 <= m.high
    assert covered / 400 >= 0.93
