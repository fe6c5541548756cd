"""Eigenpairs of a model's Hessian ``H_k(w)``: the generic solvers of
:mod:`jaxland.linalg.eigen` driven by jit-compiled Hessian-vector products.

Example (the spectrum figure: top-32 eigenvalues of 50 trained networks)::

    ws = jnp.stack([cached_train(model, x, y, seed=s, data_tag=tag).params for s in range(50)])
    res = hessian_eigenpairs_batch(model, ws, x, y, d=32)
    mean_spectrum = res.eigenvalues.mean(0)           # (32,)
    assert bool(res.converged.all())
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .. import memory
from ..errors import ConfigError
from ..linalg.eigen import _basis_name, _check, _float_name, _solve_jit, _validate, _x64_if
from ..linalg.result import EigResult
from ..models.base import Model
from ..validate import as_array, check_data, check_key, check_params, check_prefix
from .products import hvp, hvp_batch

__all__ = ["hessian_eigenpairs", "hessian_eigenpairs_batch"]


# ----------------------------------------------------------------------------- Hessians


@functools.cache
def _hessian_ops(model: Model):
    # one function object per model, so the jit cache of _solve_jit is reused
    mv = lambda v, w, x, y, k: hvp(model, w, v, x, y, k)
    mm = lambda V, w, x, y, k: hvp_batch(model, w, V, x, y, k)
    return mv, mm


def _hessian_solve(model, ws, x, y, d, k, batch_size, method="lanczos", key=None, tol=1e-3, max_matvecs=None,
                   block_size=None, require_convergence=False, which="largest", basis_dtype=None, hvp_dtype=None):
    """Checks, then the compiled solve for one ``w`` (``ws.ndim == 1``) or each row of ``ws``."""
    batched = ws.ndim == 2
    check_prefix(k, check_data(model, x, y, min_samples=1))
    for w in (ws if batched else ws[None]):
        check_params(model, w, "ws[i]" if batched else "w")
    key = None if key is None else check_key(key)
    d, b, max_matvecs = _validate(ws.shape[-1], d, method, tol, max_matvecs, block_size, which,
                                  memory.hvp_parts(model, x, y, dtype=ws.dtype))
    basis, hd = _basis_name(basis_dtype, method), _float_name("hvp_dtype", hvp_dtype)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    key = jax.random.key(0) if key is None else key
    k = None if k is None else jnp.asarray(k)
    with _x64_if("float64" if "float64" in (basis, hd) else None):
        if hd is not None:
            # the products in hd; floating inputs (weights, images) are cast, labels kept
            ws = ws.astype(hd)
            x = x.astype(hd) if jnp.issubdtype(x.dtype, jnp.floating) else x
        if batched:
            keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(ws.shape[0]))
            res = _batch_jit(model, ws, x, y, k, keys, d, method, float(tol), max_matvecs, b, int(batch_size),
                             which, basis)
        else:
            mv, mm = _hessian_ops(model)
            res = _solve_jit(mv, mm, method, d, float(tol), max_matvecs, b, key, ws, (ws, x, y, k),
                             basis_dtype=basis, which=which)
    return _check(res, method, require_convergence)


def hessian_eigenpairs(
    model: Model,
    w: jax.Array,
    x: jax.Array,
    y: jax.Array,
    d: int,
    k: jax.Array | int | None = None,
    *,
    method: str = "lanczos",
    key: jax.Array | None = None,
    tol: float = 1e-3,
    max_matvecs: int | None = None,
    block_size: int | None = None,
    require_convergence: bool = False,
    which: str = "largest",
    basis_dtype: Any = None,
    hvp_dtype: Any = None,
) -> EigResult:
    """Top-d eigenpairs of ``H_k(w)``, the Hessian of ``L_k`` (full data when ``k`` is None).

    ``w, x, y, k`` are inputs of one compiled program: a new ``w`` or ``k``
    (same shapes) does not recompile. Other arguments as :func:`top_eigenpairs`:
    ``which="smallest"`` gives the bottom of the spectrum (``lambda_min`` first),
    ``basis_dtype="float64"`` a float64 Krylov basis around float32 HVPs.

    ``hvp_dtype="float64"``: the products themselves in float64 (``w`` and a
    floating ``x`` are cast; x64 is switched on for the solve; the result is
    float64). Use it for residuals below ~3e-6 relative to the exact Hessian: a
    float32 HVP's own rounding differs from the exact product by about
    ``1e-7 ||H||`` (on the reference MLP, 3.6e-6 relative for an eigenvalue at
    ``lambda_max / 6``), which no solver driven by it can get below. On a CPU a
    float64 HVP costs about twice a float32 one.
    """
    return _hessian_solve(model, as_array("w", w), x, y, d, k, 1, method=method, key=key, tol=tol,
                          max_matvecs=max_matvecs, block_size=block_size, require_convergence=require_convergence,
                          which=which, basis_dtype=basis_dtype, hvp_dtype=hvp_dtype)


@functools.partial(jax.jit, static_argnames=("model", "d", "method", "tol", "max_matvecs", "block_size", "batch_size",
                                             "which", "basis_dtype"))
def _batch_jit(model, ws, x, y, k, keys, d, method, tol, max_matvecs, block_size, batch_size, which, basis_dtype):
    mv, mm = _hessian_ops(model)

    def one(args):
        w, key = args
        return _solve_jit(mv, mm, method, d, tol, max_matvecs, block_size, key, w, (w, x, y, k),
                          basis_dtype=basis_dtype, which=which)

    return jax.lax.map(one, (ws, keys), batch_size=batch_size)


_OPTIONS = ("method", "key", "tol", "max_matvecs", "block_size", "require_convergence", "which", "basis_dtype",
            "hvp_dtype")


def hessian_eigenpairs_batch(model: Model, ws: jax.Array, x: jax.Array, y: jax.Array, d: int,
                             k: jax.Array | int | None = None, *, batch_size: int = 1, **options) -> EigResult:
    """:func:`hessian_eigenpairs` for each row of ``ws`` (B, D), in one compiled program.

    For the spectrum figure (top-32 eigenvalues averaged over independently
    trained networks): ``hessian_eigenpairs_batch(model, ws, x, y, 32).eigenvalues.mean(0)``.
    ``batch_size`` networks are solved together (vmapped, so the loop runs
    until the slowest of them converges; memory grows with it); the default 1
    solves them one after another (``lax.map``). Network i uses the start key
    ``jax.random.fold_in(key, i)``. Every field gets a leading (B,) axis.
    ``options``: the keyword arguments of :func:`hessian_eigenpairs` (``method``,
    ``key``, ``tol``, ``max_matvecs``, ``block_size``, ``require_convergence``,
    ``which``, ``basis_dtype``, ``hvp_dtype``), with the same defaults.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"hessian_eigenpairs_batch got unknown options {unknown}; allowed: {_OPTIONS} and batch_size")
    ws = as_array("ws", ws)
    if ws.ndim != 2:
        raise ConfigError(f"ws must be a (B, D) stack of flat parameter vectors, got shape {ws.shape}")
    return _hessian_solve(model, ws, x, y, d, k, batch_size, **options)
