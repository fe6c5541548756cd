"""The per-sequence loss of a language model: mean next-token cross-entropy, padding excluded.

A sample is one sequence; ``l_i`` is the mean over its valid positions
(targets != -1) of ``-log softmax(logits_t)[target_t]``, so ``L_k`` averages
sequences and k counts sequences. Registered as ``"sequence_cross_entropy"`` in
:data:`jaxland.models.LOSSES`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from ..errors import ConfigError

__all__ = ["IGNORE_INDEX", "sequence_cross_entropy", "mask_targets"]

IGNORE_INDEX = -1  # a target that does not count (padding)


def sequence_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean next-token cross-entropy of each sequence: logits (n, T, V), integer targets (n, T) -> (n,).

    ``l_i = sum_t m_it CE(logits_it, targets_it) / sum_t m_it`` with
    ``m_it = [targets_it != -1] * [mask_it != 0]``: positions whose target is
    ``-1`` (:data:`IGNORE_INDEX`), or where the optional ``mask`` (n, T) is
    false/0, do not count. A sequence with no counted position gets 0
    (:func:`jaxland.validate.check_data` refuses such sequences at the
    estimators' boundary). Computed in the logits' float type.
    """
    valid = targets >= 0
    if mask is not None:
        valid = valid & (jnp.asarray(mask) != 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, targets, 0))
    count = jnp.sum(valid, axis=-1)
    return jnp.sum(jnp.where(valid, ce, 0.0), axis=-1) / jnp.maximum(count, 1).astype(ce.dtype)


def mask_targets(targets, mask) -> jax.Array:
    """Targets with ``-1`` wherever ``mask`` is false/0: a separate padding mask in the form the loss reads."""
    targets, mask = jnp.asarray(targets), jnp.asarray(mask)
    if targets.shape != mask.shape:
        raise ConfigError(f"mask must have the targets' shape {tuple(targets.shape)}, got {tuple(mask.shape)}")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ConfigError(f"targets must be integer token ids, got {targets.dtype}")
    return jnp.where(mask != 0, targets, IGNORE_INDEX).astype(targets.dtype)
