"""Fit pilot curves trained at several dataset sizes N: a level per network, one shape in k, the levels against N.

The pilots are nested subsets, so the first k samples (and the sample added
at k + 1) are the same for every pilot: ``Delta_k^(N)`` of different N share
the shape in k, including its bumps and the batch-to-batch fluctuations
driven by which samples are added, and differ by a level that depends on
the network's own minimum. Three fits, each closed-form or a short
iteration, batched where the bootstrap needs it.

Stage 1, levels and shape. In logs, ``y_ck = log Delta_ck`` of curve c
(one trained network) at k,

    y_ck = a_c + phi_k + e_ck,   var(e_ck) = (s_ck / Delta_ck)^2 + tau^2,

with one value ``phi_k`` per k shared by every curve that reaches k, and a
scatter ``tau`` beyond the Monte Carlo errors ``s_ck`` that curves of
different networks do not share, set so that the weighted residuals match
their degrees of freedom. Weighted least squares by alternating the two
closed-form updates (levels given the shape, shape given the levels). Only
differences of levels are identified; they are centred to mean 0.

Stage 2, the levels against N: ``a_c = a_0 + beta log(N_c / N_ref) + eta_c``
with ``eta_c ~ N(0, omega^2)``, the spread between retrainings (and what a
power law in N leaves unexplained): weighted least squares with weights
``1 / (v_c + omega^2)`` and ``omega^2`` by the Paule-Mandel rule (the
weighted residual sum of squares equals its ``C - 2`` degrees of freedom).

Stage 3, the shape's tail: ``phi_k = b_0 - alpha log k`` over the last part
of the k the pilots reach, with its own scatter term (the shared
fluctuations around the power law), the same weighted line.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_profile", "fit_level_line", "paule_mandel", "fit_tail_line"]


def _als(y, w, iters: int):
    """Alternating weighted least squares for ``y = a_c + phi_k`` (masked by ``w > 0``): (a centred, phi)."""
    a = np.zeros(y.shape[0])
    wk = w.sum(0)
    phi = (w * y).sum(0) / np.where(wk > 0, wk, 1.0)
    for _ in range(iters):
        a = (w * (y - phi)).sum(1) / w.sum(1)
        a -= a.mean()
        phi = (w * (y - a[:, None])).sum(0) / np.where(wk > 0, wk, 1.0)
    return a, phi


def fit_profile(y, v, mask, iters: int = 200, rounds: int = 4):
    """Stage 1 on a (C, K) grid of curves by k (``mask`` where a curve has k): (a, phi, tau, v_a, residuals, shared).

    ``v`` are the Monte Carlo variances of ``y``; ``v_a`` the variances of the
    levels; ``residuals`` the standardised-to-dof residuals ``e_ck`` (0
    outside the mask and where a k has one curve); ``shared`` marks k reached
    by at least two curves (only they inform the levels and tau).
    """
    n_k = mask.sum(0)
    shared = n_k >= 2
    use = mask & shared[None, :]
    dof = int(use.sum()) - int(shared.sum()) - (y.shape[0] - 1)
    tau2 = 0.0
    for _ in range(rounds):
        w = np.where(use, 1.0 / (v + tau2), 0.0)
        a, phi = _als(np.where(mask, y, 0.0), w, iters)
        r2 = np.where(use, (y - a[:, None] - phi[None, :]) ** 2, 0.0)
        if dof <= 0 or (r2 / np.where(use, v, 1.0)).sum() <= dof:
            tau2 = 0.0
            break
        lo, hi = -30.0, np.log(r2.sum() / max(dof, 1)) + 5.0
        for _ in range(60):  # bisection on log tau^2: the weighted sum falls as tau^2 grows
            mid = (lo + hi) / 2
            above = (r2 / np.where(use, v + np.exp(mid), 1.0)).sum() > dof
            lo, hi = (mid, hi) if above else (lo, mid)
        tau2 = float(np.exp((lo + hi) / 2))
    w = np.where(use, 1.0 / (v + tau2), 0.0)
    a, phi = _als(np.where(mask, y, 0.0), w, iters)
    w_all = np.where(mask, 1.0 / (v + tau2), 0.0)
    phi_all = np.where(shared, phi, (w_all * (y - a[:, None])).sum(0) / np.where(w_all.sum(0) > 0, w_all.sum(0), 1.0))
    v_a = 1.0 / np.maximum(w.sum(1), 1e-300)
    resid = np.where(use, (y - a[:, None] - phi[None, :]) * np.sqrt(n_k / np.maximum(n_k - 1, 1))[None, :], 0.0)
    return a, phi_all, float(np.sqrt(tau2)), v_a, resid, shared


def fit_level_line(a, v, x, omega2):
    """Weighted line ``a_c = a_0 + beta x_c``, weights ``1 / (v_c + omega^2)``: (a_0, beta, cov (2, 2), q).

    Batched over leading axes of ``a`` and ``omega2``; ``q`` is the weighted
    residual sum of squares (chi-square with ``C - 2`` degrees of freedom
    when the model holds).
    """
    wts = 1.0 / (v + np.asarray(omega2)[..., None])
    sw, swx, swy = wts.sum(-1), (wts * x).sum(-1), (wts * a).sum(-1)
    swxx, swxy = (wts * x * x).sum(-1), (wts * x * a).sum(-1)
    det = sw * swxx - swx**2
    beta = (sw * swxy - swx * swy) / det
    a0 = (swy - beta * swx) / sw
    r = a - a0[..., None] - beta[..., None] * x
    q = (wts * r * r).sum(-1)
    cov = np.stack([np.stack([swxx, -swx], -1), np.stack([-swx, sw], -1)], -2) / det[..., None, None]
    return a0, beta, cov, q


def paule_mandel(a, v, x):
    """``omega^2`` with weighted residual sum of squares = ``n - 2`` (0 if already below), batched over leading axes."""
    dof = a.shape[-1] - 2
    a = np.asarray(a, float)
    zero = fit_level_line(a, v, x, np.zeros(a.shape[:-1]))[3] <= dof
    spread = np.maximum(np.var(a, -1), 1e-30)
    lo, hi = np.full(a.shape[:-1], -40.0), np.log(spread) + 5.0
    for _ in range(60):  # bisection on log omega^2: the weighted sum falls as omega^2 grows
        mid = (lo + hi) / 2
        above = fit_level_line(a, v, x, np.exp(mid))[3] > dof
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return np.where(zero, 0.0, np.exp((lo + hi) / 2))


def fit_tail_line(logk, phi, v_phi):
    """Stage 3: ``phi_k = b_0 - alpha log k`` with scatter: (b_0, alpha, cov (2, 2), scatter^2), batched over leading axes of phi."""
    s2 = paule_mandel(phi, v_phi, logk)
    b0, slope, cov, _ = fit_level_line(phi, v_phi, logk, s2)
    return b0, -slope, cov * np.array([[1.0, -1.0], [-1.0, 1.0]]), s2
