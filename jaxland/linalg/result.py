"""The eigensolvers' result type and its finishing steps (residuals, ordering, signs, convergence).

Pair i is converged when ``||A v_i - lambda_i v_i|| <= max(tol * |lambda_i|, 100 * eps * |lambda|_max)``
(the second term is the floating-point floor, which only matters for eigenvalues near zero);
``relative_residuals = residuals / |lambda_i|``. Non-finite products give NaN pairs and
``converged=False``, never a silently wrong number.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["EigResult", "EigInfo"]


class EigInfo(NamedTuple):
    """An :class:`EigResult`'s diagnostics in one place (arrays with a leading axis for a batch)."""

    d: int  # pairs returned
    dim: int  # operator size
    num_matvecs: int | np.ndarray  # products used
    converged: bool | np.ndarray
    max_relative_residual: float | np.ndarray  # over the d pairs


class EigResult(NamedTuple):
    """Top-d eigenpairs with their diagnostics (a leading batch axis when batched).

    Attributes:
      eigenvalues: (d,) signed, descending (largest algebraic first).
      eigenvectors: (d, dim) unit rows; the sign is fixed so that each row's
        largest-magnitude entry is positive.
      residuals: (d,) ``||A v_i - lambda_i v_i||`` from real products.
      relative_residuals: (d,) ``residuals / |lambda_i|``.
      num_matvecs: operator-vector products used (a block of m counts m).
      converged: every pair meets the tolerance (see the module docstring).
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array
    residuals: jax.Array
    relative_residuals: jax.Array
    num_matvecs: jax.Array
    converged: jax.Array

    @property
    def info(self) -> EigInfo:
        """:class:`EigInfo`: d, dim, products used, convergence, worst relative residual."""
        scalar = lambda a: a.item() if a.ndim == 0 else a
        d, dim = np.shape(self.eigenvectors)[-2:]
        return EigInfo(int(d), int(dim), scalar(np.asarray(self.num_matvecs)), scalar(np.asarray(self.converged)),
                       scalar(np.max(np.asarray(self.relative_residuals), axis=-1)))


# ----------------------------------------------------------------------------- helpers


def _eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def _fix_signs(vecs):
    idx = jnp.argmax(jnp.abs(vecs), axis=-1)
    s = jnp.sign(jnp.take_along_axis(vecs, idx[:, None], axis=-1))
    return vecs * jnp.where(s == 0, 1.0, s).astype(vecs.dtype)


def _finish(theta, vecs, avecs, tol, num_matvecs, finite):
    """Residuals from products ``avecs = A vecs``, sorting, signs, NaN on failure."""
    res = jnp.linalg.norm(avecs - theta[:, None] * vecs, axis=1)
    order = jnp.argsort(-theta)
    theta, vecs, res = theta[order], vecs[order], res[order]
    return _result(theta, _fix_signs(vecs), res, tol, num_matvecs, finite)


def _result(theta, vecs, res, tol, num_matvecs, finite):
    dtype = theta.dtype
    tiny = jnp.finfo(dtype).tiny
    floor = 100 * _eps(dtype) * jnp.max(jnp.abs(theta))
    ok = jnp.all(res <= jnp.maximum(tol * jnp.abs(theta), floor)) & finite
    ok &= jnp.all(jnp.isfinite(theta)) & jnp.all(jnp.isfinite(res))
    nan = jnp.asarray(jnp.nan, dtype)
    theta = jnp.where(finite, theta, nan)
    res = jnp.where(finite, res, nan)
    return EigResult(
        eigenvalues=theta,
        eigenvectors=jnp.where(finite, vecs, nan),
        residuals=res,
        relative_residuals=res / jnp.maximum(jnp.abs(theta), tiny),
        num_matvecs=jnp.asarray(num_matvecs, jnp.int32),
        converged=ok,
    )
