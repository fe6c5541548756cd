"""Low-dimensional subspaces of parameter space: ``w(theta) = w* + theta @ P``.

A :class:`Subspace` is a centre ``w*`` (D,) and ``d`` directions ``P`` (d, D),
stored as rows. Two ways to choose ``P``:

* :func:`random_directions` -- Gaussian directions, filter-normalised as in
  Li et al. 2018 ("Visualizing the loss landscape of neural nets"): every
  filter (everything feeding one output unit or channel: a column of a dense
  (in, out) kernel, a (kh, kw, in) slice of a conv kernel) of the direction is
  rescaled to the norm of the same filter of ``w*``, and biases, norm scales
  and other 1-D entries are zeroed. No global rescale follows
  (the original code's rescale undid the normalisation).
* :func:`hessian_subspace` -- the top-``d`` eigenvectors of ``H_k(w*)``
  (``k = None``: all data), eigenvalues kept with their signs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..curvature.eigen import EigResult, hessian_eigenpairs
from ..errors import ConfigError
from ..validate import as_array, check_key, check_params, check_vectors, finite_result, positive_int

__all__ = ["Subspace", "random_directions", "normalize_filters", "hessian_subspace"]


class Subspace(NamedTuple):
    """``center`` w* (D,) and ``directions`` P (d, D); the point at ``theta`` (d,) is ``center + theta @ directions``.

    A NamedTuple of arrays, so it is a pytree and can be passed straight into
    jitted functions.
    """

    center: jax.Array
    directions: jax.Array

    @property
    def dim(self) -> int:
        return int(self.directions.shape[0])

    def w(self, theta: jax.Array) -> jax.Array:
        """Parameters at subspace coordinates ``theta`` (..., d) -> (..., D)."""
        return self.center + jnp.asarray(theta) @ self.directions


def _check_dim(model, d: int) -> int:
    dim = int(model.num_params)
    d = positive_int("subspace dimension d", d)
    if d > dim:
        raise ConfigError(f"subspace dimension d={d} exceeds the number of parameters D={dim}")
    return int(d)


def _norm(a, axes):
    """Euclidean norm over ``axes`` (kept), scaled by the largest entry so that squares cannot overflow."""
    m = jnp.max(jnp.abs(a), axis=axes, keepdims=True)
    safe = jnp.where(m > 0, m, 1.0)
    return m * jnp.sqrt(jnp.sum((a / safe) ** 2, axis=axes, keepdims=True))


def _normalize_leaf(wl, dl):
    if dl.ndim <= 1:  # biases, norm scales: not perturbed (Li et al. 2018)
        return jnp.zeros_like(dl)
    axes = tuple(range(dl.ndim - 1))  # a filter = everything feeding one output unit (last axis)
    wn, dn = _norm(wl, axes), _norm(dl, axes)
    return dl * jnp.where(dn > 0, wn / jnp.where(dn > 0, dn, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames="model")
def _normalize_filters(model, w, directions):
    sw = model.unravel(w)

    def one(dvec):
        sd = model.unravel(dvec)
        return model.ravel(jax.tree.map(_normalize_leaf, sw, sd))

    return jax.vmap(one)(directions)


def normalize_filters(model, w: jax.Array, directions: jax.Array) -> jax.Array:
    """Li et al. filter normalisation of each row of ``directions`` (d, D) against ``w``.

    For every kernel ``K`` (shape (..., out)) and each output unit ``j``,
    ``D[..., j] <- D[..., j] * ||W[..., j]|| / ||D[..., j]||``; 1-D entries
    (biases) are set to zero.
    """
    w, directions = as_array("w", w), as_array("directions", directions)
    check_params(model, w)
    check_vectors(model, directions, "directions", ndim=2, like=w)
    return _normalize_filters(model, w, directions)


def random_directions(
    model,
    w: jax.Array,
    d: int,
    *,
    key: jax.Array,
    filter_normalize: bool = True,
    orthonormalize: bool = False,
    unit_norm: bool = False,
) -> jax.Array:
    """``d`` random directions (d, D), Gaussian, filter-normalised against ``w``.

    Args:
      model: any model of the protocol (:func:`jaxland.as_model`); filter
        normalisation uses its ``unravel`` / ``ravel``: a conv kernel
        (kh, kw, in, out) is normalised per output channel, a dense kernel per
        output unit, as Li et al. do.
      w: the centre w* (D,).
      d: number of directions, ``1 <= d <= D``.
      key: explicit PRNG key; the same key gives the same directions.
      filter_normalize: apply :func:`normalize_filters` (bias entries zeroed);
        a model without any kernel of 2 or more dimensions would get only
        zero directions, which is refused.
      orthonormalize: afterwards replace the rows by an orthonormal basis of
        their span (QR; the first row keeps its direction). Rows then have unit
        norm, so the filter-wise scale is lost but bias entries stay zero.
      unit_norm: the original paper's convention: after filter normalisation
        rescale each row to unit global norm (``||P_j|| = 1``; bias entries
        stay zero, all d rows are used). The default (False) is Li et al.'s:
        ``||P_j||`` is the norm of w*'s kernels, so ``||P theta||`` is about
        ``sigma sqrt(d)`` times that norm instead of ``sigma sqrt(d)``.
    """
    d = _check_dim(model, d)
    w = check_params(model, as_array("w", w))
    dirs = jax.random.normal(check_key(key), (d, w.shape[0]), w.dtype)
    if filter_normalize:
        dirs = _normalize_filters(model, w, dirs)
        if not bool(jnp.all(jnp.any(dirs != 0, axis=1))):
            raise ConfigError(
                f"filter normalisation zeroes a whole direction of {getattr(model, 'name', model)}: it perturbs only "
                "kernels of 2 or more dimensions (biases and other 1-D parameters are zeroed, Li et al. 2018), and "
                "this model has none, or w's kernels are all zero; pass filter_normalize=False for plain Gaussian directions"
            )
    if orthonormalize:
        support = jnp.any(dirs != 0, axis=0)  # keep zeroed (bias) entries exactly zero
        q, r = jnp.linalg.qr(dirs.T.astype(jnp.promote_types(dirs.dtype, jnp.float32)))  # no 16-bit QR
        dirs = jnp.where(support, (q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)).T, 0.0).astype(dirs.dtype)
    if unit_norm:
        dirs = dirs / _norm(dirs, (1,))
    return finite_result("random_directions", dirs, cause="w too large for its filter norms", raw_hint=False)


def hessian_subspace(model, w: jax.Array, x: jax.Array, y: jax.Array, d: int, *, key=None, k=None, **eig_kwargs) -> tuple[Subspace, EigResult]:
    """Top-``d`` Hessian eigenvectors of ``L_k`` at ``w`` as a :class:`Subspace`.

    :func:`jaxland.hessian_eigenpairs` on the matrix-free ``H_k(w) v``
    (``k = None``: the full-data Hessian H(w*)). Eigenvalues are signed and
    descending; the rows of the returned directions are the corresponding
    unit eigenvectors. Extra keyword arguments (``method``, ``tol``,
    ``max_matvecs``, ...) go to the eigensolver.

    Returns ``(Subspace(w, eigenvectors), EigResult)``.
    """
    d = _check_dim(model, d)
    res = hessian_eigenpairs(model, w, x, y, d, k=k, key=key, **eig_kwargs)
    return Subspace(jnp.asarray(w), jnp.asarray(res.eigenvectors)), res
