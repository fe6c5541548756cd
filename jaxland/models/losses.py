"""The losses a model can name: per-sample values ``l_i = loss(outputs_i, y_i)``, shape (n,).

``"cross_entropy"`` (softmax cross-entropy, integer labels; the default),
``"mse"`` (mean over output entries of the squared error; targets of the
output's shape), ``"sequence_cross_entropy"`` (:mod:`jaxland.models.sequence_loss`),
or any callable ``loss(outputs, y) -> (n,)``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from ..errors import ConfigError
from ..validate import mse_shapes_match
from .sequence_loss import sequence_cross_entropy

__all__ = ["LOSSES", "cross_entropy", "mse", "loss_fn", "loss_name"]


def cross_entropy(outputs: jax.Array, y: jax.Array) -> jax.Array:
    """Softmax cross-entropy of logits (n, C) against integer labels (n,)."""
    return optax.softmax_cross_entropy_with_integer_labels(outputs, y)


def mse(outputs: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over output entries of ``(outputs - y)^2``, one value per sample.

    ``y`` has the outputs' shape, or shape (n,) when each sample has one output.
    """
    if not mse_shapes_match(outputs.shape[1:], jnp.shape(y)[1:]) or jnp.shape(y)[:1] != outputs.shape[:1]:
        raise ConfigError(
            f"mse targets y have per-sample shape {tuple(jnp.shape(y)[1:])} but the model outputs "
            f"{tuple(outputs.shape[1:])} per sample: give targets of the output's shape (or shape (n,) for one output)"
        )
    err = outputs - jnp.reshape(y, outputs.shape).astype(outputs.dtype)
    return jnp.mean(err * err, axis=tuple(range(1, outputs.ndim)))


LOSSES: dict[str, Callable] = {"cross_entropy": cross_entropy, "mse": mse,
                               "sequence_cross_entropy": sequence_cross_entropy}


def loss_fn(loss) -> Callable:
    """The per-sample loss function a name (or a callable) stands for; ConfigError for an unknown name."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; use one of {sorted(LOSSES)} or a callable loss(outputs, y) -> (n,)")
    return LOSSES[loss]


def loss_name(loss) -> str:
    """A readable name of a loss (its registry name, or the callable's name)."""
    return loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
