"""The power-law fit against closed forms, scipy's linregress and the t interval's coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lamina.errors import LaminaError
from lamina.studies import HESTNESS_2017_IMAGE_CLASSIFICATION, fit_power_law

SIZES = [600, 1800, 6000, 18000, 60000]


def test_an_exact_power_law_is_recovered():
    n = [s for s in SIZES for _ in range(3)]
    fit = fit_power_law(n, [2.0 * k**-0.35 for k in n])
    assert fit.exponent == pytest.approx(-0.35, abs=1e-12)
    assert fit.a == pytest.approx(2.0, rel=1e-10)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.points == 15 and fit.sizes == 5
    lo, hi = fit.exponent_ci95
    assert lo <= -0.35 <= hi and hi - lo < 1e-9
    assert fit.predict(1000) == pytest.approx(2.0 * 1000**-0.35)


def test_seed_noise_that_cancels_per_size_keeps_the_exponent_and_widens_the_interval():
    # three seeds per size at log-error offsets +d, -d, 0: the per-size means lie on the law, so the
    # least-squares slope is exactly -0.35; the residuals (SSR = 5 * 2 d^2) give a known standard error
    d = 0.1
    n = [s for s in SIZES for _ in range(3)]
    err = [2.0 * k**-0.35 * math.exp(o) for k in SIZES for o in (d, -d, 0.0)]
    fit = fit_power_law(n, err)
    assert fit.exponent == pytest.approx(-0.35, abs=1e-12)
    x = np.log(n)
    se = math.sqrt(5 * 2 * d**2 / (len(n) - 2) / np.sum((x - x.mean()) ** 2))
    assert fit.exponent_se == pytest.approx(se, rel=1e-9)
    t = stats.t.ppf(0.975, len(n) - 2)
    assert fit.exponent_ci95 == pytest.approx((-0.35 - t * se, -0.35 + t * se), rel=1e-9)


def test_fit_matches_scipy_linregress_and_the_t_interval():
    rng = np.random.default_rng(0)
    n = np.repeat(SIZES, 3).astype(float)
    err = 1.5 * n**-0.309 * np.exp(rng.normal(0, 0.08, len(n)))
    fit = fit_power_law(n.tolist(), err.tolist())
    ref = stats.linregress(np.log(n), np.log(err))
    assert fit.exponent == pytest.approx(ref.slope, rel=1e-10)
    assert math.log(fit.a) == pytest.approx(ref.intercept, rel=1e-10)
    assert fit.r2 == pytest.approx(ref.rvalue**2, rel=1e-10)
    assert fit.exponent_se == pytest.approx(ref.stderr, rel=1e-10)
    t = stats.t.ppf(0.975, len(n) - 2)
    assert fit.exponent_ci95 == pytest.approx((ref.slope - t * ref.stderr, ref.slope + t * ref.stderr))


def test_the_95_percent_interval_covers_the_true_exponent_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    n = np.repeat(SIZES, 2).astype(float)
    covered = 0
    trials = 400
    for _ in range(trials):
        err = 0.8 * n**-0.5 * np.exp(rng.normal(0, 0.2, len(n)))
        lo, hi = fit_power_law(n.tolist(), err.tolist()).exponent_ci95
        covered += lo <= -0.5 <= hi
    # binomial(400, 0.95): mean 380, sd 4.4; 366..394 is about +-3 sd
    assert 366 <= covered <= 394


def test_two_runs_give_an_exponent_without_an_interval():
    fit = fit_power_law([100, 1000], [0.4, 0.2])
    assert fit.exponent == pytest.approx(math.log(0.5) / math.log(10))
    assert fit.exponent_ci95 is None and fit.exponent_se is None
    d = fit.to_dict()
    assert d["exponent_ci95"] is None and d["dof"] == 0 and d["model"].startswith("error = a")


@pytest.mark.parametrize("n,err,match", [
    ([100, 100], [0.3, 0.2], "at least 2 distinct"),
    ([100, 1000], [0.3, 0.0], "must be positive"),
    ([100, -5], [0.3, 0.2], "positive number"),
    ([100, 1000, 10], [0.3, 0.2], "one error per size"),
])
def test_fit_errors(n, err, match):
    with pytest.raises(LaminaError, match=match):
        fit_power_law(n, err)


def test_hestness_reference_numbers():
    assert HESTNESS_2017_IMAGE_CLASSIFICATION["top1_error_exponent"] == -0.309
    assert HESTNESS_2017_IMAGE_CLASSIFICATION["top5_error_exponent"] == -0.488
