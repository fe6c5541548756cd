"""Forecast the sufficient sample size K beyond the data at hand.

Definition 4 (docs/reference.md): ``K = min{k : Delta_k' < tol for every k' >= k}``.
:func:`jaxland.sufficient_k` finds it inside an observed curve;
:func:`forecast_sufficient_k` extrapolates it from the decay of the curve's
settled tail, fitted as a power law

    Delta_k = C k^(-alpha),

so that for ``alpha > 0`` the curve falls below ``tol`` for good at
``k* = (C / tol)^(1/alpha)`` and ``K = floor(k*) + 1`` (k counts samples or
batches, whatever the curve counts).

Fit (:mod:`jaxland.sample_size.fit`). With standard errors ``s_k`` (Monte
Carlo, :class:`DeltaResult`) the fit minimises
``chi^2 = sum_k ((Delta_k - C k^-alpha) / s_k)^2``, widened by a relative
scatter ``tau`` where the curve scatters around its trend by more than its
standard errors (``chi^2 / (n - 2) > 1``). Without standard errors (a theory
curve) it is the least-squares line ``log Delta_k = log C - alpha log k``.

Interval. A parametric bootstrap: ``B`` curves ``m_k + sqrt(s_k^2 + tau^2 m_k^2) z``
(or, without standard errors, log-curves ``log C^ - alpha^ log k + r z``)
are refitted and ``K`` recomputed; the interval is the central ``level``
quantile range, so it carries the Monte Carlo error, the scatter and the fit
error. The draws of a Monte Carlo estimate are shared by every k, so its errors
are correlated across k; the bootstrap treats them as independent. Measured
coverage of the nominal 90% interval (``benchmarks/forecast_coverage.py``, 200
synthetic power laws per setting): 0.89-0.985 with independent Gaussian errors
(relative noise 0.05-0.3, 31-121 fitted k, K 2-20x beyond the data); 0.69 /
0.86 / 0.94 at 2 / 5 / 20x with errors equicorrelated at 0.5.

Definition 4 on a scattered curve (:mod:`jaxland.sample_size.scatter`): a
curve that keeps scattering around its trend last exceeds tol after the
trend crosses it; ``k_scatter`` and its interval model that from the observed
residual ratios, mixed over the bootstrap fits.

Tail rule. The fit uses ``k >= tail * k_max`` (default ``tail = 0.25``, the
last factor of four in k, where the transient of the first few samples has
passed), at least ``min_points`` (default 5) values of k.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from .. import memory
from ..errors import ConfigError
from ..validate import check_real, check_seed, positive_int, warn
from .fit import bootstrap_power_law, covariance, effective_stderr, fit_power_law_tail, k_interval, loglog_fit, power_law_k
from .scatter import scatter_k

__all__ = ["KForecast", "forecast_sufficient_k", "power_law_k", "POOR_FIT_P", "POOR_FIT_CHI2"]

# A weighted fit whose chi-square p-value is below POOR_FIT_P with a reduced chi-square above POOR_FIT_CHI2
# warns: the standard errors do not explain the residuals and the scatter model carries the interval.
POOR_FIT_P = 1e-3
POOR_FIT_CHI2 = 2.0


class KForecast(NamedTuple):
    """A forecast of Definition 4's K; arrays have one entry per tolerance (scalars for one ``tol``).

    ``k``: predicted K, where the fitted power law crosses tol (``inf`` if
    it never does); ``lower``, ``upper``: its ``level`` interval;
    ``k_scatter``, ``lower_scatter``, ``upper_scatter``: Definition 4 on a
    curve that scatters around the power law like the observed tail (median,
    and ``level`` interval including the fit error): later than ``k``, since
    a scattered curve last exceeds tol after its trend crosses it; ``alpha``, ``alpha_stderr``:
    fitted exponent of ``Delta_k = C k^-alpha``; ``log_c``, ``log_c_stderr``;
    ``chi2_reduced``: ``chi^2 / (n - 2)`` of the fit (about 1 when the power
    law explains the curve within its standard errors; with no standard errors
    the residual variance of log Delta_k); ``gof_p``: the chi-square
    p-value of that fit (NaN without standard errors); ``scatter``: the
    relative scatter ``tau`` of the curve around the power law beyond its
    standard errors (without them, the standard deviation of the log
    residuals); ``extrapolation``:
    ``k / k_max`` observed; ``far``: extrapolation beyond ``max_extrapolation``;
    ``k_fit``: (first, last) k of the fitted tail; ``num_fit``: number of
    points; ``unit``: what k counts.
    """

    tol: np.ndarray | float
    k: np.ndarray | float
    lower: np.ndarray | float
    upper: np.ndarray | float
    k_scatter: np.ndarray | float
    lower_scatter: np.ndarray | float
    upper_scatter: np.ndarray | float
    level: float
    alpha: float
    alpha_stderr: float
    log_c: float
    log_c_stderr: float
    chi2_reduced: float
    gof_p: float
    scatter: float
    extrapolation: np.ndarray | float
    far: np.ndarray | bool
    k_fit: tuple
    num_fit: int
    unit: str

    @property
    def info(self) -> dict:
        """The fit's settings and diagnostics: ``level``, ``k_fit``, ``num_fit``, ``gof_p``, ``scatter``, ``unit``."""
        return {"level": self.level, "k_fit": self.k_fit, "num_fit": self.num_fit, "gof_p": self.gof_p,
                "scatter": self.scatter, "unit": self.unit}


# ----------------------------------------------------------------------------- inputs


_NOT_CURVES = ("k", "info", "ritz_values", "eigenvalues", "sigma", "samples_per_k", "batch_size", "unit")


def _curve(curve, k, stderr, which):
    """(k, values, stderr or None, unit) from a DeltaResult, a TheoryResult, a (k, values) pair or an array."""
    unit = "k"
    if isinstance(curve, tuple) and len(curve) == 2 and not hasattr(curve, "_fields"):
        k, values = curve
    elif hasattr(curve, "delta") and hasattr(curve, "stderr") and hasattr(curve, "k"):  # DeltaResult
        if which is not None:
            raise ConfigError(f"curve_name={which!r} selects a theory curve; a Monte Carlo result has one curve: drop curve_name=")
        k, values, unit = curve.k, curve.delta, curve.unit
        stderr = curve.stderr if stderr is None else stderr
    elif hasattr(curve, "_fields") and "k" in curve._fields:  # TheoryResult: pick one of its curves
        names = [f for f in curve._fields if f not in _NOT_CURVES and np.ndim(getattr(curve, f)) == 1]
        which = which or next((f for f in ("theorem1", "paper") if f in names), None)
        if which not in names:
            raise ConfigError(f"curve_name={which!r} is not a curve of this result; choose one of {names}")
        k, values, unit = curve.k, getattr(curve, which), curve.unit
    else:
        values = curve
    values = _floats("curve (the Delta_k values)", values)
    if values.ndim != 1 or values.size == 0:
        raise ConfigError(f"the Delta_k curve must be a non-empty 1-D array, got shape {values.shape}")
    k = np.arange(1, values.size + 1, dtype=float) if k is None else _floats("k", k)
    if k.shape != values.shape:
        raise ConfigError(f"k has shape {k.shape} but the curve has {values.shape}; pass one k per value")
    if stderr is not None:
        stderr = _floats("stderr", stderr)
        if stderr.shape != values.shape:
            raise ConfigError(f"stderr has shape {stderr.shape} but the curve has {values.shape}")
    return k, values, stderr, unit


def _floats(name, a) -> np.ndarray:
    """``a`` as a float64 array; a :class:`ConfigError` naming ``name`` when it is no array of real numbers."""
    try:
        out = np.asarray(a, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an array of real numbers, got {type(a).__name__}") from None
    if np.iscomplexobj(a):
        raise ConfigError(f"{name} must be real, got complex values")
    return out


def _check_tol(tol):
    try:
        t = np.asarray(tol, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"tol must be a positive number or a sequence of them, got {tol!r}") from None
    if t.ndim > 1 or t.size == 0 or not np.all(np.isfinite(t) & (t > 0)):
        raise ConfigError(f"tol must be positive finite number(s), got {tol!r}")
    return t


# ----------------------------------------------------------------------------- forecast


def forecast_sufficient_k(
    curve,
    tol,
    *,
    k=None,
    stderr=None,
    curve_name: str | None = None,
    tail: float = 0.25,
    k_min: float | None = None,
    min_points: int = 5,
    level: float = 0.9,
    num_bootstrap: int = 2000,
    max_extrapolation: float = 5.0,
    seed: int = 0,
) -> KForecast:
    """Forecast Definition 4's ``K(tol)`` from the power-law decay of the tail of a ``Delta_k`` curve.

    Args:
      curve: a :class:`DeltaResult` (its ``k``, ``delta``, ``stderr``, ``unit``
        are used), a :class:`TheoryResult` (pick the curve with
        ``curve_name``: the paper's ``"theorem1"`` (default), ``"second_order"``
        or ``"curvature_only"``),
        a ``(k, values)`` pair, or a 1-D array of values (at ``k``, default
        1..n). Same units as :func:`jaxland.sufficient_k`.
      tol: a tolerance or a sequence of them.
      stderr: standard errors of the values (taken from a DeltaResult); without
        them the fit is the least-squares log-log line.
      tail: fit only ``k >= tail * k_max`` (``k_min`` overrides it).
      min_points: fewest values of k the fit accepts.
      level: coverage of the interval; ``num_bootstrap`` refits make it.
      max_extrapolation: ``far`` is set where the forecast exceeds this many
        times the largest observed k.
      seed: the bootstrap's numpy seed (the same seed gives the same interval).

    Raises :class:`ConfigError` when no decay can be fitted: NaN or infinite
    values, values exactly 0 in the fitted tail (with or without standard
    errors), too few k in the tail, non-positive standard errors, or a tail
    that does not decrease (fitted ``alpha <= 0``). A ``RuntimeWarning`` says
    when a weighted fit is poor (chi-square p-value below
    :data:`POOR_FIT_P` and reduced chi-square above :data:`POOR_FIT_CHI2`).
    """
    kk, d, s, unit = _curve(curve, k, stderr, curve_name)
    tols = _check_tol(tol)
    level = check_real("level", level)
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    min_points = positive_int("min_points (a line and its scatter need 3)", min_points, minimum=3)
    num_bootstrap = positive_int("num_bootstrap", num_bootstrap, minimum=100)
    max_extrapolation = check_real("max_extrapolation", max_extrapolation)
    seed = check_seed(seed)
    tail = check_real("tail", tail, positive=False)
    k_min = None if k_min is None else check_real("k_min", k_min)
    bad = ~np.isfinite(d) | (~np.isfinite(s) if s is not None else False)
    if bad.any():
        raise ConfigError(
            f"the curve has {int(bad.sum())} non-finite value(s) or standard error(s) (first at k={kk[bad][0]:g}); "
            "no decay can be fitted through NaN: recompute the curve or drop those k"
        )
    if np.any(kk <= 0):
        raise ConfigError("every k must be positive (a power law in k needs log k)")
    lo = float(k_min) if k_min is not None else float(tail) * float(kk.max())
    if k_min is None and not 0 <= tail < 1:
        raise ConfigError(f"tail must be in [0, 1), got {tail}")
    sel = kk >= lo
    n = int(sel.sum())
    if n < min_points:
        raise ConfigError(
            f"too few k to fit a decay: {n} value(s) with k >= {lo:g} (k_max = {kk.max():g}), need min_points={min_points}; "
            "use more data, a smaller tail fraction or a smaller k_min"
        )
    kt, dt = kk[sel], d[sel]
    logk = np.log(kt)
    zero = dt == 0
    if zero.any():
        raise ConfigError(
            f"the fitted tail has {int(zero.sum())} value(s) exactly 0 (first at k={kt[zero][0]:g}): an estimate of "
            "Delta_k is never exactly 0 unless it underflowed or the curve was truncated, and a power law "
            "cannot pass through it (a zero would pull the fit down and the forecast early); "
            "drop those k (pass the curve up to the last nonzero value) or recompute them"
        )
    if s is not None:
        st = s[sel]
        if np.any(st <= 0):
            raise ConfigError("standard errors must be > 0 in the fitted tail (pass stderr=None for an unweighted log-log fit)")
        if (dt > 0).sum() < 2:
            raise ConfigError(f"the tail k in [{kt[0]:g}, {kt[-1]:g}] has fewer than two positive values: no decay to fit")
        a, alpha, chi2_red, scatter = (float(v) for v in fit_power_law_tail(logk, dt, st))
        gof_p = float(stats.chi2.sf(chi2_red * (n - 2), n - 2))
        if gof_p < POOR_FIT_P and chi2_red > POOR_FIT_CHI2:
            warn(
                f"the power law fits the tail k in [{kt[0]:g}, {kt[-1]:g}] poorly: reduced chi-square {chi2_red:.3g} "
                f"on {n - 2} degrees of freedom (p = {gof_p:.2g}); the interval is widened by a relative scatter "
                f"tau = {scatter:.3g}, which holds only if the curve scatters randomly around a power law; look at "
                "the curve (a bend or a step in the tail makes the forecast wrong) and choose a later tail"
            )
        se_eff = effective_stderr(logk, st, a, alpha, scatter)
        cov = covariance(logk, se_eff, a, alpha)
    else:
        if np.any(dt <= 0):
            raise ConfigError(
                f"without standard errors the fit is on log Delta_k, but the tail has {int((dt <= 0).sum())} value(s) <= 0; "
                "pass stderr= or a later tail"
            )
        a, alpha = (float(v) for v in loglog_fit(logk, np.log(dt), np.ones_like(dt)))
        resid = np.log(dt) - (a - alpha * logk)
        chi2_red = float(resid @ resid / (n - 2))
        gof_p = float("nan")
        scatter = math.sqrt(chi2_red)
        x = np.stack([np.ones_like(logk), -logk], 1)
        cov = np.linalg.inv(x.T @ x) * chi2_red
    if not alpha > 0:
        raise ConfigError(
            f"the tail k in [{kt[0]:g}, {kt[-1]:g}] does not decrease: fitted Delta_k ~ k^(-alpha) with alpha = {alpha:.3g} <= 0; "
            "a sufficient sample size cannot be forecast from it (use more data or a later tail)"
        )

    # parametric bootstrap: refit B synthetic curves drawn around the fit (a few (B, n) float64 arrays at once)
    memory.require(f"forecast_sufficient_k (num_bootstrap={num_bootstrap}, {n} k)",
                   {"bootstrap curves (about 8 x B x n)": 8 * memory.nbytes((num_bootstrap, n), np.float64)},
                   fix="use a smaller num_bootstrap", device="host")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((int(num_bootstrap), n))
    if s is not None:
        a_b, al_b = bootstrap_power_law(logk, st, a, alpha, scatter, z)
    else:
        a_b, al_b = loglog_fit(logk, (a - alpha * logk) + scatter * z, np.ones_like(z))
    tols1 = np.atleast_1d(tols)
    k_hat = power_law_k(a, alpha, tols1)
    lower, upper = k_interval(a_b, al_b, tols1, level)
    # Definition 4 on a curve that scatters like this one: residual ratios D_k / m_k resampled along k
    k_sc, lower_sc, upper_sc = scatter_k(a, alpha, a_b, al_b, tols1, dt / np.exp(a - alpha * logk), level)
    kmax = float(kk.max())
    extrap = np.asarray(k_hat) / kmax
    scalar = np.ndim(tol) == 0

    def out(v):
        v = np.asarray(v)
        return v.reshape(-1)[0].item() if scalar else v

    return KForecast(
        tol=out(tols),
        k=out(k_hat),
        lower=out(lower),
        upper=out(upper),
        k_scatter=out(k_sc),
        lower_scatter=out(lower_sc),
        upper_scatter=out(upper_sc),
        level=float(level),
        alpha=alpha,
        alpha_stderr=float(math.sqrt(cov[1, 1])),
        log_c=a,
        log_c_stderr=float(math.sqrt(cov[0, 0])),
        chi2_reduced=float(chi2_red),
        gof_p=gof_p,
        scatter=float(scatter),
        extrapolation=out(extrap),
        far=out(extrap > max_extrapolation),
        k_fit=(float(kt[0]), float(kt[-1])),
        num_fit=n,
        unit=unit,
    )
