"""Deflated power iteration, LOBPCG and the dense reference: the non-Krylov solvers of :mod:`jaxland.curvature.eigen`.

Factories in the matfree style: static settings in, a pure ``solve(matvec, v0)``
(or ``solve(matmat, V0)``) returning :class:`~jaxland.linalg.result.EigResult` out.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.sparse.linalg import lobpcg_standard

from .result import EigResult, _eps, _finish

__all__ = ["power_iteration", "lobpcg", "dense_eigh"]


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
