"""Stage 5, the loss landscape around ``w*`` in a low-dimensional subspace.

Subspaces ``w* + theta P`` (Hessian eigenvectors or random directions), prefix
means ``L_k`` for every k at once, the Monte Carlo estimate of
``Delta_k = E_theta[(L_{k+1} - L_k)^2]`` with standard errors (its compiled
kernels and variance reduction), the second-order theory of Delta_k, the
theta-free / rest split, 2-D loss surfaces, and the 2026 curvature-aligned
probe (its three estimators, the full-space and random controls, phase times).
"""

from .montecarlo import (DeltaInfo, DeltaResult, StreamPlan, delta_from_losses, delta_monte_carlo, draw_thetas,
                         per_sample_loss_matrix, stream_plan)
from .prefix import batch_means, cumulative_means, loss_increments
from .probing import (PHASES, ProbeInfo, ProbeResult, QuadraticCoefficients, QuadraticMC, curvature_probe,
                      full_space_delta, gaussian_moment, orthonormal_directions, quadratic_coefficients,
                      quadratic_monte_carlo)
from .split import DeltaSplit, delta_split, theta_free_term
from .subspace import Subspace, hessian_subspace, normalize_filters, random_directions
from .surfaces import LossDifferenceResult, SurfaceResult, loss_differences, loss_surface
from .theory import (CumulativeCurvature, EigensolverTheory, SubspaceCurvature, TheoryInfo, TheoryResult,
                     cumulative_curvature, subspace_curvature, theory_delta, theory_delta_eigensolver)
from .variance import DEFAULT_VARIANCE_REDUCTION

__all__ = [
    "Subspace", "hessian_subspace", "random_directions", "normalize_filters",
    "batch_means", "cumulative_means", "loss_increments",
    "DeltaInfo", "DeltaResult", "StreamPlan", "delta_from_losses", "delta_monte_carlo", "draw_thetas",
    "per_sample_loss_matrix", "stream_plan", "DEFAULT_VARIANCE_REDUCTION",
    "SubspaceCurvature", "CumulativeCurvature", "TheoryInfo", "TheoryResult", "EigensolverTheory",
    "subspace_curvature", "cumulative_curvature", "theory_delta", "theory_delta_eigensolver",
    "DeltaSplit", "delta_split", "theta_free_term",
    "SurfaceResult", "LossDifferenceResult", "loss_surface", "loss_differences",
    "PHASES", "ProbeInfo", "ProbeResult", "QuadraticCoefficients", "QuadraticMC", "curvature_probe", "full_space_delta",
    "gaussian_moment", "orthonormal_directions", "quadratic_coefficients", "quadratic_monte_carlo",
]
