"""Scoring of the dataset-size forecasts of :mod:`experiments.forecast`: rows per case, coverage, the N* bracket, the claims.

A case is (dataset, pilot set, tolerance, network trained on the largest set).
A method's interval covers it when ``lower <= K_measured <= upper`` (an
interval without an upper end covers every larger K, and is counted as
unbounded); the ratio is the point forecast over the measured K.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

import jaxland as jl

from ._runner import Claim

def num(v):
    """JSON-safe number: None for inf / NaN, an int where it is one."""
    if v is None:
        return None
    v = float(v)
    return int(v) if math.isfinite(v) and v == int(v) else (v if math.isfinite(v) else None)


def measured_k(curve, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return jl.sufficient_k(np.asarray(curve["delta"]), tol, k=np.asarray(curve["k"]))


def covered(lo, hi, m):
    return None if m is None or lo is None else bool(lo <= m <= (math.inf if hi is None else hi))


METHODS = {"dataset_size": "N-aware forecast (jl.forecast_dataset_size)", "single": "largest pilot alone (jl.forecast_sufficient_k)",
            "learning_curve": "learning curve of test loss (Keras-style)",
            "control": "control: a prefix of the largest set's own curve (same w*)"}


def rows_for(fc: dict, meta: dict, measured: dict, tols) -> list[dict]:
    """One row per (method, tolerance, measured network), all with the same columns."""
    rows = []
    for method, f in fc.items():
        for i, t in enumerate(tols):
            for seed, m in measured[t].items():
                row = dict(meta, method=method, label=f"{meta['label']} {method}", tol=t, big_seed=seed, measured=m,
                           k=None, lower=None, upper=None, covered=None, ratio=None, refused=None)
                if isinstance(f, str):
                    row["refused"] = f
                else:
                    row.update(k=num(f["k"][i]), lower=num(f["lower"][i]), upper=num(f["upper"][i]))
                    row["covered"] = covered(row["lower"], row["upper"], m)
                    row["ratio"] = None if m is None or row["k"] is None else round(row["k"] / m, 3)
                rows.append(row)
    return rows


def stats(rows) -> dict:
    """Coverage, median ratio forecast / measured, median interval width (upper / lower), per method."""
    out = {}
    for method in METHODS:
        rr = [r for r in rows if r["method"] == method and r["measured"] is not None]
        judged = [r for r in rr if r["covered"] is not None]
        ratios = [r["ratio"] for r in rr if r["ratio"] is not None]
        widths = [r["upper"] / r["lower"] if r["upper"] is not None and r["lower"] else math.inf for r in judged]
        out[method] = {"covered": sum(r["covered"] for r in judged), "cases": len(judged), "refused": sum(r["refused"] is not None for r in rr),
                       "unbounded": sum(r["upper"] is None for r in judged),  # an interval to infinity covers any K
                       "coverage": round(sum(r["covered"] for r in judged) / len(judged), 3) if judged else None,
                       "median_ratio": round(float(np.median(ratios)), 3) if ratios else None,
                       "ratio_range": [round(float(min(ratios)), 3), round(float(max(ratios)), 3)] if ratios else None,
                       "median_width": round(float(np.median(widths)), 3) if widths else None}
    return out


def nstar_measured(nets: dict, cfg, tols) -> dict:
    """Per tolerance: the trained sizes (seed ``cfg.seed``) whose own curve settles (Definition 4's K exists), and the bracket of N*."""
    sizes = sorted(n for n, s in nets if s == cfg.seed)
    out = {}
    for t in tols:
        settled = {n: measured_k(nets[n, cfg.seed], t) is not None for n in sizes}
        first = next((n for n in sizes if settled[n] and all(settled[m] for m in sizes if m > n)), None)
        below = max((n for n in sizes if first is not None and n < first), default=None)
        out[t] = {"settled": {str(n): v for n, v in settled.items()}, "lower": below, "upper": first}
    return out


def level_check(f, big: dict, big_n: int) -> dict:
    """The largest set's own level against the forecast line: log Delta_k - shape over the fitted k, and the line's prediction.

    ``z`` divides the miss by the predictive spread of one new training
    (retraining spread and the line's error at ``big_n``).
    """
    d = f.diagnostics
    k_s, phi = np.asarray(d["shape_k"]), np.asarray(d["shape"])
    kb, db = np.asarray(big["k"], float), np.asarray(big["delta"], float)
    sel = np.isin(kb, k_s) & (db > 0) & (kb >= d["k_fit"][0]) & (kb <= d["k_fit"][1])
    own = float(np.mean(np.log(db[sel]) - phi[np.searchsorted(k_s, kb[sel])]))
    x = math.log(big_n / f.n_ref)
    pred = f.log_c - d["shape_b0"] + f.beta * x
    spread = math.sqrt(f.omega**2 + (f.beta_stderr * x) ** 2)
    return {"measured_level": round(own, 3), "predicted_level": round(pred, 3), "beta": round(f.beta, 3), "z": round((own - pred) / spread, 2)}


def claims(cfg, st: dict, per_ds: dict, nstar_rows, costs, levels) -> list:
    def cov(m):
        s = st[m]
        return f"{s['covered']}/{s['cases']} ({s['coverage']:.0%})" if s["cases"] else "no cases"

    def detail(m):
        s = st[m]
        by = "; ".join(f"{ds}: {v[m]['covered']}/{v[m]['cases']}, median ratio {v[m]['median_ratio']}" for ds, v in per_ds.items())
        return (f"covered {cov(m)} of the (dataset, pilot set, tolerance, measured network) cases ({s['unbounded']} of its intervals "
                f"have no upper end); median forecast / measured {s['median_ratio']} (range {s['ratio_range']}), median interval "
                f"width upper / lower {s['median_width']}; {by}")

    ds_st = st["dataset_size"]
    target_held = None if not ds_st["cases"] else bool(ds_st["coverage"] >= 0.8 and ds_st["median_ratio"] is not None
                                                         and 1 / 1.5 <= ds_st["median_ratio"] <= 1.5)
    judged = [r for r in nstar_rows if r["consistent"] is not None]
    ok = sum(r["consistent"] for r in judged)
    ratios = [c["sample_gradients"]["ratio"] for c in costs]
    why = "; ".join(f"{v['dataset']} pilots {v['pilots'][0]}-{v['pilots'][-1]}: beta {v['beta']}, the largest set's level "
                    f"{v['measured_level']} against {v['predicted_level']} forecast (z = {v['z']})" for v in levels)
    return [
        Claim(f"the N-aware forecast ({cfg.level:.0%} interval) covers the K measured on the largest set in >= 80% of cases, "
              "median forecast / measured within 1.5x", target_held,
              detail("dataset_size") + f". Where it misses, the level of the largest set is off the line fitted to the pilots: {why}"),
        Claim("a single pilot's forecast (the landscape assumed not to change with N) covers the measured K in >= 80% of cases",
              None if not st["single"]["cases"] else bool(st["single"]["coverage"] >= 0.8), detail("single")),
        Claim("the Keras-style learning-curve extrapolation of test loss covers the measured K in >= 80% of cases",
              None if not st["learning_curve"]["cases"] else bool(st["learning_curve"]["coverage"] >= 0.8), detail("learning_curve")),
        Claim("control: with the same w* (a prefix of the largest set's own curve, as long as the largest pilot's) the single-curve "
              "forecast covers the measured K in >= 80% of cases", None if not st["control"]["cases"] else bool(st["control"]["coverage"] >= 0.8),
              detail("control") + "; the control isolates the extrapolation in k from the change of the landscape with N"),
        Claim("the forecast N* interval (all pilots) meets the bracket of N* measured on the trained sizes",
              None if not judged else bool(ok >= 0.8 * len(judged)),
              f"{ok} of {len(judged)} (dataset, tolerance) with a measured bracket; the bracket is the smallest trained size whose own "
              "curve settles (Definition 4's K exists) with every larger one, and the trained size below it"),
        Claim("the pilots cost less than training once on the forecast N*", None if not ratios else bool(np.nanmax(np.concatenate(
              [np.asarray(r, float) for r in ratios])) < 1),
              "; ".join(f"{c['dataset']}: pilots {c['sample_gradients']['pilots']:.3g} sample-gradients = "
                        f"{', '.join(f'{v:.2g}' for v in c['sample_gradients']['ratio'])}x training on N* per tolerance" for c in costs)),
    ]
