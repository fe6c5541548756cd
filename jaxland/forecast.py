"""Forecast the sufficient sample size K beyond the data at hand.

Definition 4 (REFERENCE.md): ``K = min{k : Delta_k' < tol for every k' >= k}``.
:func:`jaxland.sufficient_k` finds it inside an observed curve;
:func:`forecast_sufficient_k` extrapolates it from the decay of the curve's
settled tail, fitted as a power law

    Delta_k = C k^(-alpha),

so that for ``alpha > 0`` the curve falls below ``tol`` for good at
``k* = (C / tol)^(1/alpha)`` and ``K = floor(k*) + 1`` (k counts samples or
batches, whatever the curve counts).

Fit. With standard errors ``s_k`` (Monte Carlo, :class:`DeltaResult`) the fit
minimises ``chi^2 = sum_k ((Delta_k - C k^-alpha) / s_k)^2`` (Gauss-Newton with
Levenberg damping, started from the weighted log-log line): the maximum
likelihood fit for Gaussian errors of known size, defined also where a noisy
``Delta_k`` is <= 0. Without standard errors (a theory curve) it is the
least-squares line ``log Delta_k = log C - alpha log k``.

Scatter. A real curve scatters around any smooth trend by more than its
Monte Carlo error (each k adds one particular sample or batch). When
``chi^2 / (n - 2) > 1`` the errors become ``sqrt(s_k^2 + tau^2 m_k^2)`` with
``m_k`` the fitted curve and ``tau`` (the relative scatter) set so that
``chi^2 = n - 2``; the fit is redone with those weights.

Interval. A parametric bootstrap: ``B`` curves ``m_k + sqrt(s_k^2 + tau^2 m_k^2) z``
(or, without standard errors, log-curves ``log C^ - alpha^ log k + r z``)
are refitted and ``K`` recomputed; the interval is the central ``level``
quantile range, so it carries the Monte Carlo error, the scatter and the fit
error. The draws of a Monte Carlo estimate are shared by every k, so its errors
are correlated across k; the bootstrap treats them as independent.

Definition 4 on a scattered curve. The trend crossing ``K`` is where the
fitted curve falls below tol; a real curve keeps scattering around its trend,
so Definition 4 measured on it ("below tol for every later k") lands later.
With the observed ratios ``r_j = Delta_j / m_j`` of the tail resampled
independently along k, ``P(Delta_k' < tol for every k' >= k) =
prod_{k' >= k} (1 - #{j : m_k' r_j >= tol} / n)``, computed exactly as a sum
over n segments of k; mixed over the bootstrap fits it gives ``k_scatter``
(median at the fit) and its interval.

Tail rule. The fit uses ``k >= tail * k_max`` (default ``tail = 0.25``, the
last factor of four in k, where the transient of the first few samples has
passed), at least ``min_points`` (default 5) values of k.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from .errors import ConfigError

__all__ = ["KForecast", "forecast_sufficient_k", "power_law_k"]


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


def power_law_k(log_c, alpha, tol):
    """Definition 4 for ``Delta_k = exp(log_c) k^-alpha``: ``floor((C/tol)^(1/alpha)) + 1`` (at least 1; inf if alpha <= 0)."""
    try:
        log_c, alpha, tol = np.broadcast_arrays(np.asarray(log_c, float), np.asarray(alpha, float), np.asarray(tol, float))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"log_c, alpha and tol must be numbers or broadcastable arrays ({e})") from None
    if not np.all(np.isfinite(tol) & (tol > 0)):
        raise ConfigError(f"tol must be positive finite number(s), got {tol.tolist()}")
    if not (np.all(np.isfinite(log_c)) and not np.any(np.isnan(alpha))):
        raise ConfigError(f"log_c must be finite and alpha not NaN, got log_c={log_c.tolist()}, alpha={alpha.tolist()}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_k = (log_c - np.log(tol)) / alpha
        k = np.floor(np.exp(np.minimum(log_k, 700.0))) + 1.0
    k = np.where(alpha > 0, np.maximum(k, 1.0), np.inf)
    return k if k.ndim else float(k)


# ----------------------------------------------------------------------------- fitting


def _loglog_fit(logk, logd, wts):
    """Weighted least-squares line ``logd = a - alpha logk`` over the last axis; returns (a, alpha)."""
    sw, swx, swy = wts.sum(-1), (wts * logk).sum(-1), (wts * logd).sum(-1)
    swxx, swxy = (wts * logk * logk).sum(-1), (wts * logk * logd).sum(-1)
    det = sw * swxx - swx**2
    slope = (sw * swxy - swx * swy) / det
    a = (swy - slope * swx) / sw
    return a, -slope


def _chi2(logk, d, s, a, alpha):
    m = np.exp(a[..., None] - alpha[..., None] * logk)
    return (((d - m) / s) ** 2).sum(-1)


def _power_law_fit(logk, d, s, a, alpha, iters: int = 60):
    """Minimise ``sum ((d - exp(a - alpha logk)) / s)^2`` over (a, alpha), batched over leading axes.

    Levenberg-Marquardt from the start (a, alpha): each batch member keeps its
    own damping, accepts a step only if chi^2 falls.
    """
    a, alpha = np.array(a, float), np.array(alpha, float)
    lam = np.full(a.shape, 1e-3)
    conv = np.zeros(a.shape, bool)
    chi = _chi2(logk, d, s, a, alpha)
    for _ in range(iters):
        m = np.exp(a[..., None] - alpha[..., None] * logk)
        r = (d - m) / s
        ja, jb = m / s, -m * logk / s  # d model / d(a, alpha), scaled by 1/s
        haa, hab, hbb = (ja * ja).sum(-1), (ja * jb).sum(-1), (jb * jb).sum(-1)
        ga, gb = (ja * r).sum(-1), (jb * r).sum(-1)
        haa_d, hbb_d = haa * (1 + lam), hbb * (1 + lam)
        det = haa_d * hbb_d - hab**2
        with np.errstate(divide="ignore", invalid="ignore"):
            da = (hbb_d * ga - hab * gb) / det
            db = (haa_d * gb - hab * ga) / det
        na, nb = a + da, alpha + db
        with np.errstate(over="ignore", invalid="ignore"):
            new = _chi2(logk, d, s, na, nb)
        ok = np.isfinite(new) & (new <= chi)
        a, alpha, chi = np.where(ok, na, a), np.where(ok, nb, alpha), np.where(ok, new, chi)
        lam = np.where(ok, lam * 0.3, lam * 10.0)
        conv = conv | (ok & (np.maximum(np.abs(da), np.abs(db)) < 1e-9))
        if np.all(conv | (lam > 1e12)):
            break
    return a, alpha, chi


def _fit_scatter(logk, d, s, a, alpha, chi2_red, rounds: int = 6):
    """Refit with errors ``sqrt(s_k^2 + tau^2 m_k^2)``, ``tau`` such that chi^2 = n - 2; returns (a, alpha, tau).

    ``tau`` is the relative scatter of the curve around the power law beyond
    its standard errors (0 when the standard errors explain the residuals).
    The weights use the model ``m_k``, not the observed values, so low points
    do not pull the fit down.
    """
    if chi2_red <= 1:
        return a, alpha, 0.0
    dof = logk.size - 2
    tau = 0.0
    for _ in range(rounds):
        m = np.exp(a - alpha * logk)
        r2 = (d - m) ** 2
        lo, hi = -12.0, 6.0  # bisection on log tau: sum r2 / (s^2 + tau^2 m^2) falls with tau
        for _ in range(60):
            mid = (lo + hi) / 2
            if np.sum(r2 / (s**2 + (math.exp(mid) * m) ** 2)) > dof:
                lo = mid
            else:
                hi = mid
        tau = math.exp((lo + hi) / 2)
        a, alpha, _ = (float(v) for v in _power_law_fit(logk, d, np.sqrt(s**2 + (tau * m) ** 2), np.asarray(a), np.asarray(alpha)))
    return a, alpha, tau


def _exceedance_bounds(a, alpha, tols, ratios):
    """Sorted ``u_j = floor(t_j)``, (B, ntol, n): ``m(k) ratio_j >= tol`` exactly for ``k <= t_j``.

    ``m(k) = exp(a - alpha log k)``; a ratio <= 0 never exceeds (u = 0); a
    non-decaying fit (alpha <= 0) always exceeds (u = inf).
    """
    a, alpha = a[:, None, None], alpha[:, None, None]
    r = ratios[None, None, :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_t = (a + np.log(np.where(r > 0, r, 1.0)) - np.log(tols)[None, :, None]) / alpha
        u = np.floor(np.exp(np.minimum(log_t, 35.0)))  # 35: beyond 1e15 k the count does not matter
    u = np.where(r > 0, np.maximum(u, 0.0), 0.0)
    u = np.where(alpha > 0, u, np.inf)
    return np.sort(u, axis=-1)


def _log_prob_settled(u, k):
    """``log P(Delta_k' < tol for every k' >= k)`` (B, ntol) for i.i.d. ratios drawn from the n observed ones.

    At integer ``k'`` a fraction ``#{j : u_j >= k'} / n`` of the ratios exceeds
    tol; between consecutive sorted ``u`` that fraction is constant, so the
    sum over ``k' >= k`` of ``log(1 - fraction)`` is a sum over n segments.
    """
    n = u.shape[-1]
    never = np.isinf(u).any(-1)
    u = np.where(np.isinf(u), 0.0, u)
    lo = np.concatenate([np.zeros(u.shape[:-1] + (1,)), u[..., :-1]], axis=-1)
    seg = np.maximum(0.0, u - np.maximum(lo, k[..., None] - 1.0))  # integers k' >= k in (u_(i-1), u_(i)]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.log(np.arange(n) / n)  # i ratios below tol: log(i / n); i = 0 -> -inf
        terms = np.where(seg > 0, seg * log_p, 0.0)
    return np.where(never, -np.inf, terms.sum(-1))


def _mixture_quantile(u, q):
    """Smallest integer k with ``mean_b P_b(K <= k) >= q`` for each tolerance (inf if none below 1e15)."""
    ntol = u.shape[1]
    lo, hi = np.zeros(ntol), np.full(ntol, 1e15)
    for _ in range(60):  # bisection over integers: F(lo) < q <= F(hi)
        mid = np.floor((lo + hi) / 2)
        f = np.exp(_log_prob_settled(u, np.broadcast_to(mid, u.shape[:2]))).mean(0)
        lo, hi = np.where(f >= q, lo, mid), np.where(f >= q, mid, hi)
        if np.all(hi - lo <= 1):
            break
    f_top = np.exp(_log_prob_settled(u, np.broadcast_to(hi, u.shape[:2]))).mean(0)
    return np.where(f_top >= q, np.maximum(hi, 1.0), np.inf)


def _covariance(logk, s, a, alpha):
    """Inverse Fisher matrix of (a, alpha) for the chi^2 fit (unscaled)."""
    m = np.exp(a - alpha * logk)
    ja, jb = m / s, -m * logk / s
    h = np.array([[ja @ ja, ja @ jb], [ja @ jb, jb @ jb]])
    return np.linalg.inv(h)


# ----------------------------------------------------------------------------- inputs


_NOT_CURVES = ("k", "info", "ritz_values", "eigenvalues", "sigma", "batch_size", "unit")


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
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ConfigError(f"the Delta_k curve must be a non-empty 1-D array, got shape {values.shape}")
    k = np.arange(1, values.size + 1, dtype=float) if k is None else np.asarray(k, dtype=float)
    if k.shape != values.shape:
        raise ConfigError(f"k has shape {k.shape} but the curve has {values.shape}; pass one k per value")
    if stderr is not None:
        stderr = np.asarray(stderr, dtype=float)
        if stderr.shape != values.shape:
            raise ConfigError(f"stderr has shape {stderr.shape} but the curve has {values.shape}")
    return k, values, stderr, unit


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
    values, too few k in the tail, non-positive standard errors, or a tail
    that does not decrease (fitted ``alpha <= 0``).
    """
    kk, d, s, unit = _curve(curve, k, stderr, curve_name)
    tols = _check_tol(tol)
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    if int(min_points) != min_points or min_points < 3:
        raise ConfigError(f"min_points must be an integer >= 3 (a line and its scatter), got {min_points}")
    if int(num_bootstrap) != num_bootstrap or num_bootstrap < 100:
        raise ConfigError(f"num_bootstrap must be an integer >= 100, got {num_bootstrap}")
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
    if s is not None:
        st = s[sel]
        if np.any(st <= 0):
            raise ConfigError("standard errors must be > 0 in the fitted tail (pass stderr=None for an unweighted log-log fit)")
        pos = dt > 0
        if pos.sum() < 2:
            raise ConfigError(f"the tail k in [{kt[0]:g}, {kt[-1]:g}] has fewer than two positive values: no decay to fit")
        w0 = np.where(pos, (np.where(pos, dt, 1.0) / st) ** 2, 0.0)
        a0, al0 = _loglog_fit(logk, np.log(np.where(pos, dt, 1.0)), w0)
        a, alpha, chi = (float(v) for v in _power_law_fit(logk, dt, st, np.asarray(a0), np.asarray(al0)))
        dof = n - 2
        chi2_red = chi / dof
        gof_p = float(stats.chi2.sf(chi, dof))
        a, alpha, scatter = _fit_scatter(logk, dt, st, a, alpha, chi2_red)
        se_eff = np.sqrt(st**2 + (scatter * np.exp(a - alpha * logk)) ** 2)
        cov = _covariance(logk, se_eff, a, alpha)
    else:
        if np.any(dt <= 0):
            raise ConfigError(
                f"without standard errors the fit is on log Delta_k, but the tail has {int((dt <= 0).sum())} value(s) <= 0; "
                "pass stderr= or a later tail"
            )
        a, alpha = (float(v) for v in _loglog_fit(logk, np.log(dt), np.ones_like(dt)))
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

    # parametric bootstrap: refit B synthetic curves drawn around the fit
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((int(num_bootstrap), n))
    if s is not None:
        sim = np.exp(a - alpha * logk) + se_eff * z
        a_b, al_b = np.full(len(z), a), np.full(len(z), alpha)
        for _ in range(3 if scatter > 0 else 1):
            se_b = np.sqrt(st**2 + (scatter * np.exp(a_b[:, None] - al_b[:, None] * logk)) ** 2)
            a_b, al_b, _ = _power_law_fit(logk, sim, se_b, a_b, al_b)
    else:
        sim = (a - alpha * logk) + scatter * z
        a_b, al_b = _loglog_fit(logk, sim, np.ones_like(sim))
    tols1 = np.atleast_1d(tols)
    k_hat = power_law_k(a, alpha, tols1)
    k_b = power_law_k(a_b[:, None], al_b[:, None], tols1[None, :])  # (B, ntol); inf where a refit does not decay
    q = (1 - level) / 2
    lower = np.quantile(k_b, q, axis=0, method="lower")
    upper = np.quantile(k_b, 1 - q, axis=0, method="higher")
    # Definition 4 on a curve that scatters like this one: residual ratios D_k / m_k resampled along k
    ratios = dt / np.exp(a - alpha * logk)
    u_hat = _exceedance_bounds(np.asarray([a]), np.asarray([alpha]), tols1, ratios)
    k_sc = _mixture_quantile(u_hat, 0.5)
    u_b = _exceedance_bounds(a_b, al_b, tols1, ratios)
    lower_sc, upper_sc = _mixture_quantile(u_b, q), _mixture_quantile(u_b, 1 - q)
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
