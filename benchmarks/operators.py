"""Cost of the curvature operators' products (Hessian, GGN, empirical Fisher) on the reference MLP.

    python -m benchmarks.operators [--n 2048] [--repeats 7] [--baseline 67c6013]

Problem: MLP 784-256-256-10 trained as in :func:`benchmarks.common.reference_problem`
on the first n MNIST images, float32. In one process, every arm timed in turn
within each round (the order rotating from round to round), so that a load
drifting during the run hits all arms alike:

* ``hvp_checked``: ``jl.hvp(model, w, x, y, v)``: builds and checks the Hessian
  operator on every call (data, weights, vector), then one product;
* ``hessian``, ``ggn``, ``fisher``: ``op @ v`` with the operator built once
  (only the vector's shape and dtype are checked per call);
* ``matmat10_*``: ``op.matmat(V)`` on 10 vectors, per vector, all vmapped
  together and (``matmat10_chunk1_*``) one after another (``chunk_size=1``);
* ``eigensolve_top10``: top-10 Lanczos (tol 1e-3, ``jaxland.curvature.eigenpairs``)
  per kind, the solves interleaved in rounds like the products: wall time of
  the compiled solve, products used, wall time per product (the solver's own
  work included).

``--baseline REV``: the same full-data HVP through ``jaxland/curvature/products.py``
and the Hessian eigensolve of ``jaxland/curvature/eigenpairs.py`` as they were at
git revision REV (the code before the operators, where the order was
``hvp(model, w, v, x, y, k)``), imported from ``git show`` into this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import jaxland as jl
from jaxland import curvature as cv

from .common import reference_problem, write_result

ROOT = Path(__file__).resolve().parents[1]


def _baseline_module(rev: str, path: str, name: str, replace=()):
    """``path`` of git revision ``rev`` imported as ``jaxland.curvature.<name>`` (relative imports resolve in the package)."""
    src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for a, b in replace:
        src = src.replace(a, b)
    tmp = Path(tempfile.mkdtemp()) / f"{name}.py"
    tmp.write_text(src)
    spec = importlib.util.spec_from_file_location(f"jaxland.curvature.{name}", tmp)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _rounds(arms: dict, repeats: int) -> dict:
    """Per-arm wall times: each arm once per round, the order rotated every round (after one warm-up each)."""
    for f in arms.values():
        f()
    names, times = list(arms), {n: [] for n in arms}
    for r in range(repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            arms[n]()
            times[n].append(time.perf_counter() - t)
    return {n: {"median_s": float(np.median(ts)), "min_s": float(np.min(ts)), "repeats": repeats} for n, ts in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--baseline", default=None, help="git revision whose products.py / eigenpairs.py to time beside")
    p.add_argument("--skip-eig", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    model, w, x, y, info = reference_problem(a.n)
    key = jax.random.key(0)
    v = jax.random.normal(jax.random.fold_in(key, 1), w.shape, w.dtype)
    V = jax.random.normal(jax.random.fold_in(key, 2), (10, w.size), w.dtype)
    ops = {kind: cv.curvature_operator(model, w, x, y, kind=kind) for kind in cv.KINDS}
    block = jax.block_until_ready
    load = {"before": os.getloadavg()}

    arms = {"hvp_checked": lambda: block(jl.hvp(model, w, x, y, v))}
    arms.update({kind: (lambda op=op: block(op @ v)) for kind, op in ops.items()})
    arms.update({f"matmat10_{kind}": (lambda op=op: block(op.matmat(V))) for kind, op in ops.items()})
    arms.update({f"matmat10_chunk1_{kind}": (lambda op=op: block(op.matmat(V, chunk_size=1))) for kind, op in ops.items()})
    old = None
    if a.baseline:
        old = _baseline_module(a.baseline, "jaxland/curvature/products.py", "_baseline_products")
        arms["baseline_hvp_checked"] = lambda: block(old.hvp(model, w, v, x, y))
        arms["baseline_hvp_kernel"] = lambda: block(old._hvp(model, w, v, x, y, None))
    t = _rounds(arms, a.repeats)
    for kind in cv.KINDS:
        for arm in (f"matmat10_{kind}", f"matmat10_chunk1_{kind}"):
            t[arm]["per_vector_s"] = t[arm]["median_s"] / 10
    hv = t["hessian"]["median_s"]
    summary = {
        "hvp_ms": {"op @ v": 1e3 * hv, "jl.hvp (checks every call)": 1e3 * t["hvp_checked"]["median_s"]},
        "relative_to_hessian_product": {kind: t[kind]["median_s"] / hv for kind in cv.KINDS},
        "matmat_per_vector_relative_to_hessian_product": {k: t[f"matmat10_{k}"]["per_vector_s"] / hv for k in cv.KINDS},
        "matmat_chunk1_per_vector_relative_to_hessian_product": {
            k: t[f"matmat10_chunk1_{k}"]["per_vector_s"] / hv for k in cv.KINDS},
        # reference MLP forward pass: 2 * n * (784*256 + 256*256 + 256*10) FLOPs; a product is a small multiple of it
        "forward_gflop": 2 * a.n * (784 * 256 + 256 * 256 + 256 * 10) / 1e9,
    }
    if old is not None:
        summary["baseline"] = {"revision": a.baseline,
                               "hvp_checked_ms": 1e3 * t["baseline_hvp_checked"]["median_s"],
                               "hvp_kernel_ms": 1e3 * t["baseline_hvp_kernel"]["median_s"],
                               "op_over_baseline_checked": hv / t["baseline_hvp_checked"]["median_s"],
                               "op_over_baseline_kernel": hv / t["baseline_hvp_kernel"]["median_s"]}
    for name, r in t.items():
        print(f"{name:22s} median {1e3 * r['median_s']:8.1f} ms   min {1e3 * r['min_s']:8.1f} ms", flush=True)

    eig = {}
    if not a.skip_eig:
        solves = {kind: (lambda op=op: cv.eigenpairs(op, 10, key=key)) for kind, op in ops.items()}
        if old is not None:
            old_eig = _baseline_module(a.baseline, "jaxland/curvature/eigenpairs.py", "_baseline_eigenpairs",
                                       replace=[("from .products import", "from ._baseline_products import")])
            solves["baseline_hessian"] = lambda: old_eig.hessian_eigenpairs(model, w, x, y, 10, key=key)
        first, results = {}, {}
        for name, f in solves.items():
            tc = time.perf_counter()
            results[name] = block(f())  # first call: compile and run
            first[name] = time.perf_counter() - tc
        tt = _rounds({name: (lambda f=f: block(f())) for name, f in solves.items()}, max(2, a.repeats // 3))
        for name, res in results.items():
            n_mv = int(res.num_matvecs)
            eig[name] = {"first_call_s": first[name], "wall_s": tt[name]["median_s"], "min_s": tt[name]["min_s"],
                         "num_matvecs": n_mv, "per_product_ms": 1e3 * tt[name]["median_s"] / n_mv,
                         "converged": bool(res.converged), "lambda_max": float(res.eigenvalues[0])}
            print(f"eig {name:16s} {tt[name]['median_s']:6.2f} s, {n_mv} products ({eig[name]['per_product_ms']:.1f} ms each), "
                  f"first call {first[name]:.1f} s, lambda_max {eig[name]['lambda_max']:.4g}", flush=True)
    load["after"] = os.getloadavg()
    print(summary, flush=True)
    write_result("operators", {"problem": {"model": "784-256-256-10", "n": a.n, "dtype": str(w.dtype), **info},
                               "timings": t, "summary": summary, "eigensolve_top10": eig, "load_average": load}, a.out)


if __name__ == "__main__":
    main()
