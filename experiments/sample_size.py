"""Sufficient sample size K for a tolerance (paper's Table 1).

For each row (a single-hidden-layer MLP 784-256-10 and the two-hidden-layer
784-256-256-10, on MNIST and Fashion-MNIST), train w*, take the top-d Hessian
eigenvectors, estimate ``Delta_k`` for every k by Monte Carlo (and by the exact
second-order formula), and report Definition 4:
``K = min{k : Delta_k' < tol for every k' >= k}`` with the paper's tolerances
(0.025 for MNIST, 0.030 for Fashion-MNIST), in batches of 64, plus each row's
wall time. Datasets with no local source are skipped with a note.

Run: ``python -m experiments.sample_size [--quick] [--out DIR] [--datasets mnist]``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from jaxland.errors import ConfigError, DataError, DataNotFoundError
from jaxland import delta_monte_carlo, subspace_curvature, sufficient_k, theory_delta
from jaxland.plots import plot_sufficient_k
from jaxland.landscape.subspace import Subspace
from jaxland.landscape.variance import DEFAULT_VARIANCE_REDUCTION

from ._cli import main_for
from ._config import QUICK_REFERENCE, TINY_REFERENCE, BaseConfig
from ._runner import Claim, Outcome, Spec

PAPER_TOL = {"mnist": 0.025, "fashion_mnist": 0.030}
PAPER_K = {("mnist", "2 hidden layers"): 40}


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    architectures: tuple[str, ...] = ("256", "256-256")  # hidden widths of each row, '-'-separated
    tol_mnist: float = 0.025
    tol_fashion_mnist: float = 0.030
    d: int = 10
    sigma: float = 1.0
    num_draws: int = 1024
    smooth: int = 1  # odd moving-mean window applied before Definition 4 (1: none)
    eig_tol: float = 1e-3

    def validate(self) -> None:
        super().validate()
        for ds in self.datasets:
            if ds.lower().replace("-", "_") not in ("mnist", "fashion_mnist", "mnist_10k"):
                raise DataError(f"sample_size supports mnist and fashion_mnist, got {ds!r}")
        if not self.datasets or not self.architectures:
            raise ConfigError("need at least one dataset and one architecture")
        for a in self.architectures:
            try:
                if any(int(h) < 1 for h in a.split("-")):
                    raise ValueError
            except ValueError:
                raise ConfigError(f"architecture {a!r} must be hidden widths like '256' or '256-256'") from None
        if not (self.tol_mnist > 0 and self.tol_fashion_mnist > 0):
            raise ConfigError("tolerances must be > 0")
        if self.d < 1 or not self.sigma > 0 or self.num_draws < 2:
            raise ConfigError(f"need d >= 1, sigma > 0, num_draws >= 2; got {self.d}, {self.sigma}, {self.num_draws}")
        if self.smooth < 1 or self.smooth % 2 == 0:
            raise ConfigError(f"smooth must be an odd positive integer, got {self.smooth}")

    def tol(self, dataset: str) -> float:
        return self.tol_fashion_mnist if dataset == "fashion_mnist" else self.tol_mnist


QUICK = dict(QUICK_REFERENCE, datasets=("mnist",), num_draws=256)
TINY = dict(TINY_REFERENCE, num_draws=4, d=2, architectures=("16", "16-16"), tol_mnist=1.0)


def _label(arch: str) -> str:
    n = len(arch.split("-"))
    return f"{n} hidden layer{'s' if n > 1 else ''}"


def _K(delta, k, tol, smooth):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        K = sufficient_k(np.asarray(delta), tol, k=np.asarray(k), smooth=smooth if smooth > 1 else None)
    return -1 if K is None else int(K)


def run(cfg: Config, ctx) -> Outcome:
    rows, notes, curves, arrays = [], [], {}, {}
    key = jax.random.key(cfg.seed)
    for ds_name in cfg.datasets:
        ds_name = ds_name.lower().replace("-", "_")
        for arch in cfg.architectures:
            rcfg = dataclasses.replace(cfg, dataset=ds_name, hidden=tuple(int(h) for h in arch.split("-")))
            tag = f"{ds_name}-{arch}"
            try:
                ctx.dataset(rcfg)
            except DataNotFoundError as e:
                notes.append(f"skipped {ds_name}: {str(e).splitlines()[0]}")
                ctx.log(f"skipping {ds_name}: no local source (pass --data_dir or set JAXLAND_DATA_DIR)")
                break
            tol = cfg.tol(ds_name)

            def compute(rcfg=rcfg, tag=tag):
                t0 = time.perf_counter()
                model, res, x, y = ctx.reference(rcfg)
                t_train = time.perf_counter() - t0
                eig = jl.hessian_eigenpairs(model, res.params, x, y, cfg.d, key=jax.random.fold_in(key, 1000), tol=cfg.eig_tol)
                sub = Subspace(res.params, jnp.asarray(eig.eigenvectors))
                # the library's default variance reduction; the part's key records it
                mc = delta_monte_carlo(model, sub, x, y, sigma=cfg.sigma, num_draws=cfg.num_draws, key=jax.random.fold_in(key, 300), samples_per_k=rcfg.samples_per_k)
                th = theory_delta(subspace_curvature(model, sub, x, y), sigma=cfg.sigma, samples_per_k=rcfg.samples_per_k)
                jax.block_until_ready(th.second_order)
                return {"k": mc.k, "delta": mc.delta, "stderr": mc.stderr, "theory_exact": th.second_order, "theory_paper": th.theorem1,
                        "eigenvalues": eig.eigenvalues, "train_accuracy": res.train_accuracy, "params": model.num_params,
                        "method": mc.info.variance_reduction, "effective_draws": mc.info.effective_draws,
                        "seconds": time.perf_counter() - t0, "train_seconds": t_train}

            r = ctx.part(tag, compute, key=DEFAULT_VARIANCE_REDUCTION)
            K = _K(r["delta"], r["k"], tol, cfg.smooth)
            K_th = _K(r["theory_exact"], r["k"], tol, cfg.smooth)
            K_paper = _K(r["theory_paper"], r["k"], tol, cfg.smooth)
            rows.append({
                "dataset": ds_name, "model": _label(arch), "hidden": arch, "params": int(r["params"]), "tol": tol,
                "K_monte_carlo": K, "K_theory_exact": K_th, "K_theory_paper": K_paper,
                "K_samples": K * cfg.batch_size if K > 0 and cfg.k_unit == "batches" else K,
                "available": int(r["k"][-1]) + 1, "train_accuracy": float(r["train_accuracy"]),
                "wall_s": float(r["seconds"]), "train_s": float(r["train_seconds"]),
                "variance_reduction": r["method"], "effective_draws": float(r["effective_draws"]),
                "paper_K": PAPER_K.get((ds_name, _label(arch))),
            })
            curves[f"{ds_name}, {_label(arch)} (tol {tol:g})"] = (r["k"], r["delta"], K if K > 0 else None)
            for f in ("delta", "stderr", "theory_exact", "theory_paper"):
                arrays[f"{tag}/{f}"] = r[f]
            arrays["k"] = r["k"]
    if not rows:
        raise DataNotFoundError("no requested dataset is available here:\n  " + "\n  ".join(notes))
    tols = {lab: float(lab.split("tol ")[1].rstrip(")")) for lab in curves}
    ctx.figure(plot_sufficient_k(curves, tols, unit=cfg.k_unit, title=f"Sufficient sample size K (Monte Carlo Delta_k, top-{cfg.d} Hessian subspace; T={cfg.num_draws}, "
                                                                  f"{rows[0]['variance_reduction']}: {np.median([r['effective_draws'] for r in rows]):,.0f} effective draws)"), "sample_size")
    claims = []
    for r in rows:
        if r["paper_K"] is not None:
            if r["K_monte_carlo"] < 0:
                claims.append(Claim(f"tol {r['tol']} gives K = {r['paper_K']} batches ({r['dataset']}, {r['model']})", False,
                                    f"Delta_k never settles below {r['tol']} within the {r['available']} {cfg.k_unit} of this run"))
            else:
                ok = 0.5 * r["paper_K"] <= r["K_monte_carlo"] <= 2 * r["paper_K"]
                claims.append(Claim(f"tol {r['tol']} gives K = {r['paper_K']} batches ({r['dataset']}, {r['model']})", bool(ok),
                                    f"K = {r['K_monte_carlo']} (Monte Carlo: T={cfg.num_draws}, {r['variance_reduction']}, {r['effective_draws']:,.0f} effective draws), "
                                    f"{r['K_theory_exact']} (exact theory), {r['K_theory_paper']} (paper's theory); held if within a factor 2 of {r['paper_K']}"))
    found = [r for r in rows if r["K_monte_carlo"] > 0]
    claims.append(Claim("a sufficient sample size exists (Delta_k settles below the tolerance)", len(found) == len(rows),
                        f"{len(found)} of {len(rows)} rows reach the tolerance within the available data"))
    th_ok = [r for r in rows if r["K_monte_carlo"] > 0 and (r["K_theory_paper"] < 0 or r["K_theory_paper"] >= r["K_monte_carlo"])]
    claims.append(Claim("the paper's theory gives a conservative K (>= the Monte Carlo K)", len(th_ok) == len(found) if found else None,
                        "; ".join(f"{r['dataset']} {r['model']}: {r['K_theory_paper']} vs {r['K_monte_carlo']}" for r in rows) + " (-1: never below tol)"))
    return Outcome(arrays, {"rows": rows, "k_unit": cfg.k_unit}, claims, notes)


SPEC = Spec("sample_size", "Sufficient sample size K for a tolerance", "paper Table 1, Definition 4", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
