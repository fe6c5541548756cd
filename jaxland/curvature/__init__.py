"""Stage 4, curvature: a model's Hessian at ``w``, seen through products.

Gradients and Hessian-vector products (jvp of grad under ``jit``, with ``k``
traced so that a new prefix never recompiles), the top and bottom eigenpairs of
``H_k(w)``, and the whole spectrum: trace, eigenvalue density, both ends, and
the choice of the subspace dimension d.
"""

from .eigenpairs import hessian_eigenpairs, hessian_eigenpairs_batch
from .products import dense_hessian, hessian_matvec, hvp, hvp_batch, loss_and_grad, sharded_hvp
from .spectrum import (TRACE_METHODS, DChoice, Extremes, SpectralDensity, TraceEstimate, bottom_eigenpairs, choose_d,
                       density_moments, extreme_eigenvalues, hessian_trace, positive_trace, spectral_density)

__all__ = [
    "loss_and_grad", "hvp", "hvp_batch", "sharded_hvp", "hessian_matvec", "dense_hessian",
    "hessian_eigenpairs", "hessian_eigenpairs_batch",
    "TRACE_METHODS", "TraceEstimate", "SpectralDensity", "Extremes", "DChoice", "hessian_trace", "spectral_density",
    "density_moments", "positive_trace", "bottom_eigenpairs", "extreme_eigenvalues", "choose_d",
]
