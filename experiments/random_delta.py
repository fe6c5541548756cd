"""Monte Carlo Delta_k and Delta_k * k^2 on random directions (paper figs. 4-5).

``Delta_k = E_theta[(L_{k+1} - L_k)^2]`` at ``w* + theta @ P`` with ``P`` d
filter-normalised random directions and ``theta ~ N(0, sigma^2 I_d)``, T draws,
perturbing along all d directions (the original code used only the first).
Sweeps: sigma in {0.1, 1, 5, 10} at d = 2 (fig. 4) and d in {2, 16, 64, 256}
at sigma = 1 (fig. 5). The sample order is fixed and shared by every draw.

Run: ``python -m experiments.random_delta [--quick] [--out DIR] [--sigmas 0.1,1] [--dims 2,16]``.
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import numpy as np

from jaxland.errors import ConfigError
from jaxland import delta_monte_carlo
from jaxland.plots import plot_delta
from jaxland.subspace import Subspace, random_directions

from ._common import QUICK_REFERENCE, TINY_REFERENCE, BaseConfig, Claim, Outcome, Spec, k2_growth, main_for


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    sigmas: tuple[float, ...] = (0.1, 1.0, 5.0, 10.0)
    sigma_dim: int = 2
    dims: tuple[int, ...] = (2, 16, 64, 256)
    dim_sigma: float = 1.0
    num_draws: int = 1024

    def validate(self) -> None:
        super().validate()
        if not self.sigmas and not self.dims:
            raise ConfigError("need at least one sigma or one d")
        if any(not s > 0 for s in self.sigmas + (self.dim_sigma,)):
            raise ConfigError(f"every sigma must be > 0, got {self.sigmas} / {self.dim_sigma}")
        if any(int(d) != d or d < 1 for d in self.dims + (self.sigma_dim,)):
            raise ConfigError(f"every d must be a positive integer, got {self.dims} / {self.sigma_dim}")
        if self.num_draws < 2:
            raise ConfigError(f"num_draws must be >= 2 (a standard error needs two draws), got {self.num_draws}")


QUICK = dict(QUICK_REFERENCE, num_draws=64)
TINY = dict(TINY_REFERENCE, num_draws=4, sigmas=(1.0, 5.0), dims=(2, 4))


def settings(cfg: Config):
    """Distinct (d, sigma) pairs; (d=2, sigma=1) is shared by both sweeps."""
    out = [(cfg.sigma_dim, float(s)) for s in cfg.sigmas] + [(int(d), float(cfg.dim_sigma)) for d in cfg.dims]
    return list(dict.fromkeys(out))


def run(cfg: Config, ctx) -> Outcome:
    model, res, x, y = ctx.reference()
    w = res.params
    key = jax.random.key(cfg.seed)
    arrays, curves = {}, {}
    dirs_cache = {}
    for d, s in settings(cfg):
        name = f"d{d}_sigma{s:g}"

        def compute(d=d, s=s):
            if d not in dirs_cache:
                dirs_cache[d] = random_directions(model, w, d, key=jax.random.fold_in(key, 100 + d), filter_normalize=True)
            r = delta_monte_carlo(model, Subspace(w, dirs_cache[d]), x, y, sigma=s, num_draws=cfg.num_draws, key=jax.random.fold_in(key, 200 + d), batch_size=cfg.kb)
            return {"k": r.k, "delta": r.delta, "stderr": r.stderr}

        r = ctx.part(name, compute)
        curves[(d, s)] = r
        arrays[f"{name}/delta"], arrays[f"{name}/stderr"] = r["delta"], r["stderr"]
    k = next(iter(curves.values()))["k"]
    arrays["k"] = k
    unit = cfg.k_unit
    if cfg.sigmas:
        ctx.figure(plot_delta(k, {f"sigma={s:g}": (curves[(cfg.sigma_dim, float(s))]["delta"], curves[(cfg.sigma_dim, float(s))]["stderr"]) for s in cfg.sigmas},
                              title=f"Random directions, d={cfg.sigma_dim}, T={cfg.num_draws}: varying sigma", unit=unit), "delta_vs_sigma")
    if cfg.dims:
        ctx.figure(plot_delta(k, {f"d={d}": (curves[(int(d), float(cfg.dim_sigma))]["delta"], curves[(int(d), float(cfg.dim_sigma))]["stderr"]) for d in cfg.dims},
                              title=f"Random directions, sigma={cfg.dim_sigma:g}, T={cfg.num_draws}: varying d", unit=unit), "delta_vs_dim")

    claims, summary = [], {"k_unit": unit, "num_draws": cfg.num_draws}
    growth = {f"d={d}, sigma={s:g}": k2_growth(k, r["delta"]) for (d, s), r in curves.items()}
    ok = [g[0] <= 2.0 for g in growth.values() if np.isfinite(g[0])]
    claims.append(Claim(
        "Delta_k * k^2 stays bounded on random directions (every sigma and d)",
        (bool(all(ok)) if ok else None),
        "last-third / middle-third mean of Delta_k k^2 (bounded if <= 2) and log-log slope of Delta_k: "
        + "; ".join(f"{lab}: {g[0]:.2f}, slope {g[1]:.2f}" for lab, g in growth.items()),
    ))
    summary["mean_delta"] = {f"d={d}, sigma={s:g}": float(np.mean(r["delta"])) for (d, s), r in curves.items()}
    summary["delta_k2_last"] = {f"d={d}, sigma={s:g}": float(r["delta"][-1] * k[-1] ** 2) for (d, s), r in curves.items()}
    for label, group in (("sigma", [(cfg.sigma_dim, float(s)) for s in cfg.sigmas]), ("d", [(int(d), float(cfg.dim_sigma)) for d in cfg.dims])):
        if len(group) < 2:
            continue
        means = [float(np.mean(curves[g]["delta"])) for g in group]
        spread = max(means) / max(min(means), 1e-300)
        claims.append(Claim(
            f"varying {label} does not substantially change Delta_k on random directions",
            bool(spread < 10),
            f"mean Delta_k over k ranges {min(means):.3g} .. {max(means):.3g} across {label} in "
            f"{[g[0 if label == 'd' else 1] for g in group]} (max/min {spread:.3g}; held if < 10)",
        ))
    return Outcome(arrays, summary, claims)


SPEC = Spec("random_delta", "Monte Carlo Delta_k on random directions, sweeping sigma and d", "paper figs. 4-5", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
