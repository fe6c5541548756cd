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

Dataset size (``dataset_size``): pilots whose landscape sharpens as N falls,
``Delta_k^(N) = C N^beta k^-alpha e^eta_c s_k`` with ``beta < 0``, a
retraining spread ``eta_c ~ N(0, omega^2)``, a multiplicative fluctuation
``s_k`` shared by every pilot (the same samples enter at k; log-normal) and
Gaussian noise of known standard error, at sizes 1,000-8,000 (k in batches of
64) with two trainings each, forecast by
:func:`jaxland.sample_size.dataset_size.forecast_dataset_size`. Truths for a
new network (its own eta): ``N*`` of the trend in closed form, K of the trend
at ``n_target``, and Definition 4 measured on a simulated ``n_target``
curve (with the same shared fluctuation, its own noise). The largest pilot
alone (:func:`~jaxland.sample_size.forecast.forecast_sufficient_k`) is scored on
the same measured K.

Run: ``python -m benchmarks.forecast_coverage`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

import jaxland as jl
from jaxland.sample_size.dataset_size import forecast_dataset_size
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


DS_SIZES, DS_SPK, DS_TRIALS, DS_BOOT = (1000, 2000, 4000, 8000), 64, 80, 300
DS_SETTINGS = [
    dict(beta=-0.5, noise=0.1, omega=0.0, shared=0.0, n_target=60000),
    dict(beta=-0.5, noise=0.3, omega=0.15, shared=0.0, n_target=60000),
    dict(beta=-0.25, noise=0.1, omega=0.15, shared=0.3, n_target=60000),
    dict(beta=-0.5, noise=0.2, omega=0.1, shared=0.3, n_target=30000),
]


def dataset_size_coverage(beta: float, noise: float, omega: float, shared: float, n_target: int, rng) -> dict:
    """Coverage of forecast_dataset_size's intervals where the truth is known (module docstring)."""
    c, alpha, spk = 3000.0, 2.0, DS_SPK
    k_t = np.arange(1, n_target // spk, dtype=float)
    log_c_t = np.log(c) + beta * np.log(n_target)
    # tolerances where the target's trend crosses at 1/8, 1/4 and 1/2 of its k
    tols = np.exp(log_c_t - alpha * np.log(k_t[-1] * np.array([0.125, 0.25, 0.5])))
    hit = {m: [] for m in ("n_star_trend", "k_trend", "k_measured", "single")}
    ratio, ratio_single, t0 = [], [], time.perf_counter()
    for t in range(DS_TRIALS):
        fluct = np.exp(shared * rng.standard_normal(k_t.size))  # shared by every network: the same samples enter at each k
        pil = []
        for n in DS_SIZES:
            k = np.arange(1, n // spk, dtype=float)
            for _ in range(2):
                m = c * n**beta * k**-alpha * np.exp(omega * rng.standard_normal()) * fluct[: k.size]
                pil.append((n, (k, m + noise * m * rng.standard_normal(k.size), noise * m)))
        eta = omega * rng.standard_normal()  # the network trained on n_target
        m_t = np.exp(log_c_t + eta) * k_t**-alpha * fluct
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            meas = np.array([jl.sufficient_k(m_t * (1 + noise * rng.standard_normal(k_t.size)), tol, k=k_t) or np.nan for tol in tols], float)
        f = forecast_dataset_size(pil, tols, samples_per_k=spk, n_target=n_target, num_bootstrap=DS_BOOT, seed=t)
        n_true = np.exp(((np.log(c) + eta - np.log(tols)) / alpha + np.log(spk)) / (1 - beta / alpha))
        k_true = power_law_k(log_c_t + eta, alpha, tols)
        hit["n_star_trend"].append((f.lower_trend <= n_true) & (n_true <= f.upper_trend))
        hit["k_trend"].append((f.k_lower_trend <= k_true) & (k_true <= f.k_upper_trend))
        hit["k_measured"].append(np.where(np.isnan(meas), np.nan, (f.k_lower <= meas) & (meas <= f.k_upper)))
        ratio.append(f.k_target / meas)
        big = pil[-2][1]
        try:
            g = forecast_sufficient_k((big[0], big[1]), list(tols), stderr=big[2], level=LEVEL, num_bootstrap=DS_BOOT, seed=t)
            hit["single"].append(np.where(np.isnan(meas), np.nan, (g.lower_scatter <= meas) & (meas <= g.upper_scatter)))
            ratio_single.append(g.k_scatter / meas)
        except jl.ConfigError:
            hit["single"].append(np.full(tols.size, np.nan))
    cov = {m: np.nanmean(np.asarray(v, float), 0).round(3).tolist() for m, v in hit.items()}
    return {
        "beta": beta, "noise": noise, "omega": omega, "shared": shared, "n_target": n_target, "alpha": alpha, "C": c,
        "pilot_sizes": list(DS_SIZES), "seeds_per_size": 2, "tols": tols.tolist(), "k_true_trend": power_law_k(log_c_t, alpha, tols).tolist(),
        "coverage": cov, "median_ratio_measured": np.nanmedian(np.asarray(ratio, float), 0).round(3).tolist(),
        "median_ratio_single": np.nanmedian(np.asarray(ratio_single, float), 0).round(3).tolist() if ratio_single else None,
        "s_per_call": (time.perf_counter() - t0) / DS_TRIALS,
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
    ds_rows = []
    for s in DS_SETTINGS:
        ds_rows.append(dataset_size_coverage(**s, rng=rng))
        r = ds_rows[-1]
        print(f"dataset size, beta {r['beta']} noise {r['noise']} omega {r['omega']} shared {r['shared']}: coverage {r['coverage']}, "
              f"median K forecast / measured {r['median_ratio_measured']} (largest pilot alone {r['median_ratio_single']})")
    per_trial = float(np.mean([r["batched_s_per_trial"] for r in rows]))
    per_call = float(np.mean([r["public_call_s"] for r in rows]))
    write_result("forecast_coverage", {
        "model": {"C": C, "alpha": ALPHA, "level": LEVEL, "trials": TRIALS, "num_bootstrap": BOOT,
                  "tail_rule": "k >= k_max / 4", "noise": "s_k = noise * C k^-alpha, Gaussian"},
        "coverage_se": float(np.sqrt(LEVEL * (1 - LEVEL) / TRIALS)),
        "trend": rows,
        "scatter": sc,
        "dataset_size": {"trials": DS_TRIALS, "num_bootstrap": DS_BOOT, "coverage_se": float(np.sqrt(LEVEL * (1 - LEVEL) / DS_TRIALS)),
                         "settings": ds_rows},
        "time": {"batched_s_per_trial": per_trial, "public_call_s": per_call, "ratio_call_over_batched": per_call / per_trial,
                 "total_s": time.perf_counter() - t0},
        "load_average": {"start": load0, "end": os.getloadavg()},
    })


if __name__ == "__main__":
    main()
