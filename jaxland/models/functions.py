"""Functions of a model: its per-sample losses, ``L_k``, accuracy, and its spec as JSON.

The public ones check their inputs (array-likes are converted; ``k`` in
``[1, N]``); :func:`prefix_mean_loss` is the unchecked one that compiled
programs differentiate.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

from ..validate import as_array, check_data, check_labels, check_params, check_prefix, clamp_prefix, finite_result
from .base import Model

__all__ = ["per_sample_losses", "prefix_mean_loss", "mean_loss", "accuracy", "spec_json"]


def _inputs(model, w, x, y, *, k=None):
    """The checked arrays of :func:`per_sample_losses` and :func:`mean_loss` (array-likes converted)."""
    w, x, y = as_array("w", w), as_array("x", x), as_array("y", y)
    n = check_data(model, x, y, min_samples=1)
    check_params(model, w)
    check_prefix(k, n)
    return w, x, y


_OVERFLOW = "the loss overflows: w or x too large for the model (or a diverged w)"


def per_sample_losses(model: Model, w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """``l_i(w)`` of every sample, shape (n,); a non-finite loss raises :class:`~jaxland.NumericalError`."""
    w, x, y = _inputs(model, w, x, y)
    return finite_result("per_sample_losses", model.per_sample_losses(w, x, y), where="sample ", cause=_OVERFLOW,
                         raw_hint=False)


def prefix_mean_loss(model: Model, w: jax.Array, x: jax.Array, y: jax.Array, k=None) -> jax.Array:
    """:func:`mean_loss` without the input checks: the kernel compiled programs differentiate.

    A traced ``k`` is clamped to ``[1, n]`` (:func:`jaxland.validate.clamp_prefix`):
    ``k > n`` gives the mean over all n samples, ``k < 1`` the first sample's loss.
    """
    losses = model.per_sample_losses(w, x, y)
    if k is None:
        return jnp.mean(losses)
    k = clamp_prefix(jnp.asarray(k), losses.shape[0])
    mask = jnp.arange(losses.shape[0]) < k
    return jnp.sum(jnp.where(mask, losses, 0.0)) / k.astype(losses.dtype)


def mean_loss(model: Model, w: jax.Array, x: jax.Array, y: jax.Array, k: jax.Array | int | None = None) -> jax.Array:
    """``L_k(w) = (1/k) sum_{i<k} l_i(w)``; the full mean when ``k`` is None.

    A concrete ``k`` must be an integer in ``[1, n]``. ``k`` may be a traced
    integer: the prefix is selected by a mask, so changing ``k`` never changes
    shapes (and never recompiles); a traced value cannot be checked, so it is
    clamped to ``[1, n]``. A non-finite loss (concrete inputs) raises
    :class:`~jaxland.NumericalError`.
    """
    w, x, y = _inputs(model, w, x, y, k=k)
    return finite_result("mean_loss", prefix_mean_loss(model, w, x, y, k), cause=_OVERFLOW, raw_hint=False)


def accuracy(model: Model, w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of samples whose largest output is the label: integer labels ``y`` (n,) in ``[0, classes)``.

    Non-finite outputs (concrete inputs) raise :class:`~jaxland.NumericalError`: their argmax means nothing.
    """
    w, x, y = as_array("w", w), as_array("x", x), as_array("y", y)
    check_labels(model, x, y)
    check_params(model, w)
    out = finite_result("accuracy: the model's outputs", model.apply(w, x), where="sample ",
                        cause="w or x too large for the model (or a diverged w)", raw_hint=False)
    return jnp.mean(jnp.argmax(out, axis=-1) == y)


def spec_json(model: Model) -> str:
    """``model.spec`` as canonical JSON (cache keys, saved weights)."""
    return json.dumps(model.spec, sort_keys=True, default=str)
