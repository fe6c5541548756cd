"""How much data? Forecast the dataset size N* and the K of a larger set from pilot sets, then check it.

For each dataset (MNIST, Fashion-MNIST) train w* on nested pilot sets (the
first 1,000 .. 10,000 images, several seeds each), take the top-d Hessian
directions, estimate ``Delta_k`` by Monte Carlo (k in batches of 64), and
record each network's test loss. Then train on the largest set the data
allows (all 60,000 training images with the real files; the embedded MNIST
images without), and on a few sizes in between, and measure Definition 4's
K on each network's own curve.

Three forecasts of the largest set's K at each tolerance, from the same pilots,

- ``dataset_size``: :func:`jaxland.sample_size.dataset_size.forecast_dataset_size`,
  the joint power law ``Delta_k^(N) = C N^beta k^-alpha`` over pilot sets of
  at least ``min_pilots`` sizes (each pilot at its own w*), which also gives
  the self-consistent N*;
- ``single``: :func:`jaxland.forecast_sufficient_k` on the largest pilot's
  curve alone (the landscape assumed not to change with N);
- ``learning_curve``: the Keras-style baseline, test loss ``~ a n^b + c``
  fitted across the pilots, and the n at which one more batch changes it by
  less than ``sqrt(tol)`` (:func:`jaxland.sample_size.learning_curve.learning_curve_size`).

and a control: the single-curve forecast from the first k of the largest
set's own curve (same w*, as many k as the largest pilot), which isolates
the extrapolation in k from the change of the landscape with N.

N* is measured too: the smallest trained size whose own network's curve
settles (K <= its number of batches), bracketed by the sizes trained.

Run: ``python -m experiments.forecast [--quick] [--data_dir /path/to/idx/files]``.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from jaxland.errors import ConfigError, DataError, DataNotFoundError
from jaxland.sample_size.dataset_size import forecast_dataset_size
from jaxland.sample_size.learning_curve import learning_curve_size
from jaxland.sample_size.forecast import forecast_sufficient_k

from ._cli import main_for
from ._config import QUICK_REFERENCE, TINY_REFERENCE, BaseConfig
from ._forecast_scoring import METHODS, claims, level_check, measured_k, nstar_measured, num, rows_for, stats
from ._runner import Context, Outcome, Spec


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    n_samples: int = 60000  # the largest set; fewer when the data has fewer (embedded MNIST: 9,984)
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    pilots: tuple[int, ...] = (1000, 2000, 3000, 5000, 7000, 10000)
    seeds: int = 3  # trainings per pilot size (seeds seed, seed + 1, ...)
    big_seeds: int = 2  # trainings of the largest set: each one's K is a measured case
    checks: tuple[int, ...] = (20000, 40000)  # sizes between the pilots and the largest set, trained once, to bracket the measured N*
    min_pilots: int = 3  # pilot sets: the smallest m pilot sizes, m = min_pilots .. len(pilots)
    tols: tuple[float, ...] = (0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 5e-4, 2e-4, 1e-4, 5e-5)  # K from ~15 to ~900 batches on 60,000
    d: int = 10
    sigma: float = 1.0
    num_draws: int = 256
    eig_tol: float = 1e-3
    level: float = 0.9
    tail: float = 0.25
    num_bootstrap: int = 1000

    def validate(self) -> None:
        super().validate()
        for ds in self.datasets:
            if ds.lower().replace("-", "_") not in ("mnist", "fashion_mnist"):
                raise DataError(f"forecast supports mnist and fashion_mnist, got {ds!r}")
        if not self.datasets or not self.tols:
            raise ConfigError("need at least one dataset and one tolerance")
        if self.min_pilots < 3 or len(set(self.pilots)) < self.min_pilots:
            raise ConfigError(f"need min_pilots >= 3 distinct pilot sizes (N and the landscape's change with N are fitted together), "
                              f"got min_pilots={self.min_pilots}, pilots={self.pilots}")
        if any(p < 4 * self.batch_size for p in self.pilots):
            raise ConfigError(f"every pilot needs at least 4 batches of {self.batch_size} samples, got {self.pilots}")
        if self.seeds < 1 or self.big_seeds < 1:
            raise ConfigError(f"seeds and big_seeds must be >= 1, got {self.seeds}, {self.big_seeds}")
        if any(not t > 0 for t in self.tols):
            raise ConfigError(f"tolerances must be > 0, got {self.tols}")
        if self.d < 1 or not self.sigma > 0 or self.num_draws < 2:
            raise ConfigError(f"need d >= 1, sigma > 0, num_draws >= 2; got {self.d}, {self.sigma}, {self.num_draws}")
        if not 0 < self.level < 1 or not 0 <= self.tail < 1:
            raise ConfigError(f"need 0 < level < 1 and 0 <= tail < 1, got {self.level}, {self.tail}")
        if self.num_bootstrap < 100:
            raise ConfigError(f"num_bootstrap must be >= 100, got {self.num_bootstrap}")


QUICK = dict(QUICK_REFERENCE, datasets=("mnist",), n_samples=2048, epochs=3, hidden=(32,), pilots=(256, 512, 1024), seeds=1, big_seeds=1,
             checks=(), num_draws=32, d=3, eig_tol=1e-2, tols=(0.1, 0.05, 0.02, 0.01), num_bootstrap=400)
TINY = dict(TINY_REFERENCE, batch_size=16, datasets=("mnist",), n_samples=512, pilots=(128, 192, 256), seeds=1, big_seeds=1, checks=(),
            num_draws=8, d=2, tols=(1.0, 0.1), num_bootstrap=200)

# what determines one network's curve (its size and seed are in the part's name); the analysis settings do not
_CURVE_FIELDS = tuple(f.name for f in dataclasses.fields(BaseConfig) if f.name not in ("n_samples", "seed")) + ("d", "sigma", "num_draws", "eig_tol")
_CurveKey = dataclasses.make_dataclass("CurveKey", [(f, object) for f in _CURVE_FIELDS], frozen=True)


# ----------------------------------------------------------------------------- networks


def _largest(cfg: Config, ds_name: str, ctx):
    """(config of the largest set, note): the requested size, else what the embedded MNIST allows, else None."""
    rcfg = dataclasses.replace(cfg, dataset=ds_name)
    try:
        ctx.dataset(rcfg)
        return rcfg, None
    except DataNotFoundError as e:
        if ds_name != "mnist":
            return None, f"skipped {ds_name}: {str(e).splitlines()[0]} (pass --data_dir)"
    n = min(cfg.n_samples, 10000) // cfg.batch_size * cfg.batch_size
    return dataclasses.replace(rcfg, n_samples=n), f"mnist: real files absent, largest set = first {n} embedded MNIST images (pass --data_dir for 60,000)"


def _held_out(ctx, big_cfg: Config):
    """(x, y, what) for test losses: the test split, else the training images after the largest set."""
    try:
        ds = ctx.dataset(big_cfg, split="test", limit=10000)
        return jnp.asarray(ds.x), jnp.asarray(ds.y), "test split"
    except (DataNotFoundError, DataError):
        full = ctx.dataset(big_cfg, limit=10000 if big_cfg.n_samples < 10000 else None)
        n0 = big_cfg.n_samples
        if full.x.shape[0] - n0 < 256:
            raise DataError(f"no test split and only {full.x.shape[0] - n0} training images after the largest set: "
                            "lower n_samples or pass --data_dir") from None
        return jnp.asarray(full.x[n0:]), jnp.asarray(full.y[n0:]), f"training images {n0}..{full.x.shape[0]} (no test split here)"


def _network(ctx, ncfg: Config, seed: int, x_test, y_test) -> dict:
    """Train w* on ``ncfg``'s data (cached), top-d Hessian directions, Monte Carlo Delta_k in batches, losses."""
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    model, res, x, y = ctx.reference(ncfg, seed=seed)
    t1 = time.perf_counter()
    eig = jl.hessian_eigenpairs(model, res.params, x, y, ncfg.d, key=jax.random.fold_in(key, 1000), tol=ncfg.eig_tol)
    t2 = time.perf_counter()
    sub = jl.Subspace(res.params, jnp.asarray(eig.eigenvectors))
    mc = jl.delta_monte_carlo(model, sub, x, y, sigma=ncfg.sigma, num_draws=ncfg.num_draws, key=jax.random.fold_in(key, 300),
                              samples_per_k=ncfg.samples_per_k)
    t3 = time.perf_counter()
    return {"n": x.shape[0], "seed": seed, "k": mc.k, "delta": mc.delta, "stderr": mc.stderr, "eigenvalues": eig.eigenvalues,
            "num_matvecs": int(eig.num_matvecs), "params": res.params, "train_accuracy": res.train_accuracy,
            "train_loss": float(jl.mean_loss(model, res.params, x, y)), "test_loss": float(jl.mean_loss(model, res.params, x_test, y_test)),
            "test_accuracy": float(jl.accuracy(model, res.params, x_test, y_test)),
            "train_s": t1 - t0, "eig_s": t2 - t1, "mc_s": t3 - t2}


def _curve_context(ctx, cfg: Config) -> Context:
    """A context whose parts are keyed by the settings that make a curve only, so a new analysis reuses them."""
    return Context(ctx.spec, _CurveKey(**{f: getattr(cfg, f) for f in _CURVE_FIELDS}), ctx.out, progress=ctx.progress, force=ctx.force)


def networks(cfg: Config, ctx, ds_name: str, big_cfg: Config, *, which=("pilots", "big", "checks")) -> dict:
    """Every network of one dataset as ``{(n, seed): part}`` (resumable parts named ``DATASET-N-sSEED``)."""
    cctx = _curve_context(ctx, cfg)
    x_test, y_test, _ = _held_out(ctx, big_cfg)
    todo = []
    if "pilots" in which:
        todo += [(n, cfg.seed + s) for n in sorted(set(cfg.pilots)) if n < big_cfg.n_samples for s in range(cfg.seeds)]
    if "big" in which:
        todo += [(big_cfg.n_samples, cfg.seed + s) for s in range(cfg.big_seeds)]
    if "checks" in which:
        todo += [(n, cfg.seed) for n in sorted(set(cfg.checks)) if max(cfg.pilots) < n < big_cfg.n_samples]
    out = {}
    for n, seed in todo:
        ncfg = dataclasses.replace(big_cfg, n_samples=n)
        out[(n, seed)] = cctx.part(f"{ds_name}-{n}-s{seed}", lambda c=ncfg, s=seed: _network(ctx, c, s, x_test, y_test))
    ctx.timings.update(cctx.timings)
    ctx.resumed += cctx.resumed
    ctx.wrote = ctx.wrote or cctx.wrote
    return out


# ----------------------------------------------------------------------------- analysis

def _forecasts(cfg: Config, nets: dict, sizes, big_n: int, tols) -> dict:
    """The forecasts of the largest set's K (per tolerance) from the pilots of ``sizes``: {method: dict of arrays or a refusal}.

    Besides the three methods, a control: the single-pilot forecast made from
    the first k of the largest set's own curve (same w*, as many k as the
    largest pilot has), which isolates the extrapolation in k from the
    change of the landscape with N.
    """
    spk = cfg.batch_size if cfg.k_unit == "batches" else 1
    keys = [key for key in sorted(nets) if key[0] in sizes]
    out = {}
    try:
        f = forecast_dataset_size([(n, (nets[n, s]["k"], nets[n, s]["delta"], nets[n, s]["stderr"])) for n, s in keys], list(tols),
                                  samples_per_k=spk, n_target=big_n, level=cfg.level, tail=cfg.tail, num_bootstrap=cfg.num_bootstrap,
                                  seed=cfg.seed, epochs=cfg.epochs, num_matvecs=[int(nets[key]["num_matvecs"]) for key in keys],
                                  num_draws=cfg.num_draws)
        out["dataset_size"] = {"k": f.k_target, "lower": f.k_lower, "upper": f.k_upper, "k_trend": f.k_target_trend,
                               "n_star": f.n_star, "n_lower": f.lower, "n_upper": f.upper, "p_settled": f.p_settled, "fit": f}
    except ConfigError as e:
        out["dataset_size"] = f"refused: {e}"
    big_pilot = nets[max(sizes), cfg.seed]
    try:
        g = forecast_sufficient_k((big_pilot["k"], big_pilot["delta"]), list(tols), stderr=big_pilot["stderr"], level=cfg.level,
                                  tail=cfg.tail, seed=cfg.seed)
        out["single"] = {"k": g.k_scatter, "lower": g.lower_scatter, "upper": g.upper_scatter, "fit": g}
    except ConfigError as e:
        out["single"] = f"refused: {e}"
    big = nets[big_n, cfg.seed]
    m = len(big_pilot["k"])
    try:
        c = forecast_sufficient_k((big["k"][:m], big["delta"][:m]), list(tols), stderr=big["stderr"][:m], level=cfg.level,
                                  tail=cfg.tail, seed=cfg.seed)
        out["control"] = {"k": c.k_scatter, "lower": c.lower_scatter, "upper": c.upper_scatter, "fit": c}
    except ConfigError as e:
        out["control"] = f"refused: {e}"
    try:
        # the loss level Delta_k refers to: at w* + P theta, to second order L(w*) + sigma^2 / 2 sum_i lambda_i
        pert = float(np.median([nets[key]["train_loss"] + cfg.sigma**2 / 2 * np.sum(nets[key]["eigenvalues"]) for key in keys]))
        h = learning_curve_size([n for n, _ in keys], [nets[key]["test_loss"] for key in keys], list(tols), samples_per_k=spk,
                                relative_to=pert, level=cfg.level, num_bootstrap=cfg.num_bootstrap, seed=cfg.seed)
        out["learning_curve"] = {"k": h.k, "lower": h.lower / spk, "upper": h.upper / spk, "n": h.n, "fit": h}
    except ConfigError as e:
        out["learning_curve"] = f"refused: {e}"
    return out


def run(cfg: Config, ctx) -> Outcome:
    tols = tuple(sorted(cfg.tols, reverse=True))
    spk = cfg.batch_size if cfg.k_unit == "batches" else 1
    notes, rows, arrays, nstar_rows, costs, levels = [], [], {}, [], [], []
    from jaxland.plots.forecast import plot_dataset_size, plot_forecast_vs_measured

    for ds_name in (d.lower().replace("-", "_") for d in cfg.datasets):
        big_cfg, note = _largest(cfg, ds_name, ctx)
        if note:
            notes.append(note)
        if big_cfg is None:
            continue
        nets = networks(cfg, ctx, ds_name, big_cfg)
        big_n = big_cfg.n_samples
        pilots = sorted({n for n, _ in nets if n in cfg.pilots})
        if len(pilots) < cfg.min_pilots:
            notes.append(f"{ds_name}: only {len(pilots)} pilot sizes below the largest set ({big_n}); need {cfg.min_pilots}")
            continue
        measured = {t: {s: measured_k(nets[big_n, s], t) for s in sorted(s for n, s in nets if n == big_n)} for t in tols}
        for (n, s), p in nets.items():
            arrays[f"{ds_name}/{n}/s{s}/delta"], arrays[f"{ds_name}/{n}/s{s}/stderr"] = p["delta"], p["stderr"]
        final = None
        for m in range(cfg.min_pilots, len(pilots) + 1):
            sizes = tuple(pilots[:m])
            fc = _forecasts(cfg, nets, sizes, big_n, tols)
            meta = {"dataset": ds_name, "pilots": list(sizes), "label": f"pilots {sizes[0]}-{sizes[-1]}", "k_max": int(nets[sizes[-1], cfg.seed]["k"][-1])}
            rows += rows_for(fc, meta, measured, tols)
            if not isinstance(fc["dataset_size"], str):
                final = (sizes, fc)
                levels.append(dict(level_check(fc["dataset_size"]["fit"], nets[big_n, cfg.seed], big_n), dataset=ds_name, pilots=list(sizes)))
        if final is None:
            continue
        sizes, fc = final
        f = fc["dataset_size"]["fit"]
        nm = nstar_measured(nets, cfg, tols)
        for i, t in enumerate(tols):
            lo_m, hi_m = nm[t]["lower"], nm[t]["upper"]
            consistent = None if hi_m is None else bool(f.lower[i] <= hi_m and (lo_m is None or f.upper[i] > lo_m))
            nstar_rows.append({"dataset": ds_name, "pilots": list(sizes), "tol": t, "n_star": num(f.n_star[i]), "lower": num(f.lower[i]),
                               "upper": num(f.upper[i]), "n_star_trend": num(f.n_star_trend[i]), "measured_lower": lo_m,
                               "measured_upper": hi_m, "consistent": consistent, "settled": nm[t]["settled"],
                               "learning_curve_n": num(fc["learning_curve"]["n"][i]) if not isinstance(fc["learning_curve"], str) else None})
        secs = {part: float(sum(nets[key][f"{part}_s"] for key in nets if key[0] in sizes)) for part in ("train", "eig", "mc")}
        costs.append({"dataset": ds_name, "pilots": list(sizes), "sample_gradients": f.cost._asdict() | {"target": f.cost.target.tolist(), "ratio": f.cost.ratio.tolist()},
                      "pilot_seconds": secs, "largest_set_seconds": {part: float(nets[big_n, cfg.seed][f"{part}_s"]) for part in ("train", "eig", "mc")},
                      "summary": f.summary()})
        ctx.log(f"{ds_name}, pilots {sizes[0]}-{sizes[-1]}:\n" + f.summary())
        curves = {n: [nets[key] for key in sorted(nets) if key[0] == n] for n in sizes}
        big = {"k": nets[big_n, cfg.seed]["k"], "delta": nets[big_n, cfg.seed]["delta"], "n": big_n}
        ctx.figure(plot_dataset_size(f, curves, big=big, measured={t: measured[t][cfg.seed] for t in tols},
                                     nstar_measured={t: (nm[t]["lower"], nm[t]["upper"]) for t in tols},
                                     title=f"{ds_name}: pilots {sizes[0]}-{sizes[-1]} ({cfg.seeds} seeds each)"), f"dataset_size_{ds_name}")
    if not rows:
        raise DataNotFoundError("no requested dataset is available here:\n  " + "\n  ".join(notes))
    for method, title in METHODS.items():
        sub = [r for r in rows if r["method"] == method and r["big_seed"] == cfg.seed and r["k"] is not None]
        if sub:
            ctx.figure(plot_forecast_vs_measured(sub, title=f"{title}: {cfg.level:.0%} interval against K measured on the largest set"),
                       f"forecast_vs_measured_{method}")
    stats_all = stats(rows)
    per_ds = {ds: stats([r for r in rows if r["dataset"] == ds]) for ds in dict.fromkeys(r["dataset"] for r in rows)}
    verdicts = claims(cfg, stats_all, per_ds, nstar_rows, costs, levels)
    summary = {"k_unit": cfg.k_unit, "samples_per_k": spk, "tols": list(tols), "level": cfg.level, "stats": stats_all, "stats_by_dataset": per_ds,
               "rows": rows, "n_star": nstar_rows, "cost": costs, "level_check": levels}
    return Outcome(arrays, summary, verdicts, notes)


SPEC = Spec("forecast", "How much data? Forecast of N* and of the largest set's K from pilot sets, checked on the largest set",
            "paper Definition 4, Table 1 (extension)", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
