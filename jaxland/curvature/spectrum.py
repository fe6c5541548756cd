"""The whole spectrum of a curvature operator, matrix-free: trace, spectral density, both ends, and the choice of d.

For a symmetric ``D x D`` operator ``H`` (a :class:`~jaxland.curvature.CurvatureOperator`:
the Hessian of ``L_k`` at ``w``, its Gauss-Newton matrix or its empirical
Fisher, seen only through products). :func:`trace`, :func:`density` and
:func:`extremes` take the operator; :func:`hessian_trace`,
:func:`spectral_density`, :func:`bottom_eigenpairs` and
:func:`extreme_eigenvalues` build the Hessian's from ``(model, w, x, y)`` and
call them:

* **Trace.** Hutchinson: ``tr(H) ~ (1/m) sum_i g_i^T H g_i`` with Rademacher
  probes ``g_i`` (``E[g g^T] = I``), standard error ``std(g_i^T H g_i) / sqrt(m)``.
  Hutch++ (Meyer, Musco, Musco, Williams 2021) spends the same ``m`` products in
  thirds: a sketch ``Y = H S`` (``S``: ``m/3`` probes), ``Q = orth(Y)``, the
  exact part ``tr(Q^T H Q)`` (``m/3`` products), and Hutchinson on the deflated
  rest ``tr((I - QQ^T) H (I - QQ^T))`` with the remaining probes. Given ``Q`` the
  estimate is unbiased and its standard error is that of the Hutchinson part;
  the top eigenvalues, which dominate Hutchinson's variance
  (``2 (||H||_F^2 - sum_i H_ii^2)``), are taken out exactly.
* **Density** (stochastic Lanczos quadrature, Ghorbani, Krishnan, Xiao 2019).
  For each unit probe ``v = g / ||g||`` the Lanczos tridiagonal ``T_m`` of
  ``(H, v)`` gives the Gauss quadrature ``v^T f(H) v ~ sum_j tau_j f(theta_j)``
  (nodes ``theta_j``: eigenvalues of ``T_m``; weights ``tau_j``: squared first
  components of its eigenvectors, ``sum_j tau_j = 1``), exact for polynomials of
  degree ``< 2m``. Averaged over probes it estimates the spectral measure
  ``(1/D) sum_i delta(t - lambda_i)``; so ``trace(H^p) / D`` (the moments) comes
  with a Monte Carlo standard error over probes. The smoothed density is
  ``rho(t) = mean_probes sum_j tau_j N(t; theta_j, sigma^2)``, with the default
  width ``sigma = (theta_max - theta_min) / m``: the node spacing of an
  m-point quadrature of a spread-out spectrum (narrower invents structure
  between nodes, wider smears the outliers into the bulk).
* **Ends.** ``lambda_max`` and ``lambda_min`` from the eigensolver
  (:func:`jaxland.curvature.eigenpairs` with ``which="largest"`` / ``"smallest"``):
  whether ``w`` is near a minimum is read from ``lambda_min / lambda_max``.
* **Choice of d.** ``share(d) = sum_{i<=d} lambda_i / tr(H_+)`` with
  ``tr(H_+) = D * E_v[sum_j tau_j max(theta_j, 0)]`` from the density; the
  chosen d is the smallest with ``share(d) >= share``. The eigengap
  alternative is ``argmax_i lambda_i / lambda_{i+1}`` over the computed positive
  eigenvalues.

The probes, sketch and Lanczos runs are one compiled program each (``lax.map``
over probes, ``chunk_size`` of them vmapped together), with the operator (weights
and data) as an input; or, with ``loop="host"`` (the default for convolutional
models on a CPU), one compiled call per chunk of probes (the trace) or per
Lanczos step of a chunk of probes (the density). The Rademacher sampler and
the Lanczos tridiagonalisation (full reorthogonalisation) are matfree's (the
host loop runs matfree's recursion one step at a time); Hutch++ is not in
matfree and is written here.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np

from .._compat import renamed_kwargs
from ..errors import ConfigError, NumericalError
from ..linalg.result import EigResult
from ..linalg.stochastic import slq, slq_host, smooth_density, trace_estimate, trace_estimate_host
from ..validate import check_key, check_loop, check_operator, check_real, positive_int
from .eigen import eigenpairs, hessian_eigenpairs
from .linearised import host_product, host_rows_product
from .operators import CurvatureOperator, hessian_operator, linear_map, loop_mode
from .results import DChoice, Extremes, SpectralDensity, TraceEstimate

__all__ = [
    "TraceEstimate",
    "SpectralDensity",
    "Extremes",
    "DChoice",
    "TRACE_METHODS",
    "trace",
    "density",
    "extremes",
    "hessian_trace",
    "spectral_density",
    "density_moments",
    "positive_trace",
    "bottom_eigenpairs",
    "extreme_eigenvalues",
    "choose_d",
    "PROBE_CHUNK_COMPILED",
    "PROBE_CHUNK_HOST",
]

TRACE_METHODS = ("hutch++", "hutchinson")

# Probes vmapped together by default. Compiled loop: 1 (reference MLP on 2,048 images, 2 CPU cores: 10 rows one at a
# time 0.51-0.60 s against 1.05-1.11 s all at once). Host loop (convolutions on a CPU): PROBE_CHUNK_HOST, see
# benchmarks/results/architectures.json ("probe_chunk").
PROBE_CHUNK_COMPILED = 1
PROBE_CHUNK_HOST = 4


def _chunk(chunk_size, mode="compiled"):
    default = PROBE_CHUNK_HOST if mode == "host" else PROBE_CHUNK_COMPILED
    return positive_int("chunk_size (probes vmapped together)", chunk_size, default)


# ----------------------------------------------------------------------------- on an operator


@functools.partial(jax.jit, static_argnames=("num_probes", "method", "chunk_size"))
def _trace_jit(op, key, num_probes, method, chunk_size):
    return trace_estimate(linear_map(op), op.dim, op.dtype, key=key, num_probes=num_probes, method=method,
                          chunk_size=chunk_size)


def trace(op: CurvatureOperator, *, num_probes: int, key=None, method: str = "hutch++", chunk_size: int | None = None,
          allow_nonfinite: bool = False, loop: str = "auto") -> TraceEstimate:
    """``tr(A)`` of a curvature operator by Hutch++ (default) or Hutchinson, with its standard error.

    ``num_probes`` is the budget of operator products for both methods
    (Hutch++ needs >= 6: two per sketch vector, two stochastic probes);
    ``chunk_size`` products are vmapped together (memory grows with it;
    default :data:`PROBE_CHUNK_COMPILED` in a compiled loop,
    :data:`PROBE_CHUNK_HOST` in a host loop); ``key`` is required.
    ``loop``: the products in one compiled program (``"compiled"``) or one
    compiled call per chunk (``"host"``); ``"auto"``: the host for a
    convolutional model on a CPU (:func:`~jaxland.curvature.operators.loop_mode`).
    NaN/inf products raise :class:`NumericalError` unless ``allow_nonfinite=True``.
    """
    check_operator(op)
    key = check_key(key)
    if method not in TRACE_METHODS:
        raise ConfigError(f"method must be one of {TRACE_METHODS}, got {method!r}")
    num_probes = positive_int("num_probes", num_probes, minimum=6 if method == "hutch++" else 2)
    if method == "hutch++" and num_probes // 3 >= op.dim:
        raise ConfigError(f"hutch++ sketch of {num_probes // 3} vectors >= dim {op.dim}; use fewer num_probes")
    mode = loop_mode(op, check_loop(loop))
    chunk = _chunk(chunk_size, mode)
    if mode == "host":
        make, operand = host_rows_product(op, num_probes, chunk)
        tr, se, exact, vals = trace_estimate_host(make, operand, op.dim, op.dtype, key=key, num_probes=num_probes,
                                                  method=method, chunk_size=chunk)
    else:
        tr, se, exact, vals = _trace_jit(op, key, num_probes, method, chunk)
    if not allow_nonfinite and not (np.isfinite(float(tr)) and np.isfinite(float(se)) and np.all(np.isfinite(np.asarray(vals)))):
        raise NumericalError(f"trace: the {op.kind} products returned NaN/Inf; check w, x and y (finite, and not so "
                             "large that the loss or its derivatives overflow)")
    return TraceEstimate(tr, se, num_probes, exact, vals, method, op.kind)


@functools.partial(jax.jit, static_argnames=("num_probes", "lanczos_steps", "chunk_size"))
def _slq_jit(op, key, num_probes, lanczos_steps, chunk_size):
    return slq(linear_map(op), op.dim, op.dtype, key=key, num_probes=num_probes, lanczos_steps=lanczos_steps,
               chunk_size=chunk_size)


def density(op: CurvatureOperator, *, num_probes: int, lanczos_steps: int, key=None, sigma=None,
            num_points: int = 1024, chunk_size: int | None = None, allow_nonfinite: bool = False,
            loop: str = "auto") -> SpectralDensity:
    """Eigenvalue density of a curvature operator by stochastic Lanczos quadrature.

    ``num_probes`` Rademacher probes, ``lanczos_steps`` products each (full
    reorthogonalisation; memory ``lanczos_steps * D`` per probe in flight);
    ``key`` is required. ``sigma``: broadening width (default: the rule in the
    module docstring). ``chunk_size`` probes run together (their products
    vmapped; defaults as in :func:`trace`). ``loop``: the Lanczos runs inside one
    compiled program, or (``"host"``) a Python loop of one compiled step per
    batched product; ``"auto"`` as in :func:`trace`. Moments:
    :func:`density_moments`; ``tr(A_+)``: :func:`positive_trace`. Non-finite
    Lanczos coefficients raise :class:`NumericalError` unless ``allow_nonfinite=True``.
    """
    check_operator(op)
    key = check_key(key)
    num_probes = positive_int("num_probes", num_probes)
    lanczos_steps = positive_int("lanczos_steps", lanczos_steps, minimum=2)
    if lanczos_steps >= op.dim:
        raise ConfigError(f"lanczos_steps = {lanczos_steps} must be < dim = {op.dim} (use op.dense() and eigh on so small a model)")
    if sigma is not None:
        sigma = check_real("sigma (broadening width)", sigma)
    mode = loop_mode(op, check_loop(loop))
    chunk = _chunk(chunk_size, mode)
    if mode == "host":
        make, operand, _ = host_product(op, min(chunk, num_probes))
        nodes, weights = slq_host(make, operand, op.dim, op.dtype, key=key, num_probes=num_probes,
                                  lanczos_steps=lanczos_steps, chunk_size=chunk)
    else:
        nodes, weights = _slq_jit(op, key, num_probes, lanczos_steps, chunk)
    if not allow_nonfinite and not (np.all(np.isfinite(np.asarray(nodes))) and np.all(np.isfinite(np.asarray(weights)))):
        raise NumericalError(
            f"density: non-finite Lanczos coefficients (NaN/Inf {op.kind} products, or a Krylov "
            "space that became invariant); check the weights and data or use fewer lanczos_steps"
        )
    grid, rho, s = smooth_density(nodes, weights, sigma=sigma, num_points=num_points, allow_nonfinite=allow_nonfinite)
    return SpectralDensity(nodes, weights, grid, rho, s, op.dim, num_probes * lanczos_steps, op.kind)


def extremes(op: CurvatureOperator, *, key=None, tol: float = 1e-3, max_matvecs: int | None = None,
             loop: str = "auto") -> Extremes:
    """``lambda_min`` and ``lambda_max`` of a curvature operator (Lanczos from each end), with their residuals.

    The bottom end sits next to the bulk, so it usually needs more products
    than the top: ``max_matvecs`` defaults to 150 there (check ``bottom.converged``).
    ``key`` is required (split for the two solves); ``loop`` as in :func:`~jaxland.curvature.eigenpairs`.
    """
    check_operator(op)
    k1, k2 = jax.random.split(check_key(key))
    top = eigenpairs(op, 1, key=k1, tol=tol, max_matvecs=max_matvecs, loop=loop)
    bottom = eigenpairs(op, 1, key=k2, tol=tol, max_matvecs=max_matvecs or 150, which="smallest", loop=loop)
    lmin, lmax = float(bottom.eigenvalues[0]), float(top.eigenvalues[0])
    return Extremes(lmin, lmax, lmin / lmax if lmax != 0 else math.nan, bottom, top, op.kind)


# ----------------------------------------------------------------------------- the Hessian of (model, w, x, y)


@renamed_kwargs(batch_size="chunk_size")
def hessian_trace(model, w, x, y, *, num_probes: int, key=None, method: str = "hutch++", k=None,
                  chunk_size: int | None = None, allow_nonfinite: bool = False, loop: str = "auto") -> TraceEstimate:
    """``tr(H_k(w))`` by Hutch++ (default) or Hutchinson, with its standard error: :func:`trace` of the Hessian."""
    return trace(hessian_operator(model, w, x, y, k=k), num_probes=num_probes, key=key, method=method,
                 chunk_size=chunk_size, allow_nonfinite=allow_nonfinite, loop=loop)


@renamed_kwargs(batch_size="chunk_size")
def spectral_density(model, w, x, y, *, num_probes: int, lanczos_steps: int, key=None, k=None, sigma=None,
                     num_points: int = 1024, chunk_size: int | None = None, allow_nonfinite: bool = False,
                     loop: str = "auto") -> SpectralDensity:
    """Eigenvalue density of ``H_k(w)`` by stochastic Lanczos quadrature: :func:`density` of the Hessian."""
    return density(hessian_operator(model, w, x, y, k=k), num_probes=num_probes, lanczos_steps=lanczos_steps, key=key,
                   sigma=sigma, num_points=num_points, chunk_size=chunk_size, allow_nonfinite=allow_nonfinite, loop=loop)


def bottom_eigenpairs(model, w, x, y, d: int = 1, *, k=None, key=None, **kwargs) -> EigResult:
    """The d smallest (most negative) eigenpairs of ``H_k(w)``, ascending: ``hessian_eigenpairs(..., which="smallest")``."""
    return hessian_eigenpairs(model, w, x, y, d, k=k, key=key, which="smallest", **kwargs)


def extreme_eigenvalues(model, w, x, y, *, k=None, key=None, tol: float = 1e-3, max_matvecs: int | None = None,
                        loop: str = "auto") -> Extremes:
    """``lambda_min`` and ``lambda_max`` of ``H_k(w)``: :func:`extremes` of the Hessian (``key`` required)."""
    return extremes(hessian_operator(model, w, x, y, k=k), key=key, tol=tol, max_matvecs=max_matvecs, loop=loop)


# ----------------------------------------------------------------------------- from the estimates

def density_moments(density: SpectralDensity, p: int):
    """``(trace(H^p) / D, standard error)`` from the quadrature (exact per probe for ``p < 2 steps``)."""
    p = positive_int("p (moment order)", p, minimum=0)
    per_probe = np.sum(np.asarray(density.weights, np.float64) * np.asarray(density.nodes, np.float64) ** p, axis=1)
    n = per_probe.shape[0]
    return float(per_probe.mean()), float(per_probe.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf


def positive_trace(density: SpectralDensity):
    """``(tr(H_+), standard error)``: the trace of the positive part, ``D * E[sum_j tau_j max(theta_j, 0)]``."""
    per_probe = np.sum(np.asarray(density.weights, np.float64) * np.clip(np.asarray(density.nodes, np.float64), 0, None), axis=1)
    n = per_probe.shape[0]
    se = per_probe.std(ddof=1) / math.sqrt(n) if n > 1 else math.inf
    return float(density.dim * per_probe.mean()), float(density.dim * se)


def choose_d(eigenvalues, density: SpectralDensity | None = None, *, share: float = 0.9,
             positive_trace_value: tuple[float, float] | float | None = None) -> DChoice:
    """The smallest d whose top eigenvalues hold ``share`` of the positive curvature, and the eigengap d.

    Args:
      eigenvalues: the top-m eigenvalues (any order; sorted descending here),
        e.g. ``hessian_eigenpairs(...).eigenvalues``.
      density: the :class:`SpectralDensity` giving ``tr(H_+)`` (or pass
        ``positive_trace_value=(value, stderr)`` / an exact value instead).
      share: the requested fraction of ``tr(H_+)``, in (0, 1].
    """
    if not (isinstance(share, (int, float)) and 0 < share <= 1):
        raise ConfigError(f"share must be in (0, 1], got {share!r}")
    ev = np.sort(np.asarray(eigenvalues, np.float64).ravel())[::-1]
    if ev.size == 0 or not np.all(np.isfinite(ev)):
        raise ConfigError("eigenvalues must be a non-empty array of finite values")
    if (density is None) == (positive_trace_value is None):
        raise ConfigError("pass exactly one of density= (a SpectralDensity) or positive_trace_value=")
    if density is not None:
        tp, tp_se = positive_trace(density)
    elif isinstance(positive_trace_value, tuple):
        tp, tp_se = map(float, positive_trace_value)
    else:
        tp, tp_se = float(positive_trace_value), 0.0
    if not tp > 0:
        raise ConfigError(f"the positive part of the spectrum has trace {tp:.3g} <= 0: no curvature to capture")
    captured = np.cumsum(np.clip(ev, 0, None)) / tp
    captured_se = captured * tp_se / tp
    hit = np.nonzero(captured >= share)[0]
    pos = ev[ev > 0]
    ratios = np.where(ev[1:] > 0, ev[:-1] / np.where(ev[1:] > 0, ev[1:], 1.0), np.inf)
    d_gap = int(np.argmax(pos[:-1] / pos[1:]) + 1) if pos.size >= 2 else None
    return DChoice(int(hit[0] + 1) if hit.size else None, d_gap, float(share), captured, captured_se, tp, tp_se, ratios, ev)
