"""Stochastic trace and spectral-density estimators on a matvec (no model inside).

* :func:`trace_estimate`: Hutchinson, or Hutch++ (Meyer, Musco, Musco, Williams
  2021): a sketch ``Y = A S``, ``Q = orth(Y)``, the exact part ``tr(Q^T A Q)``
  and Hutchinson with Rademacher probes on the deflated rest. Returns
  ``(estimate, stderr, exact_part, per_probe_values)``.
* :func:`slq`: stochastic Lanczos quadrature (Ghorbani, Krishnan, Xiao 2019):
  per Rademacher probe, the nodes and weights of the Lanczos Gauss quadrature
  of ``v^T f(A) v``.
* :func:`smooth_density`: the Gaussian broadening of those quadratures.

The estimators are pure functions of ``matvec`` and ``key=``: jit or vmap them as
you like. ``chunk_size`` is how many probes are vmapped together inside the
``lax.map`` over probes (memory against speed; the result does not change).
The Rademacher sampler and the Lanczos tridiagonalisation are matfree's.

:func:`trace_estimate_host` and :func:`slq_host` are the same estimators with
the products driven from the host (:mod:`jaxland.linalg.loops`): one compiled
call per chunk of probes (the trace) or per Lanczos step of a chunk of probes
(SLQ, :class:`TridiagSteps`, matfree's recursion split into steps), for
operators whose products are slow inside a compiled loop (convolutions on a CPU).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from matfree import decomp, stochtrace

from .._compat import renamed_kwargs
from ..errors import ConfigError
from ..validate import check_real, positive_int
from .loops import host_rows, run_host

__all__ = ["trace_estimate", "slq", "smooth_density", "trace_estimate_host", "slq_host", "TridiagSteps"]




def _rows(matvec, V, chunk_size):
    """``matvec`` of every row of ``V``, ``chunk_size`` rows vmapped at a time (bounded memory)."""
    return jax.lax.map(matvec, V, batch_size=chunk_size)


def _trace(rows, dim, dtype, key, num_probes, method):
    """The estimate from ``rows: V -> A V`` (row by row); the arithmetic of :func:`trace_estimate`."""
    if method == "hutchinson":
        G = stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=num_probes)(key)
        vals = jnp.sum(G * rows(G), axis=1)  # g . A g per probe
        exact = jnp.zeros((), dtype)
    else:
        r = num_probes // 3
        ks, kg = jax.random.split(key)
        S = stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=r)(ks)
        Q, _ = jnp.linalg.qr(rows(S).T)  # (dim, r)
        exact = jnp.sum(Q * rows(Q.T).T)
        G = stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=num_probes - 2 * r)(kg)
        G = G - (G @ Q) @ Q.T
        vals = jnp.sum(G * rows(G), axis=1)
    n = vals.shape[0]
    stderr = jnp.std(vals, ddof=1) / math.sqrt(n) if n > 1 else jnp.asarray(jnp.inf, dtype)
    return exact + jnp.mean(vals), stderr, exact, vals


@renamed_kwargs(batch_size="chunk_size")
def trace_estimate(matvec, dim: int, dtype, *, key, num_probes: int, method: str = "hutch++", chunk_size: int = 1):
    """Pure ``tr(A)`` estimator for ``matvec: (dim,) -> (dim,)`` (jit/vmap it as you like).

    Returns ``(estimate, stderr, exact_part, per_probe_values)``; ``num_probes``
    products in all (Hutch++: a third for the sketch, a third for its exact part).
    """
    return _trace(lambda V: _rows(matvec, V, chunk_size), dim, dtype, key, num_probes, method)


def trace_estimate_host(make, operand, dim: int, dtype, *, key, num_probes: int, method: str = "hutch++",
                        chunk_size: int | None = 1):
    """:func:`trace_estimate` with the products in compiled calls of ``chunk_size`` rows each, driven from the host.

    ``make(operand)`` is ``v -> A v`` (:func:`jaxland.linalg.loops.host_rows`);
    the probes, the sketch's QR and the sums are the same arithmetic, run
    eagerly between the calls. Same numbers as :func:`trace_estimate` to float rounding.
    """
    return _trace(lambda V: host_rows(make, operand, V, chunk_size), dim, dtype, key, num_probes, method)


@renamed_kwargs(batch_size="chunk_size")
def slq(matvec, dim: int, dtype, *, key, num_probes: int, lanczos_steps: int, chunk_size: int = 1):
    """Pure SLQ: ``(nodes, weights)``, each (num_probes, lanczos_steps), from Rademacher probes."""
    tridiag = decomp.tridiag_sym(lanczos_steps, reortho="full", materialize=True, custom_vjp=False)
    G = stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=num_probes)(key)

    def one(g):
        _, T, *_ = tridiag(matvec, g)  # normalises g itself
        theta, U = jnp.linalg.eigh(T)
        return theta, U[0] ** 2

    return _rows(one, G, chunk_size)


class _TridiagState(NamedTuple):
    i: jax.Array  # products done
    Q: jax.Array  # (steps, dim) Lanczos vectors as rows
    H: jax.Array  # (steps, steps) Q^T A Q, column by column
    v: jax.Array  # the next (unnormalised) vector
    length: jax.Array  # its norm


@dataclasses.dataclass(frozen=True)
class TridiagSteps:
    """Lanczos tridiagonalisation with full reorthogonalisation, one product per step (an Iteration).

    matfree's forward pass (:func:`matfree.decomp.tridiag_sym` with
    ``reortho="full"``: Arnoldi with the projection done twice, then the
    symmetric part's diagonal and first off-diagonal) split into steps, for
    the host loop; ``finish`` returns the Gauss quadrature ``(nodes, weights)``.
    """

    steps: int

    def init(self, matvec, g) -> _TridiagState:
        k, dim = self.steps, g.shape[-1]
        return _TridiagState(jnp.asarray(0, jnp.int32), jnp.zeros((k, dim), g.dtype), jnp.zeros((k, k), g.dtype), g,
                             jnp.sqrt(jnp.vdot(g, g)))

    def step(self, matvec, st: _TridiagState) -> _TridiagState:
        q = st.v / st.length
        Q = st.Q.at[st.i].set(q)
        v = matvec(q)
        h = Q @ v
        v = v - h @ Q
        v = v - (Q @ v) @ Q
        length = jnp.sqrt(jnp.vdot(v, v))
        h = h.at[st.i + 1].set(length, mode="drop")
        return _TridiagState(st.i + 1, Q, st.H.at[:, st.i].set(h), v, length)

    def cond(self, st: _TridiagState):
        return st.i < self.steps

    def finish(self, st: _TridiagState):
        T = 0.5 * (st.H + st.H.T)
        T = jnp.diag(jnp.diag(T)) + jnp.diag(jnp.diag(T, 1), 1) + jnp.diag(jnp.diag(T, 1), -1)
        theta, U = jnp.linalg.eigh(T)
        return theta, U[0] ** 2


def slq_host(make, operand, dim: int, dtype, *, key, num_probes: int, lanczos_steps: int, chunk_size: int | None = 1):
    """:func:`slq` with a host loop: ``chunk_size`` probes advance together, one batched product per compiled step.

    ``make(operand)`` is ``v -> A v``. The probes are the same; the chunks are
    balanced and the last one padded with copies of its first probe (dropped),
    so one compiled step serves them all. Same numbers as :func:`slq` to float rounding.
    """
    G = stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=num_probes)(key)
    m = num_probes
    c = m if chunk_size is None else max(1, min(int(chunk_size), m))
    chunks = -(-m // c)
    c = -(-m // chunks)
    it = TridiagSteps(int(lanczos_steps))
    nodes, weights = [], []
    for i in range(chunks):
        Gi = G[i * c:(i + 1) * c]
        if Gi.shape[0] < c:
            Gi = jnp.concatenate([Gi, jnp.repeat(Gi[:1], c - Gi.shape[0], axis=0)])
        th, wt = run_host(it, make, operand, Gi, batched=True)
        nodes.append(th)
        weights.append(wt)
    return jnp.concatenate(nodes)[:m], jnp.concatenate(weights)[:m]


def smooth_density(nodes, weights, *, sigma=None, num_points: int = 1024, allow_nonfinite: bool = False):
    """``(grid, rho, sigma)``: Gaussian broadening of the SLQ quadrature (see the module docstring).

    Non-finite ``nodes`` or ``weights`` raise :class:`ConfigError` unless ``allow_nonfinite=True``.
    """
    nodes = jnp.asarray(nodes)
    weights = jnp.asarray(weights)
    if nodes.ndim != 2 or weights.shape != nodes.shape:
        raise ConfigError(f"nodes and weights must both be (probes, steps), got {nodes.shape} and {weights.shape}")
    if not allow_nonfinite and not (bool(jnp.all(jnp.isfinite(nodes))) and bool(jnp.all(jnp.isfinite(weights)))):
        raise ConfigError("nodes and weights must be finite (a NaN/inf quadrature has no density)")
    num_points = positive_int("num_points", num_points, minimum=2)
    if sigma is not None:
        sigma = check_real("sigma (broadening width)", sigma)
    lo, hi = jnp.min(nodes), jnp.max(nodes)
    if sigma is None:
        sigma = jnp.maximum(hi - lo, jnp.finfo(nodes.dtype).tiny) / nodes.shape[-1]
    sigma = jnp.asarray(sigma, nodes.dtype)
    grid = jnp.linspace(lo - 3 * sigma, hi + 3 * sigma, num_points)
    z = (grid[:, None, None] - nodes[None]) / sigma
    rho = jnp.sum(weights[None] * jnp.exp(-0.5 * z**2), axis=(1, 2)) / (nodes.shape[0] * sigma * math.sqrt(2 * math.pi))
    return grid, rho, sigma
