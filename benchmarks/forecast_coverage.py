"""Coverage of the forecast interval of K on synthetic power laws with noise of known size.

Trend interval (``KForecast.lower, upper``): curves ``Delta_k = C k^-alpha + s_k z_k``
with ``s_k = noise * C k^-alpha`` and z standard normal, observed for k = 1..k_max
(the fit uses the tail rule's k >= k_max / 4); the true K is Definition 4 on the
noiseless power law (:func:`jaxland.sample_size.forecast.power_law_k`), at tolerances where
it lies 2, 5 and 20 times beyond k_max. 200 trials per setting, the nominal
90% interval; the binomial standard error of a coverage near 0.9 is 0.021.
One setting draws errors correlated across k (as the draws of a Monte Carlo
estimate are shared by every k), which the bootstrap assumes independent.

The trials are fitted together with the building blocks that
:func:`jaxland.sample_size.forecast.forecast_sufficient_k` runs on one curve
(``fit_power_law_tail``, ``bootstrap_power_law``, ``k_interval``) and the same
bootstrap normals (seed = trial index); the first trial of every setting is
checked against the public function, and its per-call time is the baseline.

Scatter interval (``lower_scatter, upper_scatter``): Definition 4 measured on a
5,000-k curve that scatters around its trend (multiplicative chi-square(4)/4
ratios), forecast from its first 100 k through the public function.

Run: ``python -m benchmarks.forecast_coverage`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

import jaxland as jl
from jaxland.sample_size.forecast import forecast_sufficient_k
from jaxland.sample_size.fit import bootstrap_power_law, fit_power_law_tail, k_interval, power_law_k

from .common import write_result

C, ALPHA, LEVEL, TRIALS, BOOT = 3.0, 1.8, 0.9, 200, 400
FACTORS = (2.0, 5.0, 20.0)  # true K / k_max
SETTINGS = [dict(noise=n, k_max=m, corr=0.0) for n in (0.05, 0.15, 0.3) for m in (40, 80, 160)] + [
    dict(noise=0.15, k_max=80, corr=0.5)
]


def _tolerances(k_max):
    """Tolerances at which the true power law crosses FACTORS * k_max."""
    return C * (np.asarray(FACTORS) * k_max) ** -ALPHA


def trend_coverage(noise: float, k_max: int, corr: float, rng) -> dict:
    k = np.arange(1, k_max + 1, dtype=float)
    sel = k >= 0.25 * k_max
    kt, logk = k[sel], np.log(k[sel])
    true = C * kt**-ALPHA
    se = noise * true
    tols = _tolerances(k_max)
    k_true = power_law_k(np.log(C), ALPHA, tols)
    z = rng.standard_normal((TRIALS, kt.size))
    if corr:  # equicorrelated errors: a common part shared by every k
        z = np.sqrt(corr) * rng.standard_normal((TRIALS, 1)) + np.sqrt(1 - corr) * z
    curves = true + se * z
    t0 = time.perf_counter()
    a, alpha, chi2_red, tau = fit_power_law_tail(logk, curves, se)
    lower, upper = np.empty((TRIALS, tols.size)), np.empty((TRIALS, tols.size))
    chunk = max(1, int(2e6 // (BOOT * kt.size)))
    for i in range(0, TRIALS, chunk):
        j = min(TRIALS, i + chunk)
        zb = np.stack([np.random.default_rng(t).standard_normal((BOOT, kt.size)) for t in range(i, j)])
        a_b, al_b = bootstrap_power_law(logk, se, a[i:j], alpha[i:j], tau[i:j], zb)
        lower[i:j], upper[i:j] = k_interval(a_b, al_b, tols, LEVEL)
    batched_s = (time.perf_counter() - t0) / TRIALS
    # the same numbers as the public function (first trial), whose time per call is the baseline
    t0 = time.perf_counter()
    f = forecast_sufficient_k(np.concatenate([np.zeros(int((~sel).sum())) + 1.0, curves[0]]), list(tols), k=k,
                              stderr=np.concatenate([np.ones(int((~sel).sum())), se]), level=LEVEL, num_bootstrap=BOOT, seed=0)
    call_s = time.perf_counter() - t0
    np.testing.assert_allclose([f.alpha, f.log_c], [alpha[0], a[0]], rtol=1e-6)
    np.testing.assert_allclose(np.stack([f.lower, f.upper]), np.stack([lower[0], upper[0]]), rtol=1e-3)
    covered = (lower <= k_true) & (k_true <= upper)
    return {
        "noise": noise, "k_max": k_max, "num_fit": int(kt.size), "corr": corr,
        "extrapolation": list(FACTORS), "k_true": k_true.tolist(),
        "coverage": covered.mean(0).round(4).tolist(),
        "miss_low": (upper < k_true).mean(0).round(4).tolist(),  # interval entirely below the true K
        "miss_high": (lower > k_true).mean(0).round(4).tolist(),
        "median_rel_width": np.median((upper - lower) / k_true, 0).round(3).tolist(),
        "scatter_fitted": float(np.mean(tau > 0)),
        "mean_chi2_reduced": float(np.mean(chi2_red)),
        "batched_s_per_trial": batched_s, "public_call_s": call_s,
    }


def scatter_coverage(rng, trials: int = TRIALS, boot: int = 200) -> dict:
    alpha, k_obs, k_all = 2.0, 100, 5000
    k = np.arange(1, k_all + 1, dtype=float)
    tols = [1e-4, 1e-5]
    hits, hits_trend, t0 = [], [], time.perf_counter()
    for i in range(trials):
        full = C * k**-alpha * rng.chisquare(4, k.size) / 4
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            k_true = np.array([jl.sufficient_k(full, t, k=k) for t in tols], float)
        f = forecast_sufficient_k(full[:k_obs], tols, k=k[:k_obs], stderr=0.05 * full[:k_obs], level=LEVEL, num_bootstrap=boot, seed=i)
        hits.append((f.lower_scatter <= k_true) & (k_true <= f.upper_scatter))
        hits_trend.append((f.lower <= k_true) & (k_true <= f.upper))
    return {
        "curve": f"{C} k^-{alpha} * chi2(4)/4, first {k_obs} of {k_all} k; stderr 0.05 Delta_k",
        "tols": tols, "num_bootstrap": boot,
        "coverage_scatter_interval": np.mean(hits, 0).round(4).tolist(),
        "coverage_trend_interval": np.mean(hits_trend, 0).round(4).tolist(),
        "s_per_call": (time.perf_counter() - t0) / trials,
    }


def main() -> None:
    load0 = os.getloadavg()
    rng = np.random.default_rng(2024)
    t0 = time.perf_counter()
    rows = []
    for s in SETTINGS:
        rows.append(trend_coverage(**s, rng=rng))
        r = rows[-1]
        print(f"noise {r['noise']:.2f} k_max {r['k_max']:4d} corr {r['corr']:.1f}: coverage {r['coverage']} at K/k_max {r['extrapolation']}")
    sc = scatter_coverage(rng)
    print(f"scatter interval on scattered curves: {sc['coverage_scatter_interval']} (trend interval {sc['coverage_trend_interval']})")
    per_trial = float(np.mean([r["batched_s_per_trial"] for r in rows]))
    per_call = float(np.mean([r["public_call_s"] for r in rows]))
    write_result("forecast_coverage", {
        "model": {"C": C, "alpha": ALPHA, "level": LEVEL, "trials": TRIALS, "num_bootstrap": BOOT,
                  "tail_rule": "k >= k_max / 4", "noise": "s_k = noise * C k^-alpha, Gaussian"},
        "coverage_se": float(np.sqrt(LEVEL * (1 - LEVEL) / TRIALS)),
        "trend": rows,
        "scatter": sc,
        "time": {"batched_s_per_trial": per_trial, "public_call_s": per_call, "ratio_call_over_batched": per_call / per_trial,
                 "total_s": time.perf_counter() - t0},
        "load_average": {"start": load0, "end": os.getloadavg()},
    })


if __name__ == "__main__":
    main()
