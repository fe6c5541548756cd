"""Definition 4 on a curve that scatters around its power-law trend.

The trend crossing ``K`` is where the fitted curve ``m_k = C k^-alpha`` falls
below tol; a real curve keeps scattering around its trend, so Definition 4
measured on it ("below tol for every later k") lands later. With the
observed ratios ``r_j = Delta_j / m_j`` of the fitted tail resampled
independently along k,

    P(Delta_k' < tol for every k' >= k) = prod_{k' >= k} (1 - #{j : m_k' r_j >= tol} / n),

computed exactly as a sum over n segments of k. Mixed over the bootstrap fits
it gives the distribution of Definition 4's K: its median at the fit and its
quantiles over the bootstrap fits. :func:`log_p_below_until` is the same
probability up to a last k (a curve that ends with its data), and
:func:`cdf_quantiles` reads quantiles off such a distribution by bisection.
"""

from __future__ import annotations

import numpy as np

__all__ = ["scatter_k", "log_p_below_until", "bisect_cdf", "cdf_quantiles"]

_K_CAP = 1e15  # beyond 1e15 k the count does not matter


def exceedance_bounds(a, alpha, tols, ratios):
    """Sorted ``u_j = floor(t_j)``, (B, ntol, n): ``m(k) ratio_j >= tol`` exactly for ``k <= t_j``.

    ``m(k) = exp(a - alpha log k)``; a ratio <= 0 never exceeds (u = 0); a
    non-decaying fit (alpha <= 0) always exceeds (u = inf).
    """
    a, alpha = a[:, None, None], alpha[:, None, None]
    r = ratios[None, None, :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_t = (a + np.log(np.where(r > 0, r, 1.0)) - np.log(tols)[None, :, None]) / alpha
        u = np.floor(np.exp(np.minimum(log_t, 35.0)))
    u = np.where(r > 0, np.maximum(u, 0.0), 0.0)
    u = np.where(alpha > 0, u, np.inf)
    return np.sort(u, axis=-1)


def log_prob_settled(u, k):
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


def mixture_quantile(u, q):
    """Smallest integer k with ``mean_b P_b(K <= k) >= q`` for each tolerance (inf if none up to 1e15).

    Every ``P_b(K <= k)`` is 1 (or 0 for a fit that never settles) once k
    exceeds the largest finite bound ``u``, so the bisection starts there.
    """
    ntol = u.shape[1]
    finite = np.where(np.isinf(u), 0.0, u)
    lo = np.zeros(ntol)
    hi = np.minimum(finite.max(axis=(0, 2)) + 1.0, _K_CAP)
    for _ in range(60):  # bisection over integers: F(lo) < q <= F(hi)
        mid = np.floor((lo + hi) / 2)
        f = np.exp(log_prob_settled(u, np.broadcast_to(mid, u.shape[:2]))).mean(0)
        lo, hi = np.where(f >= q, lo, mid), np.where(f >= q, mid, hi)
        if np.all(hi - lo <= 1):
            break
    f_top = np.exp(log_prob_settled(u, np.broadcast_to(hi, u.shape[:2]))).mean(0)
    return np.where(f_top >= q, np.maximum(hi, 1.0), np.inf)


def scatter_k(a, alpha, a_b, alpha_b, tols, ratios, level):
    """Definition 4's K on a curve scattering like the observed one: (median at the fit, lower, upper) per tol.

    ``a``, ``alpha``: the fit; ``a_b``, ``alpha_b``: the bootstrap refits (B,);
    ``ratios``: observed ``Delta_j / m_j`` over the fitted tail; the interval
    is the central ``level`` range of the mixture over the bootstrap fits.
    """
    q = (1 - level) / 2
    u_hat = exceedance_bounds(np.asarray([a]), np.asarray([alpha]), tols, ratios)
    u_b = exceedance_bounds(np.asarray(a_b), np.asarray(alpha_b), tols, ratios)
    return mixture_quantile(u_hat, 0.5), mixture_quantile(u_b, q), mixture_quantile(u_b, 1 - q)


# ----------------------------------------------------------------------------- to a last k, and quantiles of a CDF

def log_p_below_until(u, k, k_end):
    """``log P(Delta_k' < tol for every integer k' in [k, k_end])`` for i.i.d. ratios; ``u`` (..., R) sorted bounds.

    A ratio j exceeds tol exactly for ``k' <= u_j``; between consecutive
    sorted bounds the fraction exceeding is constant (as
    :func:`jaxland.sample_size.scatter.log_prob_settled`, which runs to
    ``k_end = inf``).
    """
    n = u.shape[-1]
    never = np.isinf(u).any(-1)
    u = np.minimum(np.where(np.isinf(u), 0.0, u), np.asarray(k_end, float)[..., None])
    lo = np.concatenate([np.zeros(u.shape[:-1] + (1,)), u[..., :-1]], axis=-1)
    seg = np.maximum(0.0, u - np.maximum(lo, np.asarray(k, float)[..., None] - 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(seg > 0, seg * np.log(np.arange(n) / n), 0.0)
    return np.where(never, -np.inf, terms.sum(-1))


def bisect_cdf(cdf, q, lo, hi, integer: bool, iters: int = 28):
    """Smallest x in [lo, hi] with ``cdf(x) >= q`` per tolerance (inf where ``cdf(hi) < q``); ``cdf`` increasing."""
    lo, hi = np.array(lo, float), np.array(hi, float)
    ok = cdf(hi) >= q
    for _ in range(iters if not integer else 64):
        active = (hi - lo > 1) if integer else np.ones(lo.shape, bool)  # integers: each tolerance stops at adjacent values
        mid = np.floor((lo + hi) / 2) if integer else np.sqrt(lo * hi)
        above = cdf(mid) >= q
        lo, hi = np.where(active & ~above, mid, lo), np.where(active & above, mid, hi)
        if not active.any():
            break
    return np.where(ok, np.ceil(hi), np.inf)


def cdf_quantiles(cdf, level, lo, hi, integer):
    q = (1 - level) / 2
    return tuple(bisect_cdf(cdf, p, lo, hi, integer) for p in (0.5, q, 1 - q))
