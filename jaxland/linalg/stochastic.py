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
The Hutchinson integrand, the Rademacher sampler and the Lanczos
tridiagonalisation are matfree's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from matfree import decomp, stochtrace

from .._compat import renamed_kwargs
from ..errors import ConfigError
from ..validate import check_real, positive_int

__all__ = ["trace_estimate", "slq", "smooth_density"]




def _rows(matvec, V, chunk_size):
    """``matvec`` of every row of ``V``, ``chunk_size`` rows vmapped at a time (bounded memory)."""
    return jax.lax.map(matvec, V, batch_size=chunk_size)


@renamed_kwargs(batch_size="chunk_size")
def trace_estimate(matvec, dim: int, dtype, *, key, num_probes: int, method: str = "hutch++", chunk_size: int = 1):
    """Pure ``tr(A)`` estimator for ``matvec: (dim,) -> (dim,)`` (jit/vmap it as you like).

    Returns ``(estimate, stderr, exact_part, per_probe_values)``; ``num_probes``
    products in all (Hutch++: a third for the sketch, a third for its exact part).
    """
    if method == "hutchinson":
        G = stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=num_probes)(key)
        integrand = stochtrace.monte_carlo_trace()
        vals = _rows(lambda g: integrand(matvec, g), G, chunk_size)
        exact = jnp.zeros((), dtype)
    else:
        r = num_probes // 3
        ks, kg = jax.random.split(key)
        S = stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=r)(ks)
        Q, _ = jnp.linalg.qr(_rows(matvec, S, chunk_size).T)  # (dim, r)
        exact = jnp.sum(Q * _rows(matvec, Q.T, chunk_size).T)
        G = stochtrace.sampler_signs(jnp.zeros((dim,), dtype), num=num_probes - 2 * r)(kg)
        G = G - (G @ Q) @ Q.T
        vals = jnp.sum(G * _rows(matvec, G, chunk_size), axis=1)
    n = vals.shape[0]
    stderr = jnp.std(vals, ddof=1) / math.sqrt(n) if n > 1 else jnp.asarray(jnp.inf, dtype)
    return exact + jnp.mean(vals), stderr, exact, vals


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
