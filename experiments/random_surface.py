"""Loss surfaces on two filter-normalised random directions (paper figs. 2-3).

``L_k(w* + alpha v_1 + beta v_2)`` and ``(L_{k+1} - L_k)^2`` on a 21 x 21 grid of
``[-1, 1]^2``, for the smallest k (L_1 vs L_2) and the largest (L_{K-1} vs L_K),
k in batches of 64; 3-D plots side by side. One per-sample loss matrix on the
grid gives every k at once.

Run: ``python -m experiments.random_surface [--quick] [--out DIR]``.
"""

from __future__ import annotations

import dataclasses
import sys

import jax

from jaxland.landscape.subspace import random_directions

from ._cli import main_for
from ._runner import Outcome, Spec
from ._surfaces import SURFACE_QUICK, SURFACE_TINY, SurfaceConfig, surface_outcome


@dataclasses.dataclass(frozen=True)
class Config(SurfaceConfig):
    pass


QUICK, TINY = SURFACE_QUICK, SURFACE_TINY


def run(cfg: Config, ctx) -> Outcome:
    model, res, x, y = ctx.reference()
    w = res.params
    dirs = random_directions(model, w, 2, key=jax.random.fold_in(jax.random.key(cfg.seed), 7), filter_normalize=True)
    return surface_outcome(cfg, ctx, model, w, x, y, dirs, what="Two filter-normalised random directions", axis_labels=(r"$\alpha$ (direction 1)", r"$\beta$ (direction 2)"))


SPEC = Spec("random_surface", "Loss surfaces on two random directions", "paper figs. 2-3", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
