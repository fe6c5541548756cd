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

Wall times exclude compilation: every call's tracing, lowering and XLA
compile durations are collected with ``jax.monitoring`` and subtracted
(``compile_s`` is reported beside). Standard errors from S = 16 Sobol'
scramblings have 15 degrees of freedom, so a single ratio per k is noisy;
the median over the 155 k is not.

    python -m benchmarks.variance [--draws 256] [--sigmas 0.1,1,5] [--methods none,cv,...]
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
    args = ap.parse_args(argv)
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
                                                        batch_size=bs, variance_reduction=vr)
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
