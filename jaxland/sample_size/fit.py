"""Fit the power law ``Delta_k = C k^(-alpha)`` to the tail of a curve, and refit it on bootstrap curves.

Every function here is batched over leading axes (one curve or many), so a
coverage study can fit many synthetic curves with the same code that
:func:`jaxland.sample_size.forecast.forecast_sufficient_k` runs on one.

Fit. With standard errors ``s_k`` the fit minimises
``chi^2 = sum_k ((Delta_k - C k^-alpha) / s_k)^2`` (Levenberg-Marquardt, started
from the weighted log-log line): the maximum likelihood fit for Gaussian
errors of known size, defined also where a noisy ``Delta_k`` is <= 0.

Scatter. When ``chi^2 / (n - 2) > 1`` the errors become
``sqrt(s_k^2 + tau^2 m_k^2)`` with ``m_k`` the fitted curve and ``tau`` (the
relative scatter of the curve around the power law beyond its standard
errors) set so that ``chi^2 = n - 2``; the fit is redone with those weights.

Bootstrap. Curves ``m_k + sqrt(s_k^2 + tau^2 m_k^2) z`` are refitted the same
way; their crossings of tol give the interval of K.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["power_law_k", "fit_power_law_tail", "bootstrap_power_law", "k_interval"]


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


def loglog_fit(logk, logd, wts):
    """Weighted least-squares line ``logd = a - alpha logk`` over the last axis; returns (a, alpha)."""
    sw, swx, swy = wts.sum(-1), (wts * logk).sum(-1), (wts * logd).sum(-1)
    swxx, swxy = (wts * logk * logk).sum(-1), (wts * logk * logd).sum(-1)
    det = sw * swxx - swx**2
    slope = (sw * swxy - swx * swy) / det
    a = (swy - slope * swx) / sw
    return a, -slope


def _model(logk, a, alpha):
    return np.exp(a[..., None] - alpha[..., None] * logk)


def _chi2(logk, d, s, a, alpha):
    return (((d - _model(logk, a, alpha)) / s) ** 2).sum(-1)


def power_law_fit(logk, d, s, a, alpha, iters: int = 60):
    """Minimise ``sum ((d - exp(a - alpha logk)) / s)^2`` over (a, alpha), batched over leading axes.

    Levenberg-Marquardt from the start (a, alpha): each batch member keeps its
    own damping and accepts a step only if chi^2 falls. Returns (a, alpha, chi^2).
    """
    a, alpha = np.array(a, float), np.array(alpha, float)
    lam = np.full(a.shape, 1e-3)
    conv = np.zeros(a.shape, bool)
    chi = _chi2(logk, d, s, a, alpha)
    for _ in range(iters):
        m = _model(logk, a, alpha)
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


def fit_scatter(logk, d, s, a, alpha, chi2_red, rounds: int = 6):
    """Refit with errors ``sqrt(s_k^2 + tau^2 m_k^2)``, ``tau`` such that chi^2 = n - 2; returns (a, alpha, tau).

    ``tau`` is 0 (and the fit unchanged) where ``chi2_red <= 1``: the standard
    errors explain the residuals. The weights use the model ``m_k``, not the
    observed values, so low points do not pull the fit down.
    """
    need = np.asarray(chi2_red) > 1
    a0, alpha0 = np.asarray(a, float), np.asarray(alpha, float)
    tau = np.zeros(a0.shape)
    if not need.any():
        return a0, alpha0, tau
    dof = logk.shape[-1] - 2
    a, alpha = a0, alpha0
    for _ in range(rounds):
        m = _model(logk, a, alpha)
        r2 = (d - m) ** 2
        lo, hi = np.full(a.shape, -12.0), np.full(a.shape, 6.0)  # bisection on log tau: the sum falls with tau
        for _ in range(60):
            mid = (lo + hi) / 2
            above = (r2 / (s**2 + (np.exp(mid)[..., None] * m) ** 2)).sum(-1) > dof
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        tau = np.exp((lo + hi) / 2)
        a, alpha, _ = power_law_fit(logk, d, np.sqrt(s**2 + (tau[..., None] * m) ** 2), a, alpha)
    return np.where(need, a, a0), np.where(need, alpha, alpha0), np.where(need, tau, 0.0)


def fit_power_law_tail(logk, d, s):
    """Weighted power-law fit with its scatter term over the last axis: (a, alpha, chi2_reduced, tau).

    ``a = log C``; ``chi2_reduced`` is the first fit's ``chi^2 / (n - 2)``
    with the standard errors alone. The start is the log-log line through the
    positive values weighted by ``(Delta_k / s_k)^2``; the caller checks that
    each curve has at least two positive values.
    """
    d = np.asarray(d, float)
    pos = d > 0
    w0 = np.where(pos, (np.where(pos, d, 1.0) / s) ** 2, 0.0)
    a0, al0 = loglog_fit(logk, np.log(np.where(pos, d, 1.0)), w0)
    a, alpha, chi = power_law_fit(logk, d, s, a0, al0)
    chi2_red = chi / (logk.shape[-1] - 2)
    a, alpha, tau = fit_scatter(logk, d, s, a, alpha, chi2_red)
    return a, alpha, chi2_red, tau


def effective_stderr(logk, s, a, alpha, tau):
    """``sqrt(s_k^2 + tau^2 m_k^2)``: the standard errors widened by the scatter around the fit."""
    return np.sqrt(s**2 + (np.asarray(tau)[..., None] * _model(logk, np.asarray(a), np.asarray(alpha))) ** 2)


def covariance(logk, s, a, alpha):
    """Inverse Fisher matrix of (a, alpha) for the chi^2 fit of one curve (unscaled)."""
    m = np.exp(a - alpha * logk)
    ja, jb = m / s, -m * logk / s
    h = np.array([[ja @ ja, ja @ jb], [ja @ jb, jb @ jb]])
    return np.linalg.inv(h)


def bootstrap_power_law(logk, s, a, alpha, tau, z):
    """Refit the bootstrap curves ``m_k + sqrt(s_k^2 + tau^2 m_k^2) z``; returns (a_b, alpha_b) of shape ``z.shape[:-1]``.

    ``a``, ``alpha``, ``tau`` have the curves' batch shape S; ``z`` has shape
    ``S + (B, n)`` of standard normals; ``s`` broadcasts against ``S + (n,)``.
    With scatter the weights follow each refit (three rounds), as in the fit.
    """
    a, alpha, tau = np.asarray(a, float), np.asarray(alpha, float), np.asarray(tau, float)
    sim = _model(logk, a, alpha)[..., None, :] + effective_stderr(logk, s, a, alpha, tau)[..., None, :] * z
    s_b = np.asarray(s)[..., None, :]
    a_b = np.broadcast_to(a[..., None], z.shape[:-1]).copy()
    al_b = np.broadcast_to(alpha[..., None], z.shape[:-1]).copy()
    tau_b = tau[..., None, None]
    for _ in range(3 if np.any(tau > 0) else 1):
        se_b = np.sqrt(s_b**2 + (tau_b * _model(logk, a_b, al_b)) ** 2)
        a_b, al_b, _ = power_law_fit(logk, sim, se_b, a_b, al_b)
    return a_b, al_b


def k_interval(a_b, alpha_b, tols, level):
    """Central ``level`` range of the bootstrap crossings ``K_b(tol)``: (lower, upper) of shape ``S + (ntol,)``.

    ``a_b``, ``alpha_b`` have shape ``S + (B,)``; a refit that does not decay
    crosses at inf. The outer order statistics keep the range conservative.
    """
    k_b = power_law_k(np.asarray(a_b)[..., None], np.asarray(alpha_b)[..., None], np.asarray(tols, float))
    q = (1 - level) / 2
    return np.quantile(k_b, q, axis=-2, method="lower"), np.quantile(k_b, 1 - q, axis=-2, method="higher")
