"""Hessian trace and eigenvalue density on the reference problem: jaxland vs PyHessian, side by side.

    python -m benchmarks.spectrum            # full run (about 10-15 min on 2 CPU cores)
    python -m benchmarks.spectrum --quick    # smaller budgets, a smoke run

Same weights and data for both: the reference MLP at w* on 9,984 MNIST images;
PyHessian (``pyhessian`` 0.1, the paper "PyHessian", Yao et al. 2020) runs on the
torch twin (``benchmarks/torch_models.torch_mlp``) with the whole data set as one
batch, 2 torch threads. Every Hessian-vector product is counted (PyHessian's by
wrapping its ``hessian_vector_product``).

* Trace. Reference: a long jaxland Hutch++ run (``--ref-probes`` HVPs). PyHessian
  ``trace(maxIter=M, tol=0)`` (Hutchinson, M probes; ``tol=0`` disables its early
  stop) and with its defaults; jaxland Hutchinson and Hutch++ at several budgets.
  Accuracy = standard error (and the error against the reference); the speed
  ratio compares PyHessian with the cheapest jaxland run whose standard error is
  no larger (among runs with at least 10 stochastic samples).
* Density. PyHessian ``density(iter=S, n_v=P)`` against
  ``spectral_density(num_probes=P, lanczos_steps=S)``: wall time, HVPs, and the
  moments ``trace(H^p)/D`` (p = 1..4) of both quadratures with their Monte Carlo
  errors. PyHessian calls ``torch.eig``, which torch removed in 2.0; the benchmark
  supplies it from ``torch.linalg.eigh`` (same eigenpairs of the symmetric T).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import jax
import numpy as np

import jaxland as jl
from jaxland import spectrum as sp

from .common import reference_problem, write_result


def _pyhessian(model, w, x, y, threads):
    import importlib

    import torch

    ph = importlib.import_module("pyhessian.hessian")  # the module (the package re-exports the class under this name)

    from .torch_models import torch_mlp

    torch.set_num_threads(threads)
    if not hasattr(torch, "_eig_removed_shim"):
        def eig(T, eigenvectors=True):  # the removed torch.eig, for a symmetric T: (n, 2) real/imag, vectors
            vals, vecs = torch.linalg.eigh(T)
            return torch.stack([vals, torch.zeros_like(vals)], 1), vecs

        torch.eig = eig
        torch._eig_removed_shim = True
    count = [0]
    hvp = ph.hessian_vector_product

    def counted(gradsH, params, v):
        count[0] += 1
        return hvp(gradsH, params, v)

    ph.hessian_vector_product = counted
    net = torch_mlp(model, w)
    X = torch.from_numpy(np.asarray(x, np.float32))
    Y = torch.from_numpy(np.asarray(y, np.int64))
    torch.manual_seed(0)
    return ph.hessian(net, torch.nn.CrossEntropyLoss(), data=(X, Y), cuda=False), count


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _stats(samples, dim=None):
    s = np.asarray(samples, np.float64)
    return float(s.mean()), float(s.std(ddof=1) / math.sqrt(len(s)))


def _moments(nodes, weights, ps=(1, 2, 3, 4)):
    nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
    out = {}
    for p in ps:
        per = np.sum(weights * nodes**p, axis=1)
        out[p] = (float(per.mean()), float(per.std(ddof=1) / math.sqrt(len(per))) if len(per) > 1 else math.inf)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--probes", type=int, default=100, help="PyHessian trace probes (its default maxIter)")
    p.add_argument("--ref-probes", type=int, default=600, help="HVPs of the reference Hutch++ trace run")
    p.add_argument("--density-probes", type=int, default=2)
    p.add_argument("--density-steps", type=int, default=100, help="Lanczos steps (PyHessian's default iter)")
    p.add_argument("--density-batch", type=int, default=1, help="also time jaxland with this many probes vmapped together")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.quick:
        a.probes, a.ref_probes, a.density_probes, a.density_steps = 30, 90, 1, 30
    load = {"before": os.getloadavg()}

    model, w, x, y, info = reference_problem()
    D = int(w.shape[0])
    key = jax.random.key(0)
    results = {"trace": {}, "density": {}}

    # ---------------------------------------------------------------- trace
    def jl_trace(method, m, k):
        # compile ahead of the timing (a call would run the whole estimate once more)
        t = time.perf_counter()
        sp._trace_jit.lower(model, w, x, y, None, k, m, method, 1).compile()
        compile_s = time.perf_counter() - t
        r, dt = _timed(lambda: jax.block_until_ready(jl.hessian_trace(model, w, x, y, num_probes=m, key=k, method=method)))
        out = {"method": method, "num_hvps": m, "wall_s": dt, "compile_s": compile_s, "trace": float(r.trace), "stderr": float(r.stderr)}
        print(f"jaxland {method:10s} {m:4d} HVPs: {dt:6.1f} s  trace {out['trace']:.2f} +- {out['stderr']:.2f}", flush=True)
        return out

    ref = jl_trace("hutch++", a.ref_probes, jax.random.fold_in(key, 1))
    results["trace"]["reference"] = ref
    budgets = sorted({max(6, a.probes // 5), a.probes // 3, a.probes // 2, a.probes})
    for m in budgets:
        results["trace"][f"jaxland_hutchpp_{m}"] = jl_trace("hutch++", m, jax.random.fold_in(key, 2))
    results["trace"][f"jaxland_hutchinson_{a.probes}"] = jl_trace("hutchinson", a.probes, jax.random.fold_in(key, 3))

    H, count = _pyhessian(model, w, x, y, a.threads)
    for name, kw in (("pyhessian_fixed", dict(maxIter=a.probes, tol=0.0)), ("pyhessian_default", {})):
        count[0] = 0
        vals, dt = _timed(lambda: H.trace(**kw))
        mean, se = _stats(vals)
        results["trace"][name] = {"num_hvps": count[0], "wall_s": dt, "trace": mean, "stderr": se, "settings": kw or "maxIter=100, tol=1e-3"}
        print(f"pyhessian {name:18s} {count[0]:4d} HVPs: {dt:6.1f} s  trace {mean:.2f} +- {se:.2f}", flush=True)
    for r in results["trace"].values():
        r["error_vs_reference"] = r["trace"] - ref["trace"]
        r["error_in_combined_se"] = r["error_vs_reference"] / math.hypot(r["stderr"], ref["stderr"])

    base = results["trace"]["pyhessian_fixed"]
    # a standard error from fewer than 10 stochastic samples is itself too noisy to compare
    enough = lambda r: (r["num_hvps"] - 2 * (r["num_hvps"] // 3) if r["method"] == "hutch++" else r["num_hvps"]) >= 10
    eq = [r for k_, r in results["trace"].items() if k_.startswith("jaxland_") and enough(r) and r["stderr"] <= base["stderr"]]
    best = min(eq, key=lambda r: r["wall_s"]) if eq else None
    same = results["trace"][f"jaxland_hutchpp_{a.probes}"]
    trace_summary = {
        "pyhessian": {k_: base[k_] for k_ in ("num_hvps", "wall_s", "stderr")},
        "jaxland_same_budget": {"method": "hutch++", **{k_: same[k_] for k_ in ("num_hvps", "wall_s", "stderr")},
                                "speedup": base["wall_s"] / same["wall_s"], "stderr_ratio": same["stderr"] / base["stderr"]},
        "jaxland_equal_or_better_stderr": None if best is None else {
            "method": best["method"], "num_hvps": best["num_hvps"], "wall_s": best["wall_s"], "stderr": best["stderr"],
            "speedup": base["wall_s"] / best["wall_s"]},
    }
    print("trace:", trace_summary, flush=True)

    # ---------------------------------------------------------------- density
    P, S = a.density_probes, a.density_steps
    count[0] = 0
    (ph_nodes, ph_weights), dt = _timed(lambda: H.density(iter=S, n_v=P))
    results["density"]["pyhessian"] = {"num_hvps": count[0], "wall_s": dt, "probes": P, "steps": S,
                                       "moments": _moments(ph_nodes, ph_weights)}
    print(f"pyhessian density {count[0]} HVPs: {dt:.1f} s", flush=True)
    for bs in sorted({1, a.density_batch}):
        kw = dict(num_probes=P, lanczos_steps=S, batch_size=bs)
        t = time.perf_counter()
        sp._slq_jit.lower(model, w, x, y, None, key, P, S, bs).compile()
        compile_s = time.perf_counter() - t
        dn, dt = _timed(lambda: jax.block_until_ready(jl.spectral_density(model, w, x, y, key=jax.random.fold_in(key, 4), **kw)))
        results["density"][f"jaxland_batch{bs}"] = {
            "num_hvps": dn.num_matvecs, "wall_s": dt, "compile_s": compile_s, "probes": P, "steps": S, "batch_size": bs,
            "sigma": float(dn.sigma), "moments": _moments(dn.nodes, dn.weights),
            "ritz_min": float(np.min(dn.nodes)), "ritz_max": float(np.max(dn.nodes)),
        }
        print(f"jaxland density batch {bs}: {dn.num_matvecs} HVPs: {dt:.1f} s (compile {compile_s:.1f} s)", flush=True)
    jd = results["density"]["jaxland_batch1"]
    pd = results["density"]["pyhessian"]
    agree = {}
    for q in (1, 2, 3, 4):
        (mj, sj), (mp, sp_) = jd["moments"][q], pd["moments"][q]
        agree[q] = {"jaxland": mj, "jaxland_se": sj, "pyhessian": mp, "pyhessian_se": sp_,
                    "difference_in_combined_se": (mj - mp) / math.hypot(sj, sp_) if math.isfinite(sj + sp_) else None}
    fastest = min((r for k_, r in results["density"].items() if k_.startswith("jaxland")), key=lambda r: r["wall_s"])
    density_summary = {"moments_agreement": agree, "trace_from_density_jaxland": D * jd["moments"][1][0],
                       "trace_reference": ref["trace"], "speedup_same_hvps": pd["wall_s"] / fastest["wall_s"],
                       "fastest_jaxland_batch_size": fastest["batch_size"]}
    print("density:", density_summary, flush=True)
    load["after"] = os.getloadavg()
    write_result("spectrum", {"problem": {"dim": D, "n": int(x.shape[0]), **info}, "results": results,
                              "summary": {"trace": trace_summary, "density": density_summary},
                              "load_average": load, "quick": a.quick}, a.out)


if __name__ == "__main__":
    main()
