"""Hessian trace and eigenvalue density on the reference problem: jaxland vs PyHessian, side by side.

    python -m benchmarks.spectrum            # full run (about 20 min on 2 busy CPU cores)
    python -m benchmarks.spectrum --quick    # smaller budgets, a smoke run
    python -m benchmarks.spectrum --choose-d-only   # just the d chosen for the reference model

Same weights and data for both: the reference MLP at w* on 9,984 MNIST images;
PyHessian (``pyhessian`` 0.1, the paper "PyHessian", Yao et al. 2020) runs on the
torch twin (``benchmarks/torch_models.torch_mlp``) with the whole data set as one
batch, 2 torch threads. Every Hessian-vector product is counted (PyHessian's by
wrapping its ``hessian_vector_product``).

* Trace. Reference: a long jaxland Hutch++ run (``--ref-probes`` HVPs). PyHessian
  ``trace(maxIter=M, tol=0)`` (Hutchinson, M probes; ``tol=0`` disables its early
  stop) and with its defaults; jaxland Hutchinson and Hutch++ at several budgets
  (and Hutch++ with ``--trace-batch`` products vmapped). Equal HVPs: the standard
  errors side by side. Equal accuracy (``time_to_equal_stderr``): the HVPs and
  time each estimator needs for PyHessian's standard error, from
  ``SE = c / sqrt(m)`` (PyHessian's ``c`` from the spread of its per-probe
  values), and a jaxland Hutch++ run at its predicted budget, measured.
* Density. PyHessian ``density(iter=S, n_v=P)`` against
  ``spectral_density(num_probes=P, lanczos_steps=S)`` (probes one after another,
  and ``--density-batch`` vmapped): wall time, HVPs, and the moments
  ``trace(H^p)/D`` (p = 1..4) of both quadratures with their Monte Carlo errors.
  Both are the same estimator (Rademacher probes, a Gauss quadrature exact for
  these moments), so the expected error per unit time ratio is the time ratio;
  the measured one (``SE_ph^2 t_ph / (SE_jl^2 t_jl)``) is reported too.
  PyHessian calls ``torch.eig``, which torch removed in 2.0; the benchmark
  supplies it from ``torch.linalg.eigh`` (same eigenpairs of the symmetric T).
* Reference d (``reference_d``): ``choose_d`` on the reference model (top-32
  eigenvalues, a 4 x 100 density for ``tr(H_+)``), with the share of positive
  curvature held by the top 10, ``lambda_min / lambda_max`` and the trace.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import jax
import numpy as np

import jaxland as jl
from jaxland.curvature import spectrum as sp

from .common import RESULTS, reference_problem, write_result


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


def _equal_stderr(runs, base, a, jl_trace, key):
    """HVPs and time each estimator needs for PyHessian's standard error (its fixed-budget run).

    Hutchinson: ``SE = c / sqrt(m)`` exactly, so ``m* = c^2 / SE*^2`` with ``c = SE sqrt(m)``
    (PyHessian's from the spread of its per-probe values). Hutch++ scaled the same
    way from its largest run is optimistic below that budget (a smaller sketch
    leaves more of the top in the stochastic part), so it is also fitted,
    ``log SE = a - alpha log m`` over all its runs (:func:`_fit_hutchpp`), and
    run at the predicted budget and measured. Time = ``m*`` x seconds per HVP.
    """
    target = base["stderr"]
    fams = {"pyhessian_hutchinson": base,
            "jaxland_hutchinson": runs[f"jaxland_hutchinson_{a.probes}"],
            "jaxland_hutchpp": runs[f"jaxland_hutchpp_{a.probes}"]}
    if a.trace_batch > 1:
        fams["jaxland_hutchpp_batched"] = runs[f"jaxland_hutchpp_{a.probes}_batch{a.trace_batch}"]
    out = {"target_stderr": target, "predicted": {}}
    for name, r in fams.items():
        c2 = r["stderr"] ** 2 * r["num_hvps"]
        m = c2 / target**2
        out["predicted"][name] = {"stderr_sqrt_hvps": math.sqrt(c2), "hvps": m, "s_per_hvp": r["wall_s"] / r["num_hvps"],
                                  "wall_s": m * r["wall_s"] / r["num_hvps"]}
    ph = out["predicted"]["pyhessian_hutchinson"]["wall_s"]
    for name, row in out["predicted"].items():
        row["speedup_vs_pyhessian"] = ph / row["wall_s"]
    fast = min((n for n in out["predicted"] if n.startswith("jaxland_hutchpp")), key=lambda n: out["predicted"][n]["s_per_hvp"])
    m = max(6, 3 * math.ceil(out["predicted"][fast]["hvps"] / 3))
    meas = jl_trace("hutch++", m, jax.random.fold_in(key, 5), a.trace_batch if fast.endswith("batched") else 1)
    out["measured_jaxland_hutchpp"] = {**meas, "stderr_over_target": meas["stderr"] / target,
                                       "speedup_vs_pyhessian_fixed": base["wall_s"] / meas["wall_s"]}
    runs = {**runs, "_equal_se_run": meas}
    out["hutchpp_fit"] = _fit_hutchpp(runs, target, ph)
    return out


def _fit_hutchpp(runs, target, pyhessian_wall_s):
    """Power-law fit of Hutch++'s standard error over its unbatched runs; the budget and time for ``target``."""
    pts = [r for r in runs.values() if r.get("method") == "hutch++" and r.get("batch_size", 1) == 1
           and r.get("stochastic_samples", r["num_hvps"] - 2 * (r["num_hvps"] // 3)) >= 10]
    m = np.log([r["num_hvps"] for r in pts])
    se = np.log([r["stderr"] for r in pts])
    slope, icpt = np.polyfit(m, se, 1)
    m_star = float(np.exp((np.log(target) - icpt) / slope))
    s_per_hvp = float(np.median([r["wall_s"] / r["num_hvps"] for r in pts]))
    return {"runs": len(pts), "alpha": float(-slope), "hvps": m_star, "s_per_hvp": s_per_hvp,
            "wall_s": m_star * s_per_hvp, "speedup_vs_pyhessian": pyhessian_wall_s / (m_star * s_per_hvp)}


def reference_d(model, w, x, y, a) -> dict:
    """``choose_d`` on the reference model, with its evidence (top-m eigenvalues, density, trace, both ends)."""
    key = jax.random.key(7)
    kt, kb, kd, kr = jax.random.split(key, 4)
    top, t_top = _timed(lambda: jl.hessian_eigenpairs(model, w, x, y, a.d_top, key=kt, tol=1e-3))
    bot, t_bot = _timed(lambda: jl.bottom_eigenpairs(model, w, x, y, 1, key=kb, tol=1e-3, max_matvecs=150))
    dn, t_dn = _timed(lambda: jl.spectral_density(model, w, x, y, num_probes=a.d_probes, lanczos_steps=a.d_steps,
                                                   key=kd, chunk_size=a.d_probes))
    tr, t_tr = _timed(lambda: jl.hessian_trace(model, w, x, y, num_probes=150, key=kr))
    ev = np.asarray(top.eigenvalues, np.float64)
    lmin, lmax = float(bot.eigenvalues[0]), float(ev[0])
    choices = {}
    for share in (0.5, 0.8, 0.9):
        ch = jl.choose_d(ev, dn, share=share)
        choices[f"{share:g}"] = {"d": ch.d, "reached_by_top_m": ch.d is not None}
    ch = jl.choose_d(ev, dn, share=0.5)
    out = {
        "top_m": a.d_top, "top_eigenvalues": ev.tolist(), "top_converged": bool(top.converged),
        "top_max_relres": float(np.max(np.asarray(top.relative_residuals))),
        "lambda_max": lmax, "lambda_min": lmin, "lambda_min_relres": float(bot.relative_residuals[0]),
        "lambda_min_converged": bool(bot.converged), "min_over_max": lmin / lmax,
        "trace_hutchpp_150": float(tr.trace), "trace_stderr": float(tr.stderr),
        "trace_from_density": dn.dim * jl.density_moments(dn, 1)[0],
        "positive_trace": ch.positive_trace, "positive_trace_stderr": ch.positive_trace_stderr,
        "density": {"probes": a.d_probes, "steps": a.d_steps, "sigma": float(dn.sigma)},
        "share_top10": float(ch.captured[9]), "share_top10_stderr": float(ch.captured_stderr[9]),
        f"share_top{a.d_top}": float(ch.captured[-1]),
        "captured": ch.captured.tolist(),
        "chosen_d": choices, "d_eigengap": ch.d_eigengap,
        "hvps": {"top": int(top.num_matvecs), "bottom": int(bot.num_matvecs), "density": dn.num_matvecs, "trace": 150},
        "wall_s": {"top": t_top, "bottom": t_bot, "density": t_dn, "trace": t_tr},
    }
    print("reference d:", {k: out[k] for k in ("share_top10", "share_top10_stderr", "min_over_max", "trace_hutchpp_150",
                                               "positive_trace", "chosen_d", "d_eigengap")}, flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--probes", type=int, default=99, help="PyHessian trace probes (its default maxIter is 100)")
    p.add_argument("--ref-probes", type=int, default=600, help="HVPs of the reference Hutch++ trace run")
    p.add_argument("--density-probes", type=int, default=4)
    p.add_argument("--density-steps", type=int, default=40, help="Lanczos steps (PyHessian's default iter is 100)")
    p.add_argument("--density-batch", type=int, default=4, help="also time jaxland with this many probes vmapped together")
    p.add_argument("--trace-batch", type=int, default=4, help="also time jaxland Hutch++ with this many products vmapped")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--d-top", type=int, default=32, help="choose_d: top eigenvalues computed")
    p.add_argument("--d-probes", type=int, default=4, help="choose_d: density probes (vmapped together)")
    p.add_argument("--d-steps", type=int, default=100, help="choose_d: Lanczos steps per density probe")
    p.add_argument("--choose-d-only", action="store_true",
                   help="run only choose_d on the reference model and update that section of the existing JSON")
    p.add_argument("--skip-choose-d", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.quick:
        a.probes, a.ref_probes, a.density_probes, a.density_steps, a.density_batch = 30, 90, 2, 20, 2
    load = {"before": os.getloadavg()}

    model, w, x, y, info = reference_problem()
    D = int(w.shape[0])
    if a.choose_d_only:
        path = a.out or RESULTS / "spectrum.json"
        old = json.loads(open(path).read()) if os.path.exists(path) else {}
        old["reference_d"] = reference_d(model, w, x, y, a)
        old["reference_d"]["load_average"] = {"before": load["before"], "after": os.getloadavg()}
        write_result("spectrum", {k: v for k, v in old.items() if k not in ("benchmark", "meta")}, a.out)
        return
    key = jax.random.key(0)
    results = {"trace": {}, "density": {}}

    # ---------------------------------------------------------------- trace
    def jl_trace(method, m, k, bs=1):
        # compile ahead of the timing (a call would run the whole estimate once more)
        t = time.perf_counter()
        sp._trace_jit.lower(jl.hessian_operator(model, w, x, y), k, m, method, bs).compile()
        compile_s = time.perf_counter() - t
        r, dt = _timed(lambda: jax.block_until_ready(
            jl.hessian_trace(model, w, x, y, num_probes=m, key=k, method=method, chunk_size=bs)))
        out = {"method": method, "num_hvps": m, "batch_size": bs, "wall_s": dt, "compile_s": compile_s,
               "trace": float(r.trace), "stderr": float(r.stderr), "stochastic_samples": int(np.size(r.samples))}
        print(f"jaxland {method:10s} {m:4d} HVPs (batch {bs}): {dt:6.1f} s  trace {out['trace']:.2f} +- {out['stderr']:.2f}", flush=True)
        return out

    ref = jl_trace("hutch++", a.ref_probes, jax.random.fold_in(key, 1))
    results["trace"]["reference"] = ref
    budgets = sorted({max(6, a.probes // 5), a.probes // 3, a.probes // 2, a.probes})
    for m in budgets:
        results["trace"][f"jaxland_hutchpp_{m}"] = jl_trace("hutch++", m, jax.random.fold_in(key, 2))
    results["trace"][f"jaxland_hutchinson_{a.probes}"] = jl_trace("hutchinson", a.probes, jax.random.fold_in(key, 3))
    if a.trace_batch > 1:
        results["trace"][f"jaxland_hutchpp_{a.probes}_batch{a.trace_batch}"] = jl_trace(
            "hutch++", a.probes, jax.random.fold_in(key, 2), a.trace_batch)

    H, count = _pyhessian(model, w, x, y, a.threads)
    for name, kw in (("pyhessian_fixed", dict(maxIter=a.probes, tol=0.0)), ("pyhessian_default", {})):
        count[0] = 0
        vals, dt = _timed(lambda: H.trace(**kw))
        mean, se = _stats(vals)
        results["trace"][name] = {"method": "pyhessian_hutchinson", "num_hvps": count[0], "wall_s": dt, "trace": mean,
                                  "stderr": se, "per_probe_sd": float(np.std(vals, ddof=1)), "stochastic_samples": len(vals),
                                  "settings": kw or "maxIter=100, tol=1e-3"}
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
    trace_summary["time_to_equal_stderr"] = _equal_stderr(results["trace"], base, a, jl_trace, key)
    print("trace:", trace_summary, flush=True)

    # ---------------------------------------------------------------- density
    P, S = a.density_probes, a.density_steps
    count[0] = 0
    (ph_nodes, ph_weights), dt = _timed(lambda: H.density(iter=S, n_v=P))
    results["density"]["pyhessian"] = {"num_hvps": count[0], "wall_s": dt, "probes": P, "steps": S,
                                       "moments": _moments(ph_nodes, ph_weights)}
    print(f"pyhessian density {count[0]} HVPs: {dt:.1f} s", flush=True)
    for bs in sorted({1, a.density_batch}):
        kw = dict(num_probes=P, lanczos_steps=S, chunk_size=bs)
        t = time.perf_counter()
        sp._slq_jit.lower(jl.hessian_operator(model, w, x, y), key, P, S, bs).compile()
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
    # Monte Carlo error per unit time, 1 / (SE^2 x wall): the same estimator on both sides (Rademacher
    # probes; a Gauss quadrature exact for these moments), so its expected ratio is the time ratio; the
    # measured one scatters with the SEs' own error (P - 1 degrees of freedom each)
    efficiency = {}
    for q in (1, 2, 3, 4):
        sj, sp_ = fastest["moments"][q][1], pd["moments"][q][1]
        efficiency[q] = (sp_**2 * pd["wall_s"]) / (sj**2 * fastest["wall_s"]) if sj > 0 and math.isfinite(sp_) else None
    density_summary = {"moments_agreement": agree, "trace_from_density_jaxland": D * jd["moments"][1][0],
                       "trace_reference": ref["trace"], "speedup_same_hvps": pd["wall_s"] / fastest["wall_s"],
                       "speedup_same_hvps_unbatched": pd["wall_s"] / jd["wall_s"],
                       "s_per_probe": {"pyhessian": pd["wall_s"] / P, "jaxland_fastest": fastest["wall_s"] / P},
                       "error_per_time_ratio_measured": efficiency,
                       "fastest_jaxland_batch_size": fastest["batch_size"]}
    print("density:", density_summary, flush=True)
    ref_d = None if a.skip_choose_d else reference_d(model, w, x, y, a)
    load["after"] = os.getloadavg()
    previous = None
    if a.out is None and (RESULTS / "spectrum.json").exists():
        old = json.loads((RESULTS / "spectrum.json").read_text())
        previous = {"summary": old.get("summary"), "load_average": old.get("load_average"),
                    "note": "the previous run's equal-HVP comparison (2 density probes x 60 steps, 60 trace probes)"}
    write_result("spectrum", {"previous_run": previous, "problem": {"dim": D, "n": int(x.shape[0]), **info}, "results": results,
                              "summary": {"trace": trace_summary, "density": density_summary},
                              "reference_d": ref_d, "load_average": load, "quick": a.quick}, a.out)


if __name__ == "__main__":
    main()
