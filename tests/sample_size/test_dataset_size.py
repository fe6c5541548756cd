"""forecast_dataset_size and learning_curve_size against closed forms on synthetic pilots, and their errors.

Synthetic pilots: ``Delta_k^(N) = C N^beta k^-alpha`` times ``exp(eta)`` per
training (``eta ~ N(0, omega^2)``, the spread between retrainings), with
Gaussian noise of known standard error. Where a network of N samples
settles by its own data, ``K(N) spk <= N`` with ``K(N) = (C N^beta e^eta / tol)^(1/alpha)``,
gives ``N*`` in closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import jaxland as jl
from jaxland.errors import ConfigError
from jaxland.sample_size import forecast_dataset_size, learning_curve_size

C, ALPHA, BETA, SPK = 40.0, 2.0, -0.5, 50
SIZES = (500, 1000, 2000, 4000)


def true_n_star(tol, eta=0.0, c=C, alpha=ALPHA, beta=BETA, spk=SPK):
    """N with ``(c e^eta N^beta / tol)^(1/alpha) spk = N``."""
    return math.exp(((math.log(c) + eta - math.log(tol)) / alpha + math.log(spk)) / (1 - beta / alpha))


def pilots(rng, *, noise=0.1, omega=0.0, seeds=1, sizes=SIZES, c=C, alpha=ALPHA, beta=BETA):
    out = []
    for n in sizes:
        for _ in range(seeds):
            k = np.arange(1, n // SPK, dtype=float)
            m = c * n**beta * k**-alpha * math.exp(omega * rng.standard_normal())
            out.append((n, (k, m + noise * m * rng.standard_normal(k.size), noise * m)))
    return out


def test_noiseless_pilots_give_the_closed_form():
    f = forecast_dataset_size(pilots(np.random.default_rng(0), noise=1e-6), [3e-3, 1e-4], samples_per_k=SPK, n_target=64000,
                              num_bootstrap=200)
    np.testing.assert_allclose([f.alpha, f.beta], [ALPHA, BETA], atol=1e-3)
    np.testing.assert_allclose(f.n_star_trend, [true_n_star(3e-3), true_n_star(1e-4)], rtol=2e-3)
    # a curve without scatter settles where its trend does, up to K counting whole batches: K(N) spk <= N with K an integer
    gap = np.asarray(f.n_star) - np.asarray(f.n_star_trend)
    assert np.all((gap >= -1) & (gap <= SPK + 1)), gap
    k_true = jl.sample_size.power_law_k(math.log(C) + BETA * math.log(64000), ALPHA, [3e-3, 1e-4])
    np.testing.assert_array_equal(f.k_target_trend, k_true)
    assert np.all(np.abs(np.asarray(f.k_target) - k_true) <= 1) and np.all(np.asarray(f.p_settled) == 1.0)
    assert f.diagnostics["warnings"] == [] and f.n_target == 64000 and f.unit == "batches"


def test_interval_covers_the_true_n_star_in_a_clear_majority():
    """Nominal 90% intervals for a new network's N* and K; the count of hits is checked against Binomial(T, 0.9)."""
    rng = np.random.default_rng(1)
    trials, tol, n_t = 24, 1e-4, 64000
    hits_n = hits_k = 0
    for t in range(trials):
        f = forecast_dataset_size(pilots(rng, noise=0.15, omega=0.1, seeds=2), tol, samples_per_k=SPK, n_target=n_t, num_bootstrap=200, seed=t)
        eta = 0.1 * rng.standard_normal()  # the new network's own level
        hits_n += f.lower_trend <= true_n_star(tol, eta) <= f.upper_trend
        k_true = jl.sample_size.power_law_k(math.log(C) + eta + BETA * math.log(n_t), ALPHA, tol)
        hits_k += f.k_lower_trend <= k_true <= f.k_upper_trend
    # below this count a 90% interval would be this wrong with probability < 1e-3
    floor = int(stats.binom.ppf(1e-3, trials, 0.9))
    assert hits_n >= floor and hits_k >= floor, (hits_n, hits_k, floor)


def test_shape_beyond_a_power_law_inside_the_pilots_is_learnt():
    """A bump in k shared by every pilot (the same samples enter at each k) is kept as the shape, not fitted as the exponent."""
    rng = np.random.default_rng(2)
    bump = lambda k: 1 + 2.0 * np.exp(-(((np.log(k) - np.log(6)) / 0.3) ** 2))  # noqa: E731  (gone by k = 15)
    ps = [(n, (k, m * bump(k), s * bump(k))) for n, (k, m, s) in pilots(rng, noise=0.05, seeds=2)]
    f = forecast_dataset_size(ps, 1e-4, samples_per_k=SPK, num_bootstrap=200)
    assert abs(f.beta - BETA) < 4 * f.beta_stderr + 0.02
    assert abs(f.alpha - ALPHA) < 4 * f.alpha_stderr + 0.02


def test_deltaresult_units_and_cost():
    class Info:
        def __init__(self, spk, draws):
            self.samples_per_k, self.num_draws = spk, draws

    class Res:
        def __init__(self, k, d, s, spk=SPK, draws=64):
            self.k, self.delta, self.stderr, self.info = k, d, s, Info(spk, draws)

    ps = {n: [Res(*c)] for n, c in pilots(np.random.default_rng(3), noise=0.05)}
    f = forecast_dataset_size(ps, [1e-3, 1e-4], epochs=10, num_matvecs=20, num_bootstrap=200)
    assert f.samples_per_k == SPK
    n_sum = sum(SIZES)
    assert f.cost.training == 10 * n_sum and f.cost.curvature == 2 * 20 * n_sum and f.cost.monte_carlo == pytest.approx(64 * n_sum / 3)
    np.testing.assert_allclose(f.cost.ratio, f.cost.pilots / (10 * np.asarray(f.n_star)))
    assert "N*" in f.summary() and f.info["pilot_sizes"] == list(SIZES)
    ps_bad = dict(ps)
    ps_bad[SIZES[0]] = [Res(*pilots(np.random.default_rng(4), sizes=(SIZES[0],))[0][1], spk=1)]
    with pytest.raises(ConfigError, match="inconsistent units"):
        forecast_dataset_size(ps_bad, 1e-3)
    with pytest.raises(ConfigError, match="inconsistent units"):
        forecast_dataset_size(ps, 1e-3, samples_per_k=10)


@pytest.mark.parametrize("case, match", [
    ("two sizes", "too few pilot sizes"),
    ("nan", "non-finite"),
    ("increasing", "do not decrease"),
    ("beyond the pilot", "inconsistent units"),
    ("samples not batches", "inconsistent units"),
    ("bad tol", "tol"),
    ("bad level", "level"),
    ("not a curve", "DeltaResult"),
])
def test_errors_name_the_problem(case, match):
    ps = pilots(np.random.default_rng(5), noise=0.05)
    kw = {"samples_per_k": SPK}
    tol = 1e-3
    if case == "two sizes":
        ps = [p for p in ps if p[0] in SIZES[:2]]
    elif case == "nan":
        k, d, s = ps[1][1]
        ps[1] = (ps[1][0], (k, np.where(k == 3, np.nan, d), s))
    elif case == "increasing":
        ps = [(n, (k, k**1.5, 0.05 * k**1.5)) for n, (k, d, s) in ps]
    elif case == "beyond the pilot":
        ps[0] = (100, ps[0][1])
    elif case == "samples not batches":
        kw = {}
    elif case == "bad tol":
        tol = [1e-3, -1.0]
    elif case == "bad level":
        kw["level"] = 1.5
    elif case == "not a curve":
        ps[0] = (ps[0][0], np.ones(5))
    with pytest.raises(ConfigError, match=match):
        forecast_dataset_size(ps, tol, num_bootstrap=100, **kw)


def test_learning_curve_closed_form_and_errors():
    a, b, c, s = 3.0, 0.5, 0.05, 64
    n = np.repeat([500.0, 1000.0, 2000.0, 4000.0, 8000.0], 2)
    f = learning_curve_size(n, c + a * n**-b, [1e-4, 1e-6], samples_per_k=s, num_bootstrap=100)
    np.testing.assert_allclose([f.a, f.b, f.c], [a, b, c], rtol=1e-4, atol=1e-6)
    for t, n_hat in zip([1e-4, 1e-6], f.n):  # the first n where one more batch changes the loss by less than sqrt(tol)
        change = lambda m: a * (m**-b - (m + s) ** -b)  # noqa: E731
        assert change(n_hat) < math.sqrt(t) <= change(n_hat - 1)
    rel = learning_curve_size(n, c + a * n**-b, 1e-4, samples_per_k=s, relative_to=5.0, num_bootstrap=100)
    m = rel.n
    assert a * (m**-b - (m + s) ** -b) / (c + a * m**-b) < math.sqrt(1e-4) / 5.0
    with pytest.raises(ConfigError, match="too few dataset sizes"):
        learning_curve_size([100, 100, 200], [1.0, 1.1, 0.9], 1e-3)
    with pytest.raises(ConfigError, match="finite"):
        learning_curve_size([100, 200, 400], [1.0, np.nan, 0.9], 1e-3)
