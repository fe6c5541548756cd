"""How much more data? Forecast the sufficient sample size K from a pilot set, then check it.

For each pilot set (the first 1,000, 2,000 and 5,000 images of MNIST and
Fashion-MNIST) train w* on the pilot, take the top-d Hessian directions,
estimate ``Delta_k`` by Monte Carlo (k in batches of 64) and forecast
Definition 4's ``K(tol)`` at several tolerances with
:func:`jaxland.sample_size.forecast.forecast_sufficient_k` (power law fitted to the tail,
interval for Definition 4 on a curve that scatters like the observed one).
Then measure K directly on the largest set the data allows (all 60,000
training images with the real files; 9,984 embedded MNIST images without):
train on it, estimate ``Delta_k`` over its prefixes, apply Definition 4.

A control separates the two ways a forecast can fail: the same forecast
made from the first k of the largest set's own curve (same w*, same
directions) tests the extrapolation alone; a pilot's forecast also carries
the change of w* (and of its Hessian) with N.

Run: ``python -m experiments.forecast [--quick] [--data_dir /path/to/idx/files]``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from jaxland.errors import ConfigError, DataError, DataNotFoundError
from jaxland.sample_size.forecast import forecast_sufficient_k
from jaxland.plots.forecast import plot_forecast_curves, plot_forecast_vs_measured

from ._cli import main_for
from ._config import QUICK_REFERENCE, TINY_REFERENCE, BaseConfig
from ._runner import Claim, Outcome, Spec


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    n_samples: int = 60000  # the largest set; fewer when the data has fewer (embedded MNIST: 9,984)
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    pilots: tuple[int, ...] = (1000, 2000, 5000)
    tols: tuple[float, ...] = (0.05, 0.025, 0.01, 0.005, 0.0025, 0.001)
    d: int = 10
    sigma: float = 1.0
    num_draws: int = 256
    eig_tol: float = 1e-3
    level: float = 0.9
    tail: float = 0.25

    def validate(self) -> None:
        super().validate()
        for ds in self.datasets:
            if ds.lower().replace("-", "_") not in ("mnist", "fashion_mnist"):
                raise DataError(f"forecast supports mnist and fashion_mnist, got {ds!r}")
        if not self.datasets or not self.pilots or not self.tols:
            raise ConfigError("need at least one dataset, one pilot size and one tolerance")
        if any(p < 2 * self.batch_size for p in self.pilots):
            raise ConfigError(f"every pilot needs at least 2 batches of {self.batch_size} samples, got {self.pilots}")
        if any(not t > 0 for t in self.tols):
            raise ConfigError(f"tolerances must be > 0, got {self.tols}")
        if self.d < 1 or not self.sigma > 0 or self.num_draws < 2:
            raise ConfigError(f"need d >= 1, sigma > 0, num_draws >= 2; got {self.d}, {self.sigma}, {self.num_draws}")
        if not 0 < self.level < 1 or not 0 <= self.tail < 1:
            raise ConfigError(f"need 0 < level < 1 and 0 <= tail < 1, got {self.level}, {self.tail}")


QUICK = dict(QUICK_REFERENCE, datasets=("mnist",), pilots=(2048,), num_draws=64, eig_tol=1e-2, tols=(0.1, 0.05, 0.025, 0.01))
TINY = dict(TINY_REFERENCE, batch_size=16, datasets=("mnist",), pilots=(256,), num_draws=8, d=2, tols=(1.0, 0.1))


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


def _delta_curve(ctx, rcfg: Config, key) -> dict:
    """Train w* on ``rcfg``'s data (cached), top-d Hessian directions, Monte Carlo Delta_k in batches."""
    model, res, x, y = ctx.reference(rcfg)
    eig = jl.hessian_eigenpairs(model, res.params, x, y, rcfg.d, key=jax.random.fold_in(key, 1000), tol=rcfg.eig_tol)
    sub = jl.Subspace(res.params, jnp.asarray(eig.eigenvectors))
    mc = jl.delta_monte_carlo(model, sub, x, y, sigma=rcfg.sigma, num_draws=rcfg.num_draws, key=jax.random.fold_in(key, 300), samples_per_k=rcfg.samples_per_k)
    return {"k": mc.k, "delta": mc.delta, "stderr": mc.stderr, "eigenvalues": eig.eigenvalues, "params": res.params,
            "train_accuracy": res.train_accuracy}


def _measured(delta, k, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return jl.sufficient_k(np.asarray(delta), tol, k=np.asarray(k))


def _num(v):
    """JSON-safe number: None for inf / NaN."""
    v = float(v)
    return int(v) if math.isfinite(v) and v == int(v) else (v if math.isfinite(v) else None)


_FIT_KEYS = ("k", "lower", "upper", "covered", "k_trend", "lower_trend", "upper_trend", "covered_trend",
             "extrapolation", "far", "alpha", "alpha_stderr", "chi2_reduced", "scatter")


def _rows(fc, meta: dict, measured: dict, tols) -> list[dict]:
    """One row per tolerance, all with the same columns (a refused fit leaves them None and says why)."""
    rows = []
    for i, t in enumerate(tols):
        m = measured[t]
        row = dict(meta, tol=t, measured=m, **dict.fromkeys(_FIT_KEYS), refused=None)
        if isinstance(fc, str):
            row["refused"] = fc
        else:
            lo, hi = float(fc.lower_scatter[i]), float(fc.upper_scatter[i])
            row.update(
                k=_num(fc.k_scatter[i]), lower=_num(lo), upper=_num(hi),
                covered=None if m is None else bool(lo <= m <= hi),
                k_trend=_num(fc.k[i]), lower_trend=_num(fc.lower[i]), upper_trend=_num(fc.upper[i]),
                covered_trend=None if m is None else bool(fc.lower[i] <= m <= fc.upper[i]),
                extrapolation=_num(fc.k_scatter[i] / meta["k_max"]), far=bool(fc.far[i]),
                alpha=round(fc.alpha, 3), alpha_stderr=round(fc.alpha_stderr, 3), chi2_reduced=round(fc.chi2_reduced, 2), scatter=round(fc.scatter, 3),
            )
        rows.append(row)
    return rows


def _coverage(rows) -> tuple[int, int]:
    judged = [r["covered"] for r in rows if r["covered"] is not None]
    return sum(judged), len(judged)


def run(cfg: Config, ctx) -> Outcome:
    key = jax.random.key(cfg.seed)
    tols = tuple(sorted(cfg.tols, reverse=True))
    notes, rows, controls, arrays, diag = [], [], [], {}, []
    for ds_name in (d.lower().replace("-", "_") for d in cfg.datasets):
        big_cfg, note = _largest(cfg, ds_name, ctx)
        if note:
            notes.append(note)
        if big_cfg is None:
            continue
        big = ctx.part(f"{ds_name}-{big_cfg.n_samples}", lambda c=big_cfg: _delta_curve(ctx, c, key))
        measured = {t: _measured(big["delta"], big["k"], t) for t in tols}
        arrays[f"{ds_name}/{big_cfg.n_samples}/delta"], arrays[f"{ds_name}/{big_cfg.n_samples}/stderr"] = big["delta"], big["stderr"]
        curves = {f"all {big_cfg.n_samples}": {"k": big["k"], "delta": big["delta"]}}
        w_big = np.asarray(big["params"])
        for n in sorted(p for p in cfg.pilots if p < big_cfg.n_samples):
            pcfg = dataclasses.replace(big_cfg, n_samples=n)
            p = ctx.part(f"{ds_name}-{n}", lambda c=pcfg: _delta_curve(ctx, c, key))
            meta = {"dataset": ds_name, "pilot": n, "source": "pilot", "k_max": int(p["k"][-1]), "label": f"pilot {n}"}
            fits = {}
            for kind, (k, d, se) in {"pilot": (p["k"], p["delta"], p["stderr"]),
                                     "control": (big["k"][: len(p["k"])], big["delta"][: len(p["k"])], big["stderr"][: len(p["k"])])}.items():
                try:
                    fits[kind] = forecast_sufficient_k((k, d), list(tols), stderr=se, level=cfg.level, tail=cfg.tail, seed=cfg.seed)
                except ConfigError as e:  # no decay to fit: recorded, not fatal
                    fits[kind] = f"refused: {e}"
            rows += _rows(fits["pilot"], meta, measured, tols)
            controls += _rows(fits["control"], dict(meta, source=f"first {n} of all {big_cfg.n_samples} (same w*)", label=f"first {n} of all {big_cfg.n_samples}"), measured, tols)
            fp = fits["pilot"]
            curves[f"pilot {n}"] = {"k": p["k"], "delta": p["delta"], **({} if isinstance(fp, str) else {"log_c": fp.log_c, "alpha": fp.alpha, "k_fit_lo": fp.k_fit[0]})}
            m = len(p["k"])
            diag.append({
                "dataset": ds_name, "pilot": n,
                "w_change": float(np.linalg.norm(np.asarray(p["params"]) - w_big) / np.linalg.norm(w_big)),
                "top_eigenvalue_pilot": float(p["eigenvalues"][0]), "top_eigenvalue_all": float(big["eigenvalues"][0]),
                "pilot_over_all_delta": float(np.exp(np.mean(np.log(np.asarray(p["delta"]) / np.asarray(big["delta"][:m]))))),
                "train_accuracy_pilot": float(p["train_accuracy"]),
            })
            arrays[f"{ds_name}/{n}/delta"], arrays[f"{ds_name}/{n}/stderr"] = p["delta"], p["stderr"]
        bf = forecast_sufficient_k((big["k"], big["delta"]), list(tols), stderr=big["stderr"], level=cfg.level, tail=cfg.tail, seed=cfg.seed)
        curves[f"all {big_cfg.n_samples}"].update(log_c=bf.log_c, alpha=bf.alpha, k_fit_lo=bf.k_fit[0])
        ctx.figure(plot_forecast_curves(curves, tols, title=f"{ds_name}: " + r"$\Delta_k$ (top-%d Hessian, T=%d)" % (cfg.d, cfg.num_draws)), f"curves_{ds_name}")
    if not rows:
        raise DataNotFoundError("no requested dataset is available here:\n  " + "\n  ".join(notes))
    ctx.figure(plot_forecast_vs_measured([r for r in rows if r["k"] is not None],
                                         title=f"Pilot forecasts ({cfg.level:.0%} interval) against K measured on the largest set"), "forecast_vs_measured")
    ctx.figure(plot_forecast_vs_measured([r for r in controls if r["k"] is not None],
                                         title="Control: forecasts from a prefix of the largest set's own curve (same w*)"), "control_vs_measured")
    hit, total = _coverage(rows)
    chit, ctotal = _coverage(controls)
    per_pilot = "; ".join(f"{ds} {n}: {sum(r['covered'] is True for r in rows if r['dataset'] == ds and r['pilot'] == n)}/"
                          f"{sum(r['covered'] is not None for r in rows if r['dataset'] == ds and r['pilot'] == n)}"
                          for ds, n in dict.fromkeys((r["dataset"], r["pilot"]) for r in rows))
    refused = [f"{r['dataset']} {r['pilot']}" for r in rows if r.get("refused") and r["tol"] == tols[0]]
    why = "; ".join(f"{g['dataset']} {g['pilot']}: ||w*_pilot - w*_all|| / ||w*_all|| = {g['w_change']:.2f}, "
                    f"lambda_1 {g['top_eigenvalue_pilot']:.3g} vs {g['top_eigenvalue_all']:.3g}, pilot Delta_k / all-data Delta_k = {g['pilot_over_all_delta']:.2f}x over the pilot's k"
                    for g in diag)
    claims = [
        Claim(f"a pilot's forecast ({cfg.level:.0%} interval) covers the K measured on the largest set",
              None if total == 0 else bool(hit >= (cfg.level - 0.1) * total),
              f"covered {hit} of {total} (pilot, tolerance) pairs with a measured K ({per_pilot})"
              + (f"; refused (no decay to fit): {', '.join(refused)}" if refused else "")
              + f"; held if >= {cfg.level - 0.1:.0%}. Why pilots differ: {why}"),
        Claim("control: with the same w* (a prefix of the largest set's own curve) the forecast covers the measured K",
              None if ctotal == 0 else bool(chit >= (cfg.level - 0.1) * ctotal),
              f"covered {chit} of {ctotal}; the control isolates the extrapolation from the change of w* with N"),
    ]
    summary = {"k_unit": "batches", "tols": list(tols), "rows": rows + controls, "diagnostics": diag,
               "coverage_pilot": [hit, total], "coverage_control": [chit, ctotal],
               "coverage_trend_pilot": [sum(r["covered_trend"] is True for r in rows), total]}
    return Outcome(arrays, summary, claims, notes)


SPEC = Spec("forecast", "Forecast of the sufficient sample size from pilot sets, checked on the largest set", "paper Definition 4, Table 1 (extension)", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
