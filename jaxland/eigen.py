"""Top eigenpairs of a symmetric linear operator (the Hessian), matrix-free.

"Top" means the **largest algebraic** eigenvalues ``lambda_1 >= lambda_2 >= ...``
(the Hessian's top end, signs kept), not the largest in magnitude. Every
result carries its own certificate: the residual ``||A v_i - lambda_i v_i||``
of each returned pair, computed from real operator products.

Methods (each one compiled program: ``lax.while_loop``, no Python loop around
the products):

* ``"lanczos"`` (default): Lanczos with full reorthogonalisation (classical
  Gram-Schmidt, twice), Rayleigh-Ritz on ``T = Q^T A Q`` after every product,
  stopping as soon as the top-d Ritz pairs meet the tolerance. The stopping
  test uses the Ritz residual estimate ``||R_last s_last||``; the reported
  residuals are recomputed at the end from the stored products ``W = A Q``
  (``A y = W s`` exactly, without extra products).
* ``"block"``: the same algorithm on blocks of ``block_size`` vectors (block
  Lanczos), so each step is one batched product ``A V`` (what saturates an
  accelerator; on a CPU it needs more products than ``"lanczos"``).
* ``"lobpcg"``: :func:`jax.experimental.sparse.linalg.lobpcg_standard` on the
  batched product, with our residual check on its output.
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

The pure solvers (:func:`lanczos`, :func:`block_lanczos`, :func:`power_iteration`,
:func:`lobpcg`, :func:`dense_eigh`) are factories in the matfree style:
static settings in, a pure function ``solve(matvec, v0)`` out, which the caller
may ``jit`` or ``vmap``. They never raise; a non-finite product gives NaN
eigenvalues and ``converged=False``. The convenience entry points
(:func:`top_eigenpairs`, :func:`hessian_eigenpairs`,
:func:`hessian_eigenpairs_batch`) validate arguments, jit, and raise
:class:`~jaxland.errors.NumericalError` on non-finite values.

Example (the spectrum figure: top-32 eigenvalues of 50 trained networks)::

    ws = jnp.stack([cached_train(model, x, y, seed=s, data_tag=tag).params for s in range(50)])
    res = hessian_eigenpairs_batch(model, ws, x, y, d=32)
    mean_spectrum = res.eigenvalues.mean(0)           # (32,)
    assert bool(res.converged.all())
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .curvature import hvp, hvp_batch
from .errors import ConfigError, NumericalError
from .model import Model
from .validate import check_data, check_key, check_params, check_prefix, positive_int

__all__ = [
    "EigResult",
    "METHODS",
    "top_eigenpairs",
    "hessian_eigenpairs",
    "hessian_eigenpairs_batch",
    "lanczos",
    "block_lanczos",
    "power_iteration",
    "lobpcg",
    "dense_eigh",
]

METHODS = ("lanczos", "block", "lobpcg", "power", "dense")
WHICH = ("largest", "smallest")
DENSE_MAX_DIM = 4096


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


def _orthonormal_rows(z):
    if z.shape[0] == 1:  # Lanczos: a norm, not a QR (cheaper to compile and run)
        return z / jnp.linalg.norm(z)
    q, _ = jnp.linalg.qr(z.T)
    return q.T


# ----------------------------------------------------------------------------- Krylov


class _KrylovState(NamedTuple):
    """Loop state of :func:`_block_krylov` (``nmax`` = steps x block size)."""

    step: jax.Array  # blocks done
    Q: jax.Array  # (nmax, dim) orthonormal basis rows
    W: jax.Array  # (nmax, dim) stored products A Q
    T: jax.Array  # (nmax, nmax) upper triangle of Q^T A Q
    next_block: jax.Array  # (b, dim) orthonormal block to multiply next
    gram: jax.Array  # (b, b) Gram matrix of the orthogonalised last products
    done: jax.Array
    finite: jax.Array
    theta: jax.Array  # (d,) current top Ritz values
    S: jax.Array  # (nmax, d) their coefficients in the basis


def _block_krylov(matmat, V0, d: int, tol, max_matvecs: int, basis_dtype=None):
    """Block Lanczos with full reorthogonalisation and Rayleigh-Ritz after each block.

    Keeps ``Q`` (orthonormal rows), ``W = A Q`` and ``T = Q^T A Q`` (entries
    ``<q_i, A q_j>`` for ``i <= j``, mirrored). With ``(theta, s)`` an eigenpair of
    ``T``, ``A (Q^T s) = W^T s`` and the residual outside ``span Q`` is
    ``R_last^T s_last`` (R_last: the orthogonalised last products).

    ``basis_dtype`` (default: the dtype of ``V0``, the operator's): the
    precision of ``Q``, ``W``, the reorthogonalisation and Rayleigh-Ritz. A
    wider basis than the operator removes the basis' rounding (which, in
    float32, stalls relative residuals near 1e-5..1e-4); what remains is the
    operator's own rounding. Results come back in the operator's dtype.
    """
    b, dim = V0.shape
    op_dtype = V0.dtype
    dtype = jnp.dtype(basis_dtype) if basis_dtype is not None else op_dtype
    if dtype != op_dtype:
        matmat = (lambda mm: lambda V: mm(V.astype(op_dtype)).astype(dtype))(matmat)
        V0 = V0.astype(dtype)
    eps = _eps(dtype)
    steps = max(1, min(max_matvecs, dim) // b)
    nmax = steps * b
    idx = jnp.arange(nmax)
    restart = jax.random.normal(jax.random.key(1), (b, dim), dtype)

    def ritz(T, filled):
        tfull = jnp.triu(T) + jnp.triu(T, 1).T
        mask = idx < filled
        tfull = jnp.where(mask[:, None] & mask[None, :], tfull, 0.0)
        pad = -2.0 * jnp.linalg.norm(tfull) - jnp.finfo(dtype).tiny
        evals, S = jnp.linalg.eigh(tfull + jnp.diag(jnp.where(mask, 0.0, pad)))
        return evals[::-1][:d], S[:, ::-1][:, :d]

    def body(st: _KrylovState) -> _KrylovState:
        j, Q, W, T, Qj = st.step, st.Q, st.W, st.T, st.next_block
        cols = j * b
        Wj = matmat(Qj)
        fin = jnp.all(jnp.isfinite(Wj))
        Wj = jnp.where(fin, Wj, 0.0)
        Q = jax.lax.dynamic_update_slice(Q, Qj, (cols, jnp.zeros_like(cols)))
        W = jax.lax.dynamic_update_slice(W, Wj, (cols, jnp.zeros_like(cols)))
        C = Q @ Wj.T
        R = Wj - C.T @ Q
        C2 = Q @ R.T
        R = R - C2.T @ Q
        T = jax.lax.dynamic_update_slice(T, C + C2, (jnp.zeros_like(cols), cols))
        G = R @ R.T
        filled = cols + b
        # next block: the residuals, with (near-)zero rows replaced by random
        # directions (invariant subspace found: restart inside the complement)
        scale = jnp.max(jnp.linalg.norm(Wj, axis=1))
        small = jnp.sqrt(jnp.clip(jnp.diag(G), 0.0)) <= 1e3 * eps * scale + jnp.finfo(dtype).tiny
        rnd = jnp.roll(restart, j * 7919 + 1, axis=1)  # differs per step; no RNG in the loop
        Z = jnp.where(small[:, None], rnd, R)
        for _ in range(2):
            Z = Z - (Z @ Q.T) @ Q
            Z = _orthonormal_rows(Z)
        theta, S = ritz(T, filled)
        s_last = jax.lax.dynamic_slice(S, (cols, jnp.zeros_like(cols)), (b, d))
        res = jnp.sqrt(jnp.clip(jnp.einsum("bi,bc,ci->i", s_last, G, s_last), 0.0))
        floor = 100 * eps * jnp.max(jnp.abs(theta))
        # never stop on a breakdown step: an invariant Krylov space has exact Ritz
        # pairs but may miss copies of repeated eigenvalues; continue from the restart
        done = (filled >= d) & jnp.all(res <= jnp.maximum(tol * jnp.abs(theta), floor))
        done &= ~jnp.any(small) | (filled + b > dim)
        if dtype != op_dtype:
            # the estimate assumes A Q = W exactly; with a narrower operator its rounding
            # is not in it, so confirm with the residuals of the stored products
            def explicit(_):
                r = jnp.linalg.norm(S.T @ W - theta[:, None] * (S.T @ Q), axis=1)
                return jnp.all(r <= jnp.maximum(tol * jnp.abs(theta), floor))

            done = jax.lax.cond(done, explicit, lambda _: jnp.asarray(False), None)
        return _KrylovState(j + 1, Q, W, T, Z, G, done, st.finite & fin, theta, S)

    def cond(st: _KrylovState):
        return (st.step < steps) & ~st.done & st.finite

    z = jnp.zeros((nmax, dim), dtype)
    init = _KrylovState(
        step=jnp.asarray(0, jnp.int32), Q=z, W=z, T=jnp.zeros((nmax, nmax), dtype),
        next_block=_orthonormal_rows(V0), gram=jnp.zeros((b, b), dtype), done=jnp.asarray(False),
        finite=jnp.asarray(True), theta=jnp.zeros((d,), dtype), S=jnp.zeros((nmax, d), dtype),
    )
    st = jax.lax.while_loop(cond, body, init)
    filled = st.step * b
    vecs = st.S.T @ st.Q
    # Rayleigh quotients of the (normalised) Ritz vectors from the stored products
    avecs = st.S.T @ st.W
    res = _finish(st.theta, vecs, avecs, tol, filled, st.finite)
    if dtype != op_dtype:
        res = res._replace(**{f: getattr(res, f).astype(op_dtype) for f in ("eigenvalues", "eigenvectors", "residuals", "relative_residuals")})
    return res


def lanczos(d: int, *, tol: float = 1e-3, max_matvecs: int | None = None, basis_dtype: Any = None):
    """Lanczos (full reorthogonalisation) for the top-d eigenpairs: ``solve(matvec, v0) -> EigResult``.

    ``matvec: (dim,) -> (dim,)`` symmetric; ``v0: (dim,)`` start vector (its
    dtype is the operator's precision). Stops after the first product at which
    all top-d Ritz pairs satisfy ``||A y - theta y|| <= tol |theta|``, or after
    ``max_matvecs`` products (default ``min(dim, max(6 d, d + 50))``; memory and the cost of each reorthogonalisation grow with it).
    Memory: two ``(max_matvecs, dim)`` arrays of ``basis_dtype``.

    ``basis_dtype``: precision of the Krylov basis, reorthogonalisation and
    Rayleigh-Ritz (default: ``v0.dtype``). ``jnp.float64`` with a float32
    operator reaches relative residuals near 1e-6 where a float32 basis stalls
    near 1e-5..1e-4; it needs x64 enabled while tracing (``jax.enable_x64(True)``;
    :func:`top_eigenpairs` does that itself).
    """

    def solve(matvec: Callable, v0: jax.Array) -> EigResult:
        mm = _default_max(v0.shape[-1], d, max_matvecs)
        return _block_krylov(lambda V: matvec(V[0])[None], v0[None], d, tol, mm, basis_dtype)

    return solve


def block_lanczos(d: int, *, block_size: int | None = None, tol: float = 1e-3, max_matvecs: int | None = None,
                  basis_dtype: Any = None):
    """Block Lanczos for the top-d eigenpairs: ``solve(matmat, V0) -> EigResult``.

    ``matmat: (b, dim) -> (b, dim)`` applies the operator to each row (e.g.
    :func:`jaxland.hvp_batch`); ``V0: (b, dim)`` start block. Each step costs
    one batched product of ``b`` vectors. ``basis_dtype`` as in :func:`lanczos`.
    """

    def solve(matmat: Callable, V0: jax.Array) -> EigResult:
        b, dim = V0.shape
        mm = _default_max(dim, d, max_matvecs, b)
        return _block_krylov(matmat, V0, d, tol, mm, basis_dtype)

    return solve


def _default_max(dim: int, d: int, max_matvecs: int | None, b: int = 1) -> int:
    if max_matvecs is None:
        max_matvecs = max(6 * d, d + 50) + (10 * b if b > 1 else 0)
    return min(int(max_matvecs), dim)


# ----------------------------------------------------------------------------- power


class _PowerState(NamedTuple):
    """Loop state of one power-iteration run; ``lam``, ``res``, ``av`` belong to ``v``."""

    next_v: jax.Array  # the next iterate
    v: jax.Array  # the vector last multiplied
    av: jax.Array  # A v
    lam: jax.Array  # Rayleigh quotient v.A v
    res: jax.Array  # ||A v - lam v||
    norm_av: jax.Array
    count: jax.Array  # products so far (all runs)
    done: jax.Array
    finite: jax.Array


def power_iteration(d: int, *, tol: float = 1e-3, max_matvecs: int | None = None):
    """The paper's deflated power iteration, signed: ``solve(matvec, v0) -> EigResult``.

    Phase 0 runs plain power iteration to find the dominant eigenvalue
    ``mu``. If ``mu >= 0`` it is ``lambda_1`` and the shift is 0; otherwise
    the iteration runs on ``A - sigma I`` with ``sigma = 1.01 mu`` (or
    ``-1.01 ||A v||`` if phase 0 did not settle, e.g. ``lambda_max = -lambda_min``),
    whose dominant eigenvalue is the top algebraic one. Then for i = 1..d:
    start from ``v0`` with the converged vectors projected out, iterate
    ``v <- P (A - sigma I) v / ||.||`` (P: projector deflating the converged
    vectors) until ``||A v - (v.Av) v|| <= tol |v.Av|``; if deflation leaves a
    negative eigenvalue dominant, that vector's run is repeated on ``A - 1.01
    lambda I`` so the top algebraic eigenvalue is found. ``max_matvecs`` is the
    total budget (default ``1000 (d + 1)``: the paper's 1000 per vector), split
    evenly between phase 0 and the d vectors.
    """

    def solve(matvec: Callable, v0: jax.Array) -> EigResult:
        dim = v0.shape[-1]
        dtype = v0.dtype
        eps = _eps(dtype)
        budget = int(max_matvecs) if max_matvecs is not None else 1000 * (d + 1)
        per_run = max(1, budget // (d + 1))

        def run(v, sigma, V, count, scale):
            def body(st: _PowerState) -> _PowerState:
                v = st.next_v
                w = matvec(v)
                fin = jnp.all(jnp.isfinite(w))
                w = jnp.where(fin, w, 0.0)
                lam = jnp.vdot(v, w)
                res = jnp.linalg.norm(w - lam * v)
                floor = 100 * eps * jnp.maximum(jnp.abs(lam), scale)
                done = res <= jnp.maximum(tol * jnp.abs(lam), floor)
                z = w - sigma * v
                z = z - (V @ z) @ V
                nz = jnp.linalg.norm(z)
                vn = jnp.where(nz > 0, z / jnp.where(nz > 0, nz, 1.0), v)
                return _PowerState(vn, v, w, lam, res, jnp.linalg.norm(w), st.count + 1, done, st.finite & fin)

            def cond(st: _PowerState):
                return ~st.done & (st.count < stop) & st.finite

            z = jnp.asarray(0.0, dtype)
            stop = count + per_run
            init = _PowerState(v, v, jnp.zeros_like(v), z, jnp.asarray(jnp.inf, dtype), z, count,
                               jnp.asarray(False), jnp.asarray(True))
            return jax.lax.while_loop(cond, body, init)

        def start(v, V):
            v = v - (V @ v) @ V
            v = v - (V @ v) @ V
            return v / jnp.linalg.norm(v)

        V = jnp.zeros((d, dim), dtype)
        count0 = jnp.asarray(0, jnp.int32)
        dom = run(start(v0, V), jnp.asarray(0.0, dtype), V, count0, 0.0)
        mu, conv0 = dom.lam, dom.done
        sigma = jnp.where(conv0, jnp.where(mu >= 0, 0.0, 1.01 * mu), -1.01 * dom.norm_av).astype(dtype)
        reuse = conv0 & (mu >= 0)

        def pair(i, st):
            V, AV, lams, count, finite = st
            v = jnp.where((i == 0) & reuse, dom.v, v0)
            scale = jnp.max(jnp.abs(lams))
            r = run(start(v, V), sigma, V, count, scale)
            # Deflation can leave a negative eigenvalue dominant (|lambda| largest among the rest)
            # while smaller positive ones remain: then every remaining eigenvalue is >= r.lam, and
            # the iteration on A - 1.01 r.lam I converges to the largest algebraic one instead.
            redo = (sigma == 0) & (r.lam < 0) & r.finite
            r = jax.lax.cond(redo, lambda: run(start(v, V), (1.01 * r.lam).astype(dtype), V, r.count, scale), lambda: r)
            return V.at[i].set(r.v), AV.at[i].set(r.av), lams.at[i].set(r.lam), r.count, finite & r.finite

        zero = jnp.zeros((d,), dtype)
        V, AV, lams, count, finite = jax.lax.fori_loop(0, d, pair, (V, jnp.zeros_like(V), zero, dom.count, dom.finite))
        # Rayleigh-Ritz on span(V) with the stored products (no extra products):
        # removes the coupling a slightly inexact deflated vector leaves in the next ones
        T = V @ AV.T
        theta, S = jnp.linalg.eigh(0.5 * (T + T.T))
        return _finish(theta, S.T @ V, S.T @ AV, tol, count, finite)

    return solve


# ----------------------------------------------------------------------------- lobpcg, dense


def lobpcg(d: int, *, tol: float = 1e-3, max_iters: int = 200):
    """LOBPCG via :func:`jax.experimental.sparse.linalg.lobpcg_standard`: ``solve(matmat, V0)``.

    ``V0: (b, dim)`` with ``d <= b`` and ``5 b < dim`` (a JAX restriction).
    JAX's stopping rule is ``||r|| < tol' * 10 dim (theta + ||A v||)``; we pass
    ``tol' = tol / (20 dim)`` so it approximates ``||r|| <= tol |theta|`` for
    positive ``theta``, then recompute the residuals with one more batched
    product (counted). JAX does not report its product count: we report the
    upper bound ``b (3 iterations + 1) + b``.
    """
    from jax.experimental.sparse.linalg import lobpcg_standard

    def solve(matmat: Callable, V0: jax.Array) -> EigResult:
        b, dim = V0.shape
        jtol = tol / (20.0 * dim)  # no eps floor: JAX's rule scales with dim
        op = lambda X: matmat(X.T).T
        theta, U, iters = lobpcg_standard(op, V0.T, m=max_iters, tol=jtol)
        vecs = U.T[:d]
        avecs = matmat(U.T)[:d]
        theta = jnp.sum(vecs * avecs, axis=1)  # Rayleigh quotients of unit vectors
        count = b * (3 * iters + 1) + b
        return _finish(theta, vecs, avecs, tol, count, jnp.all(jnp.isfinite(avecs)))

    return solve


def dense_eigh(d: int, *, tol: float = 1e-3):
    """Exact reference: ``eigh`` of the matrix built from ``dim`` products: ``solve(matvec, v0)``."""

    def solve(matvec: Callable, v0: jax.Array) -> EigResult:
        dim = v0.shape[-1]
        A = jax.lax.map(matvec, jnp.eye(dim, dtype=v0.dtype))
        finite = jnp.all(jnp.isfinite(A))
        A = jnp.where(finite, 0.5 * (A + A.T), 0.0)
        evals, U = jnp.linalg.eigh(A)
        theta, vecs = evals[::-1][:d], U[:, ::-1][:, :d].T
        return _finish(theta, vecs, vecs @ A, tol, dim, finite)

    return solve


# ----------------------------------------------------------------------------- entry points


def _solver(method, d, tol, max_matvecs, block_size, dim, basis_dtype=None):
    if method == "lanczos":
        return lanczos(d, tol=tol, max_matvecs=max_matvecs, basis_dtype=basis_dtype), False
    if method == "block":
        return block_lanczos(d, block_size=block_size, tol=tol, max_matvecs=max_matvecs, basis_dtype=basis_dtype), True
    if method == "lobpcg":
        iters = 200 if max_matvecs is None else max(1, (max_matvecs // block_size - 2) // 3)
        return lobpcg(d, tol=tol, max_iters=iters), True
    if method == "power":
        return power_iteration(d, tol=tol, max_matvecs=max_matvecs), False
    if method == "dense":
        return dense_eigh(d, tol=tol), False
    raise AssertionError(method)


@functools.partial(
    jax.jit,
    static_argnames=("matvec", "matmat", "method", "d", "max_matvecs", "block_size", "tol", "basis_dtype", "which"),
)
def _solve_jit(matvec, matmat, method, d, tol, max_matvecs, block_size, key, dtype_probe, operands,
               basis_dtype=None, which="largest"):
    dim = dtype_probe.shape[0]
    dtype = dtype_probe.dtype
    solve, blocked = _solver(method, d, tol, max_matvecs, block_size, dim, basis_dtype)
    # the bottom of the spectrum is the top of -A
    sign = -1.0 if which == "smallest" else 1.0
    mv = lambda v: sign * matvec(v, *operands)
    if blocked:
        mm = (lambda V: sign * matmat(V, *operands)) if matmat is not None else jax.vmap(mv)
        res = solve(mm, jax.random.normal(key, (block_size, dim), dtype))
    else:
        res = solve(mv, jax.random.normal(key, (dim,), dtype))
    return res._replace(eigenvalues=sign * res.eigenvalues)


def _basis_name(basis_dtype, method):
    """Validated name of a Krylov basis dtype (a static jit argument), or None."""
    if basis_dtype is None:
        return None
    try:
        name = jnp.dtype(basis_dtype).name
    except TypeError:
        name = str(basis_dtype)
    if name not in ("float32", "float64"):
        raise ConfigError(f"basis_dtype must be 'float32' or 'float64', got {basis_dtype!r}")
    if method not in ("lanczos", "block"):
        raise ConfigError(f"basis_dtype applies to method='lanczos' or 'block', not {method!r}; drop it or change method")
    return name


def _x64_if(basis_dtype):
    # a float64 basis needs float64 arrays while tracing and running; the operator keeps its own dtype
    return jax.enable_x64(True) if basis_dtype == "float64" and not jax.config.jax_enable_x64 else contextlib.nullcontext()


def _validate(dim, d, method, tol, max_matvecs, block_size, which="largest"):
    if which not in WHICH:
        raise ConfigError(f"which must be one of {WHICH} (the top or the bottom of the spectrum), got {which!r}")
    if method not in METHODS:
        raise ConfigError(f"unknown eigensolver method {method!r}; choose one of {METHODS}")
    if isinstance(d, bool) or int(d) != d or d <= 0:
        raise ConfigError(f"d (number of eigenpairs) must be a positive integer, got {d!r}")
    if d >= dim:
        raise ConfigError(f"d = {d} must be < dim = {dim}; for the full spectrum use jnp.linalg.eigh")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ConfigError(f"tol must be a finite float > 0, got {tol!r}")
    if method == "dense" and dim > DENSE_MAX_DIM:
        raise ConfigError(f"method='dense' builds a {dim}x{dim} matrix; allowed up to dim={DENSE_MAX_DIM}")
    if block_size is not None and (int(block_size) != block_size or block_size <= 0):
        raise ConfigError(f"block_size must be a positive integer, got {block_size!r}")
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
        if isinstance(max_matvecs, bool) or int(max_matvecs) != max_matvecs:
            raise ConfigError(f"max_matvecs must be an integer, got {max_matvecs!r}")
        need = {"power": d + 1, "lobpcg": 5 * b}.get(method, max(d, b))
        if method in ("lanczos", "block", "power", "lobpcg") and max_matvecs < need:
            raise ConfigError(f"max_matvecs = {max_matvecs} is too small for d = {d} (need >= {need})")
        max_matvecs = int(max_matvecs)
    return int(d), b, max_matvecs


def _check(res: EigResult, method: str, require_convergence: bool) -> EigResult:
    bad = ~np.isfinite(np.asarray(res.eigenvalues)).all(axis=-1)
    if np.any(bad):
        raise NumericalError(
            f"eigensolver {method!r}: the operator returned non-finite values (NaN/Inf) "
            f"after {np.asarray(res.num_matvecs).max()} products; check the parameters/data"
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
      key: start-vector key (default ``jax.random.key(0)``); same key, same result.
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
        and ``"block"`` only): relative residuals near 1e-6 with a float32 operator.
        x64 is switched on for the solve; the result comes back in ``dtype``.

    Returns:
      :class:`EigResult`. Raises :class:`ConfigError` on impossible settings and
      :class:`NumericalError` when the operator produced NaN/Inf.
    """
    dim = positive_int("dim", dim)
    if not callable(matvec):
        raise ConfigError(f"matvec must be a function v -> A v, got {type(matvec).__name__}")
    key = None if key is None else check_key(key)
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
    key = jax.random.key(0) if key is None else key
    with _x64_if(basis):
        res = _solve_jit(matvec, matmat, method, d, float(tol), max_matvecs, b, key, jnp.zeros((dim,), dtype),
                         operands, basis_dtype=basis, which=which)
    return _check(res, method, require_convergence)


# ----------------------------------------------------------------------------- Hessians


@functools.cache
def _hessian_ops(model: Model):
    # one function object per model, so the jit cache of _solve_jit is reused
    mv = lambda v, w, x, y, k: hvp(model, w, v, x, y, k)
    mm = lambda V, w, x, y, k: hvp_batch(model, w, V, x, y, k)
    return mv, mm


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
) -> EigResult:
    """Top-d eigenpairs of ``H_k(w)``, the Hessian of ``L_k`` (full data when ``k`` is None).

    ``w, x, y, k`` are inputs of one compiled program: a new ``w`` or ``k``
    (same shapes) does not recompile. Other arguments as :func:`top_eigenpairs`:
    ``which="smallest"`` gives the bottom of the spectrum (``lambda_min`` first),
    ``basis_dtype="float64"`` tight eigenpairs (relative residuals ~1e-6) from float32 HVPs.
    """
    check_prefix(k, check_data(model, x, y, min_samples=1))
    check_params(model, w)
    key = None if key is None else check_key(key)
    mv, mm = _hessian_ops(model)
    k = None if k is None else jnp.asarray(k)
    return top_eigenpairs(
        mv, w.shape[0], d, method=method, key=key, tol=tol, max_matvecs=max_matvecs, block_size=block_size,
        matmat=mm, operands=(w, x, y, k), dtype=w.dtype, require_convergence=require_convergence,
        which=which, basis_dtype=basis_dtype,
    )


@functools.partial(jax.jit, static_argnames=("model", "d", "method", "tol", "max_matvecs", "block_size", "batch_size",
                                             "which", "basis_dtype"))
def _batch_jit(model, ws, x, y, k, keys, d, method, tol, max_matvecs, block_size, batch_size, which, basis_dtype):
    mv, mm = _hessian_ops(model)

    def one(args):
        w, key = args
        return _solve_jit(mv, mm, method, d, tol, max_matvecs, block_size, key, w, (w, x, y, k),
                          basis_dtype=basis_dtype, which=which)

    return jax.lax.map(one, (ws, keys), batch_size=batch_size)


def hessian_eigenpairs_batch(
    model: Model,
    ws: jax.Array,
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
    batch_size: int = 1,
    require_convergence: bool = False,
    which: str = "largest",
    basis_dtype: Any = None,
) -> EigResult:
    """:func:`hessian_eigenpairs` for each row of ``ws`` (B, D), in one compiled program.

    For the spectrum figure (top-32 eigenvalues averaged over independently
    trained networks): ``hessian_eigenpairs_batch(model, ws, x, y, 32).eigenvalues.mean(0)``.
    ``batch_size`` networks are solved together (vmapped, so the loop runs
    until the slowest of them converges; memory grows with it); the default 1
    solves them one after another (``lax.map``). Network i uses the start key
    ``jax.random.fold_in(key, i)``. Every field gets a leading (B,) axis.
    ``which`` and ``basis_dtype`` as in :func:`top_eigenpairs`.
    """
    ws = jnp.asarray(ws)
    if ws.ndim != 2:
        raise ConfigError(f"ws must be a (B, D) stack of flat parameter vectors, got shape {ws.shape}")
    check_prefix(k, check_data(model, x, y, min_samples=1))
    for w in ws:
        check_params(model, w, "ws[i]")
    key = None if key is None else check_key(key)
    d, b, max_matvecs = _validate(ws.shape[1], d, method, tol, max_matvecs, block_size, which)
    basis = _basis_name(basis_dtype, method)
    if int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    key = jax.random.key(0) if key is None else key
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(ws.shape[0]))
    k = None if k is None else jnp.asarray(k)
    with _x64_if(basis):
        res = _batch_jit(model, ws, x, y, k, keys, d, method, float(tol), max_matvecs, b, int(batch_size), which, basis)
    return _check(res, method, require_convergence)
