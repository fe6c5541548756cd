"""Streamed moments of Monte Carlo values: per-half (count, mean, co-moment), and the one merge of two.

The estimators of :mod:`jaxland.landscape.montecarlo` never hold every draw's
values. They keep, per k, the count ``n``, the mean ``m`` (V,) and the
co-moment ``C = sum_t (x_t - m)(x_t - m)^T`` (V, V) of the values ``x_t``
(V = 1: ``f = (L_{k+1} - L_k)^2``; V = 2: ``f`` and the control variate ``h``),
separately for the two halves of the cross-fitted control variate. Chunks,
passes, devices and finally the two halves are combined by one function,
:func:`chan_merge` (Chan, Golub and LeVeque's pairwise update)::

    n = n_a + n_b,   m = m_a + (m_b - m_a) n_b / n,
    C = C_a + C_b + (m_b - m_a)(m_b - m_a)^T n_a n_b / n,

which avoids the cancellation of ``sum x^2 - n m^2``. Every diagonal entry of
a co-moment is a sum of squares, so it is clamped at zero where rounding
makes it slightly negative (all draws equal): a variance is never negative and
a standard error never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["moment_stats", "chan_merge", "pool_halves", "psum_moments", "unit_moments", "variance"]


def _nonneg_diagonal(com):
    """``com`` (..., V, V) with negative diagonal entries (rounding of sums of squares) set to zero."""
    eye = jnp.eye(com.shape[-1], dtype=bool)
    return jnp.where(eye & (com < 0), jnp.zeros((), com.dtype), com)


def moment_stats(values, valid, halves):
    """Per-half (count (2,), mean (2, K, V), co-moment (2, K, V, V)) over the valid rows of ``values`` (R, K, V).

    Deviations are taken from the pooled mean of the rows and each half's
    co-moment corrected by its count times the outer product of its mean's
    offset: one (R, K, V) array of deviations, not one per half.
    """
    w = jax.nn.one_hot(halves, 2, dtype=values.dtype) * valid.astype(values.dtype)[:, None]  # (R, 2)
    n = jnp.sum(w, 0)
    pooled = jnp.einsum("rh,rkv->kv", w, values) / jnp.maximum(jnp.sum(n), 1)
    dev = values - pooled
    off = jnp.einsum("rh,rkv->hkv", w, dev) / jnp.maximum(n, 1)[:, None, None]  # mean_h - pooled
    com = jnp.einsum("rh,rkv,rku->hkvu", w, dev, dev) - n[:, None, None, None] * off[..., :, None] * off[..., None, :]
    return n, pooled + off, _nonneg_diagonal(com)


def chan_merge(a, b):
    """The pairwise merge of two (count, mean (..., V), co-moment (..., V, V)) triples (module docstring).

    ``count`` may carry leading axes of its own (one count per half); it is
    broadcast over the trailing axes of the mean and of the co-moment.
    """
    na, ma, ca = a
    nb, mb, cb = b
    n = na + nb
    delta = mb - ma
    frac = nb / jnp.maximum(n, 1)
    lift = lambda c, like: jnp.reshape(c, jnp.shape(c) + (1,) * (jnp.ndim(like) - jnp.ndim(c)))
    outer = delta[..., :, None] * delta[..., None, :]
    return n, ma + delta * lift(frac, ma), _nonneg_diagonal(ca + cb + outer * lift(na * frac, ca))


def pool_halves(stats):
    """Both halves of per-half statistics merged into one (count, mean (K, V), co-moment (K, V, V))."""
    n, mean, com = stats
    return chan_merge((n[0], mean[0], com[0]), (n[1], mean[1], com[1]))


def psum_moments(stats, axis):
    """:func:`chan_merge` of the statistics of every device along a mesh axis (the same result on each)."""
    every = jax.lax.all_gather(stats, axis)  # leading axis: devices, in order
    out = jax.tree.map(lambda a: a[0], every)
    for i in range(1, every[0].shape[0]):
        out = chan_merge(out, jax.tree.map(lambda a: a[i], every))
    return out


def unit_moments(values, valid, halves, unit_draws, draw_level):
    """Moments over units (means of ``unit_draws`` consecutive rows of ``values``) and, if asked, over rows."""
    units = values.reshape(valid.shape[0], unit_draws, *values.shape[1:]).mean(1)
    per_unit = moment_stats(units, valid, halves)
    if not draw_level:
        return per_unit, None
    return per_unit, moment_stats(values, jnp.repeat(valid, unit_draws), jnp.repeat(halves, unit_draws))


def variance(sum_sq, count):
    """Sample variance ``sum_sq / (count - 1)`` of a clamped sum of squared deviations (never negative)."""
    return jnp.maximum(sum_sq, 0) / (count - 1)
