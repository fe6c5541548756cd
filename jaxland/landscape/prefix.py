"""Prefix means over the data order: ``L_k`` for every k, and its increments.

k counts samples, or batches of ``samples_per_k`` consecutive samples (``L_k`` is
then the mean of the first k batch means; a trailing incomplete batch is
dropped). Increments use the exact identity
``X_{k+1} - X_k = (x_{k+1} - X_k) / (k+1)``, which avoids the cancellation of
two large cumulative sums.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["batch_means", "cumulative_means", "loss_increments", "prefix_increments"]


def batch_means(a: jax.Array, samples_per_k: int | None, axis: int = -1) -> jax.Array:
    """Means over consecutive groups of ``samples_per_k`` entries along ``axis`` (unchanged when None)."""
    a = jnp.asarray(a)
    if samples_per_k is None:
        return a
    a = jnp.moveaxis(a, axis, -1)
    k = a.shape[-1] // samples_per_k
    g = a[..., : k * samples_per_k].reshape(*a.shape[:-1], k, samples_per_k).mean(-1)
    return jnp.moveaxis(g, -1, axis)


def cumulative_means(values: jax.Array, samples_per_k: int | None = None, axis: int = -1) -> jax.Array:
    """``X_k = (1/k) sum_{i<=k} x_i`` for k = 1..K along ``axis`` (over batch means when batched)."""
    x = batch_means(values, samples_per_k, axis)
    x = jnp.moveaxis(x, axis, -1)
    k = jnp.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    return jnp.moveaxis(jnp.cumsum(x, axis=-1) / k, -1, axis)


def prefix_increments(values: jax.Array, samples_per_k: int | None = None, axis: int = -1) -> jax.Array:
    """``X_{k+1} - X_k`` for k = 1..K-1 along ``axis``, by ``(x_{k+1} - X_k) / (k+1)``."""
    x = jnp.moveaxis(batch_means(values, samples_per_k, axis), axis, -1)
    big = cumulative_means(x)
    k1 = jnp.arange(2, x.shape[-1] + 1, dtype=x.dtype)
    return jnp.moveaxis((x[..., 1:] - big[..., :-1]) / k1, -1, axis)


def loss_increments(losses: jax.Array, samples_per_k: int | None = None) -> jax.Array:
    """``L_{k+1} - L_k`` for k = 1..K-1 from per-sample losses (..., N) (last axis)."""
    return prefix_increments(losses, samples_per_k, -1)
