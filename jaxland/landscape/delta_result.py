"""What :func:`jaxland.delta_monte_carlo` returns: ``Delta_k`` with standard errors, and how it was obtained."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

__all__ = ["DeltaInfo", "DeltaResult"]


class DeltaInfo(NamedTuple):
    """How a :class:`DeltaResult` was obtained.

    ``sigma``: theta ~ N(0, sigma^2 I); ``num_draws``: T; ``subspace_dim``: d
    (None when unknown); ``samples_per_k``: samples per unit of k (None: k counts
    samples); ``num_orderings``: R; ``unit``: ``"samples"`` or ``"batches"``;
    ``kernel``: ``"specialised"`` (the model's own, e.g. the MLP first-layer
    precompute), ``"first_layer"`` (the first-layer kernel of any model whose
    first layer splits off) or ``"generic"``; ``variance_reduction``: the method's name
    (:class:`~jaxland.landscape.variance.VarianceReduction`, e.g. ``"cv+antithetic"``);
    ``effective_draws``: the median over k of ``var(f_k) / stderr_k^2``, the
    number of plain draws that would give the same standard error (T for
    plain Monte Carlo, up to noise); ``num_samples``: N, the samples given;
    ``samples_used``: the samples k reaches (``K * samples_per_k``; the
    trailing ``samples_dropped`` of an incomplete batch are not used);
    ``orderings``: the (R, N) permutations the result is averaged over (None:
    the data order), so that the same orderings can be rebuilt
    (:func:`jaxland.delta_split` uses them). None where unknown.
    """

    sigma: float
    num_draws: int
    subspace_dim: int | None
    samples_per_k: int | None
    num_orderings: int
    unit: str
    kernel: str
    variance_reduction: str = "none"
    effective_draws: float | None = None
    num_samples: int | None = None
    samples_used: int | None = None
    orderings: np.ndarray | None = None

    @property
    def samples_dropped(self) -> int | None:
        """Trailing samples of an incomplete batch that no k reaches (``num_samples - samples_used``)."""
        return None if self.num_samples is None or self.samples_used is None else self.num_samples - self.samples_used


class DeltaResult(NamedTuple):
    """Monte Carlo ``Delta_k`` for k = 1..K-1 (K = number of samples, or of batches).

    ``delta[j]`` is ``Delta_{k[j]}``, ``stderr`` its Monte Carlo standard error
    (plain draws: ``std_t / sqrt(T)``, ddof = 1, of the per-draw squared
    increment averaged over orderings; with variance reduction, the spread of
    its independent units, see :mod:`jaxland.landscape.variance`), ``delta_k2 = delta * k^2`` and
    ``stderr_k2`` likewise; ``info`` (:class:`DeltaInfo`) says how it was made.
    """

    k: np.ndarray
    delta: jax.Array
    stderr: jax.Array
    delta_k2: jax.Array
    stderr_k2: jax.Array
    info: DeltaInfo

    unit = property(lambda self: self.info.unit, doc="What k counts (``info.unit``).")
