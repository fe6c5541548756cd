"""The paper's main pipeline on four architectures, and whether d = 10 Hessian directions suffice.

For an MLP (784-256-256-10), a LeNet-5 CNN, a CIFAR-style ResNet-8 (BatchNorm
in inference mode) and a small ViT, on MNIST and Fashion-MNIST (and CIFAR-10
when its files are found through ``data_dir`` / ``$JAXLAND_DATA_DIR``; a
dataset without files is skipped with a note): train (``cached_train``), take
the top-``max(ds)`` eigenvectors of the full-data Hessian H(w*) from ONE
Lanczos solve, and for each d in ``ds`` estimate by Monte Carlo

    Delta_k = E_theta[(L_{k+1}(w* + P_d theta) - L_k(w* + P_d theta))^2],
    theta ~ N(0, sigma^2 I_d),

with standard errors, k in batches of 64, on the top-d directions ``P_d``.
The directions are nested (top-10 within top-20 within top-40) and so are the
draws: one (T, max d) matrix of N(0, sigma^2) draws, of which d = 10 uses the
first 10 columns. So the difference between two d is a difference in the
subspace only, not in the noise. At d = 10 the exact second-order theory
``(c + sigma^2 tr A/2)^2 + sigma^2 |g|^2 + sigma^4 tr(A^2)/2`` and the paper's
Theorem 1 are computed too, and the sufficient sample size (Definition 4,
``K = min{k : Delta_k' < tol for all k' >= k}``, tol = 0.025 as in the paper)
of each curve.

**What "d = 10 suffices" means here.** The paper uses the subspace to answer
one question: how much data is enough (K). Adding directions can only add
perturbation (``||P_d theta||^2 ~ sigma^2 d``), so Delta_k grows with d; what
matters is whether the answer changes. We measure, per architecture and
dataset, the tail level ``S_d`` = mean of ``Delta_k k^2`` over the last half of
k (the paper's k^-2 law makes this the constant in ``Delta_k ~ S / k^2``, so
``K ~ sqrt(S / tol)``), and K itself. Its standard error is bounded by the mean
of the per-k standard errors of ``Delta_k k^2`` (the per-k estimates share
their draws, hence are correlated; the triangle inequality gives this bound
for any correlation), and the SE of a ratio by first-order propagation of
those bounds. d = 10 is judged sufficient for a row when going to the largest
d changes K by at most 25% (or 1 batch, the resolution of k) when both curves
reach the tolerance; when one does not, when ``S_dmax / S_10 <= 1.25^2``
(the same 25% on K through ``K ~ sqrt(S)``). 25% is a change a practitioner
would not act on (the paper's own K varies more than that between runs).
The share of the top-``max d`` curvature held by the top 10,
``sum_{i<=10} max(lambda_i, 0) / sum_{i<=dmax} max(lambda_i, 0)``, is reported
as the reason behind the result.

The full preset (the defaults) takes the eigenvectors of the full-data Hessian;
the quick preset, to fit a 2-core CPU, those of the Hessian of the first
``eig_samples`` images (the Monte Carlo still uses all ``n_samples``).

Run: ``python -m experiments.architectures [--quick] [--out DIR] [--architectures mlp,vit] [--ds 10,20,40]``.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from jaxland.errors import ConfigError, DataNotFoundError
from jaxland.plots import plot_delta

from ._claims import bounded_k2
from ._cli import main_for
from ._config import BaseConfig
from ._runner import Claim, Outcome, Spec

K_CHANGE = 0.25  # relative change of K under which d = 10 counts as sufficient


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    architectures: tuple[str, ...] = ("mlp", "lenet5", "resnet", "vit")
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")
    ds: tuple[int, ...] = (10, 20, 40)  # nested subspace sizes; the first is the one under test
    sigma: float = 1.0
    num_draws: int = 256
    tol: float = 0.025
    eig_tol: float = 1e-3
    eig_samples: int | None = None  # images behind the eigensolve's Hessian; None: all n_samples (the paper)

    def validate(self) -> None:
        super().validate()
        if not self.architectures or not self.datasets:
            raise ConfigError("architectures and datasets must each name at least one entry")
        for a in self.architectures:
            if a not in jl.MODEL_NAMES:
                raise ConfigError(f"unknown architecture {a!r} in architectures; choose from {', '.join(jl.MODEL_NAMES)}")
        for name in self.datasets:
            if name.lower().replace("-", "_") not in ("mnist", "mnist_10k", "fashion_mnist", "cifar10"):
                raise ConfigError(f"datasets: {name!r} is not supported here; use mnist, fashion_mnist or cifar10")
        if not self.ds or any(int(d) < 1 for d in self.ds) or list(self.ds) != sorted(set(self.ds)):
            raise ConfigError(f"ds must be strictly increasing positive subspace sizes like 10,20,40, got {self.ds}")
        if not self.sigma > 0 or not self.tol > 0 or not self.eig_tol > 0:
            raise ConfigError(f"sigma, tol and eig_tol must be > 0, got {self.sigma}, {self.tol}, {self.eig_tol}")
        if self.num_draws < 2:
            raise ConfigError(f"num_draws must be >= 2, got {self.num_draws}")
        if self.eig_samples is not None and not 1 <= self.eig_samples <= self.n_samples:
            raise ConfigError(f"eig_samples must be in [1, n_samples={self.n_samples}] or None (all), got {self.eig_samples}")
        if self.k_unit != "batches":
            raise ConfigError("architectures counts k in batches (k_unit='batches'), as the paper does")


# On a 2-core CPU XLA's convolutions run at a few GFLOP/s (a full-data HVP on 9,984 images: ~9 s for
# LeNet-5, ~35 s for the ViT, ~95 s for the ResNet), so the quick preset, which must fit in ~35 s of the
# main job, runs LeNet-5 alone (the MLP is the other experiments' network) on 640 images (10 batches),
# with the eigensolve on the Hessian of the first 64 to tolerance 5e-2 (the top-20 solve dominates the
# preset's time: 29 s on 128 images at 1e-2, 8 s on 64 at 5e-2); the MLP, ResNet and ViT run in the full preset.
QUICK = dict(datasets=("mnist",), architectures=("lenet5",), n_samples=640, epochs=1, ds=(10, 20), num_draws=32,
             eig_tol=5e-2, eig_samples=64)
TINY = dict(QUICK, architectures=("mlp", "lenet5"), n_samples=256, hidden=(32,), ds=(2, 4), num_draws=8, eig_tol=1e-1, tol=1.0)


# ------------------------------------------------------------------ measures


def tail_level(k, delta_k2, stderr_k2) -> tuple[float, float]:
    """``(S, SE bound)``: mean of ``Delta_k k^2`` over the last half of k, and the mean of its per-k SEs.

    The mean of the per-k standard errors bounds the SE of the mean for any
    correlation between k (the estimates at different k share their draws).
    """
    n = len(np.asarray(k))
    tail = slice(n // 2, n)
    return float(np.mean(np.asarray(delta_k2)[tail])), float(np.mean(np.asarray(stderr_k2)[tail]))


def ratio_se(a: float, sa: float, b: float, sb: float) -> tuple[float, float]:
    """``r = b / a`` and its first-order standard error ``sqrt(sb^2 + r^2 sa^2) / a`` (inf when a <= 0)."""
    if not a > 0:
        return float("inf"), float("inf")
    r = b / a
    return r, float(np.sqrt(sb**2 + r**2 * sa**2) / a)


def top_share(eigenvalues, d: int) -> float:
    """Share of the positive curvature of all given eigenvalues held by the first ``d``."""
    lam = np.maximum(np.asarray(eigenvalues, np.float64), 0.0)
    total = lam.sum()
    return float(lam[:d].sum() / total) if total > 0 else float("nan")


def sufficient(delta, k, tol: float) -> int:
    """Definition 4 in batches, or -1 when the curve never settles below ``tol`` in the available data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        K = jl.sufficient_k(np.asarray(delta), tol, k=np.asarray(k))
    return -1 if K is None else int(K)


def d_suffices(K_ref: int, K_max: int, s_ratio: float) -> bool:
    """Criterion of the module docstring: K moves by <= 25% (or 1 batch); else the tail ratio S_dmax/S_10 <= 1.25^2."""
    if K_ref > 0 and K_max > 0:
        return abs(K_max - K_ref) <= max(K_CHANGE * K_ref, 1)
    return s_ratio <= (1 + K_CHANGE) ** 2


# ------------------------------------------------------------------ pipeline


def _pipeline(cfg: Config, rcfg: Config, ctx) -> dict:
    """Train, one top-max(ds) eigensolve, Monte Carlo at every d on nested draws, theory at the smallest d."""
    key = jax.random.key(cfg.seed)
    model, res, x, y = ctx.reference(rcfg)
    w = res.params
    dmax = max(cfg.ds)
    m = cfg.eig_samples or x.shape[0]  # a slice, not a prefix k: a prefix would still cost a pass over all samples
    eig = jl.hessian_eigenpairs(model, w, x[:m], y[:m], dmax, key=jax.random.fold_in(key, 1000), tol=cfg.eig_tol)
    vecs = jnp.asarray(eig.eigenvectors)
    thetas = jl.draw_thetas(jax.random.fold_in(key, 300), cfg.num_draws, dmax, cfg.sigma, vecs.dtype)
    out = {"eigenvalues": np.asarray(eig.eigenvalues), "eig_residuals": np.asarray(eig.residuals),
           "eig_matvecs": int(eig.num_matvecs), "train_accuracy": float(res.train_accuracy), "params": int(model.num_params)}
    full = jl.Subspace(w, vecs)
    for d in cfg.ds:
        # theta with zeros beyond column d is exactly the top-d subspace, and every d shares one compiled program
        th = thetas * (jnp.arange(dmax) < d)
        mc = jl.delta_monte_carlo(model, full, x, y, sigma=cfg.sigma, thetas=th, samples_per_k=rcfg.samples_per_k)
        out.update({"k": np.asarray(mc.k), f"d{d}/delta": np.asarray(mc.delta), f"d{d}/stderr": np.asarray(mc.stderr),
                    f"d{d}/delta_k2": np.asarray(mc.delta_k2), f"d{d}/stderr_k2": np.asarray(mc.stderr_k2)})
    th = jl.theory_delta(jl.subspace_curvature(model, jl.Subspace(w, vecs[: cfg.ds[0]]), x, y), sigma=cfg.sigma, samples_per_k=rcfg.samples_per_k)
    out["theory_exact"], out["theory_paper"] = np.asarray(th.second_order), np.asarray(th.theorem1)
    return out


def _row(cfg: Config, ds_name: str, arch: str, r: dict) -> dict:
    k, d0, dmax = r["k"], cfg.ds[0], cfg.ds[-1]
    level = {d: tail_level(k, r[f"d{d}/delta_k2"], r[f"d{d}/stderr_k2"]) for d in cfg.ds}
    K = {d: sufficient(r[f"d{d}/delta"], k, cfg.tol) for d in cfg.ds}
    s_ratio, s_ratio_se = ratio_se(*level[d0], *level[dmax])
    row = {"dataset": ds_name, "arch": arch, "params": int(r["params"]), "train_accuracy": round(float(r["train_accuracy"]), 4)}
    row.update({f"K_d{d}": K[d] for d in cfg.ds})
    row.update({f"K_theory_exact_d{d0}": sufficient(r["theory_exact"], k, cfg.tol), f"K_theory_paper_d{d0}": sufficient(r["theory_paper"], k, cfg.tol)})
    row.update({f"S_d{d}": level[d][0] for d in cfg.ds})
    row.update({f"S_d{d}_se": level[d][1] for d in cfg.ds})
    row.update({
        f"S_ratio_d{dmax}_d{d0}": s_ratio, "S_ratio_se": s_ratio_se,
        f"curvature_share_top{d0}_of_{dmax}": top_share(r["eigenvalues"], d0),
        f"d{d0}_suffices": bool(d_suffices(K[d0], K[dmax], s_ratio)),
    })
    return row


def run(cfg: Config, ctx) -> Outcome:
    rows, notes, arrays, curves = [], [], {}, {}
    k = None
    for ds_name in dict.fromkeys(n.lower().replace("-", "_") for n in cfg.datasets):
        try:
            ctx.dataset(dataclasses.replace(cfg, dataset=ds_name, arch="lenet5"), limit=cfg.batch_size)
        except DataNotFoundError as e:
            notes.append(f"skipped {ds_name}: {str(e).splitlines()[0]}")
            ctx.log(f"skipping {ds_name}: no local files (pass --data_dir or set JAXLAND_DATA_DIR)")
            continue
        for arch in cfg.architectures:
            rcfg = dataclasses.replace(cfg, dataset=ds_name, arch=arch)
            r = ctx.part(f"{ds_name}-{arch}", lambda rcfg=rcfg: _pipeline(cfg, rcfg, ctx), key=[ds_name, arch])
            k = r["k"]
            rows.append(_row(cfg, ds_name, arch, r))
            for name, v in r.items():
                if name != "k" and isinstance(v, np.ndarray):
                    arrays[f"{ds_name}/{arch}/{name}"] = v
            d0 = cfg.ds[0]
            curves[f"{arch}, {ds_name}"] = (r[f"d{d0}/delta"], r[f"d{d0}/stderr"])
    if not rows:
        raise DataNotFoundError("no requested dataset is available here:\n  " + "\n  ".join(notes))
    arrays["k"] = k
    d0, dmax = cfg.ds[0], cfg.ds[-1]
    ctx.figure(plot_delta(k, curves, title=f"Delta_k on the top-{d0} Hessian directions per architecture (sigma={cfg.sigma:g}, T={cfg.num_draws}, bands 2 SE)",
                          unit="batches"), "architectures_delta")
    ctx.figure(plot_d_comparison(rows, cfg.ds), "d_comparison")
    claims = [_d_claim(rows, d0, dmax)]
    for ds_name in dict.fromkeys(r["dataset"] for r in rows):
        for r in (r for r in rows if r["dataset"] == ds_name):
            c = bounded_k2(k, arrays[f"{ds_name}/{r['arch']}/d{d0}/delta"], f"{r['arch']}, {ds_name}, d = {d0}")
            claims.append(c)
    found = [r for r in rows if r[f"K_d{d0}"] > 0]
    claims.append(Claim(f"a sufficient sample size exists at tol {cfg.tol:g} for every architecture (d = {d0})", len(found) == len(rows),
                        "; ".join(f"{r['arch']} {r['dataset']}: K = {r[f'K_d{d0}']}" for r in rows) + " (-1: never below tol in the available data)"))
    missing = [a for a in jl.MODEL_NAMES if a not in cfg.architectures]
    if missing:
        notes.append(f"not run in this preset: {', '.join(missing)} (the full preset runs all four architectures)")
    if cfg.eig_samples:
        notes.append(f"eigenvectors of the Hessian of the first {cfg.eig_samples} of {cfg.n_samples} images (the paper: all)")
    bad = [f"{r['arch']}/{r['dataset']}" for r in rows if not r[f"d{d0}_suffices"]]
    verdict = f"d = {d0} suffices for all {len(rows)} architecture/dataset pairs" if not bad else f"d = {d0} is not enough for {', '.join(bad)}"
    summary = {"verdict": verdict, "rows": rows, "tol": cfg.tol, "ds": list(cfg.ds), "k_unit": cfg.k_unit,
               f"d{d0}_suffices_for": [f"{r['arch']}/{r['dataset']}" for r in rows if r[f"d{d0}_suffices"]],
               f"d{d0}_not_enough_for": [f"{r['arch']}/{r['dataset']}" for r in rows if not r[f"d{d0}_suffices"]]}
    return Outcome(arrays, summary, claims, notes)


def _d_claim(rows, d0: int, dmax: int) -> Claim:
    parts = []
    for r in rows:
        parts.append(
            f"{r['arch']}/{r['dataset']}: K {r[f'K_d{d0}']} -> {r[f'K_d{dmax}']}, "
            f"S_{dmax}/S_{d0} = {r[f'S_ratio_d{dmax}_d{d0}']:.2f} +- {r['S_ratio_se']:.2f}, "
            f"top-{d0} share of top-{dmax} curvature {r[f'curvature_share_top{d0}_of_{dmax}']:.0%}"
            f" ({'suffices' if r[f'd{d0}_suffices'] else 'not enough'})"
        )
    held = all(r[f"d{d0}_suffices"] for r in rows)
    return Claim(
        f"d = {d0} Hessian directions suffice for complex architectures (K at tol changes by <= {K_CHANGE:.0%} from d = {d0} to d = {dmax})",
        bool(held),
        "; ".join(parts) + f". Criterion: |K_{dmax} - K_{d0}| <= max({K_CHANGE:g} K_{d0}, 1 batch) when both exist, else "
        f"S_{dmax}/S_{d0} <= {(1 + K_CHANGE) ** 2:.4g}, S = mean of Delta_k k^2 over the last half of k (K ~ sqrt(S / tol)).",
    )


def plot_d_comparison(rows: list[dict], ds):
    """Left: ``S_d / S_{d_0}`` (tail level of Delta_k k^2) against d, error bars 2 SE bounds; right: K against d."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    d0 = ds[0]
    for i, r in enumerate(rows):
        label, c = f"{r['arch']}, {r['dataset']}", f"C{i % 10}"
        ls = "-" if i < 10 else "--"
        s0 = r[f"S_d{d0}"]
        ratios = [ratio_se(s0, r[f"S_d{d0}_se"], r[f"S_d{d}"], r[f"S_d{d}_se"]) for d in ds]
        ax1.errorbar(ds, [a for a, _ in ratios], yerr=[2 * b for _, b in ratios], color=c, ls=ls, marker="o", capsize=3, label=label)
        Ks = np.array([r[f"K_d{d}"] for d in ds], dtype=float)
        Ks[Ks < 0] = np.nan  # never below tol
        ax2.plot(ds, Ks, color=c, ls=ls, marker="o", label=label)
    ax1.axhline((1 + K_CHANGE) ** 2, color="k", ls=":", lw=1, label=f"{(1 + K_CHANGE) ** 2:.3g} (K +{K_CHANGE:.0%})")
    ax1.set_ylabel(rf"$S_d / S_{{{d0}}}$, $S$ = tail mean of $\Delta_k k^2$")
    ax2.set_ylabel("sufficient K (batches of 64)")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(ds), [str(d) for d in ds])
        ax.set_xlabel("subspace dimension d (top-d Hessian eigenvectors, nested)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("Does the top-10 Hessian subspace suffice? Tail level and K against d")
    return fig


SPEC = Spec("architectures", "Delta_k and K for MLP, CNN, ResNet and ViT; does d = 10 suffice?", "paper sec. 6 (limitations), d = 10 claim", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
