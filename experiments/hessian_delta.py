"""Monte Carlo Delta_k and Delta_k * k^2 on the top-10 Hessian eigenvectors (paper fig. 8).

``P`` = the top-d (d = 10) eigenvectors of the full-data Hessian H(w*) (signed
eigenvalues, Lanczos), ``theta ~ N(0, sigma^2 I_d)`` with sigma = 1, T = 1024
draws, k in batches of 64, the data order fixed and shared by every draw.
For comparison the same estimate on d filter-normalised random directions is
drawn on the same figure (the paper's claim: Delta_k is larger on the
Hessian directions).

Run: ``python -m experiments.hessian_delta [--quick] [--out DIR] [--d 10] [--sigma 1]``.
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxland import delta_monte_carlo
from jaxland.landscape.variance import DEFAULT_VARIANCE_REDUCTION
from jaxland.plots import plot_delta
from jaxland.landscape.subspace import Subspace, random_directions

from ._claims import bounded_k2
from ._cli import main_for
from ._config import QUICK_REFERENCE, TINY_REFERENCE, HessianDeltaConfig
from ._runner import Claim, Outcome, Spec


@dataclasses.dataclass(frozen=True)
class Config(HessianDeltaConfig):
    pass


QUICK = dict(QUICK_REFERENCE, num_draws=512)
TINY = dict(TINY_REFERENCE, num_draws=4, d=3)


def run(cfg: Config, ctx) -> Outcome:
    model, res, x, y = ctx.reference()
    w = res.params
    key = jax.random.key(cfg.seed)
    eig = ctx.eigenpairs("eigenpairs", model, w, x, y, cfg.d, tol=cfg.eig_tol)

    def mc(dirs):  # the library's default variance reduction; the parts' key records it
        r = delta_monte_carlo(model, Subspace(w, dirs), x, y, sigma=cfg.sigma, num_draws=cfg.num_draws, key=jax.random.fold_in(key, 300), samples_per_k=cfg.samples_per_k)
        return {"k": r.k, "delta": r.delta, "stderr": r.stderr, "method": r.info.variance_reduction, "effective_draws": r.info.effective_draws}

    h = ctx.part("delta_hessian", lambda: mc(jnp.asarray(eig["eigenvectors"])), key=DEFAULT_VARIANCE_REDUCTION)
    draws = f"T={cfg.num_draws}, {h['method']}: {h['effective_draws']:,.0f} effective draws"
    curves = {f"top-{cfg.d} Hessian eigenvectors": (h["delta"], h["stderr"])}
    arrays = {"k": h["k"], "delta": h["delta"], "stderr": h["stderr"], "eigenvalues": eig["eigenvalues"]}
    claims = [bounded_k2(h["k"], h["delta"], f"top-{cfg.d} Hessian directions")]
    summary = {
        "eigenvalues": [float(v) for v in eig["eigenvalues"]],
        "eig_converged": bool(np.all(eig["converged"])),
        "eig_matvecs": int(eig["num_matvecs"]),
        "delta_first": float(h["delta"][0]),
        "delta_last": float(h["delta"][-1]),
        "delta_k2_last": float(h["delta"][-1] * h["k"][-1] ** 2),
        "mean_delta_hessian": float(np.mean(h["delta"])),
        "variance_reduction": h["method"],
        "effective_draws_hessian": float(h["effective_draws"]),
        "train_accuracy": getattr(ctx, "train_accuracy", None),
    }
    if cfg.compare_random:
        r = ctx.part("delta_random", lambda: mc(random_directions(model, w, cfg.d, key=jax.random.fold_in(key, 100 + cfg.d))), key=DEFAULT_VARIANCE_REDUCTION)
        curves[f"{cfg.d} random directions"] = (r["delta"], r["stderr"])
        arrays["delta_random"], arrays["stderr_random"] = r["delta"], r["stderr"]
        summary["mean_delta_random"] = float(np.mean(r["delta"]))
        frac = float(np.mean(h["delta"] > r["delta"]))
        claims.append(Claim(
            "Delta_k is higher on the Hessian directions than on random directions",
            bool(frac >= 0.9),
            f"Hessian > random for {frac:.0%} of k (held if >= 90%); mean Delta_k {summary['mean_delta_hessian']:.3g} vs {summary['mean_delta_random']:.3g} "
            f"({draws}; random directions {r['effective_draws']:,.0f})",
        ))
    ctx.figure(plot_delta(h["k"], curves, title=f"Delta_k in the top-{cfg.d} Hessian subspace (sigma={cfg.sigma:g}, {draws})", unit=cfg.k_unit, logy_k2=False), "delta_hessian")
    return Outcome(arrays, summary, claims)


SPEC = Spec("hessian_delta", "Monte Carlo Delta_k on the top-10 Hessian eigenvectors", "paper fig. 8", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
