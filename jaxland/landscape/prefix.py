"""Prefix means over the data order: ``L_k`` for every k, and its increments.

k counts samples, or batches of ``batch_size`` consecutive samples (``L_k`` is
then the mean of the first k batch means; a trailing incomplete batch is
dropped). Increments use the exact identity
``X_{k+1} - X_k = (x_{k+1} - X_k) / (k+1)``, which avoids the cancellation of
two large cumulative sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["batch_means", "cumulative_means", "loss_increments", "prefix_increments"]


def batch_means(a: jax.Array, batch_size: int | None, axis: int = -1) -> jax.Array:
    """Means over consecutive groups of ``batch_size`` entries along ``axis`` (unchanged when None)."""
    a = jnp.asarray(a)
    if batch_size is None:
        return a
    a = jnp.moveaxis(a, axis, -1)
    k = a.shape[-1] // batch_size
    g = a[..., : k * batch_size].reshape(*a.shape[:-1], k, batch_size).mean(-1)
    return jnp.moveaxis(g, -1, axis)


def cumulative_means(values: jax.Array, batch_size: int | None = None, axis: int = -1) -> jax.Array:
    """``X_k = (1/k) sum_{i<=k} x_i`` for k = 1..K along ``axis`` (over batch means when batched)."""
    x = batch_means(values, batch_size, axis)
    x = jnp.moveaxis(x, axis, -1)
    k = jnp.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    return jnp.moveaxis(jnp.cumsum(x, axis=-1) / k, -1, axis)


def prefix_increments(values: jax.Array, batch_size: int | None = None, axis: int = -1) -> jax.Array:
    """``X_{k+1} - X_k`` for k = 1..K-1 along ``axis``, by ``(x_{k+1} - X_k) / (k+1)``."""
    x = jnp.moveaxis(batch_means(values, batch_size, axis), axis, -1)
    big = cumulative_means(x)
    k1 = jnp.arange(2, x.shape[-1] + 1, dtype=x.dtype)
    return jnp.moveaxis((x[..., 1:] - big[..., :-1]) / k1, -1, axis)


def loss_increments(losses: jax.Array, batch_size: int | None = None) -> jax.Array:
    """``L_{k+1} - L_k`` for k = 1..K-1 from per-sample losses (..., N) (last axis)."""
    return prefix_increments(losses, batch_size, -1)
