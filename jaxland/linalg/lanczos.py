"""Lanczos and block Lanczos with full reorthogonalisation: the Krylov machinery of :mod:`jaxland.curvature.eigen`.

Each solver is a factory in the matfree style: static settings in, a pure
``solve(matvec, v0) -> EigResult`` out, one ``lax.while_loop`` over the
products (jit- and vmap-able; it never raises). The solver's
:class:`KrylovIteration` (``solver.iteration(v0)``) is the same method split
into ``init``/``step``/``cond``/``finish``, so that
:func:`jaxland.linalg.loops.run_host` can drive it one compiled step per product.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .loops import run_compiled
from .result import EigResult, _eps, _finish

__all__ = ["lanczos", "block_lanczos", "Lanczos", "BlockLanczos", "KrylovIteration"]


# a block of residual rows whose smallest singular value is below this share of its largest row norm is
# projected out of the basis again after its QR (which would lose up to 1 / this in orthogonality)
_DEPENDENT_ROWS = 1e-2


def _orthonormal_rows(z):
    if z.shape[0] == 1:  # Lanczos: a norm, not a QR (cheaper to compile and run)
        return z / jnp.linalg.norm(z)
    q, _ = jnp.linalg.qr(z.T)
    return q.T


class _KrylovState(NamedTuple):
    """Loop state of :class:`KrylovIteration` (``nmax`` = steps x block size)."""

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
    restart: jax.Array  # (b, dim) random directions for a breakdown (fixed; no RNG in the loop)


@dataclasses.dataclass(frozen=True)
class KrylovIteration:
    """Block Lanczos with full reorthogonalisation and Rayleigh-Ritz after each block (an :class:`~jaxland.linalg.loops.Iteration`).

    Keeps ``Q`` (orthonormal rows), ``W = A Q`` and ``T = Q^T A Q`` (entries
    ``<q_i, A q_j>`` for ``i <= j``, mirrored). With ``(theta, s)`` an eigenpair of
    ``T``, ``A (Q^T s) = W^T s`` and the residual outside ``span Q`` is
    ``R_last^T s_last`` (R_last: the orthogonalised last products).

    ``dtype``: the precision of ``Q``, ``W``, the reorthogonalisation and
    Rayleigh-Ritz; ``op_dtype``: the operator's. A wider basis than the operator
    removes the basis' rounding (which, in float32, stalls relative residuals
    near 1e-5..1e-4); what remains is the operator's own rounding. Results come
    back in the operator's dtype. ``matmat`` maps (b, dim) rows to their products.
    """

    d: int
    tol: float
    steps: int
    block: int
    dim: int
    dtype: str
    op_dtype: str

    @property
    def nmax(self) -> int:
        return self.steps * self.block

    def _product(self, matmat, V):
        if self.dtype == self.op_dtype:
            return matmat(V)
        return matmat(V.astype(self.op_dtype)).astype(self.dtype)

    def _ritz(self, T, filled):
        idx = jnp.arange(self.nmax)
        tfull = jnp.triu(T) + jnp.triu(T, 1).T
        mask = idx < filled
        tfull = jnp.where(mask[:, None] & mask[None, :], tfull, 0.0)
        pad = -2.0 * jnp.linalg.norm(tfull) - jnp.finfo(self.dtype).tiny
        evals, S = jnp.linalg.eigh(tfull + jnp.diag(jnp.where(mask, 0.0, pad)))
        return evals[::-1][: self.d], S[:, ::-1][:, : self.d]

    def init(self, matmat, V0) -> _KrylovState:
        dtype, b, nmax = self.dtype, self.block, self.nmax
        z = jnp.zeros((nmax, self.dim), dtype)
        return _KrylovState(
            step=jnp.asarray(0, jnp.int32), Q=z, W=z, T=jnp.zeros((nmax, nmax), dtype),
            next_block=_orthonormal_rows(V0.astype(dtype)), gram=jnp.zeros((b, b), dtype), done=jnp.asarray(False),
            finite=jnp.asarray(True), theta=jnp.zeros((self.d,), dtype), S=jnp.zeros((nmax, self.d), dtype),
            restart=jax.random.normal(jax.random.key(1), (b, self.dim), dtype),
        )

    def step(self, matmat, st: _KrylovState) -> _KrylovState:
        b, dtype, tol = self.block, self.dtype, self.tol
        eps = _eps(dtype)
        j, Q, W, T, Qj = st.step, st.Q, st.W, st.T, st.next_block
        cols = j * b
        Wj = self._product(matmat, Qj)
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
        rnd = jnp.roll(st.restart, j * 7919 + 1, axis=1)  # differs per step

        def restart(Z):  # out of span Q and orthonormal, twice
            for _ in range(2):
                Z = Z - (Z @ Q.T) @ Q
                Z = _orthonormal_rows(Z)
            return Z

        # each pass over Q costs about a product of a small model: skip the two where they change R only by
        # rounding. Each row of R is orthogonal to Q relative to its own norm (two passes above), but a QR of
        # nearly dependent rows amplifies what is left, so such a block is projected again, as is a random row
        redo = jnp.any(small)
        if b > 1:
            redo |= jnp.linalg.eigvalsh(G)[0] <= _DEPENDENT_ROWS ** 2 * jnp.max(jnp.diag(G))
        Z = jax.lax.cond(redo, restart, _orthonormal_rows, jnp.where(small[:, None], rnd, R))
        theta, S = self._ritz(T, filled)
        s_last = jax.lax.dynamic_slice(S, (cols, jnp.zeros_like(cols)), (b, self.d))
        res = jnp.sqrt(jnp.clip(jnp.einsum("bi,bc,ci->i", s_last, G, s_last), 0.0))
        floor = 100 * eps * jnp.max(jnp.abs(theta))
        # never stop on a breakdown step: an invariant Krylov space has exact Ritz
        # pairs but may miss copies of repeated eigenvalues; continue from the restart
        done = (filled >= self.d) & jnp.all(res <= jnp.maximum(tol * jnp.abs(theta), floor))
        done &= ~jnp.any(small) | (filled + b > self.dim)
        if self.dtype != self.op_dtype:
            # the estimate assumes A Q = W exactly; with a narrower operator its rounding
            # is not in it, so confirm with the residuals of the stored products
            def explicit(_):
                r = jnp.linalg.norm(S.T @ W - theta[:, None] * (S.T @ Q), axis=1)
                return jnp.all(r <= jnp.maximum(tol * jnp.abs(theta), floor))

            done = jax.lax.cond(done, explicit, lambda _: jnp.asarray(False), None)
        return _KrylovState(j + 1, Q, W, T, Z, G, done, st.finite & fin, theta, S, st.restart)

    def cond(self, st: _KrylovState):
        return (st.step < self.steps) & ~st.done & st.finite

    def finish(self, st: _KrylovState) -> EigResult:
        filled = st.step * self.block
        vecs = st.S.T @ st.Q
        # Rayleigh quotients of the (normalised) Ritz vectors from the stored products
        avecs = st.S.T @ st.W
        res = _finish(st.theta, vecs, avecs, self.tol, filled, st.finite)
        if self.dtype != self.op_dtype:
            res = res._replace(**{f: getattr(res, f).astype(self.op_dtype)
                                  for f in ("eigenvalues", "eigenvectors", "residuals", "relative_residuals")})
        return res


def _krylov(V0, d: int, tol, max_matvecs: int, basis_dtype=None) -> KrylovIteration:
    b, dim = V0.shape
    op_dtype = jnp.dtype(V0.dtype).name
    dtype = jnp.dtype(basis_dtype).name if basis_dtype is not None else op_dtype
    return KrylovIteration(int(d), float(tol), max(1, min(max_matvecs, dim) // b), int(b), int(dim), dtype, op_dtype)


@dataclasses.dataclass(frozen=True)
class Lanczos:
    """Lanczos (full reorthogonalisation) for the top-d eigenpairs: ``solve(matvec, v0) -> EigResult`` (see :func:`lanczos`)."""

    d: int
    tol: float = 1e-3
    max_matvecs: int | None = None
    basis_dtype: str | None = None

    def iteration(self, v0) -> KrylovIteration:
        """The :class:`KrylovIteration` for a start vector ``v0`` (dim,); it starts from ``v0[None]`` and multiplies (1, dim) rows."""
        mm = _default_max(v0.shape[-1], self.d, self.max_matvecs)
        return _krylov(v0[None], self.d, self.tol, mm, self.basis_dtype)

    def __call__(self, matvec: Callable, v0: jax.Array) -> EigResult:
        return run_compiled(self.iteration(v0), lambda V: matvec(V[0])[None], v0[None])


@dataclasses.dataclass(frozen=True)
class BlockLanczos:
    """Block Lanczos for the top-d eigenpairs: ``solve(matmat, V0) -> EigResult`` (see :func:`block_lanczos`)."""

    d: int
    block_size: int | None = None
    tol: float = 1e-3
    max_matvecs: int | None = None
    basis_dtype: str | None = None

    def iteration(self, V0) -> KrylovIteration:
        """The :class:`KrylovIteration` for a start block ``V0`` (b, dim)."""
        b, dim = V0.shape
        return _krylov(V0, self.d, self.tol, _default_max(dim, self.d, self.max_matvecs, b), self.basis_dtype)

    def __call__(self, matmat: Callable, V0: jax.Array) -> EigResult:
        return run_compiled(self.iteration(V0), matmat, V0)


def lanczos(d: int, *, tol: float = 1e-3, max_matvecs: int | None = None, basis_dtype: Any = None):
    """Lanczos (full reorthogonalisation) for the top-d eigenpairs: ``solve(matvec, v0) -> EigResult``.

    ``matvec: (dim,) -> (dim,)`` symmetric; ``v0: (dim,)`` start vector (its
    dtype is the operator's precision). Stops after the first product at which
    all top-d Ritz pairs satisfy ``||A y - theta y|| <= tol |theta|``, or after
    ``max_matvecs`` products (default ``min(dim, max(6 d, d + 50))``; memory and the cost of each reorthogonalisation grow with it).
    Memory: two ``(max_matvecs, dim)`` arrays of ``basis_dtype`` (three buffers once compiled: the loop
    keeps a copy of the basis it updates; see :func:`jaxland.memory.krylov_parts`).

    ``basis_dtype``: precision of the Krylov basis, reorthogonalisation and
    Rayleigh-Ritz (default: ``v0.dtype``). ``jnp.float64`` with a float32
    operator reaches relative residuals near 1e-6 (measured with that operator;
    its own rounding is the floor) where a float32 basis stalls near 1e-5..1e-4; it needs x64 enabled while tracing (``jax.enable_x64(True)``;
    :func:`top_eigenpairs` does that itself).
    """
    return Lanczos(int(d), float(tol), max_matvecs, _dtype_name(basis_dtype))


def block_lanczos(d: int, *, block_size: int | None = None, tol: float = 1e-3, max_matvecs: int | None = None,
                  basis_dtype: Any = None):
    """Block Lanczos for the top-d eigenpairs: ``solve(matmat, V0) -> EigResult``.

    ``matmat: (b, dim) -> (b, dim)`` applies the operator to each row (e.g.
    :func:`jaxland.hvp_batch`); ``V0: (b, dim)`` start block. Each step costs
    one batched product of ``b`` vectors. ``basis_dtype`` as in :func:`lanczos`.
    """
    return BlockLanczos(int(d), block_size, float(tol), max_matvecs, _dtype_name(basis_dtype))


def _dtype_name(dtype) -> str | None:
    return None if dtype is None else jnp.dtype(dtype).name


def _default_max(dim: int, d: int, max_matvecs: int | None, b: int = 1) -> int:
    if max_matvecs is None:
        max_matvecs = max(6 * d, d + 50) + (10 * b if b > 1 else 0)
    return min(int(max_matvecs), dim)
