"""Deflated power iteration, LOBPCG and the dense reference: the non-Krylov solvers of :mod:`jaxland.curvature.eigen`.

Factories in the matfree style: static settings in, a pure ``solve(matvec, v0)``
(or ``solve(matmat, V0)``) returning :class:`~jaxland.linalg.result.EigResult` out.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
# JAX's LOBPCG building blocks (SVQB orthonormalisation, projection, Rayleigh-Ritz): LobpcgSteps is its loop body
from jax.experimental.sparse import linalg as _jl

from .loops import run_compiled
from .result import EigResult, _eps, _finish

__all__ = ["power_iteration", "lobpcg", "dense_eigh", "PowerIteration", "PowerIterationSteps", "Lobpcg", "LobpcgSteps",
           "DenseEigh"]


class _PowerState(NamedTuple):
    """Loop state of :class:`PowerIterationSteps`: the current run (one eigenvector) and the pairs found so far."""

    next_v: jax.Array  # the next iterate of the current run
    v: jax.Array  # the vector last multiplied
    av: jax.Array  # A v
    lam: jax.Array  # Rayleigh quotient v.A v
    res: jax.Array  # ||A v - lam v||
    norm_av: jax.Array
    done: jax.Array  # the current run has converged
    run_finite: jax.Array
    stop: jax.Array  # the product count at which the current run gives up
    run_sigma: jax.Array  # the shift of the current run
    scale: jax.Array  # max |lambda| found so far (the floor of the stopping rule)
    phase: jax.Array  # 0: the dominant eigenvalue; i = 1..d: pair i; d + 1: finished
    redone: jax.Array  # the current pair's run is its repeat on A - 1.01 lambda I
    sigma: jax.Array  # the shift for the pairs (from phase 0)
    reuse: jax.Array  # phase 0 found lambda_1 itself: pair 1 starts from its vector
    dom_v: jax.Array  # phase 0's vector
    v0: jax.Array
    V: jax.Array  # (d, dim) the converged vectors
    AV: jax.Array  # (d, dim) their products
    lams: jax.Array  # (d,)
    count: jax.Array  # products so far (all runs)
    finite: jax.Array


@dataclasses.dataclass(frozen=True)
class PowerIterationSteps:
    """The deflated power iteration of :func:`power_iteration` as one loop of single products (an Iteration).

    Every step multiplies the current run's iterate; when the run stops
    (converged, out of budget, or non-finite) the same step sets up the next
    run: phase 0 -> the shift and pair 1; pair i -> its repeat on ``A - 1.01
    lambda I`` when deflation left a negative eigenvalue dominant, else pair i + 1.
    """

    d: int
    tol: float
    per_run: int
    dtype: str

    def _start(self, v, V):
        v = v - (V @ v) @ V
        v = v - (V @ v) @ V
        return v / jnp.linalg.norm(v)

    def _run(self, st, v, shift, count, scale, **kw):
        """``st`` with a fresh run from ``v`` (already deflated and normalised)."""
        z = jnp.asarray(0.0, self.dtype)
        return st._replace(next_v=v, v=v, av=jnp.zeros_like(v), lam=z, res=jnp.asarray(jnp.inf, self.dtype), norm_av=z,
                           done=jnp.asarray(False), run_finite=jnp.asarray(True), stop=count + self.per_run,
                           run_sigma=jnp.asarray(shift, self.dtype), scale=jnp.asarray(scale, self.dtype), **kw)

    def init(self, matvec, v0) -> _PowerState:
        dim = v0.shape[-1]
        z = jnp.asarray(0.0, self.dtype)
        V = jnp.zeros((self.d, dim), self.dtype)
        f, t = jnp.asarray(False), jnp.asarray(True)
        blank = _PowerState(v0, v0, v0, z, z, z, f, t, jnp.asarray(0, jnp.int32), z, z, jnp.asarray(0, jnp.int32), f, z,
                            f, v0, v0, V, V, jnp.zeros((self.d,), self.dtype), jnp.asarray(0, jnp.int32), t)
        return self._run(blank, self._start(v0, V), 0.0, blank.count, 0.0)

    def step(self, matvec, st: _PowerState) -> _PowerState:
        eps = _eps(self.dtype)
        v = st.next_v
        w = matvec(v)
        fin = jnp.all(jnp.isfinite(w))
        w = jnp.where(fin, w, 0.0)
        lam = jnp.vdot(v, w)
        res = jnp.linalg.norm(w - lam * v)
        floor = 100 * eps * jnp.maximum(jnp.abs(lam), st.scale)
        done = res <= jnp.maximum(self.tol * jnp.abs(lam), floor)
        z = w - st.run_sigma * v
        z = z - (st.V @ z) @ st.V
        nz = jnp.linalg.norm(z)
        vn = jnp.where(nz > 0, z / jnp.where(nz > 0, nz, 1.0), v)
        st = st._replace(next_v=vn, v=v, av=w, lam=lam, res=res, norm_av=jnp.linalg.norm(w), count=st.count + 1,
                         done=done, run_finite=st.run_finite & fin)
        ended = st.done | (st.count >= st.stop) | ~st.run_finite
        return jax.lax.cond(ended, self._next_run, lambda s: s, st)

    def _next_run(self, st: _PowerState) -> _PowerState:
        """The run after the one that just ended (phase 0, a pair, or a pair's repeat)."""

        def after_dominant(st):
            mu, conv0 = st.lam, st.done
            sigma = jnp.where(conv0, jnp.where(mu >= 0, 0.0, 1.01 * mu), -1.01 * st.norm_av).astype(self.dtype)
            reuse = conv0 & (mu >= 0)
            v = jnp.where(reuse, st.v, st.v0)
            return self._run(st, self._start(v, st.V), sigma, st.count, 0.0, phase=jnp.asarray(1, jnp.int32),
                             redone=jnp.asarray(False), sigma=sigma, reuse=reuse, dom_v=st.v,
                             finite=st.finite & st.run_finite)

        def after_pair(st):
            i = st.phase - 1
            start = jnp.where((i == 0) & st.reuse, st.dom_v, st.v0)
            # Deflation can leave a negative eigenvalue dominant (|lambda| largest among the rest)
            # while smaller positive ones remain: then every remaining eigenvalue is >= lambda, and
            # the iteration on A - 1.01 lambda I converges to the largest algebraic one instead.
            redo = (st.sigma == 0) & (st.lam < 0) & st.run_finite & ~st.redone

            def repeat(st):
                return self._run(st, self._start(start, st.V), 1.01 * st.lam, st.count, st.scale, redone=jnp.asarray(True))

            def store(st):
                V, AV, lams = st.V.at[i].set(st.v), st.AV.at[i].set(st.av), st.lams.at[i].set(st.lam)
                scale = jnp.max(jnp.abs(lams))
                return self._run(st, self._start(st.v0, V), st.sigma, st.count, scale, phase=st.phase + 1,
                                 redone=jnp.asarray(False), V=V, AV=AV, lams=lams, finite=st.finite & st.run_finite)

            return jax.lax.cond(redo, repeat, store, st)

        return jax.lax.cond(st.phase == 0, after_dominant, after_pair, st)

    def cond(self, st: _PowerState):
        return (st.phase <= self.d) & st.finite & st.run_finite

    def finish(self, st: _PowerState) -> EigResult:
        # Rayleigh-Ritz on span(V) with the stored products (no extra products):
        # removes the coupling a slightly inexact deflated vector leaves in the next ones
        T = st.V @ st.AV.T
        theta, S = jnp.linalg.eigh(0.5 * (T + T.T))
        return _finish(theta, S.T @ st.V, S.T @ st.AV, self.tol, st.count, st.finite & st.run_finite)


@dataclasses.dataclass(frozen=True)
class PowerIteration:
    """The paper's deflated power iteration, signed: ``solve(matvec, v0) -> EigResult`` (see :func:`power_iteration`)."""

    d: int
    tol: float = 1e-3
    max_matvecs: int | None = None

    def iteration(self, v0) -> PowerIterationSteps:
        budget = int(self.max_matvecs) if self.max_matvecs is not None else 1000 * (self.d + 1)
        return PowerIterationSteps(self.d, self.tol, max(1, budget // (self.d + 1)), jnp.dtype(v0.dtype).name)

    def __call__(self, matvec: Callable, v0: jax.Array) -> EigResult:
        return run_compiled(self.iteration(v0), matvec, v0)


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
    evenly between phase 0 and the d vectors. A non-finite product stops the
    iteration (NaN pairs, ``converged=False``).
    """
    return PowerIteration(int(d), float(tol), max_matvecs)


# ----------------------------------------------------------------------------- lobpcg, dense


class _LobpcgState(NamedTuple):
    """Loop state of :class:`LobpcgSteps`, in JAX's column layout: (dim, k) blocks."""

    i: jax.Array  # iterations done
    X: jax.Array  # current eigenvector estimates
    P: jax.Array  # search directions
    R: jax.Array  # residuals A X - X diag(theta)
    AX: jax.Array  # A X
    converged: jax.Array  # columns meeting JAX's rule
    theta: jax.Array  # (1, k) Ritz values
    finite: jax.Array


@dataclasses.dataclass(frozen=True)
class LobpcgSteps:
    """The iteration of :func:`jax.experimental.sparse.linalg.lobpcg_standard`, split into steps (an Iteration).

    The same arithmetic as JAX's loop body, built from its own helpers
    (orthonormalisation by SVQB, the projection, Rayleigh-Ritz), with ``A X``
    kept in the state so that the final residuals need no further product. A
    step costs one batched product of ``4 k`` vectors (``A [X P R]`` and ``A X``);
    ``matmat`` maps (b, dim) rows to their products. ``jax_tol`` is JAX's
    ``tol'``, ``tol`` the convergence test of the returned pairs.
    """

    d: int
    tol: float
    jax_tol: float
    max_iters: int

    def init(self, matmat, V0) -> _LobpcgState:
        A = lambda X: matmat(X.T).T
        X = _jl._orthonormalize(V0.T)
        P = _jl._extend_basis(X, X.shape[1])
        AX = A(X)
        theta = jnp.sum(X * AX, axis=0, keepdims=True)
        return _LobpcgState(jnp.asarray(0, jnp.int32), X, P, AX - theta * X, AX, jnp.asarray(0, jnp.int32), theta,
                            jnp.all(jnp.isfinite(AX)))

    def step(self, matmat, st: _LobpcgState) -> _LobpcgState:
        A = lambda X: matmat(X.T).T
        n, k = st.X.shape
        R = _jl._project_out(jnp.concatenate((st.X, st.P), axis=1), st.R)
        XPR = jnp.concatenate((st.X, st.P, R), axis=1)
        theta, Q = _jl._rayleigh_ritz_orth(A, XPR)
        B = Q[:, :k]
        B /= jnp.linalg.norm(B, ord=2, axis=0, keepdims=True)
        X = _jl._mm(XPR, B)
        X /= jnp.linalg.norm(X, ord=2, axis=0, keepdims=True)
        q, _ = jnp.linalg.qr(Q[:k, k:].T)
        P = _jl._mm(XPR, _jl._mm(Q[:, k:], q))
        normP = jnp.linalg.norm(P, ord=2, axis=0, keepdims=True)
        P /= jnp.where(normP == 0, 1.0, normP)
        AX = A(X)
        R = AX - theta[jnp.newaxis, :k] * X
        # JAX's rule: |r| small against the rounding of computing r
        reltol = 10 * n * (jnp.linalg.norm(AX, ord=2, axis=0) + theta[:k])
        converged = jnp.sum(jnp.linalg.norm(R, ord=2, axis=0) < self.jax_tol * reltol)
        finite = st.finite & jnp.all(jnp.isfinite(AX)) & jnp.all(jnp.isfinite(theta))
        return _LobpcgState(st.i + 1, X, P, R, AX, converged.astype(jnp.int32), theta[jnp.newaxis, :k], finite)

    def cond(self, st: _LobpcgState):
        return (st.i < self.max_iters) & (st.converged < st.X.shape[1]) & st.finite

    def finish(self, st: _LobpcgState) -> EigResult:
        k = st.X.shape[1]
        vecs, avecs = st.X.T[: self.d], st.AX.T[: self.d]
        theta = jnp.sum(vecs * avecs, axis=1)  # Rayleigh quotients of unit vectors
        return _finish(theta, vecs, avecs, self.tol, k * (4 * st.i + 1), st.finite)


@dataclasses.dataclass(frozen=True)
class Lobpcg:
    """LOBPCG: ``solve(matmat, V0) -> EigResult`` (see :func:`lobpcg`)."""

    d: int
    tol: float = 1e-3
    max_iters: int = 200

    def iteration(self, V0) -> LobpcgSteps:
        """The :class:`LobpcgSteps` for a start block ``V0`` (b, dim)."""
        return LobpcgSteps(self.d, self.tol, self.tol / (20.0 * V0.shape[-1]), self.max_iters)

    def __call__(self, matmat: Callable, V0: jax.Array) -> EigResult:
        return run_compiled(self.iteration(V0), matmat, V0)


def lobpcg(d: int, *, tol: float = 1e-3, max_iters: int = 200):
    """LOBPCG (the algorithm of :func:`jax.experimental.sparse.linalg.lobpcg_standard`): ``solve(matmat, V0)``.

    ``V0: (b, dim)`` with ``d <= b`` and ``5 b < dim`` (a JAX restriction).
    JAX's stopping rule is ``||r|| < tol' * 10 dim (theta + ||A v||)``; we pass
    ``tol' = tol / (20 dim)`` so it approximates ``||r|| <= tol |theta|`` for
    positive ``theta``; the reported residuals come from the stored ``A X``.
    Products: ``b`` to start and ``4 b`` per iteration, all counted. A
    non-finite product stops the iteration (NaN pairs, ``converged=False``).
    """
    return Lobpcg(int(d), float(tol), int(max_iters))


@dataclasses.dataclass(frozen=True)
class DenseEigh:
    """Exact reference: ``eigh`` of the matrix built from ``dim`` products: ``solve(matvec, v0)`` (see :func:`dense_eigh`)."""

    d: int
    tol: float = 1e-3

    def from_rows(self, A) -> EigResult:
        """The result from the matrix whose rows are the products ``A e_i`` (symmetrised here)."""
        finite = jnp.all(jnp.isfinite(A))
        A = jnp.where(finite, 0.5 * (A + A.T), 0.0)
        evals, U = jnp.linalg.eigh(A)
        theta, vecs = evals[::-1][: self.d], U[:, ::-1][:, : self.d].T
        return _finish(theta, vecs, vecs @ A, self.tol, A.shape[0], finite)

    def __call__(self, matvec: Callable, v0: jax.Array) -> EigResult:
        return self.from_rows(jax.lax.map(matvec, jnp.eye(v0.shape[-1], dtype=v0.dtype)))


def dense_eigh(d: int, *, tol: float = 1e-3):
    """Exact reference: ``eigh`` of the matrix built from ``dim`` products: ``solve(matvec, v0)``."""
    return DenseEigh(int(d), float(tol))
