"""Prefix lengths k and the units of k (samples, or groups of ``samples_per_k``)."""

from __future__ import annotations


import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from .inputs import is_sequence_model
from .values import _concrete, positive_int, warn


def clamp_prefix(k, n: int):
    """``k`` clamped to ``[1, n]`` inside a computation: a traced prefix length cannot be checked, so a
    ``k > n`` means all n samples and ``k < 1`` the first sample (never a rescaled or a zero answer)."""
    return jnp.clip(k, 1, n)


def group_split(n: int, samples_per_k) -> tuple[int, int, int]:
    """``(K, used, dropped)``: K units of k (samples, or complete groups of ``samples_per_k``), the samples
    they use, and the trailing samples of an incomplete group, which no estimate sees."""
    if samples_per_k is None:
        return n, n, 0
    b = positive_int("samples_per_k", samples_per_k)
    k = n // b
    if k < 2:
        raise ConfigError(f"samples_per_k={samples_per_k} leaves {k} complete group(s) of {n} samples; need >= 2")
    return k, k * b, n - k * b


def num_groups(n: int, samples_per_k, *, warn_dropped: bool = True) -> int:
    """K: the number of samples, or of complete groups of ``samples_per_k`` samples; must be >= 2.

    When ``samples_per_k`` does not divide n the trailing incomplete group is
    dropped, with a ``RuntimeWarning`` that says how many samples are unused
    (the results' ``.info`` records ``samples_used``).
    """
    k, used, dropped = group_split(n, samples_per_k)
    if dropped and warn_dropped:
        warn(f"samples_per_k={int(samples_per_k)} does not divide the {n} samples: k counts {k} complete batches "
             f"({used} samples) and the last {dropped} sample(s) are not used; pass a multiple of samples_per_k "
             "samples to use them all")
    return k


def unit(samples_per_k, model=None) -> str:
    """What k counts: ``"batches"`` (of ``samples_per_k`` samples), else ``"sequences"`` for a language model
    (:func:`is_sequence_model`), else ``"samples"``."""
    if samples_per_k is not None:
        return "batches"
    return "sequences" if is_sequence_model(model) else "samples"


def check_prefix(k, n: int, name: str = "k"):
    """A prefix length ``1 <= k <= n`` (None: all n), an integer (not a bool); traced values pass through unchecked
    (the computation clamps them, :func:`clamp_prefix`)."""
    if k is None or not _concrete(k):
        return k
    try:
        kk = np.asarray(k)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer number of samples, got {type(k).__name__}") from None
    if kk.ndim != 0 or not np.issubdtype(kk.dtype, np.integer):
        raise ConfigError(f"{name} must be an integer number of samples in [1, {n}], got {k!r}")
    if not 1 <= int(kk) <= n:
        raise ConfigError(f"{name}={int(kk)} must be in [1, {n}] (the number of samples given); L_k needs k samples")
    return k
