"""Matrix-free linear algebra on a symmetric matvec, with no model inside.

Eigensolvers in the matfree style (a factory fixes the static settings and
returns a pure ``solve(matvec, v0)``): Lanczos and block Lanczos with full
reorthogonalisation, deflated power iteration, LOBPCG, dense ``eigh``; and the
stochastic estimators: Hutchinson / Hutch++ traces and stochastic Lanczos
quadrature. Each iterative solver is also an Iteration (``init``/``step``/
``cond``/``finish``), so that its loop can run inside one compiled program or
on the host around one compiled step per product (:mod:`jaxland.linalg.loops`:
XLA's CPU convolutions are several times slower inside a loop body).
:mod:`jaxland.curvature` drives them with a model's Hessian, GGN or empirical
Fisher.
"""

from .eigen import METHODS, top_eigenpairs
from .lanczos import block_lanczos, lanczos
from .loops import LOOPS, has_convolution, host_rows, run_compiled, run_host
from .result import EigResult
from .solvers import dense_eigh, lobpcg, power_iteration
from .stochastic import slq, smooth_density, trace_estimate

__all__ = ["EigResult", "METHODS", "top_eigenpairs", "lanczos", "block_lanczos", "power_iteration", "lobpcg",
           "dense_eigh", "trace_estimate", "slq", "smooth_density", "LOOPS", "run_compiled", "run_host", "host_rows",
           "has_convolution"]
