"""Forecast of the sufficient sample size, the split of Delta_k, and the paper's unit-norm directions."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.landscape.split import delta_split, theta_free_term
from jaxland.errors import ConfigError
from jaxland.sample_size.forecast import forecast_sufficient_k, power_law_k


def _definition4(curve, k, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return jl.sufficient_k(curve, tol, k=k)


def _problem(widths, n, d=None):
    """(model, w, x, y, subspace) of a small float64 MLP on random data; the subspace spans d random directions."""
    model = jl.MLPConfig(widths)
    w = model.init(jax.random.key(0)).astype(jnp.float64)
    x = jax.random.normal(jax.random.key(1), (n, widths[0]), jnp.float64)
    y = jnp.arange(n) % widths[-1]
    sub = None if d is None else jl.Subspace(w, jl.random_directions(model, w, d, key=jax.random.key(2)))
    return model, w, x, y, sub


# ----------------------------------------------------------------------------- forecast


def test_power_law_k_matches_definition_4_on_the_exact_curve():
    k = np.arange(1, 200_001, dtype=float)
    for c, alpha, tol in [(3.0, 1.7, 1.234e-4), (0.4, 2.0, 3.3e-7), (50.0, 0.9, 0.0123)]:
        assert power_law_k(np.log(c), alpha, tol) == _definition4(c * k**-alpha, k, tol)
    assert power_law_k(0.0, -0.5, 0.1) == np.inf


@pytest.mark.parametrize("with_stderr", [True, False])
def test_exact_power_law_forecast_is_exact(with_stderr):
    c, alpha = 2.5, 1.9
    k = np.arange(1, 121, dtype=float)
    curve = c * k**-alpha
    tols = [3.1e-3, 2.2e-4, 1.7e-6]
    f = forecast_sufficient_k(curve, tols, k=k, stderr=0.05 * curve if with_stderr else None, num_bootstrap=200)
    assert f.alpha == pytest.approx(alpha, rel=1e-9) and f.log_c == pytest.approx(np.log(c), rel=1e-9)
    long_k = np.arange(1, 2_000_001, dtype=float)
    truth = [_definition4(c * long_k**-alpha, long_k, t) for t in tols]
    np.testing.assert_array_equal(f.k, truth)
    np.testing.assert_array_equal(f.k_scatter, truth)  # no scatter: Definition 4 on the curve is the crossing
    assert f.chi2_reduced < 1e-12
    if not with_stderr:  # no scatter, no error: the interval is the point
        np.testing.assert_array_equal(f.lower, truth)
        np.testing.assert_array_equal(f.upper, truth)
    np.testing.assert_allclose(f.extrapolation, np.asarray(truth) / 120)
    np.testing.assert_array_equal(f.far, np.asarray(truth) > 5 * 120)
    assert f.k_fit == (30.0, 120.0) and f.num_fit == 91  # tail rule: k >= 0.25 k_max


def test_interval_covers_true_k_at_nominal_rate():
    """90% intervals on 200 noisy power laws (Gaussian noise of known size) cover the true K 85-95% of the time."""
    rng = np.random.default_rng(7)
    c, alpha, tol = 3.0, 1.8, 2e-5
    k = np.arange(1, 81, dtype=float)
    true = c * k**-alpha
    se = 0.15 * true
    k_true = power_law_k(np.log(c), alpha, tol)
    assert k_true > 3 * k[-1]  # a real extrapolation
    noisy = true + se * rng.standard_normal((200, k.size))
    fs = [forecast_sufficient_k(d, tol, k=k, stderr=se, num_bootstrap=400, seed=i) for i, d in enumerate(noisy)]
    covered = np.mean([f.lower <= k_true <= f.upper for f in fs])
    assert 0.85 <= covered <= 0.95, covered
    # the exponent's standard error is honest too: |alpha^ - alpha| < 2 SE about 95% of the time
    z = np.array([(f.alpha - alpha) / f.alpha_stderr for f in fs])
    assert 0.9 <= np.mean(np.abs(z) < 2) <= 0.99
    # goodness of fit: with the right model and errors, chi^2 / dof is about 1
    assert abs(np.mean([f.chi2_reduced for f in fs]) - 1) < 0.1


def test_fit_agrees_with_an_independent_weighted_least_squares():
    """The fitted power law is scipy's weighted least-squares fit of C k^-alpha (independent code), and K is Definition 4 on it."""
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(11)
    k = np.arange(1, 61, dtype=float)
    true = 2.0 * k**-1.5
    se = 0.05 * true
    tols = np.array([1e-3, 1e-4])
    for i in range(3):
        curve = true + se * rng.standard_normal(k.size)
        f = forecast_sufficient_k(curve, tols, k=k, stderr=se, num_bootstrap=300, seed=i)
        sel = (k >= f.k_fit[0]) & (k <= f.k_fit[1])
        (c_ref, alpha_ref), _ = curve_fit(lambda kk, c, a: c * kk**-a, k[sel], curve[sel], p0=(1.0, 1.0), sigma=se[sel],
                                          absolute_sigma=True)
        assert f.alpha == pytest.approx(alpha_ref, rel=1e-4) and f.log_c == pytest.approx(np.log(c_ref), abs=1e-4)
        # Definition 4 on the fitted curve C k^-alpha: the first k with C k^-alpha < tol
        k_ref = np.floor((c_ref / tols) ** (1 / alpha_ref)) + 1
        np.testing.assert_allclose(f.k, k_ref, rtol=1e-3)
        assert abs(f.alpha - 1.5) < 4 * f.alpha_stderr


def test_scatter_interval_covers_definition_4_on_a_scattered_curve():
    """A curve scattering around C k^-alpha (chi-square ratios): from its first 100 k, the scatter-aware 90%
    interval covers Definition 4's K of the whole (5,000-k) curve at about its rate; the trend crossing falls short."""
    rng = np.random.default_rng(5)
    c, alpha, tol = 3.0, 2.0, 1e-5
    k = np.arange(1, 5001, dtype=float)
    cov_sc, cov_trend = [], []
    for i in range(100):
        full = c * k**-alpha * rng.chisquare(4, k.size) / 4
        k_true = _definition4(full, k, tol)
        f = forecast_sufficient_k(full[:100], tol, k=k[:100], stderr=0.05 * full[:100], num_bootstrap=200, seed=i)
        cov_sc.append(f.lower_scatter <= k_true <= f.upper_scatter)
        cov_trend.append(f.lower <= k_true <= f.upper)
        assert f.k_scatter > f.k and f.scatter > 0.3
    assert 0.8 <= np.mean(cov_sc) <= 0.97, np.mean(cov_sc)
    assert np.mean(cov_trend) < 0.75


def test_scatter_beyond_the_standard_errors_widens_the_interval():
    rng = np.random.default_rng(3)
    k = np.arange(1, 101, dtype=float)
    true = 2.0 * k**-2.0
    se = 0.02 * true
    tight = forecast_sufficient_k(true * (1 + 0.02 * rng.standard_normal(k.size)), 1e-6, k=k, stderr=se)
    loose = forecast_sufficient_k(true * np.exp(0.5 * rng.standard_normal(k.size)), 1e-6, k=k, stderr=se)
    assert loose.chi2_reduced > 50 > 2 > tight.chi2_reduced
    assert loose.gof_p < 1e-6
    assert (loose.upper - loose.lower) > 5 * (tight.upper - tight.lower)


def test_accepts_delta_result_theory_result_and_pairs(x64):
    model, w, x, y, sub = _problem((4, 5, 3), 512, d=2)
    mc = jl.delta_monte_carlo(model, sub, x, y, sigma=0.5, num_draws=64, key=jax.random.key(3), samples_per_k=4)
    f = forecast_sufficient_k(mc, 1e-7)
    g = forecast_sufficient_k(np.asarray(mc.delta), 1e-7, k=mc.k, stderr=np.asarray(mc.stderr))
    assert f.unit == "batches" and f.k == g.k and f.lower == g.lower and f.upper == g.upper
    th = jl.theory_delta(jl.subspace_curvature(model, sub, x, y), sigma=0.5, samples_per_k=4)
    p = forecast_sufficient_k(th, 1e-7)  # the paper's Theorem 1 by default
    q = forecast_sufficient_k((th.k, th.theorem1), 1e-7)
    e = forecast_sufficient_k(th, 1e-7, curve_name="second_order")
    assert p.k == q.k and p.unit == "batches" and np.isnan(p.gof_p)
    assert e.alpha == forecast_sufficient_k((th.k, th.second_order), 1e-7).alpha
    with pytest.raises(ConfigError, match="not a curve of this result"):
        forecast_sufficient_k(th, 1e-7, curve_name="ritz_values")
    with pytest.raises(ConfigError, match="drop curve_name"):
        forecast_sufficient_k(mc, 1e-7, curve_name="theorem1")


def test_refusals():
    k = np.arange(1, 41, dtype=float)
    good = 2.0 * k**-2.0
    with pytest.raises(ConfigError, match="too few k"):
        forecast_sufficient_k(good[:5], 1e-4)  # tail k >= 1.25: 4 points
    with pytest.raises(ConfigError, match="too few k"):
        forecast_sufficient_k(good, 1e-4, k=k, k_min=38)
    with pytest.raises(ConfigError, match="does not decrease"):
        forecast_sufficient_k(0.01 * k**0.3, 1e-4, k=k)
    with pytest.raises(ConfigError, match="does not decrease"):
        forecast_sufficient_k(np.full(40, 0.01) * (1 + 1e-3 * np.sin(k)), 1e-4, k=k, stderr=np.full(40, 1e-4))
    bad = good.copy()
    bad[30] = np.nan
    with pytest.raises(ConfigError, match="non-finite.*k=31"):
        forecast_sufficient_k(bad, 1e-4, k=k)
    with pytest.raises(ConfigError, match="non-finite"):
        forecast_sufficient_k(good, 1e-4, k=k, stderr=np.where(k == 35, np.nan, 0.1 * good))
    with pytest.raises(ConfigError, match="tol"):
        forecast_sufficient_k(good, -1.0, k=k)
    with pytest.raises(ConfigError, match="standard errors must be > 0"):
        forecast_sufficient_k(good, 1e-4, k=k, stderr=np.zeros(40))
    with pytest.raises(ConfigError, match=r"value\(s\) <= 0"):
        forecast_sufficient_k(good - 0.01, 1e-4, k=k)
    with pytest.raises(ConfigError, match="k has shape"):
        forecast_sufficient_k(good, 1e-4, k=k[:-1])


def test_noisy_values_below_zero_are_fitted_with_stderr():
    k = np.arange(1, 61, dtype=float)
    true = 1.0 * k**-2.0
    se = np.full(k.size, 3e-4)
    d = true + se * np.random.default_rng(0).standard_normal(k.size)
    assert np.any(d <= 0)
    f = forecast_sufficient_k(d, 1e-3, k=k, stderr=se)
    assert abs(f.alpha - 2.0) < 4 * f.alpha_stderr
    assert f.lower <= power_law_k(0.0, 2.0, 1e-3) <= f.upper


# ----------------------------------------------------------------------------- split of Delta_k


def test_theta_free_term_matches_direct_prefix_means(x64):
    model, w, x, y, _ = _problem((4, 6, 3), 50)
    for bs in (None, 8):
        k, tf = theta_free_term(model, w, x, y, samples_per_k=bs)
        m = 1 if bs is None else bs
        prefix = jax.jit(jax.vmap(lambda n: jl.mean_loss(model, w, x, y, n)))  # L over the first n samples, n traced
        direct = np.diff(np.asarray(prefix(jnp.arange(1, k[-1] + 2) * m))) ** 2
        assert k[-1] == (49 if bs is None else 5)  # the incomplete last batch (2 samples) is dropped
        np.testing.assert_allclose(tf, direct, rtol=1e-9, atol=1e-18)


def test_split_sums_back_and_the_rest_vanishes_with_sigma(x64):
    model, w, x, y, sub = _problem((4, 6, 3), 64, d=3)
    for sigma in (1.0, 1e-4):
        mc = jl.delta_monte_carlo(model, sub, x, y, sigma=sigma, num_draws=256, key=jax.random.key(3), samples_per_k=4)
        s = delta_split(mc, model, w, x, y, samples_per_k=4)
        np.testing.assert_allclose(s.theta_free + s.rest, np.asarray(mc.delta), rtol=1e-12)
        np.testing.assert_array_equal(s.rest_stderr, np.asarray(mc.stderr))
        if sigma < 1e-3:  # the theta-dependent part is O(sigma^2): Delta_k is c_k^2 alone
            np.testing.assert_allclose(s.theta_free_fraction, 1.0, atol=1e-3)
        else:
            assert np.median(s.theta_free_fraction) < 0.9
    # samples_per_k defaults to the result's own; a different one is refused
    np.testing.assert_array_equal(delta_split(mc, model, w, x, y).theta_free, s.theta_free)
    with pytest.raises(ConfigError, match="samples_per_k=None contradicts"):
        delta_split(mc, model, w, x, y, samples_per_k=None)
    with pytest.raises(ConfigError, match="the data the estimate used"):
        delta_split(mc, model, w, x[:32], y[:32], samples_per_k=4)


# ----------------------------------------------------------------------------- unit-norm directions


def test_unit_norm_directions_keep_biases_zero():
    model = jl.MLPConfig((6, 5, 4, 3))
    w = model.init(jax.random.key(0))
    li = jl.random_directions(model, w, 4, key=jax.random.key(1))
    paper = jl.random_directions(model, w, 4, key=jax.random.key(1), unit_norm=True)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(paper), axis=1), 1.0, rtol=1e-6)
    bias = np.asarray(model.bias_mask()).astype(bool)
    assert bias.any() and np.all(np.asarray(paper)[:, bias] == 0)
    # the same directions as the default, only rescaled: the filter normalisation is applied first
    ratio = np.asarray(li) / np.linalg.norm(np.asarray(li), axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(paper), ratio, rtol=1e-5, atol=1e-8)
    assert np.all(np.linalg.norm(np.asarray(li), axis=1) > 1.5)  # Li et al.: rows as large as w*'s kernels
