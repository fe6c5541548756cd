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
from ..models.functions import per_sample_losses
from ..validate import as_array, num_groups
from .montecarlo import orderings_array

__all__ = ["DeltaSplit", "delta_split", "theta_free_term"]


class DeltaSplit(NamedTuple):
    """``delta = theta_free + rest`` per k; ``theta_free = (L_{k+1}(w*) - L_k(w*))^2`` (exact), ``rest_stderr = stderr``.

    With orderings, ``theta_free`` is the mean of that square over the same
    orderings as ``delta``. ``theta_free_fraction = theta_free / delta``.
    """

    k: np.ndarray
    delta: np.ndarray
    stderr: np.ndarray
    theta_free: np.ndarray
    rest: np.ndarray
    rest_stderr: np.ndarray
    theta_free_fraction: np.ndarray
    unit: str
    samples_per_k: int | None = None
    num_orderings: int = 1

    @property
    def info(self) -> dict:
        """What k counts (``unit``, ``samples_per_k``) and the number of orderings averaged over."""
        return {"unit": self.unit, "samples_per_k": self.samples_per_k, "num_orderings": self.num_orderings}


def _losses(model, w, x, y) -> np.ndarray:
    return np.asarray(per_sample_losses(model, w, x, y), dtype=np.float64)


@renamed_kwargs(batch_size="samples_per_k")
def theta_free_term(model, w, x, y, *, samples_per_k: int | None = None, orderings=None):
    """``(k, c_k^2)``: ``c_k = L_{k+1}(w*) - L_k(w*)`` for k = 1..K-1 from the per-sample losses at ``w``.

    K is the number of samples, or of complete batches of ``samples_per_k``
    (an incomplete last batch is dropped, with a warning). ``orderings``: None
    (the data order) or an (R, N) array of permutations; then ``c_k^2`` is
    averaged over the R orderings, ``mean_r (L^(r)_{k+1}(w*) - L^(r)_k(w*))^2``,
    as a :class:`DeltaResult` over orderings averages ``Delta_k``. Computed
    in float64 on the host.
    """
    losses = _losses(model, w, x, y)
    n = losses.shape[0]
    num_k = num_groups(n, samples_per_k)
    perms = orderings_array(orderings, n)
    rows = losses[None] if perms is None else losses[np.asarray(perms)]  # (R, N)
    if not np.all(np.isfinite(losses)):
        raise ConfigError("the per-sample losses at w are not all finite; check w and the data")
    b = 1 if samples_per_k is None else int(samples_per_k)
    rows = rows[:, : num_k * b].reshape(rows.shape[0], num_k, b).mean(-1)
    prefix = np.cumsum(rows, axis=1) / np.arange(1, num_k + 1)
    # L_{k+1} - L_k = (l_{k+1} - L_k) / (k+1): no cancellation between two close means
    k = np.arange(1, num_k)
    c = (rows[:, 1:] - prefix[:, :-1]) / (k + 1)
    return k, np.mean(c**2, axis=0)


_FROM_RESULT = object()


@renamed_kwargs(batch_size="samples_per_k")
def delta_split(result, model, w, x, y, *, samples_per_k=_FROM_RESULT) -> DeltaSplit:
    """Split a Monte Carlo ``Delta_k`` (a :class:`DeltaResult`) into its theta-free term and the rest.

    ``model, w, x, y`` must be those of the estimate (``w`` the centre of its
    subspace). What k counts and the orderings come from ``result.info``:
    ``samples_per_k`` defaults to ``result.info.samples_per_k`` (passing a
    different one is refused), and a result averaged over orderings is split
    with the theta-free term averaged over the same permutations
    (``result.info.orderings``), so that ``rest = Delta_k - theta_free`` is
    the theta-dependent part of the same quantity. Refused when the result
    does not record them, or was estimated on another number of samples.
    """
    info = getattr(result, "info", None)
    if info is None or not all(hasattr(info, f) for f in ("samples_per_k", "num_orderings", "unit")):
        raise ConfigError(f"result must be a jaxland.DeltaResult (with .info), got {type(result).__name__}")
    if samples_per_k is _FROM_RESULT:
        samples_per_k = info.samples_per_k
    elif samples_per_k != info.samples_per_k:
        raise ConfigError(
            f"samples_per_k={samples_per_k!r} contradicts the result, which was estimated with "
            f"samples_per_k={info.samples_per_k!r} (result.info.samples_per_k); drop samples_per_k= to use the result's"
        )
    x, y = as_array("x", x), as_array("y", y)
    n = int(x.shape[0]) if x.ndim else 0
    recorded = getattr(info, "num_samples", None)
    if recorded is not None and recorded != n:
        raise ConfigError(f"the result was estimated on N={recorded} samples but x has {n}: pass the data the estimate used")
    perms = getattr(info, "orderings", None)
    if int(info.num_orderings) > 1 and perms is None:
        raise ConfigError(
            f"the result is averaged over {info.num_orderings} random orderings that it does not record "
            "(result.info.orderings is None), so its theta-free term cannot be rebuilt; re-estimate it with "
            "jaxland.delta_monte_carlo (which records them) or pass orderings= an (R, N) permutation array there"
        )
    if perms is not None and np.shape(perms)[0] != int(info.num_orderings):
        raise ConfigError(f"result.info records {np.shape(perms)[0]} orderings but num_orderings={info.num_orderings}")
    k, tf = theta_free_term(model, w, x, y, samples_per_k=samples_per_k, orderings=perms)
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
    return DeltaSplit(k, delta, se, tf, rest, se, frac, str(info.unit), samples_per_k, int(info.num_orderings))
