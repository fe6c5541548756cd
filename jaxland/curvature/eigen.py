"""Eigenpairs of a curvature operator (Hessian, GGN, empirical Fisher): the solvers of :mod:`jaxland.linalg.eigen` on its products.

:func:`eigenpairs` takes a :class:`~jaxland.curvature.CurvatureOperator`;
:func:`hessian_eigenpairs` and :func:`hessian_eigenpairs_batch` build the
Hessian's from ``(model, w, x, y)`` and call it. The operator enters the
compiled solve as an argument (weights and data are its inputs, not constants),
so a new ``w`` or ``k`` of the same shapes reuses the program; the work every
product shares (:func:`~jaxland.curvature.operators.linear_map`) is done once,
before the solver's loop. With ``loop="host"`` (the default for convolutional
models on a CPU) the loop runs in Python around one compiled step, which takes
the operator as its argument and does one product and the solver's update.

Example (the spectrum figure: top-32 eigenvalues of 50 trained networks)::

    ws = jnp.stack([cached_train(model, x, y, key=jax.random.key(s), data_tag=tag).params for s in range(50)])
    res = hessian_eigenpairs_batch(model, ws, x, y, 32, key=jax.random.key(0))
    mean_spectrum = res.eigenvalues.mean(0)           # (32,)
    assert bool(res.converged.all())
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .._compat import renamed_kwargs
from .. import memory
from ..errors import ConfigError
from ..linalg.eigen import _basis_name, _check, _float_name, _solve, _validate, _x64_if, solve_host
from ..linalg.result import EigResult
from ..models.base import Model
from ..validate import check_key, check_loop, check_operator, check_params, positive_int
from .linearised import host_product
from .operators import CurvatureOperator, hessian_operator, linear_map, loop_mode

__all__ = ["eigenpairs", "hessian_eigenpairs", "hessian_eigenpairs_batch"]


@functools.partial(jax.jit, static_argnames=("d", "method", "tol", "max_matvecs", "block_size", "which", "basis_dtype"))
def _eig_jit(op, key, d, method, tol, max_matvecs, block_size, which, basis_dtype):
    lin = linear_map(op)
    return _solve(lin, jax.vmap(lin), method, d, tol, max_matvecs, block_size, key, op.dim, op.dtype, basis_dtype, which)


@functools.partial(jax.jit, static_argnames=("d", "method", "tol", "max_matvecs", "block_size", "which", "basis_dtype",
                                             "chunk_size"))
def _eig_batch_jit(op, ws, keys, d, method, tol, max_matvecs, block_size, which, basis_dtype, chunk_size):
    def one(args):
        w, key = args
        return _eig_jit(op.at_params(w), key, d, method, tol, max_matvecs, block_size, which, basis_dtype)

    return jax.lax.map(one, (ws, keys), batch_size=chunk_size)


def _solve_host(op, key, d, method, tol, max_matvecs, block_size, which, basis_dtype):
    """The solve with a host loop around one compiled step. A solver that multiplies one vector per step (Lanczos,
    power) takes the linearisation, computed once, as every step's operand; a block solver, or residuals over the
    memory budget, the operator itself (:func:`~jaxland.curvature.linearised.host_product`)."""
    one = method in ("lanczos", "power") or (method == "block" and block_size == 1)  # one vector per step
    make, operand, make_rows = host_product(op, 1 if one else 2)
    return solve_host(make, operand, method, d, tol, max_matvecs, block_size, key, op.dim, op.dtype, basis_dtype, which,
                      make_rows=make_rows)


def _settings(op, d, method, tol, max_matvecs, block_size, which, basis_dtype, product_dtype, dtype_name="product_dtype"):
    d, b, max_matvecs = _validate(op.dim, d, method, tol, max_matvecs, block_size, which,
                                  memory.hvp_parts(op.model, op.x, op.y, dtype=op.w.dtype))
    basis, pd = _basis_name(basis_dtype, method), _float_name(dtype_name, product_dtype)
    return (d, method, float(tol), max_matvecs, b, which, basis), pd


def eigenpairs(
    op: CurvatureOperator,
    d: int,
    *,
    key: jax.Array | None = None,
    method: str = "lanczos",
    tol: float = 1e-3,
    max_matvecs: int | None = None,
    block_size: int | None = None,
    require_convergence: bool = False,
    which: str = "largest",
    basis_dtype: Any = None,
    product_dtype: Any = None,
    loop: str = "auto",
) -> EigResult:
    """Top-d eigenpairs of a curvature operator (largest algebraic first; ``which="smallest"``: the bottom).

    ``key`` is required (the start vector; same key, same result). The other
    settings are those of :func:`jaxland.top_eigenpairs`: ``method`` (default
    ``"lanczos"``, the fewest products), ``tol`` (relative residual), the product
    budget ``max_matvecs``, ``block_size`` for ``"block"``/``"lobpcg"``,
    ``basis_dtype="float64"`` for a float64 Krylov basis around float32 products.
    ``product_dtype="float64"``: the products themselves in float64 (``w`` and a
    floating ``x`` cast, x64 switched on for the solve; the result is float64).
    ``loop``: ``"compiled"`` (one program), ``"host"`` (a Python loop around one
    compiled step per product) or ``"auto"`` (default: the host loop for a model
    with a convolution on the CPU backend, where XLA runs a convolution inside a
    loop body several times slower; see :mod:`jaxland.linalg.loops`). The same
    numbers to float rounding either way.

    Works for every kind: for the PSD ones (GGN, Fisher) ``which="smallest"``
    finds the (near-)null space. Returns :class:`~jaxland.EigResult`; raises
    :class:`ConfigError` on impossible settings, :class:`NumericalError` on
    non-finite products or (``require_convergence=True``) no convergence.
    """
    check_operator(op)
    key = check_key(key)
    static, pd = _settings(op, d, method, tol, max_matvecs, block_size, which, basis_dtype, product_dtype)
    mode = loop_mode(op, check_loop(loop))
    with _x64_if("float64" if "float64" in (static[-1], pd) else None):
        op = op if pd is None else op.astype(pd)
        res = _solve_host(op, key, *static) if mode == "host" else _eig_jit(op, key, *static)
    return _check(res, method, require_convergence)


_OPTIONS = ("method", "tol", "max_matvecs", "block_size", "require_convergence", "which", "basis_dtype", "hvp_dtype", "loop")


def hessian_eigenpairs(
    model: Model,
    w: jax.Array,
    x: jax.Array,
    y: jax.Array,
    d: int,
    *,
    k: jax.Array | int | None = None,
    key: jax.Array | None = None,
    hvp_dtype: Any = None,
    **options,
) -> EigResult:
    """Top-d eigenpairs of ``H_k(w)``, the Hessian of ``L_k`` (full data when ``k`` is None).

    ``eigenpairs(hessian_operator(model, w, x, y, k=k), d, key=key, **options)``:
    ``options`` are :func:`eigenpairs`' (``method``, ``tol``, ``max_matvecs``,
    ``block_size``, ``require_convergence``, ``which``, ``basis_dtype``,
    ``loop``), with the same defaults. ``key`` is required. ``w, x, y, k`` are inputs of one compiled program: a new
    ``w`` or ``k`` (same shapes) does not recompile. ``which="smallest"`` gives
    the bottom of the spectrum (``lambda_min`` first), ``basis_dtype="float64"``
    a float64 Krylov basis around float32 HVPs.

    ``hvp_dtype="float64"``: the products themselves in float64 (``w`` and a
    floating ``x`` are cast; x64 is switched on for the solve; the result is
    float64). Use it for residuals below ~3e-6 relative to the exact Hessian: a
    float32 HVP's own rounding differs from the exact product by about
    ``1e-7 ||H||`` (on the reference MLP, 3.6e-6 relative for an eigenvalue at
    ``lambda_max / 6``), which no solver driven by it can get below. On a CPU a
    float64 HVP costs about twice a float32 one.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"hessian_eigenpairs got unknown options {unknown}; allowed: {_OPTIONS}, k and key")
    op = hessian_operator(model, w, x, y, k=k)
    _float_name("hvp_dtype", hvp_dtype)
    return eigenpairs(op, d, key=key, product_dtype=hvp_dtype, **options)


@renamed_kwargs(batch_size="chunk_size")
def hessian_eigenpairs_batch(model: Model, ws: jax.Array, x: jax.Array, y: jax.Array, d: int, *,
                             k: jax.Array | int | None = None, key: jax.Array | None = None, chunk_size: int = 1,
                             **options) -> EigResult:
    """:func:`hessian_eigenpairs` for each row of ``ws`` (B, D), in one compiled program.

    For the spectrum figure (top-32 eigenvalues averaged over independently
    trained networks): ``hessian_eigenpairs_batch(model, ws, x, y, 32, key=key).eigenvalues.mean(0)``.
    ``chunk_size`` networks are solved together (vmapped, so the loop runs
    until the slowest of them converges; memory grows with it); the default 1
    solves them one after another (``lax.map``). Network i uses the start key
    ``jax.random.fold_in(key, i)``. Every field gets a leading (B,) axis.
    ``options``: the keyword arguments of :func:`hessian_eigenpairs` (``method``,
    ``tol``, ``max_matvecs``, ``block_size``, ``require_convergence``,
    ``which``, ``basis_dtype``, ``hvp_dtype``, ``loop``), with the same defaults.
    With the host loop the networks are solved one after another (``chunk_size`` is not used).
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"hessian_eigenpairs_batch got unknown options {unknown}; allowed: {_OPTIONS}, k, key, chunk_size")
    ws = jnp.asarray(ws)
    if ws.ndim != 2:
        raise ConfigError(f"ws must be a (B, D) stack of flat parameter vectors, got shape {ws.shape}")
    op = hessian_operator(model, ws[0], x, y, k=k)
    for i in range(1, ws.shape[0]):
        check_params(model, ws[i], f"ws[{i}]")
    key = check_key(key)
    chunk_size = positive_int("chunk_size (networks solved together)", chunk_size)
    opts = {"method": "lanczos", "tol": 1e-3, "max_matvecs": None, "block_size": None, "which": "largest",
            "basis_dtype": None, "hvp_dtype": None, "loop": "auto", **options}
    require = options.get("require_convergence", False)
    static, pd = _settings(op, d, opts["method"], opts["tol"], opts["max_matvecs"], opts["block_size"], opts["which"],
                           opts["basis_dtype"], opts["hvp_dtype"], "hvp_dtype")
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(ws.shape[0]))
    mode = loop_mode(op, check_loop(opts["loop"]))
    with _x64_if("float64" if "float64" in (static[-1], pd) else None):
        if pd is not None:
            op, ws = op.astype(pd), ws.astype(pd)
        if mode == "host":
            each = [_solve_host(op.at_params(ws[i]), keys[i], *static) for i in range(ws.shape[0])]
            res = jax.tree.map(lambda *a: jnp.stack(a), *each)
        else:
            res = _eig_batch_jit(op, ws, keys, *static, chunk_size)
    return _check(res, opts["method"], require)
