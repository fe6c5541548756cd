"""Top eigenpairs of a symmetric linear operator (the Hessian), matrix-free.

"Top" means the **largest algebraic** eigenvalues ``lambda_1 >= lambda_2 >= ...``
(the Hessian's top end, signs kept), not the largest in magnitude. Every
result carries its own certificate: the residual ``||A v_i - lambda_i v_i||``
of each returned pair, computed from real operator products.

Methods (each one compiled program, ``lax.while_loop``, or with ``loop="host"``
a Python loop around one compiled step per product, see :mod:`jaxland.linalg.loops`):

* ``"lanczos"`` (default): Lanczos with full reorthogonalisation (classical
  Gram-Schmidt, twice), Rayleigh-Ritz on ``T = Q^T A Q`` after every product,
  stopping as soon as the top-d Ritz pairs meet the tolerance. The stopping
  test uses the Ritz residual estimate ``||R_last s_last||``; the reported
  residuals are recomputed at the end from the stored products ``W = A Q``
  (``A y = W s`` exactly, without extra products).
* ``"block"``: the same algorithm on blocks of ``block_size`` vectors (block
  Lanczos), so each step is one batched product ``A V`` (what saturates an
  accelerator; on a CPU it needs more products than ``"lanczos"``).
* ``"lobpcg"``: the iteration of :func:`jax.experimental.sparse.linalg.lobpcg_standard`
  on the batched product, with our residual check on its output.
* ``"power"``: the paper's deflated power iteration, one eigenvector at a time,
  made correct for indefinite matrices: a first run finds the dominant
  eigenvalue; if it is negative, the iteration runs on ``A - sigma I`` with
  ``sigma`` just below it, so the dominant eigenvalue is the top algebraic one.
  Deflation projects out the converged vectors; the stopping rule is the
  residual ``||A v - (v.A v) v|| <= tol |v.A v|`` and eigenvalues are the signed
  Rayleigh quotients (the original code returned ``||A v||``).
* ``"dense"``: ``jnp.linalg.eigh`` of the matrix assembled from ``dim``
  products (small ``dim`` only): the exact reference.

Convergence: pair i is converged when
``||A v_i - lambda_i v_i|| <= max(tol * |lambda_i|, 100 * eps * |lambda|_max)``
(the second term is the floating-point floor, which only matters for
eigenvalues near zero). ``relative_residuals = residuals / |lambda_i|``.

The pure solvers (:func:`lanczos`, :func:`block_lanczos` in :mod:`jaxland.linalg.lanczos`;
:func:`power_iteration`, :func:`lobpcg`, :func:`dense_eigh` in :mod:`jaxland.linalg.solvers`;
the result type in :mod:`jaxland.linalg.result`) are factories in the matfree style:
static settings in, a pure function ``solve(matvec, v0)`` out, which the caller
may ``jit`` or ``vmap``. They never raise; a non-finite product gives NaN
eigenvalues and ``converged=False``. The convenience entry points
(:func:`top_eigenpairs` here; :func:`~jaxland.curvature.hessian_eigenpairs` and
:func:`~jaxland.curvature.hessian_eigenpairs_batch` for a model's Hessian) validate arguments, jit, and raise
:class:`~jaxland.errors.NumericalError` on non-finite values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .result import EigResult
from .solvers import dense_eigh, lobpcg, power_iteration
from ..errors import ConfigError, NumericalError
from .lanczos import block_lanczos, lanczos
from .loops import has_convolution, host_rows, resolve_loop, run_host
from .. import memory
from ..validate import check_key, check_loop, positive_int

__all__ = ["EigResult", "METHODS", "top_eigenpairs", "lanczos", "block_lanczos", "power_iteration", "lobpcg", "dense_eigh"]

METHODS = ("lanczos", "block", "lobpcg", "power", "dense")
WHICH = ("largest", "smallest")
DENSE_MAX_DIM = 4096

# ----------------------------------------------------------------------------- entry points


def _solver(method, d, tol, max_matvecs, block_size, dim, basis_dtype=None):
    """The solver of ``method`` and what its iteration multiplies: ``"vector"`` (dim,), ``"one_row"`` (1, dim) or ``"rows"`` (b, dim)."""
    if method == "lanczos":
        return lanczos(d, tol=tol, max_matvecs=max_matvecs, basis_dtype=basis_dtype), "one_row"
    if method == "block":
        return block_lanczos(d, block_size=block_size, tol=tol, max_matvecs=max_matvecs, basis_dtype=basis_dtype), "rows"
    if method == "lobpcg":
        # b to start, 4 b per iteration
        iters = 200 if max_matvecs is None else max(1, (max_matvecs // block_size - 1) // 4)
        return lobpcg(d, tol=tol, max_iters=iters), "rows"
    if method == "power":
        return power_iteration(d, tol=tol, max_matvecs=max_matvecs), "vector"
    if method == "dense":
        return dense_eigh(d, tol=tol), "vector"
    raise AssertionError(method)


def _start(method, key, block_size, dim, dtype):
    shape = (block_size, dim) if method in ("block", "lobpcg") else (dim,)
    return jax.random.normal(key, shape, dtype)


def _solve(matvec, matmat, method, d, tol, max_matvecs, block_size, key, dim, dtype, basis_dtype=None,
           which="largest"):
    """The solve of ``method`` on ``matvec: v -> A v`` (``matmat``: rows, or None for its vmap), to be traced.

    ``dim``, ``dtype``: the operator's size and working precision; ``key``: the start vector(s).
    """
    solver, takes = _solver(method, d, tol, max_matvecs, block_size, dim, basis_dtype)
    # the bottom of the spectrum is the top of -A
    sign = -1.0 if which == "smallest" else 1.0
    mv = lambda v: sign * matvec(v)
    v0 = _start(method, key, block_size, dim, dtype)
    if takes == "rows":
        res = solver((lambda V: sign * matmat(V)) if matmat is not None else jax.vmap(mv), v0)
    else:
        res = solver(mv, v0)
    return res._replace(eigenvalues=sign * res.eigenvalues)


@dataclasses.dataclass(frozen=True)
class Product:
    """What a host-driven step multiplies by, rebuilt inside the step from its operand: hashable, so one compiled step serves every call.

    ``make(operand)`` is ``v -> A v``; ``sign`` flips it (the bottom of the
    spectrum is the top of ``-A``); ``takes``: ``"vector"`` (``v -> A v``),
    ``"one_row"`` (``(1, dim) -> (1, dim)``, Lanczos) or ``"rows"`` (``(b, dim)``
    rows, vmapped; ``make_rows(operand)`` instead when given).
    """

    make: Callable
    sign: float = 1.0
    takes: str = "vector"
    make_rows: Callable | None = None

    def __call__(self, operand):
        if self.takes == "rows" and self.make_rows is not None:
            mm = self.make_rows(operand)
            return mm if self.sign == 1.0 else (lambda V: self.sign * mm(V))
        f = self.make(operand)
        mv = f if self.sign == 1.0 else (lambda v: self.sign * f(v))
        if self.takes == "vector":
            return mv
        if self.takes == "one_row":
            return lambda V: mv(V[0])[None]
        return jax.vmap(mv)


@functools.partial(jax.jit, static_argnames=("solver",))
def _dense_from_rows(solver, rows):
    return solver.from_rows(rows)


def solve_host(make, operand, method, d, tol, max_matvecs, block_size, key, dim, dtype, basis_dtype=None,
               which="largest", make_rows=None, chunk_size=4):
    """The solve of ``method`` with a host loop around one compiled step (:func:`jaxland.linalg.loops.run_host`).

    ``make(operand)``: ``v -> A v`` (hashable ``make``; ``make_rows`` likewise
    for rows, default its vmap). The arithmetic is that of :func:`_solve`; the
    dense reference builds its matrix ``chunk_size`` rows per compiled call
    (4: on 2 CPU cores 4 vmapped products of a conv net cost 0.6-1.0x of 4
    single ones, 8 cost up to 20x).
    """
    solver, takes = _solver(method, d, tol, max_matvecs, block_size, dim, basis_dtype)
    sign = -1.0 if which == "smallest" else 1.0
    v0 = _start(method, key, block_size, dim, dtype)
    if method == "dense":
        rows = host_rows(Product(make, sign), operand, jnp.eye(dim, dtype=dtype), chunk_size)
        res = _dense_from_rows(solver, rows)
    else:
        it = solver.iteration(v0)
        res = run_host(it, Product(make, sign, takes, make_rows), operand, v0[None] if takes == "one_row" else v0)
    return res._replace(eigenvalues=sign * res.eigenvalues)


@functools.partial(
    jax.jit,
    static_argnames=("matvec", "matmat", "method", "d", "max_matvecs", "block_size", "tol", "basis_dtype", "which"),
)
def _solve_jit(matvec, matmat, method, d, tol, max_matvecs, block_size, key, dtype_probe, operands,
               basis_dtype=None, which="largest"):
    mv = lambda v: matvec(v, *operands)
    mm = None if matmat is None else (lambda V: matmat(V, *operands))
    return _solve(mv, mm, method, d, tol, max_matvecs, block_size, key, dtype_probe.shape[0], dtype_probe.dtype,
                  basis_dtype, which)


@dataclasses.dataclass(frozen=True)
class _Bound:
    """``operands -> (v -> fn(v, *operands))``: a user's matvec (or matmat) for the host loop."""

    fn: Callable

    def __call__(self, operands):
        return lambda v: self.fn(v, *operands)


def _float_name(arg, value):
    """Validated name of a float dtype argument (a static jit argument), or None."""
    if value is None:
        return None
    try:
        name = jnp.dtype(value).name
    except TypeError:
        name = str(value)
    if name not in ("float32", "float64"):
        raise ConfigError(f"{arg} must be 'float32' or 'float64', got {value!r}")
    return name


def _basis_name(basis_dtype, method):
    """Validated name of a Krylov basis dtype, or None."""
    name = _float_name("basis_dtype", basis_dtype)
    if name is not None and method not in ("lanczos", "block"):
        raise ConfigError(f"basis_dtype applies to method='lanczos' or 'block', not {method!r}; drop it or change method")
    return name


def _x64_if(basis_dtype):
    # a float64 basis needs float64 arrays while tracing and running; the operator keeps its own dtype
    return jax.enable_x64(True) if basis_dtype == "float64" and not jax.config.jax_enable_x64 else contextlib.nullcontext()


def _validate(dim, d, method, tol, max_matvecs, block_size, which="largest", operator_parts=None):
    if which not in WHICH:
        raise ConfigError(f"which must be one of {WHICH} (the top or the bottom of the spectrum), got {which!r}")
    if method not in METHODS:
        raise ConfigError(f"unknown eigensolver method {method!r}; choose one of {METHODS}")
    d = positive_int("d (number of eigenpairs)", d)
    if d >= dim:
        raise ConfigError(f"d = {d} must be < dim = {dim}; for the full spectrum use jnp.linalg.eigh")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ConfigError(f"tol must be a finite float > 0, got {tol!r}")
    if method == "dense" and dim > DENSE_MAX_DIM:
        raise ConfigError(f"method='dense' builds a {dim}x{dim} matrix; allowed up to dim={DENSE_MAX_DIM}")
    block_size = positive_int("block_size", block_size, None)
    b = 1
    if method in ("block", "lobpcg"):
        b = int(block_size) if block_size is not None else d
        if b < d and method == "lobpcg":
            raise ConfigError(f"method='lobpcg' needs block_size >= d (got {b} < {d})")
        if method == "lobpcg" and 5 * b >= dim:
            raise ConfigError(f"method='lobpcg' needs 5 * block_size < dim (got {b}, dim={dim}); use 'lanczos'")
        if b > dim // 2:
            raise ConfigError(f"block_size = {b} too large for dim = {dim}")
    if max_matvecs is not None:
        max_matvecs = positive_int("max_matvecs", max_matvecs)
        need = {"power": d + 1, "lobpcg": 5 * b}.get(method, max(d, b))
        if method in ("lanczos", "block", "power", "lobpcg") and max_matvecs < need:
            raise ConfigError(f"max_matvecs = {max_matvecs} is too small for d = {d} (need >= {need})")
        max_matvecs = int(max_matvecs)
    # operator_parts: the operator's own working set (e.g. memory.hvp_parts), when the caller knows it
    memory.require(f"eigensolver {method!r} (d={d}, dim={dim})",
                   {**memory.krylov_parts(dim, method=method, d=d, block_size=b, max_matvecs=max_matvecs),
                    **(operator_parts or {})},
                   fix="lower max_matvecs (the Krylov basis holds that many vectors) or d, use method='power', "
                       "or fewer samples per product")
    return int(d), b, max_matvecs


def _check(res: EigResult, method: str, require_convergence: bool) -> EigResult:
    bad = ~(np.isfinite(np.asarray(res.eigenvalues)).all(axis=-1) & np.isfinite(np.asarray(res.residuals)).all(axis=-1))
    if np.any(bad):
        raise NumericalError(
            f"eigensolver {method!r}: the operator returned non-finite values (NaN/Inf) "
            f"after {np.asarray(res.num_matvecs).max()} products; check its inputs (for a Hessian: w, x and y "
            "finite and not so large that the loss or its derivatives overflow)"
        )
    if require_convergence and not bool(np.all(np.asarray(res.converged))):
        raise NumericalError(
            f"eigensolver {method!r} did not converge within {np.asarray(res.num_matvecs).max()} products: "
            f"max relative residual {float(np.max(np.asarray(res.relative_residuals))):.3g}; "
            "raise max_matvecs or tol"
        )
    return res


def top_eigenpairs(
    matvec: Callable[..., jax.Array],
    dim: int,
    d: int,
    *,
    method: str = "lanczos",
    key: jax.Array | None = None,
    tol: float = 1e-3,
    max_matvecs: int | None = None,
    block_size: int | None = None,
    matmat: Callable[..., jax.Array] | None = None,
    operands: tuple = (),
    dtype: Any = None,
    require_convergence: bool = False,
    which: str = "largest",
    basis_dtype: Any = None,
    loop: str = "auto",
) -> EigResult:
    """Top-d (largest algebraic) eigenpairs of the symmetric operator ``v -> matvec(v, *operands)``.

    Args:
      matvec: ``(dim,) -> (dim,)``, linear and symmetric. Pass arrays it needs
        (weights, data) through ``operands`` rather than closing over them: they
        then enter the compiled program as inputs, not constants, and the same
        ``matvec`` object reuses the compiled program.
      dim, d: operator size and number of pairs, ``0 < d < dim``.
      method: one of :data:`METHODS` (see the module docstring); default
        ``"lanczos"``, the fewest products.
      key: start-vector key, required (e.g. ``jax.random.key(0)``); same key, same result.
      tol: relative residual target ``||A v - lambda v|| <= tol |lambda|``.
      max_matvecs: product budget (method defaults: ``max(6d, d+50)`` for the
        Krylov methods, ``1000 (d+1)`` for power).
      block_size: vectors per batched product for ``"block"``/``"lobpcg"`` (default d).
      matmat: optional ``(b, dim) -> (b, dim)`` batched product (default: vmap of matvec).
      dtype: working precision (default: the dtype ``matvec`` returns).
      require_convergence: raise :class:`NumericalError` instead of returning
        ``converged=False``.
      which: ``"largest"`` (default) or ``"smallest"``: the d smallest algebraic
        eigenvalues (the solver runs on ``-A``), returned ascending (``lambda_min`` first).
      basis_dtype: ``"float64"`` keeps the Krylov basis, reorthogonalisation and
        Rayleigh-Ritz in float64 while ``matvec`` stays in ``dtype`` (``"lanczos"``
        and ``"block"`` only): relative residuals near 1e-6 measured with a float32
        operator. The float32 operator is itself only that accurate: two compiled
        float32 HVP programs differ by up to ~1e-6 relative, and the exact Hessian
        by ~3e-6 (reference MLP, at ``lambda_max / 6``); for residuals below that
        against the exact operator, pass a float64 ``matvec`` (for Hessians:
        ``hessian_eigenpairs(..., hvp_dtype="float64")``).
        x64 is switched on for the solve; the result comes back in ``dtype``.
      loop: ``"compiled"`` (the whole solve one program, ``lax.while_loop``),
        ``"host"`` (a Python loop around one compiled step per product, the
        operands passed to it as arguments; :mod:`jaxland.linalg.loops`) or
        ``"auto"`` (default): the host loop on the CPU backend when the product
        contains a convolution (XLA's CPU convolutions run several times slower
        inside a loop body), the compiled loop otherwise. Same numbers to float
        rounding either way.

    Returns:
      :class:`EigResult`. Raises :class:`ConfigError` on impossible settings and
      :class:`NumericalError` when the operator produced NaN/Inf.
    """
    dim = positive_int("dim", dim)
    if not callable(matvec):
        raise ConfigError(f"matvec must be a function v -> A v, got {type(matvec).__name__}")
    key = check_key(key)
    d, b, max_matvecs = _validate(dim, d, method, tol, max_matvecs, block_size, which)
    basis = _basis_name(basis_dtype, method)
    # the operator's dtype is found outside any x64 switch: a float64 basis must not widen it
    probe_dtype = dtype if dtype is not None else jnp.result_type(float)
    out = jax.eval_shape(lambda v, ops: matvec(v, *ops), jax.ShapeDtypeStruct((dim,), probe_dtype), operands)
    if out.shape != (dim,):
        raise ConfigError(f"matvec maps ({dim},) to {out.shape}; it must return a ({dim},) vector")
    dtype = jnp.dtype(dtype if dtype is not None else out.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ConfigError(f"eigensolvers need a real floating dtype, got {dtype}")
    mode = resolve_loop(check_loop(loop), lambda: has_convolution(lambda v, ops: matvec(v, *ops),
                                                                     jax.ShapeDtypeStruct((dim,), dtype), operands))
    with _x64_if(basis):
        if mode == "host":
            res = solve_host(_Bound(matvec), tuple(operands), method, d, float(tol), max_matvecs, b, key, dim, dtype,
                             basis, which, make_rows=None if matmat is None else _Bound(matmat))
        else:
            res = _solve_jit(matvec, matmat, method, d, float(tol), max_matvecs, b, key, jnp.zeros((dim,), dtype),
                             operands, basis_dtype=basis, which=which)
    return _check(res, method, require_convergence)
