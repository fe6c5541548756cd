"""What the spectrum estimators return: the trace, the density, both ends, the choice of d, each with ``.info``.

Every result keeps its numbers as fields and its metadata (method, operator
kind, product counts, settings) in ``.info``, a small NamedTuple.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ..linalg.result import EigResult

__all__ = ["TraceEstimate", "TraceInfo", "SpectralDensity", "DensityInfo", "Extremes", "ExtremesInfo", "DChoice",
           "DChoiceInfo"]


class TraceInfo(NamedTuple):
    method: str  # "hutch++" or "hutchinson"
    kind: str  # the operator: "hessian", "ggn" or "fisher"
    num_matvecs: int  # operator products, all parts together
    sketch_size: int  # Hutch++ sketch vectors (0 for Hutchinson)
    num_probes: int  # probes of the stochastic part


class TraceEstimate(NamedTuple):
    """``tr(A)`` with its standard error.

    Attributes:
      trace: the estimate.
      stderr: its Monte Carlo standard error (Hutch++: of the deflated part, given the sketch).
      num_matvecs: operator products used (= ``num_probes``).
      exact_part: ``tr(Q^T A Q)`` of the Hutch++ sketch (0 for Hutchinson).
      samples: the per-probe quadratic forms of the stochastic part.
      method: ``"hutch++"`` or ``"hutchinson"``.
      kind: the operator's kind (``"hessian"``, ``"ggn"``, ``"fisher"``).
    """

    trace: jax.Array
    stderr: jax.Array
    num_matvecs: int
    exact_part: jax.Array
    samples: jax.Array
    method: str
    kind: str = "hessian"

    @property
    def info(self) -> TraceInfo:
        probes = int(np.shape(self.samples)[-1])
        return TraceInfo(self.method, self.kind, int(self.num_matvecs), (int(self.num_matvecs) - probes) // 2, probes)


class DensityInfo(NamedTuple):
    kind: str
    dim: int
    num_probes: int
    lanczos_steps: int
    num_matvecs: int
    sigma: float
    num_points: int


class SpectralDensity(NamedTuple):
    """SLQ quadrature per probe plus a smoothed density on a grid.

    Attributes:
      nodes: (num_probes, steps) Ritz values ``theta_j`` of each probe's Lanczos run.
      weights: (num_probes, steps) quadrature weights ``tau_j`` (each row sums to 1).
      grid: (num_points,) evaluation points, ``[theta_min - 3 sigma, theta_max + 3 sigma]``.
      density: (num_points,) ``rho(grid)``, integrating to 1.
      sigma: Gaussian broadening width.
      dim: operator size D (``trace(f(A)) = D * mean_probes sum_j tau_j f(theta_j)``).
      num_matvecs: operator products used (``num_probes * steps``).
      kind: the operator's kind.
    """

    nodes: jax.Array
    weights: jax.Array
    grid: jax.Array
    density: jax.Array
    sigma: jax.Array
    dim: int
    num_matvecs: int
    kind: str = "hessian"

    @property
    def info(self) -> DensityInfo:
        probes, steps = np.shape(self.nodes)
        return DensityInfo(self.kind, int(self.dim), int(probes), int(steps), int(self.num_matvecs), float(self.sigma),
                           int(np.shape(self.grid)[0]))


class ExtremesInfo(NamedTuple):
    kind: str
    num_matvecs: int  # both solves
    converged: bool  # both ends
    top_relative_residual: float
    bottom_relative_residual: float


class Extremes(NamedTuple):
    """Both ends of the spectrum from the eigensolver, with their certificates."""

    lambda_min: float
    lambda_max: float
    min_over_max: float  # lambda_min / lambda_max: about 0 (or > 0) near a minimum
    bottom: EigResult
    top: EigResult
    kind: str = "hessian"

    @property
    def info(self) -> ExtremesInfo:
        return ExtremesInfo(self.kind, int(self.top.num_matvecs) + int(self.bottom.num_matvecs),
                            bool(self.top.converged) and bool(self.bottom.converged),
                            float(np.max(self.top.relative_residuals)), float(np.max(self.bottom.relative_residuals)))


class DChoiceInfo(NamedTuple):
    target: float  # the requested share of tr(A_+)
    num_eigenvalues: int  # m, the top eigenvalues given
    positive_trace: float
    positive_trace_stderr: float


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

    @property
    def info(self) -> DChoiceInfo:
        return DChoiceInfo(float(self.target), int(np.size(self.eigenvalues)), float(self.positive_trace),
                           float(self.positive_trace_stderr))
