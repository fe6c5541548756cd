"""Variance reduction for Monte Carlo Delta_k: standard error at fixed draws, and time to the plain T = 1,024 error.

Reference problem (benchmarks/common.py), k in batches of 64, d = 10 top Hessian
directions and d = 10 filter-normalised random directions, sigma in {0.1, 1, 5}.
For each cell and each method of :func:`jaxland.delta_monte_carlo`'s
``variance_reduction``, side by side in one run:

1. plain Monte Carlo at T = 1,024 (the target standard error ``SE_plain``);
2. each method at ``--draws`` (default 256): its standard error, and the
   draws-for-equal-error ratio per k, ``(SE_plain_k^2 * 1024) / (SE_k^2 * T)``
   (how many times fewer draws the method needs for the same error),
   summarised by its median and quartiles over k;
3. each method that helps (median ratio > 1) rerun at ``T_eq = 1024 / median
   ratio`` draws (rounded up to a valid T): the wall time to reach the plain
   error, with the control variate's curvature pass included (no
   ``curvature=`` is passed), and the error it reached (median over k of
   ``SE / SE_plain``). A method that does not help needs more draws than
   plain; its time is the fixed run's scaled to ``T_eq`` (``measured: false``),
   which keeps the whole table near 20 minutes on a loaded 2-core CPU.
4. (``--interleaved RESULT``, a second short run) at sigma = 1 on the Hessian
   directions, plain at T = 1,024 and each method that helped at its
   confirmed ``T_eq``, timed alternately (A B .. B A) so that the time ratios
   do not mix load levels.

Wall times exclude compilation: every call's tracing, lowering and XLA
compile durations are collected with ``jax.monitoring`` and subtracted
(``compile_s`` is reported beside). Standard errors from S = 16 Sobol'
scramblings have 15 degrees of freedom, so a single ratio per k is noisy;
the median over the 155 k is not.

    python -m benchmarks.variance [--draws 256] [--sigmas 0.1,1,5] [--methods none,cv,...]
    python -m benchmarks.variance --interleaved benchmarks/results/variance.json
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

import jaxland as jl
from benchmarks.common import reference_problem, write_result

METHODS = ("cv", "antithetic", "sobol", "cv+antithetic", "cv+sobol")
_COMPILE = []


def _listener(event, duration, **_):
    if event.startswith("/jax/core/compile"):
        _COMPILE.append(duration)


jax.monitoring.register_event_duration_secs_listener(_listener)


def timed(fn):
    """(result, wall seconds without compilation, compile seconds)."""
    _COMPILE.clear()
    t0 = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.delta)
    wall = time.perf_counter() - t0
    comp = float(sum(_COMPILE))
    return out, wall - comp, comp


def valid_draws(t: int, method: str) -> int:
    """The least T >= t that the method accepts (multiples of 16 for Sobol', even for antithetic, >= 4 units)."""
    m = (16 if "sobol" in method else 1) * (2 if "antithetic" in method else 1)
    t = max(t, m * (4 if "cv" in method and "sobol" not in method else 2))
    return int(-(-t // m) * m)


def confirmed_draws_ratio(row: dict, plain_draws: int):
    """Draws-for-equal-error ratio confirmed by the rerun: ``T_plain / (T_eq (SE_eq / SE_plain)^2)`` (None if not rerun).

    The fixed-draws ratio divides two *estimated* standard errors; with a
    heavy-tailed integrand the smaller run's SE is biased low, so the rerun,
    which should land on ``SE_eq / SE_plain = 1``, is the check.
    """
    tp = row["to_plain_error"]
    if not tp.get("measured"):
        return None
    return plain_draws / (tp["draws"] * tp["stderr_over_plain_median"] ** 2)


def interleaved_timing(run, plan: dict, repeats: int = 2) -> dict:
    """Wall time of ``run(T, method, seed)`` for each (method, T) in ``plan``, in A B .. B A order after a compiling call.

    The fixed/rerun table times each method minutes apart, under whatever load
    the shared machine had then; here the runs alternate, so their ratios
    survive a load that drifts. Returns per method the draws, the median
    wall time and ``time_ratio`` = plain's median / this median.
    """
    order = list(plan.items())
    for vr, t in order:  # compile
        timed(lambda: run(t, vr, 60))
    walls = {vr: [] for vr in plan}
    for r in range(repeats):
        for vr, t in (order if r % 2 == 0 else order[::-1]):
            walls[vr].append(timed(lambda: run(t, vr, 61 + r))[1])
    med = {vr: float(np.median(w)) for vr, w in walls.items()}
    return {vr: {"draws": plan[vr], "wall_s": med[vr], "walls": walls[vr], "time_ratio": med["none"] / med[vr]} for vr in plan}


def add_interleaved(path, sigma: float = 1.0, kind: str = "hessian", repeats: int = 2, seed: int = 0):
    """Add ``interleaved`` to an existing result: plain at T_plain and each helping method at its confirmed T_eq."""
    import json

    payload = json.loads(open(path).read())
    payload.pop("meta", None)
    payload.pop("benchmark", None)
    cell = next(c for c in payload["cells"] if c["kind"] == kind and c["sigma"] == sigma)
    t_plain = payload["setup"]["plain_draws"]
    plan = {"none": t_plain}
    for vr, row in cell["methods"].items():
        ratio = row.get("draws_ratio_confirmed")
        if ratio is not None and ratio > 0:
            plan[vr] = valid_draws(int(np.ceil(t_plain / ratio)), vr)
    load_start = os.getloadavg()
    model, w, x, y, _ = reference_problem()
    key = jax.random.key(seed)
    if kind == "hessian":
        sub = jl.hessian_subspace(model, w, x, y, payload["setup"]["d"], key=jax.random.fold_in(key, 1), tol=1e-4)[0]
    else:
        sub = jl.Subspace(w, jl.random_directions(model, w, payload["setup"]["d"], key=jax.random.fold_in(key, 2)))
    run = lambda t, vr, s: jl.delta_monte_carlo(model, sub, x, y, sigma=sigma, num_draws=t, key=jax.random.fold_in(key, s),
                                                samples_per_k=payload["setup"]["batch_size"], variance_reduction=vr)
    res = interleaved_timing(run, plan, repeats)
    for vr, r in res.items():
        print(f"  {vr:14s} T={r['draws']}: {r['wall_s']:.2f} s, time ratio {r['time_ratio']:.2f}", flush=True)
    payload["interleaved"] = {"kind": kind, "sigma": sigma, "repeats": repeats, "methods": res,
                              "definition": "each method at T_eq = T_plain / draws_ratio_confirmed (the plain error), run in "
                                            "A B .. B A order after a compiling call; curvature pass included for cv",
                              "load_average": {"start": load_start, "end": os.getloadavg()}}
    write_result("variance", payload, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=256, help="fixed draws for every method")
    ap.add_argument("--plain-draws", type=int, default=1024)
    ap.add_argument("--sigmas", default="0.1,1,5")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--kinds", default="hessian,random")
    ap.add_argument("--max-eq-draws", type=int, default=4096, help="cap on the rerun at T_eq")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--interleaved", default=None, metavar="RESULT_JSON",
                    help="only add the interleaved timing at sigma = 1, Hessian directions, to this existing result")
    args = ap.parse_args(argv)
    if args.interleaved:
        return add_interleaved(args.interleaved)
    methods = [m for m in args.methods.split(",") if m]
    sigmas = [float(s) for s in args.sigmas.split(",")]
    bs, d = 64, 10

    load_start = os.getloadavg()
    model, w, x, y, info = reference_problem()
    key = jax.random.key(args.seed)
    subspaces = {}
    if "hessian" in args.kinds:
        subspaces["hessian"] = jl.hessian_subspace(model, w, x, y, d, key=jax.random.fold_in(key, 1), tol=1e-4)[0]
    if "random" in args.kinds:
        subspaces["random"] = jl.Subspace(w, jl.random_directions(model, w, d, key=jax.random.fold_in(key, 2)))

    cells = []
    for kind, sub in subspaces.items():
        for sigma in sigmas:
            run = lambda t, vr, s: jl.delta_monte_carlo(model, sub, x, y, sigma=sigma, num_draws=t, key=jax.random.fold_in(key, s),
                                                        samples_per_k=bs, variance_reduction=vr)
            plain, plain_s, plain_c = timed(lambda: run(args.plain_draws, "none", 10))
            se_plain = np.asarray(plain.stderr, np.float64)
            cell = {"kind": kind, "sigma": sigma, "plain": {
                "draws": args.plain_draws, "wall_s": plain_s, "compile_s": plain_c,
                "stderr_median_rel": float(np.median(se_plain / np.abs(np.asarray(plain.delta)))),
                "error_per_second": float(np.median(1 / (se_plain**2 * plain_s))),
            }, "methods": {}}
            print(f"[{kind} sigma={sigma}] plain T={args.plain_draws}: {plain_s:.1f} s (+{plain_c:.1f} s compile), load {os.getloadavg()[0]:.1f}",
                  flush=True)
            for i, vr in enumerate(methods):
                t_fix = valid_draws(args.draws, vr)
                res, wall, comp = timed(lambda: run(t_fix, vr, 20 + i))
                se = np.asarray(res.stderr, np.float64)
                ratio = se_plain**2 * args.plain_draws / (se**2 * t_fix)
                q = np.quantile(ratio, [0.25, 0.5, 0.75])
                t_eq = valid_draws(int(np.ceil(args.plain_draws / q[1])), vr)
                row = {"fixed": {"draws": t_fix, "wall_s": wall, "compile_s": comp,
                                 "stderr_over_plain_median": float(np.median(se / se_plain)),
                                 "effective_draws": res.info.effective_draws},
                       "draws_ratio": {"q25": q[0], "median": q[1], "q75": q[2]}, "eq_draws": t_eq}
                if q[1] > 1 and t_eq <= args.max_eq_draws:
                    eq, eq_wall, eq_comp = timed(lambda: run(t_eq, vr, 40 + i))
                    se_eq = np.asarray(eq.stderr, np.float64)
                    row["to_plain_error"] = {
                        "draws": t_eq, "wall_s": eq_wall, "compile_s": eq_comp, "measured": True,
                        "stderr_over_plain_median": float(np.median(se_eq / se_plain)),
                    }
                else:  # the method does not help: its time at T_eq scales from the fixed run
                    row["to_plain_error"] = {"draws": t_eq, "wall_s": wall * t_eq / t_fix, "measured": False}
                tp = row["to_plain_error"]
                tp["time_ratio"] = plain_s / tp["wall_s"]
                tp["error_per_second"] = float(np.median(1 / (se_plain**2 * tp["wall_s"])))  # at (about) the plain error
                row["draws_ratio_confirmed"] = confirmed_draws_ratio(row, args.plain_draws)
                cell["methods"][vr] = row
                print(f"  {vr:14s} T={t_fix}: draws ratio {q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}] -> T_eq={t_eq}: "
                      f"{tp['wall_s']:.1f} s ({'measured' if tp['measured'] else 'scaled'}), time ratio {tp['time_ratio']:.2f}, "
                      f"SE/SE_plain {tp.get('stderr_over_plain_median', float('nan')):.2f}; load {os.getloadavg()[0]:.1f}", flush=True)
            cells.append(cell)

    payload = {
        "setup": {"model": list(model.sizes), "n": int(x.shape[0]), "batch_size": bs, "d": d, "sigmas": sigmas,
                  "plain_draws": args.plain_draws, "fixed_draws": args.draws, "methods": methods, "seed": args.seed,
                  "scramblings": 16, **info},
        "definitions": {
            "to_plain_error.measured": "true: a rerun at T_eq was timed; false: the fixed run's time scaled by T_eq / T (no gain)",
            "draws_ratio": "per k, (SE_plain^2 * T_plain) / (SE^2 * T): times fewer draws for the same error; quartiles over k",
            "to_plain_error": "a rerun at T_eq = T_plain / median draws_ratio; wall time excludes compilation and includes "
                              "the control variate's curvature pass; time_ratio = plain wall / this wall",
            "error_per_second": "median over k of 1 / (SE^2 * wall seconds)",
            "draws_ratio_confirmed": "T_plain / (T_eq * (SE_eq / SE_plain)^2) from the rerun at T_eq (None when not rerun)",
        },
        "cells": cells,
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }
    write_result("variance", payload, args.out)


if __name__ == "__main__":
    main()
