"""Loss surfaces on a 2-D grid, and the companion paper's ``|L_{k+1}(w) - L_k(w)|``."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import memory
from .._compat import renamed_kwargs
from ..errors import ConfigError
from .montecarlo import orderings_array, per_sample_loss_matrix
from .prefix import cumulative_means, loss_increments
from ..validate import as_array, check_data, check_key, check_params, check_real, check_subspace, finite_result, num_groups, positive_int, unit

__all__ = ["SurfaceResult", "LossDifferenceResult", "loss_surface", "loss_differences"]


class SurfaceResult(NamedTuple):
    """2-D surfaces on the grid ``alphas x betas``; ``[..., i, j]`` is at ``(alphas[i], betas[j])``.

    ``loss[m]`` = ``L_{ks[m]}``, ``diff_sq[m]`` = ``(L_{ks[m]+1} - L_{ks[m]})^2``,
    ``loss_full`` = ``L_K`` (all samples or batches).
    """

    alphas: jax.Array
    betas: jax.Array
    k: np.ndarray
    loss: jax.Array
    diff_sq: jax.Array
    loss_full: jax.Array
    samples_per_k: int | None
    unit: str

    @property
    def info(self) -> dict:
        """What k counts: ``samples_per_k`` and ``unit``."""
        return {"samples_per_k": self.samples_per_k, "unit": self.unit}


class LossDifferenceResult(NamedTuple):
    """``|L_{k+1}(w) - L_k(w)|`` for k = 1..K-1, averaged over orderings; ``stderr`` over orderings (NaN if R = 1)."""

    k: np.ndarray
    diff: jax.Array
    stderr: jax.Array
    num_orderings: int
    samples_per_k: int | None
    unit: str

    @property
    def info(self) -> dict:
        """``num_orderings`` averaged over and what k counts (``samples_per_k``, ``unit``)."""
        return {"num_orderings": self.num_orderings, "samples_per_k": self.samples_per_k, "unit": self.unit}


@renamed_kwargs(ks="k", batch_size="samples_per_k", chunk="chunk_size")
def loss_surface(
    model,
    subspace2d,
    x: jax.Array,
    y: jax.Array,
    *,
    k,
    grid: int = 21,
    extent: float = 1.0,
    samples_per_k: int | None = None,
    chunk_size: int | None = None,
    fast_kernel: bool = True,
    mesh=None,
    matmul_dtype=None,
    allow_nonfinite: bool = False,
) -> SurfaceResult:
    """``L_k(alpha, beta)`` and ``(L_{k+1} - L_k)^2`` on a ``grid x grid`` mesh of ``[-extent, extent]^2``.

    The point ``(alpha, beta)`` is ``w* + alpha P_1 + beta P_2``. One (grid^2, N)
    per-sample loss matrix gives every requested k (1 <= k <= K-1; in
    batches when ``samples_per_k`` is set, e.g. the paper's "max k" is K-1).
    ``mesh``: the grid points are split over the devices like Monte Carlo
    draws (:func:`~jaxland.per_sample_loss_matrix`). A non-finite loss on the
    grid raises :class:`~jaxland.NumericalError` unless ``allow_nonfinite=True``.
    """
    x, y = as_array("x", x), as_array("y", y)
    d = check_subspace(model, subspace2d)
    if d != 2:
        raise ConfigError(f"loss_surface needs a 2-D subspace, got d={d}")
    n = check_data(model, x, y)
    num_k = num_groups(n, samples_per_k)
    ks = np.atleast_1d(np.asarray(k))
    if ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or ks.min() < 1 or ks.max() > num_k - 1:
        raise ConfigError(f"every k must be an integer in [1, {num_k - 1}] ({unit(samples_per_k, model)}), got {ks.tolist()}")
    grid = positive_int("grid", grid, minimum=2)
    extent = check_real("extent", extent)
    dtype = subspace2d.directions.dtype
    memory.require(f"loss_surface (grid={grid}, N={n})",
                   {f"losses on the grid ({grid}^2 x {n}, 2 copies)": 2 * memory.nbytes((grid, grid, n), dtype)},
                   fix="use a smaller grid (or fewer samples)")
    alphas = jnp.linspace(-extent, extent, grid, dtype=dtype)
    betas = jnp.linspace(-extent, extent, grid, dtype=dtype)
    aa, bb = jnp.meshgrid(alphas, betas, indexing="ij")
    thetas = jnp.stack([aa.ravel(), bb.ravel()], axis=-1)
    losses = per_sample_loss_matrix(
        model, subspace2d, thetas, x, y, chunk_size=chunk_size, fast_kernel=fast_kernel, mesh=mesh, matmul_dtype=matmul_dtype
    )
    finite_result("loss_surface losses", losses, where="grid point ", allow=allow_nonfinite,
                  cause="the loss overflows far from w* (extent too large, or directions too long)")
    big_l = cumulative_means(losses, samples_per_k)  # (G^2, K)
    inc = loss_increments(losses, samples_per_k)  # (G^2, K-1)
    idx = jnp.asarray(ks - 1)
    shape = (len(ks), grid, grid)
    return SurfaceResult(
        alphas, betas, ks,
        big_l[:, idx].T.reshape(shape),
        (inc[:, idx] ** 2).T.reshape(shape),
        big_l[:, -1].reshape(shape[1:]),
        samples_per_k, unit(samples_per_k, model),
    )


@functools.partial(jax.jit, static_argnames=("model", "samples_per_k"))
def _abs_increments(model, w, x, y, perms, *, samples_per_k):
    losses = model.per_sample_losses(w, x, y)
    return jax.lax.map(lambda p: jnp.abs(loss_increments(losses[p], samples_per_k)), perms)


@renamed_kwargs(batch_size="samples_per_k")
def loss_differences(
    model, w: jax.Array, x: jax.Array, y: jax.Array, *, orderings=None, key=None, samples_per_k: int | None = None,
    allow_nonfinite: bool = False,
) -> LossDifferenceResult:
    """Companion paper: ``|L_{k+1}(w) - L_k(w)|`` for k = 1..K-1, averaged over orderings.

    One per-sample loss evaluation; each ordering costs a cumulative sum.
    ``orderings``: None (data order), an int R (R random permutations from
    ``key``), or an (R, N) array of permutations. The paper used R = 100 and
    k in samples; ``stderr`` is the standard error over orderings. A
    non-finite ``diff`` raises :class:`~jaxland.NumericalError` unless
    ``allow_nonfinite=True``.
    """
    w, x, y = as_array("w", w), as_array("x", x), as_array("y", y)
    n = check_data(model, x, y)
    check_params(model, w)
    key = None if key is None else check_key(key)
    num_k = num_groups(n, samples_per_k)
    perms = orderings_array(orderings, n, key)
    if perms is None:
        perms = jnp.arange(n)[None]
    a = _abs_increments(model, w, x, y, perms, samples_per_k=samples_per_k)  # (R, K-1)
    finite_result("loss_differences", a, where="(ordering, k-1) = ", allow=allow_nonfinite,
                  cause="the per-sample losses at w overflow")
    r = int(a.shape[0])
    se = a.std(0, ddof=1) / np.sqrt(r) if r > 1 else jnp.full(a.shape[1], jnp.nan, a.dtype)
    return LossDifferenceResult(np.arange(1, num_k), a.mean(0), se, r, samples_per_k, unit(samples_per_k, model))
