"""Lanczos and block Lanczos with full reorthogonalisation: the Krylov machinery of :mod:`jaxland.curvature.eigen`.

Each solver is a factory in the matfree style: static settings in, a pure
``solve(matvec, v0) -> EigResult`` out, one ``lax.while_loop`` over the
products (jit- and vmap-able; it never raises).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .result import EigResult, _eps, _finish

__all__ = ["lanczos", "block_lanczos"]


def _orthonormal_rows(z):
    if z.shape[0] == 1:  # Lanczos: a norm, not a QR (cheaper to compile and run)
        return z / jnp.linalg.norm(z)
    q, _ = jnp.linalg.qr(z.T)
    return q.T



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
    operator reaches relative residuals near 1e-6 (measured with that operator;
    its own rounding is the floor) where a float32 basis stalls near 1e-5..1e-4; it needs x64 enabled while tracing (``jax.enable_x64(True)``;
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
