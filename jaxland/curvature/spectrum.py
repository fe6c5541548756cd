"""The whole Hessian spectrum, matrix-free: trace, spectral density, both ends, and the choice of d.

For a symmetric ``D x D`` operator ``H`` (the Hessian of ``L_k`` at ``w``, seen only
through Hessian-vector products):

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
  (:func:`jaxland.hessian_eigenpairs` with ``which="largest"`` / ``"smallest"``):
  whether ``w`` is near a minimum is read from ``lambda_min / lambda_max``.
* **Choice of d.** ``share(d) = sum_{i<=d} lambda_i / tr(H_+)`` with
  ``tr(H_+) = D * E_v[sum_j tau_j max(theta_j, 0)]`` from the density; the
  chosen d is the smallest with ``share(d) >= share``. The eigengap
  alternative is ``argmax_i lambda_i / lambda_{i+1}`` over the computed positive
  eigenvalues.

The probes, sketch and Lanczos runs are one compiled program each (``lax.map``
over probes, ``batch_size`` of them vmapped together), with the weights and data
as inputs. The Hutchinson integrand, the Rademacher sampler and the Lanczos
tridiagonalisation (full reorthogonalisation) are matfree's; Hutch++ is not in
matfree and is written here.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .products import hvp
from .eigenpairs import EigResult, hessian_eigenpairs
from ..errors import ConfigError, NumericalError
from ..linalg.stochastic import slq, smooth_density, trace_estimate
from ..validate import check_data, check_key, check_params, check_prefix, check_real, positive_int

__all__ = [
    "TraceEstimate",
    "SpectralDensity",
    "Extremes",
    "DChoice",
    "TRACE_METHODS",
    "hessian_trace",
    "spectral_density",
    "density_moments",
    "positive_trace",
    "bottom_eigenpairs",
    "extreme_eigenvalues",
    "choose_d",
]

TRACE_METHODS = ("hutch++", "hutchinson")


class TraceEstimate(NamedTuple):
    """``tr(H)`` with its standard error.

    Attributes:
      trace: the estimate.
      stderr: its Monte Carlo standard error (Hutch++: of the deflated part, given the sketch).
      num_matvecs: operator products used (= ``num_probes``).
      exact_part: ``tr(Q^T H Q)`` of the Hutch++ sketch (0 for Hutchinson).
      samples: the per-probe quadratic forms of the stochastic part.
      method: ``"hutch++"`` or ``"hutchinson"``.
    """

    trace: jax.Array
    stderr: jax.Array
    num_matvecs: int
    exact_part: jax.Array
    samples: jax.Array
    method: str


class SpectralDensity(NamedTuple):
    """SLQ quadrature per probe plus a smoothed density on a grid.

    Attributes:
      nodes: (num_probes, steps) Ritz values ``theta_j`` of each probe's Lanczos run.
      weights: (num_probes, steps) quadrature weights ``tau_j`` (each row sums to 1).
      grid: (num_points,) evaluation points, ``[theta_min - 3 sigma, theta_max + 3 sigma]``.
      density: (num_points,) ``rho(grid)``, integrating to 1.
      sigma: Gaussian broadening width.
      dim: operator size D (``trace(f(H)) = D * mean_probes sum_j tau_j f(theta_j)``).
      num_matvecs: operator products used (``num_probes * steps``).
    """

    nodes: jax.Array
    weights: jax.Array
    grid: jax.Array
    density: jax.Array
    sigma: jax.Array
    dim: int
    num_matvecs: int


class Extremes(NamedTuple):
    """Both ends of the spectrum from the eigensolver, with their certificates."""

    lambda_min: float
    lambda_max: float
    min_over_max: float  # lambda_min / lambda_max: about 0 (or > 0) near a minimum
    bottom: EigResult
    top: EigResult


class DChoice(NamedTuple):
    """The chosen subspace dimension and the evidence for it.

    Attributes:
      d: smallest d with ``share(d) >= target`` (None: more than the eigenvalues given).
      d_eigengap: ``argmax_i lambda_i / lambda_{i+1}`` (1-based, over positive eigenvalues).
      target: the requested share.
      captured: (m,) ``share(d)`` for d = 1..m.
      captured_stderr: (m,) its standard error, from that of ``tr(H_+)``.
      positive_trace, positive_trace_stderr: ``tr(H_+)`` and its standard error.
      gap_ratios: (m-1,) ``lambda_i / lambda_{i+1}`` (inf where ``lambda_{i+1} <= 0``).
      eigenvalues: (m,) the top eigenvalues used, descending.
    """

    d: int | None
    d_eigengap: int | None
    target: float
    captured: np.ndarray
    captured_stderr: np.ndarray
    positive_trace: float
    positive_trace_stderr: float
    gap_ratios: np.ndarray
    eigenvalues: np.ndarray


# ----------------------------------------------------------------------------- Hessian entry points


def _check_common(w, num_probes, name, minimum=1):
    positive_int(name, num_probes, minimum=minimum)
    if jnp.ndim(w) != 1:
        raise ConfigError(f"w must be a flat parameter vector, got shape {jnp.shape(w)}")


def _check_inputs(model, w, x, y, k, key):
    check_prefix(k, check_data(model, x, y, min_samples=1))
    check_params(model, w, values=False)  # NaN weights surface as NumericalError on the products, below
    if jnp.dtype(w.dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise ConfigError(f"w must be float32 or float64 for the Hessian's spectrum (QR, eigh), got {w.dtype}")
    check_key(key)


def _batch(batch_size):
    positive_int("batch_size (probes vmapped together)", batch_size)
    return int(batch_size)


@functools.partial(jax.jit, static_argnames=("model", "num_probes", "method", "batch_size"))
def _trace_jit(model, w, x, y, k, key, num_probes, method, batch_size):
    mv = lambda v: hvp(model, w, v, x, y, k)
    return trace_estimate(mv, key, w.shape[0], w.dtype, num_probes=num_probes, method=method, batch_size=batch_size)


def hessian_trace(model, w, x, y, *, num_probes: int, key, method: str = "hutch++", k=None, batch_size: int = 1,
                  allow_nonfinite: bool = False) -> TraceEstimate:
    """``tr(H_k(w))`` by Hutch++ (default) or Hutchinson, with its standard error.

    ``num_probes`` is the budget of Hessian-vector products for both methods
    (Hutch++ needs >= 6: two per sketch vector, two stochastic probes);
    ``batch_size`` products are vmapped together (memory grows with it).
    NaN/inf products raise :class:`NumericalError` unless ``allow_nonfinite=True``.
    """
    _check_inputs(model, w, x, y, k, key)
    if method not in TRACE_METHODS:
        raise ConfigError(f"method must be one of {TRACE_METHODS}, got {method!r}")
    _check_common(w, num_probes, "num_probes", 6 if method == "hutch++" else 2)
    if method == "hutch++" and num_probes // 3 >= w.shape[0]:
        raise ConfigError(f"hutch++ sketch of {num_probes // 3} vectors >= dim {w.shape[0]}; use fewer num_probes")
    k = None if k is None else jnp.asarray(k)
    tr, se, exact, vals = _trace_jit(model, w, x, y, k, key, int(num_probes), method, _batch(batch_size))
    if not allow_nonfinite and not (np.isfinite(float(tr)) and np.isfinite(float(se)) and np.all(np.isfinite(np.asarray(vals)))):
        raise NumericalError("hessian_trace: the Hessian-vector products returned NaN/Inf; check w, x and y (finite, "
                             "and not so large that the loss or its derivatives overflow)")
    return TraceEstimate(tr, se, int(num_probes), exact, vals, method)


@functools.partial(jax.jit, static_argnames=("model", "num_probes", "lanczos_steps", "batch_size"))
def _slq_jit(model, w, x, y, k, key, num_probes, lanczos_steps, batch_size):
    mv = lambda v: hvp(model, w, v, x, y, k)
    return slq(mv, key, w.shape[0], w.dtype, num_probes=num_probes, lanczos_steps=lanczos_steps, batch_size=batch_size)


def spectral_density(model, w, x, y, *, num_probes: int, lanczos_steps: int, key, k=None, sigma=None,
                     num_points: int = 1024, batch_size: int = 1, allow_nonfinite: bool = False) -> SpectralDensity:
    """Eigenvalue density of ``H_k(w)`` by stochastic Lanczos quadrature.

    ``num_probes`` Rademacher probes, ``lanczos_steps`` Hessian-vector products
    each (full reorthogonalisation; memory ``lanczos_steps * D`` per probe in
    flight). ``sigma``: broadening width (default: the rule in the module docstring).
    Moments: :func:`density_moments`; ``tr(H_+)``: :func:`positive_trace`.
    Non-finite Lanczos coefficients raise :class:`NumericalError` unless ``allow_nonfinite=True``.
    """
    _check_inputs(model, w, x, y, k, key)
    _check_common(w, num_probes, "num_probes", 1)
    _check_common(w, lanczos_steps, "lanczos_steps", 2)
    if lanczos_steps >= w.shape[0]:
        raise ConfigError(f"lanczos_steps = {lanczos_steps} must be < dim = {w.shape[0]} (use dense eigh on so small a model)")
    if sigma is not None:
        sigma = check_real("sigma (broadening width)", sigma)
    k = None if k is None else jnp.asarray(k)
    nodes, weights = _slq_jit(model, w, x, y, k, key, int(num_probes), int(lanczos_steps), _batch(batch_size))
    if not allow_nonfinite and not (np.all(np.isfinite(np.asarray(nodes))) and np.all(np.isfinite(np.asarray(weights)))):
        raise NumericalError(
            "spectral_density: non-finite Lanczos coefficients (NaN/Inf Hessian-vector products, or a Krylov "
            "space that became invariant); check the weights and data or use fewer lanczos_steps"
        )
    grid, rho, s = smooth_density(nodes, weights, sigma=sigma, num_points=num_points, allow_nonfinite=allow_nonfinite)
    return SpectralDensity(nodes, weights, grid, rho, s, int(w.shape[0]), int(num_probes) * int(lanczos_steps))


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


def bottom_eigenpairs(model, w, x, y, d: int = 1, k=None, **kwargs) -> EigResult:
    """The d smallest (most negative) eigenpairs of ``H_k(w)``, ascending: ``hessian_eigenpairs(..., which="smallest")``."""
    return hessian_eigenpairs(model, w, x, y, d, k, which="smallest", **kwargs)


def extreme_eigenvalues(model, w, x, y, k=None, *, key=None, tol: float = 1e-3, max_matvecs: int | None = None) -> Extremes:
    """``lambda_min`` and ``lambda_max`` of ``H_k(w)`` (Lanczos from each end), with their residuals.

    The bottom end sits next to the bulk, so it usually needs more products
    than the top: ``max_matvecs`` defaults to 150 there (check ``bottom.converged``).
    """
    key = jax.random.key(0) if key is None else key
    k1, k2 = jax.random.split(key)
    top = hessian_eigenpairs(model, w, x, y, 1, k, key=k1, tol=tol, max_matvecs=max_matvecs)
    bottom = bottom_eigenpairs(model, w, x, y, 1, k, key=k2, tol=tol, max_matvecs=max_matvecs or 150)
    lmin, lmax = float(bottom.eigenvalues[0]), float(top.eigenvalues[0])
    return Extremes(lmin, lmax, lmin / lmax if lmax != 0 else math.nan, bottom, top)


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
