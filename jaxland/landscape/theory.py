"""Second-order predictions of ``Delta_k`` for every k, from per-sample curvature in the subspace.

:func:`subspace_curvature` computes per-sample ``c_i = l_i(w*)``,
``g_i = P grad l_i(w*)`` and ``G_i = P Hess l_i(w*) P^T`` in one forward-mode
pass; prefix means of them (:func:`cumulative_curvature`) are ``L_k(w*)``,
``P grad L_k`` and ``P H_k P^T`` for every k, and :func:`theory_delta` turns
their increments into the paper's Theorem 1 and the exact second-order
formula (docs/reference.md).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..curvature.eigen import hessian_eigenpairs
from .._compat import renamed_kwargs
from ..errors import ConfigError
from .prefix import cumulative_means, prefix_increments
from ..sharding import ceil_div, gather, map_rows, replicate, resolve_mesh
from .. import memory
from ..validate import (as_array, check_curvature, check_data, check_key, check_params, check_sigma, check_subspace,
                        finite_result, group_split, num_groups, positive_int, unit)

__all__ = [
    "SubspaceCurvature",
    "CumulativeCurvature",
    "TheoryInfo",
    "TheoryResult",
    "EigensolverTheory",
    "subspace_curvature",
    "cumulative_curvature",
    "theory_delta",
    "theory_delta_eigensolver",
]


class SubspaceCurvature(NamedTuple):
    """Per-sample Taylor data in the subspace at ``w*``: ``c`` (N,), ``g`` (N, d), ``G`` (N, d, d)."""

    c: jax.Array
    g: jax.Array
    G: jax.Array


class CumulativeCurvature(NamedTuple):
    """Prefix means for k = 1..K: ``loss`` L_k(w*) (K,), ``grad`` P grad L_k (K, d), ``hess`` P H_k P^T (K, d, d)."""

    k: np.ndarray
    loss: jax.Array
    grad: jax.Array
    hess: jax.Array


class TheoryInfo(NamedTuple):
    """``sigma`` of the draws, ``samples_per_k`` (None: k counts samples) and ``unit``; ``num_samples``: N given,
    ``samples_used``: the samples k reaches (an incomplete last batch is not used). None where unknown."""

    sigma: float
    samples_per_k: int | None
    unit: str
    num_samples: int | None = None
    samples_used: int | None = None

    @property
    def samples_dropped(self) -> int | None:
        """Trailing samples of an incomplete batch that no k reaches (``num_samples - samples_used``)."""
        return None if self.num_samples is None or self.samples_used is None else self.num_samples - self.samples_used


class TheoryResult(NamedTuple):
    """Second-order predictions of ``Delta_k`` for k = 1..K-1.

    ``theorem1``: the paper's Theorem 1, ``sigma^4/4 (2 sum_i dl_i^2 + (sum_i dl_i)^2)``
    with ``dl_i = lambda_i(P H_{k+1} P^T) - lambda_i(P H_k P^T)`` (signed, descending).
    ``second_order``: ``(c + sigma^2 tr A/2)^2 + sigma^2 |g|^2 + sigma^4 tr(A^2)/2`` with
    ``c = L_{k+1}(w*) - L_k(w*)``, ``g = P (grad L_{k+1} - grad L_k)``,
    ``A = P (H_{k+1} - H_k) P^T`` -- exact for a loss that is quadratic in the subspace.
    ``curvature_only``: ``second_order`` with c = g = 0.
    ``ritz_values`` (K, d): eigenvalues of ``P H_k P^T`` for k = 1..K, descending.
    """

    k: np.ndarray
    theorem1: jax.Array
    second_order: jax.Array
    curvature_only: jax.Array
    ritz_values: jax.Array
    info: TheoryInfo

    unit = property(lambda self: self.info.unit, doc="What k counts (``info.unit``).")


class EigensolverTheory(NamedTuple):
    """Theorem 1 through top-d eigensolves of ``H_k`` and ``H_{k+1}`` at a few k.

    ``theorem1`` (len(k),); ``eigenvalues`` (len(k), 2, d): of ``H_k`` and ``H_{k+1}``.
    """

    k: np.ndarray
    theorem1: np.ndarray
    eigenvalues: np.ndarray
    info: TheoryInfo


# ----------------------------------------------------------------------------- curvature pass


def _curvature_rows(model, rows, subspace):
    xs, ys = rows
    d = subspace.directions.shape[0]
    f = lambda th: model.per_sample_losses(subspace.center + th @ subspace.directions, xs, ys)

    def jac(th):
        j, val = jax.jacfwd(lambda s: (f(s), f(s)), has_aux=True)(th)
        return j, (val, j)

    # forward-over-forward: all d^2 second-order tangents in one batched pass
    hess, (val, grad) = jax.jacfwd(jac, has_aux=True)(jnp.zeros(d, subspace.directions.dtype))
    return val, grad, hess


@functools.partial(jax.jit, static_argnames=("model", "chunk", "mesh"))
def _curvature(model, subspace, x, y, *, chunk, mesh=None):
    body = lambda rows, sub: _curvature_rows(model, rows, sub)
    return map_rows(body, (x, y), subspace, chunk=chunk, mesh=mesh)


def _curvature_block(model, subspace, x, y, local: int, sample_block) -> int:
    """``sample_block`` (default 1024, or fewer so that the pass fits in memory; :mod:`jaxland.memory`)."""
    given = sample_block is not None
    block = min(positive_int("sample_block", sample_block, 1024), local)
    what = f"subspace_curvature (N={int(x.shape[0])}, d={int(subspace.directions.shape[0])}, sample_block={block})"
    if not given:  # the default: halve it until the pass fits
        while block > 1 and not memory.estimate(memory.curvature_parts(model, subspace, x, y, sample_block=block)).fits:
            block = ceil_div(block, 2)
    memory.require(what, memory.curvature_parts(model, subspace, x, y, sample_block=block),
                   fix="pass a smaller sample_block, or use a lower subspace dimension d")
    return block


@renamed_kwargs(chunk="sample_block")
def subspace_curvature(model, subspace, x: jax.Array, y: jax.Array, *, sample_block: int | None = None, mesh=None,
                       allow_nonfinite: bool = False) -> SubspaceCurvature:
    """Per-sample ``c_i = l_i(w*)``, ``g_i = P grad l_i(w*)`` (N, d), ``G_i = P Hess l_i(w*) P^T`` (N, d, d).

    With ``f(theta) = (l_i(w* + theta @ P))_i`` (R^d -> R^N), ``g = J_f(0)`` and
    ``G = jacfwd(jacfwd(f))(0)``: one batched forward-mode pass per block of
    ``sample_block`` samples (default 1024), no per-sample HVPs (about 16x faster on
    the reference MLP, same numbers). Any model of the protocol.

    ``mesh``: the samples are split over a 1-D device mesh (None: every
    visible device; an int: that many), ``sample_block`` at a time on each device;
    the same numbers as on one device to float rounding. A non-finite result
    raises :class:`~jaxland.NumericalError` unless ``allow_nonfinite=True``.
    """
    x, y = as_array("x", x), as_array("y", y)
    check_subspace(model, subspace)
    n = check_data(model, x, y)
    mesh = resolve_mesh(mesh)
    local = n if mesh is None else ceil_div(n, mesh.size)
    block = _curvature_block(model, subspace, x, y, local, sample_block)
    block = ceil_div(local, ceil_div(local, block))  # equal blocks: the least padding
    subspace, x, y = replicate(mesh, subspace, x, y)
    out = SubspaceCurvature(*gather(_curvature(model, subspace, x, y, chunk=block, mesh=mesh)))
    return finite_result("subspace_curvature (c, g, G)", out, where="sample ", allow=allow_nonfinite,
                         cause="the loss overflows at subspace.center or its derivatives along subspace.directions do "
                               "(directions too long, or x too large?)")


@renamed_kwargs(batch_size="samples_per_k")
def cumulative_curvature(curv: SubspaceCurvature, *, samples_per_k: int | None = None) -> CumulativeCurvature:
    """``L_k(w*)``, ``P grad L_k(w*)``, ``P H_k(w*) P^T`` for k = 1..K by prefix means of the per-sample terms."""
    num_k = num_groups(check_curvature(curv)[0], samples_per_k)
    loss, grad, hess = (cumulative_means(jnp.asarray(a), samples_per_k, axis=0) for a in curv)
    return CumulativeCurvature(np.arange(1, num_k + 1), loss, grad, hess)


# ----------------------------------------------------------------------------- theory


@functools.partial(jax.jit, static_argnames="samples_per_k")
def theory_terms(c, g, h, sigma, *, samples_per_k):
    """``(theorem1, second_order, curvature_only, ritz_values)`` from checked per-sample curvature arrays."""
    dc, dg, da = (prefix_increments(a, samples_per_k, axis=0) for a in (c, g, h))
    da = 0.5 * (da + jnp.swapaxes(da, -1, -2))
    s2 = sigma * sigma
    tr = jnp.trace(da, axis1=-2, axis2=-1)
    tr2 = jnp.sum(da * da, axis=(-2, -1))
    second_order = (dc + s2 * tr / 2) ** 2 + s2 * jnp.sum(dg * dg, -1) + s2 * s2 * tr2 / 2
    curvature_only = s2 * s2 * (tr**2 / 4 + tr2 / 2)
    hc = cumulative_means(h, samples_per_k, axis=0)
    lam = jnp.linalg.eigvalsh(0.5 * (hc + jnp.swapaxes(hc, -1, -2)))[..., ::-1]  # descending, signed
    dl = lam[1:] - lam[:-1]
    theorem1 = s2 * s2 / 4 * (2 * jnp.sum(dl * dl, -1) + jnp.sum(dl, -1) ** 2)
    return theorem1, second_order, curvature_only, lam


@renamed_kwargs(batch_size="samples_per_k")
def theory_delta(curv: SubspaceCurvature, *, sigma: float, samples_per_k: int | None = None,
                 allow_nonfinite: bool = False) -> TheoryResult:
    """Second-order ``Delta_k`` for every k = 1..K-1 from per-sample curvature, in one pass.

    Prefix means of ``c_i``, ``g_i``, ``G_i`` (over batch means when
    ``samples_per_k`` is set) give ``L_k(w*)``, ``P grad L_k`` and ``P H_k P^T``;
    increments use ``X_{k+1} - X_k = (x_{k+1} - X_k)/(k+1)``. With
    ``c, g, A`` the increments of those three and ``theta ~ N(0, sigma^2 I)``:

    * second order (no assumption beyond a quadratic loss in the subspace)::

        E[(c + g.theta + theta^T A theta / 2)^2]
          = (c + sigma^2 tr(A)/2)^2 + sigma^2 |g|^2 + sigma^4 tr(A^2)/2

    * Theorem 1 of the paper (assumes c = 0, g = 0 and diagonal ``P H_k P^T``)::

        sigma^4/4 * (2 sum_i dl_i^2 + (sum_i dl_i)^2),
        dl_i = lambda_i(P H_{k+1} P^T) - lambda_i(P H_k P^T)

      with signed Ritz values sorted descending. The sigma^4 factor is kept.

    A non-finite prediction raises :class:`~jaxland.NumericalError` naming the
    first bad k, unless ``allow_nonfinite=True``.
    """
    sigma = check_sigma(sigma)
    n = check_curvature(curv)[0]
    num_k = num_groups(n, samples_per_k)
    theorem1, second_order, curvature_only, lam = theory_terms(
        jnp.asarray(curv.c), jnp.asarray(curv.g), jnp.asarray(curv.G), sigma, samples_per_k=samples_per_k
    )
    finite_result("theory_delta (theorem1, second_order, curvature_only)", (theorem1, second_order, curvature_only),
                  where="k-1 = ", allow=allow_nonfinite, cause="sigma^4 times the curvature overflows (sigma too large)")
    return TheoryResult(np.arange(1, num_k), theorem1, second_order, curvature_only, lam,
                        TheoryInfo(sigma, samples_per_k, unit(samples_per_k), n, group_split(n, samples_per_k)[1]))


@renamed_kwargs(ks="k", batch_size="samples_per_k")
def theory_delta_eigensolver(
    model, w, x, y, *, k, d: int, sigma: float, key=None, samples_per_k: int | None = None, **eig_kwargs
) -> EigensolverTheory:
    """The paper's literal route, for validation on a few k: top-``d`` eigenvalues of ``H_k`` and ``H_{k+1}``.

    For each requested k (in samples, or batches of ``samples_per_k``), the
    top-``d`` signed eigenvalues of the full Hessians ``H_k(w*)`` and
    ``H_{k+1}(w*)`` (the first k, k+1 groups of samples, so each product costs
    O(k)) come from :func:`jaxland.hessian_eigenpairs`, and Theorem 1 gives
    ``sigma^4/4 (2 sum dl^2 + (sum dl)^2)``. About 2 eigensolves per k: use
    :func:`theory_delta` for all k.
    """
    sigma = check_sigma(sigma)
    w, x, y = as_array("w", w), as_array("x", x), as_array("y", y)
    n = check_data(model, x, y)
    check_params(model, w)
    key = check_key(key)
    num_k = num_groups(n, samples_per_k)
    ks = np.atleast_1d(np.asarray(k))
    if not np.issubdtype(ks.dtype, np.integer):
        raise ConfigError(f"k must be integers (k in {unit(samples_per_k, model)}), got {ks.tolist()}")
    if ks.size == 0 or ks.min() < 1 or ks.max() > num_k - 1:
        raise ConfigError(f"every k must be in [1, {num_k - 1}] ({unit(samples_per_k, model)}), got {ks.tolist()}")
    per_unit = 1 if samples_per_k is None else int(samples_per_k)
    out, lams = [], []
    for kk in ks:
        pair = [np.asarray(hessian_eigenpairs(model, w, x[: m * per_unit], y[: m * per_unit], d, key=key, **eig_kwargs).eigenvalues)
                for m in (kk, kk + 1)]
        dl = pair[1] - pair[0]
        out.append(sigma**4 / 4 * (2 * np.sum(dl**2) + np.sum(dl) ** 2))
        lams.append(pair)
    return EigensolverTheory(ks, np.asarray(out), np.asarray(lams),
                             TheoryInfo(sigma, samples_per_k, unit(samples_per_k, model), n, group_split(n, samples_per_k)[1]))
