"""Split ``Delta_k`` into its theta-free term and the rest.

With ``c_k = L_{k+1}(w*) - L_k(w*)`` and ``u_k(theta)`` the change of the
increment along the subspace,

    Delta_k = E_theta[(c_k + u_k(theta))^2] = c_k^2 + (E[2 c_k u_k + u_k^2]),

the first term does not depend on the directions, on sigma or on d: it is the
squared change of the empirical loss at ``w*`` itself, computed exactly from
the per-sample losses at ``w*``. When it dominates, ``Delta_k`` barely moves
with sigma or d (what the original paper's unit-norm directions produced).
The rest ``Delta_k - c_k^2`` carries the Monte Carlo standard error of
``Delta_k`` (``c_k^2`` has none).

k counts samples, or batches of ``samples_per_k`` consecutive samples: then
``L_k`` is the mean of the first k batch means (the mean of the first
``k * samples_per_k`` samples), as in :func:`jaxland.delta_monte_carlo`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._compat import renamed_kwargs
from ..errors import ConfigError
from ..models.base import per_sample_losses

__all__ = ["DeltaSplit", "delta_split", "theta_free_term"]


class DeltaSplit(NamedTuple):
    """``delta = theta_free + rest`` per k; ``theta_free = (L_{k+1}(w*) - L_k(w*))^2`` (exact), ``rest_stderr = stderr``.

    ``theta_free_fraction = theta_free / delta``.
    """

    k: np.ndarray
    delta: np.ndarray
    stderr: np.ndarray
    theta_free: np.ndarray
    rest: np.ndarray
    rest_stderr: np.ndarray
    theta_free_fraction: np.ndarray
    unit: str

    @property
    def info(self) -> dict:
        """What k counts (``unit``)."""
        return {"unit": self.unit}


def _losses(model, w, x, y) -> np.ndarray:
    return np.asarray(per_sample_losses(model, w, x, y), dtype=np.float64)


@renamed_kwargs(batch_size="samples_per_k")
def theta_free_term(model, w, x, y, *, samples_per_k: int | None = None):
    """``(k, c_k^2)``: ``c_k = L_{k+1}(w*) - L_k(w*)`` for k = 1..K-1 from the per-sample losses at ``w``.

    K is the number of samples, or of complete batches of ``samples_per_k``
    (an incomplete last batch is dropped). Computed in float64 on the host.
    """
    losses = _losses(model, w, x, y)
    if losses.ndim != 1:
        raise ConfigError(f"per-sample losses must be a 1-D array (n,), got shape {losses.shape}")
    if not np.all(np.isfinite(losses)):
        raise ConfigError("the per-sample losses at w are not all finite; check w and the data")
    if samples_per_k is not None:
        if int(samples_per_k) != samples_per_k or samples_per_k < 1:
            raise ConfigError(f"samples_per_k must be a positive integer or None, got {samples_per_k!r}")
        g = losses.shape[0] // int(samples_per_k)
        losses = losses[: g * int(samples_per_k)].reshape(g, int(samples_per_k)).mean(1)
    if losses.shape[0] < 2:
        raise ConfigError(f"need at least 2 samples (or batches) for L_(k+1) - L_k, got {losses.shape[0]}")
    prefix = np.cumsum(losses) / np.arange(1, losses.shape[0] + 1)
    # L_{k+1} - L_k = (l_{k+1} - L_k) / (k+1): no cancellation between two close means
    k = np.arange(1, losses.shape[0])
    c = (losses[1:] - prefix[:-1]) / (k + 1)
    return k, c**2


@renamed_kwargs(batch_size="samples_per_k")
def delta_split(result, model, w, x, y, *, samples_per_k: int | None = None) -> DeltaSplit:
    """Split a Monte Carlo ``Delta_k`` (a :class:`DeltaResult` in the data order) into ``c_k^2`` and the rest.

    ``model, w, x, y`` must be those of the estimate (``w`` the centre of its
    subspace) and ``samples_per_k`` its batch size (None when k counts samples).
    Uses only ``result.k``, ``.delta``, ``.stderr`` and ``.unit``.
    """
    unit = str(result.unit)
    if (unit == "batches") != (samples_per_k is not None):
        raise ConfigError(
            f"the result counts k in {unit} but samples_per_k={samples_per_k!r}: pass the samples_per_k of the estimate "
            "(None when k counts samples)"
        )
    k, tf = theta_free_term(model, w, x, y, samples_per_k=samples_per_k)
    rk = np.asarray(result.k)
    if rk.shape != k.shape or not np.array_equal(rk, k):
        raise ConfigError(
            f"the result has k = 1..{rk[-1] if rk.size else 0} but x gives k = 1..{k[-1]}: pass the data the estimate used"
        )
    delta = np.asarray(result.delta, dtype=np.float64)
    se = np.asarray(result.stderr, dtype=np.float64)
    rest = delta - tf
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(delta > 0, tf / delta, np.nan)
    return DeltaSplit(k, delta, se, tf, rest, se, frac, unit)
