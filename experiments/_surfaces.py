"""Loss surfaces on a 2-D subspace, shared by random_surface and hessian_surface (paper figs. 2-3, 6-7).

``L_k(w* + alpha v_1 + beta v_2)`` and ``(L_{k+1} - L_k)^2`` on a grid of
``[-extent, extent]^2``, for the smallest k and the largest, from one
per-sample loss matrix on the grid; 3-D plots side by side; the two claims.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxland import loss_surface
from jaxland.errors import ConfigError
from jaxland.plots import plot_surfaces
from jaxland.landscape.subspace import Subspace

from ._config import QUICK_REFERENCE, TINY_REFERENCE, BaseConfig
from ._runner import Claim, Outcome


@dataclasses.dataclass(frozen=True)
class SurfaceConfig(BaseConfig):
    grid: int = 21
    extent: float = 1.0
    small_k: int = 1

    def validate(self) -> None:
        super().validate()
        if self.grid < 2:
            raise ConfigError(f"grid must be >= 2, got {self.grid}")
        if not self.extent > 0:
            raise ConfigError(f"extent must be > 0, got {self.extent}")
        n_units = self.n_samples // self.batch_size if self.k_unit == "batches" else self.n_samples
        if not 1 <= self.small_k < n_units - 1:
            raise ConfigError(f"small_k must be in [1, {n_units - 2}], got {self.small_k}")


SURFACE_QUICK = dict(QUICK_REFERENCE)
SURFACE_TINY = dict(TINY_REFERENCE, grid=5)


def surface_outcome(cfg, ctx, model, w, x, y, directions, *, what: str, axis_labels) -> Outcome:
    """Shared by random_surface and hessian_surface: compute, plot, judge."""
    sub = Subspace(w, directions)
    kb = cfg.samples_per_k
    n_units = x.shape[0] // kb if kb else x.shape[0]
    ks = np.array([cfg.small_k, n_units - 1])

    def compute():
        r = loss_surface(model, sub, x, y, k=ks, grid=cfg.grid, extent=cfg.extent, samples_per_k=kb)
        return {"alphas": r.alphas, "betas": r.betas, "ks": r.k, "loss": r.loss, "diff_sq": r.diff_sq, "loss_full": r.loss_full}

    r = ctx.part("surface", compute)
    unit = "batches" if kb else "samples"
    for i, (tag, k) in enumerate((("small_k", ks[0]), ("max_k", ks[1]))):
        fig = plot_surfaces(
            r["alphas"],
            r["betas"],
            [
                (r["loss"][i].T, rf"$L_{{{k}}}$", "loss"),
                (r["diff_sq"][i].T, rf"$(L_{{{k + 1}}} - L_{{{k}}})^2$", "squared difference"),
            ],
            title=f"{what}: k = {k} {unit}" + (" (small k)" if i == 0 else " (largest k)"),
            axis_labels=axis_labels,
        )
        ctx.figure(fig, f"surface_{tag}")
    d_small, d_max = float(np.max(r["diff_sq"][0])), float(np.max(r["diff_sq"][1]))
    rough = [float(np.mean(np.abs(np.diff(r["loss"][i], 2, axis=0))) + np.mean(np.abs(np.diff(r["loss"][i], 2, axis=1)))) for i in range(2)]
    ratio = d_small / max(d_max, 1e-300)
    summary = {
        "k_small": int(ks[0]),
        "k_max": int(ks[1]),
        "k_unit": unit,
        "max_diff_sq_small_k": d_small,
        "max_diff_sq_max_k": d_max,
        "diff_sq_ratio_small_over_max": ratio,
        "loss_at_center_full": float(r["loss_full"][cfg.grid // 2, cfg.grid // 2]),
        "loss_range_small_k": [float(np.min(r["loss"][0])), float(np.max(r["loss"][0]))],
        "loss_range_max_k": [float(np.min(r["loss"][1])), float(np.max(r["loss"][1]))],
        "roughness_small_k": rough[0],
        "roughness_max_k": rough[1],
        "train_accuracy": getattr(ctx, "train_accuracy", None),
    }
    claims = [
        Claim(
            "the squared difference (L_{k+1} - L_k)^2 is much smaller for the largest k than for small k",
            bool(ratio >= 10),
            f"max over the grid: {d_small:.3g} at k={ks[0]} vs {d_max:.3g} at k={ks[1]} (ratio {ratio:.3g}; held if >= 10)",
        ),
        Claim(
            "the loss surface is smoother for the largest k than for small k",
            bool(rough[1] <= rough[0]),
            f"mean |second difference| of L_k on the grid: {rough[0]:.3g} (small k) vs {rough[1]:.3g} (largest k)",
        ),
    ]
    arrays = {k: v for k, v in r.items()}
    return Outcome(arrays, summary, claims)
