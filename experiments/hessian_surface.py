"""Loss surfaces on the top-2 Hessian eigenvectors of H(w*) (paper figs. 6-7).

As :mod:`experiments.random_surface`, with ``P`` the two eigenvectors of the
full-data Hessian with the largest (signed) eigenvalues.

Run: ``python -m experiments.hessian_surface [--quick] [--out DIR]``.
"""

from __future__ import annotations

import dataclasses
import sys

import jax.numpy as jnp

from ._cli import main_for
from ._runner import Spec
from ._surfaces import SURFACE_QUICK, SURFACE_TINY, SurfaceConfig, surface_outcome


@dataclasses.dataclass(frozen=True)
class Config(SurfaceConfig):
    eig_tol: float = 1e-3


def run(cfg: Config, ctx):
    model, res, x, y = ctx.reference()
    w = res.params
    eig = ctx.eigenpairs("eigenpairs", model, w, x, y, 2, tol=cfg.eig_tol)
    out = surface_outcome(cfg, ctx, model, w, x, y, jnp.asarray(eig["eigenvectors"]), what="Top-2 Hessian eigenvectors",
                          axis_labels=(r"$\theta_1$ ($e_1$)", r"$\theta_2$ ($e_2$)"))
    out.summary["eigenvalues"] = [float(v) for v in eig["eigenvalues"]]
    out.arrays["eigenvalues"] = eig["eigenvalues"]
    return out


QUICK, TINY = SURFACE_QUICK, SURFACE_TINY

SPEC = Spec("hessian_surface", "Loss surfaces on the top-2 Hessian eigenvectors", "paper figs. 6-7", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
