"""Stage 4, curvature: a model's Hessian, Gauss-Newton matrix and empirical Fisher at ``w``, seen through products.

A curvature operator (:func:`hessian_operator`, :func:`ggn_operator`,
:func:`fisher_operator`) is built and checked once, then multiplied (``op @ v``,
``op.matmat(V)``) and handed to the estimators: :func:`eigenpairs` (top or
bottom), :func:`trace`, :func:`density` (the spectrum), :func:`extremes`.
The ``hessian_*`` functions and :func:`hvp` take ``(model, w, x, y)`` and build
the Hessian's operator themselves. ``k`` (the prefix of the data) is traced, so
a new prefix never recompiles; :func:`choose_d` picks the subspace dimension.
Every iterative estimator takes ``loop="auto"|"compiled"|"host"``: by default a
model with a convolution on a CPU runs its solver's loop on the host, one
compiled step per product (XLA's CPU convolutions are several times slower
inside a compiled loop body), every other model in one compiled program.
"""

from .eigen import eigenpairs, hessian_eigenpairs, hessian_eigenpairs_batch
from .operators import KINDS, CurvatureOperator, curvature_operator, fisher_operator, ggn_operator, hessian_operator
from .products import dense_hessian, hessian_matvec, hvp, hvp_batch, loss_and_grad, sharded_hvp, sharded_matmat
from .results import DChoice, Extremes, SpectralDensity, TraceEstimate
from .spectrum import (TRACE_METHODS, bottom_eigenpairs, choose_d, density, density_moments, extreme_eigenvalues, extremes,
                       hessian_trace, positive_trace, spectral_density, trace)

__all__ = [
    "KINDS", "CurvatureOperator", "curvature_operator", "hessian_operator", "ggn_operator", "fisher_operator",
    "eigenpairs", "trace", "density", "extremes",
    "loss_and_grad", "hvp", "hvp_batch", "sharded_hvp", "sharded_matmat", "hessian_matvec", "dense_hessian",
    "hessian_eigenpairs", "hessian_eigenpairs_batch",
    "TRACE_METHODS", "TraceEstimate", "SpectralDensity", "Extremes", "DChoice", "hessian_trace", "spectral_density",
    "density_moments", "positive_trace", "bottom_eigenpairs", "extreme_eigenvalues", "choose_d",
]
