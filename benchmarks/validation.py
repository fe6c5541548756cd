"""Cost of the input checks and finite-result guards on the reference problem.

Reference setup (docs/reference.md): MLP 784-256-256-10 trained on 9,984 MNIST
images; ``delta_monte_carlo`` with d = 10 random directions (filter-normalised),
sigma = 1, T = 256 draws, k in batches of 64. In one process, in A B B A
order so that the machine's load hits both alike:

* ``checked``: the public call as shipped;
* ``unchecked``: the same call with every check it makes (``check_sigma``,
  ``check_subspace``, ``check_data``, ``num_groups``, ``finite_result``)
  replaced by a pass-through;
* ``checks_alone``: those checks by themselves on the same arguments, the
  direct measure of the overhead (a difference of two noisy wall times is
  not); likewise for one full-data HVP (``jl.hvp``), the smallest public call.

    python -m benchmarks.validation [--draws 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import jax
import numpy as np

import jaxland as jl
import jaxland.landscape.montecarlo as montecarlo_module
import jaxland.curvature.operators as operators_module
import jaxland.curvature.products as curvature_module
from jaxland import validate
from benchmarks.common import block, reference_problem, write_result

# every name delta_monte_carlo's module bound from jaxland.validate, and what skipping it returns
_MC_CHECKS = {
    "check_sigma": lambda sigma: float(sigma),
    "check_subspace": lambda model, sub, **kw: int(sub.directions.shape[0]),
    "check_data": lambda model, x, y, **kw: int(x.shape[0]),
    "num_groups": lambda n, b: n if b is None else n // int(b),
    "finite_result": lambda name, value, **kw: value,
}
_HVP_CHECKS = {
    "check_data": _MC_CHECKS["check_data"],
    "check_params": lambda model, w, name="w", **kw: w,
    "check_vectors": lambda model, v, name="v", **kw: v,
    "check_prefix": lambda k, n, name="k": k,
}


@contextlib.contextmanager
def unchecked(modules, names: dict):
    """The checks ``names`` bound in each of ``modules`` (a module or a tuple of them) replaced by pass-throughs."""
    modules = modules if isinstance(modules, tuple) else (modules,)
    saved = [(m, n, getattr(m, n)) for m in modules for n in names if hasattr(m, n)]
    try:
        for m, n, _ in saved:
            setattr(m, n, names[n])
        yield
    finally:
        for m, n, f in saved:
            setattr(m, n, f)


def _median(ts):
    return float(np.median(ts))


def _abba(call, module, checks, rounds: int) -> tuple[list, list]:
    """Wall times of ``call`` with its checks (on) and without (off), in A B B A order.

    The order alternates each round so that a load drifting during the run hits both arms alike.
    """
    on, off = [], []
    arms = ((contextlib.nullcontext, on), (lambda: unchecked(module, checks), off))
    for r in range(rounds):
        for ctx, ts in (arms if r % 2 == 0 else arms[::-1]):
            with ctx():
                t = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t)
    return on, off


def _alone(checks, repeats: int = 20) -> list:
    """Wall times of the checks by themselves (after one warm-up call)."""
    checks()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        checks()
        ts.append(time.perf_counter() - t)
    return ts


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=256)
    p.add_argument("--rounds", type=int, default=6, help="checked/unchecked pairs, in A B B A order")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    model, w, x, y, info = reference_problem()
    key = jax.random.key(0)
    sub = jl.Subspace(w, jl.random_directions(model, w, 10, key=jax.random.fold_in(key, 1)))
    kw = dict(sigma=1.0, num_draws=args.draws, key=jax.random.fold_in(key, 2), batch_size=64)
    run = lambda: block(jl.delta_monte_carlo(model, sub, x, y, **kw).delta)

    t = time.perf_counter()
    ref = np.asarray(run())  # compile
    compile_s = time.perf_counter() - t
    with unchecked(montecarlo_module, _MC_CHECKS):
        same = np.array_equal(np.asarray(run()), ref)  # the same program: only the checks differ
    on, off = _abba(run, montecarlo_module, _MC_CHECKS, args.rounds)

    def mc_checks():
        validate.check_sigma(1.0)
        validate.check_subspace(model, sub)
        n = validate.check_data(model, x, y)
        validate.num_groups(n, 64)
        validate.finite_result("Delta_k", (ref, ref))

    alone = _alone(mc_checks)

    # one full-data HVP: the smallest public call, where the checks weigh most
    v = jax.random.normal(jax.random.fold_in(key, 3), w.shape, w.dtype)
    hv = lambda: block(jl.hvp(model, w, x, y, v))
    hv()
    # hvp checks the vector itself and the data through the operator it builds
    hvp_on, hvp_off = _abba(hv, (curvature_module, operators_module), _HVP_CHECKS, args.rounds * 2)

    def hvp_checks():
        n = validate.check_data(model, x, y, min_samples=1)
        validate.check_params(model, w)
        validate.check_vectors(model, v, "v", like=w)
        validate.check_prefix(None, n)

    hvp_alone = _alone(hvp_checks)

    payload = {
        "setup": {
            "problem": "MLP 784-256-256-10, 9,984 MNIST images, w* cached (Adam 1e-3, batch 64, 10 epochs, seed 0)",
            "delta": f"delta_monte_carlo, d=10 random directions, sigma=1, T={args.draws}, batch_size=64 (k in batches)",
            "arms": "checked / unchecked (checks replaced by pass-throughs) in A B B A order, one process",
            **info,
        },
        "delta_monte_carlo": {
            "compile_s": compile_s,
            "checked_median_s": _median(on),
            "unchecked_median_s": _median(off),
            "checked_s": on,
            "unchecked_s": off,
            "ratio_checked_over_unchecked": _median(on) / _median(off),
            "pairwise_ratio_median": _median(np.asarray(on) / np.asarray(off)),
            "checks_alone_median_s": _median(alone),
            "checks_share_of_run": _median(alone) / _median(off),
            "same_result_without_checks": bool(same),
        },
        "hvp_full_data": {
            "checked_median_s": _median(hvp_on),
            "unchecked_median_s": _median(hvp_off),
            "ratio_checked_over_unchecked": _median(hvp_on) / _median(hvp_off),
            "checks_alone_median_s": _median(hvp_alone),
            "checks_share_of_call": _median(hvp_alone) / _median(hvp_off),
        },
        "target": "checks < 2% of a Delta_k run",
        "load_average": os.getloadavg(),
    }
    write_result("validation", payload, args.out)
    d, h = payload["delta_monte_carlo"], payload["hvp_full_data"]
    print(f"Delta_k run {d['unchecked_median_s']:.3f} s; checks alone {d['checks_alone_median_s'] * 1e3:.2f} ms "
          f"({100 * d['checks_share_of_run']:.2f}%); checked/unchecked {d['ratio_checked_over_unchecked']:.3f}")
    print(f"HVP {h['unchecked_median_s'] * 1e3:.1f} ms; checks alone {h['checks_alone_median_s'] * 1e3:.2f} ms "
          f"({100 * h['checks_share_of_call']:.2f}%); checked/unchecked {h['ratio_checked_over_unchecked']:.3f}")


if __name__ == "__main__":
    main()
