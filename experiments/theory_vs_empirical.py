"""Theoretical vs Monte Carlo Delta_k in the top-10 Hessian subspace (paper fig. 9).

Empirical: Monte Carlo ``Delta_k`` (T draws, sigma = 1) at ``w* + theta @ P``,
P the top-d eigenvectors of H(w*). Theory, for every k from per-sample
curvature in the subspace (``c_i``, ``g_i = P grad l_i``, ``G_i = P Hess l_i P^T``
by forward-mode differentiation, prefix means for every k):

* the paper's Theorem 1: ``sigma^4/4 (2 sum dl_i^2 + (sum dl_i)^2)`` with
  ``dl_i = lambda_i(P H_{k+1} P^T) - lambda_i(P H_k P^T)`` (top-d eigenvalues of
  the projected Hessians), which assumes c = 0, g = 0 and diagonal P H_k P^T;
* the exact second-order formula without those assumptions
  ``(c + sigma^2 tr A/2)^2 + sigma^2 |g|^2 + sigma^4 tr(A^2)/2``.

All curves are smoothed by a centred moving mean (window 11, edge-replicated)
and drawn on a log y-axis with the Monte Carlo +-2 SE band. The paper claims
the theory "remains above the empirical one for all k"; the run reports, for
each formula, the fraction of k where that holds.

Run: ``python -m experiments.theory_vs_empirical [--quick] [--out DIR]``.
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxland.errors import ConfigError
from jaxland import delta_monte_carlo, subspace_curvature, theory_delta
from jaxland import moving_mean
from jaxland.plots import plot_theory_vs_empirical
from jaxland.landscape.subspace import Subspace
from jaxland.landscape.variance import DEFAULT_VARIANCE_REDUCTION

from ._cli import main_for
from ._config import QUICK_REFERENCE, TINY_REFERENCE, HessianDeltaConfig
from ._runner import Claim, Outcome, Spec


@dataclasses.dataclass(frozen=True)
class Config(HessianDeltaConfig):
    window: int = 11
    compare_random: bool = False

    def validate(self) -> None:
        super().validate()
        if self.window < 1 or self.window % 2 == 0:
            raise ConfigError(f"window must be an odd positive integer, got {self.window}")


QUICK = dict(QUICK_REFERENCE, num_draws=512)
TINY = dict(TINY_REFERENCE, num_draws=4, d=3, window=3)


def run(cfg: Config, ctx) -> Outcome:
    model, res, x, y = ctx.reference()
    w = res.params
    key = jax.random.key(cfg.seed)
    eig = ctx.eigenpairs("eigenpairs", model, w, x, y, cfg.d, tol=cfg.eig_tol)
    sub = Subspace(w, jnp.asarray(eig["eigenvectors"]))

    def empirical():  # the library's default variance reduction (unbiased for the same Delta_k); the part's key records it
        r = delta_monte_carlo(model, sub, x, y, sigma=cfg.sigma, num_draws=cfg.num_draws, key=jax.random.fold_in(key, 300), samples_per_k=cfg.samples_per_k)
        return {"k": r.k, "delta": r.delta, "stderr": r.stderr, "method": r.info.variance_reduction, "effective_draws": r.info.effective_draws}

    def theory():
        t = theory_delta(subspace_curvature(model, sub, x, y), sigma=cfg.sigma, samples_per_k=cfg.samples_per_k)
        return {"k": t.k, "paper": t.theorem1, "exact": t.second_order, "quadratic": t.curvature_only, "ritz": t.ritz_values}

    e = ctx.part("empirical", empirical, key=DEFAULT_VARIANCE_REDUCTION)
    draws = f"T={cfg.num_draws}, {e['method']}: {e['effective_draws']:,.0f} effective draws"
    t = ctx.part("theory", theory)
    k = e["k"]
    window = min(cfg.window, len(k) if len(k) % 2 else len(k) - 1)
    ctx.figure(
        plot_theory_vs_empirical(
            k, e["delta"], e["stderr"],
            {"theory: paper's Theorem 1 (eigenvalue differences)": t["paper"], "theory: exact second order (c, g, A)": t["exact"]},
            window=window, unit=cfg.k_unit,
            title=f"Theoretical and empirical Delta_k, top-{cfg.d} Hessian subspace (sigma={cfg.sigma:g}, {draws})",
        ),
        "theory_vs_empirical",
    )
    emp_s = moving_mean(e["delta"], window, clip=True)
    se_s = moving_mean(e["stderr"], window, clip=True)
    claims, summary = [], {"k_unit": cfg.k_unit, "window": window, "variance_reduction": e["method"], "effective_draws": float(e["effective_draws"])}
    above = {}
    for name, label in (("paper", "the paper's eigenvalue formula"), ("exact", "the exact second-order formula")):
        th_s = moving_mean(t[name], window, clip=True)
        strict = float(np.mean(th_s >= emp_s))
        within = float(np.mean(th_s >= emp_s - 2 * se_s))
        ratio = np.median(th_s / np.maximum(emp_s, 1e-300))
        above[name] = strict
        summary[f"{name}_above_fraction"] = strict
        summary[f"{name}_above_fraction_within_2se"] = within
        summary[f"{name}_median_ratio_to_empirical"] = float(ratio)
        claims.append(Claim(
            f"theory stays above the empirical Delta_k for all k: {label}",
            bool(strict == 1.0),
            f"smoothed theory >= smoothed Monte Carlo at {strict:.0%} of k ({within:.0%} allowing 2 SE); median theory/empirical = {ratio:.3g} "
            f"(Monte Carlo {draws})",
        ))
    winner = max(above, key=above.get)
    summary["formula_above_more_often"] = winner
    summary["quadratic_median_ratio"] = float(np.median(moving_mean(t["quadratic"], window, clip=True) / np.maximum(emp_s, 1e-300)))
    arrays = {"k": k, "empirical": e["delta"], "stderr": e["stderr"], "theory_paper": t["paper"], "theory_exact": t["exact"],
              "theory_quadratic": t["quadratic"], "ritz_values": t["ritz"], "eigenvalues": eig["eigenvalues"]}
    return Outcome(arrays, summary, claims)


SPEC = Spec("theory_vs_empirical", "Theoretical (paper and exact) vs Monte Carlo Delta_k", "paper fig. 9, Theorem 1", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
