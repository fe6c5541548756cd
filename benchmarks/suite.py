"""One command that measures jaxland on whatever device JAX sees (CPU, GPU, TPU) and writes one JSON.

    python -m benchmarks.suite [--size small|paper|tiny] [--out FILE] [--torch/--no-torch]

On a machine with JAX (and optionally torch) preinstalled and no network, run it
from the repository root as ``PYTHONPATH=. python -m benchmarks.suite --size paper``.
Default output: ``benchmarks/results/suite-<backend>-<size>.json`` (e.g.
``suite-gpu-paper.json``). Sizes: ``paper`` is the papers' configuration
(MLP 784-256-256-10 trained on N = 9,984 MNIST images, d = 10, T = 1,024,
every k in batches of 64), ``small`` the same MLP on N = 1,024 and T = 128
(under 2 minutes on a 2-core CPU), ``tiny`` a 784-32-32-10 MLP for smoke tests.

Measured, in one process, side by side with the baselines:

1. one full-data HVP ``H v`` (jit, warm median) and loss+grad for the ratio; the
   torch double-backward twin on the same weights, data and ``v``
   (:func:`benchmarks.hvp.torch_hvp_time`), with its relative difference;
2. top-10 Hessian eigenpairs (:func:`jaxland.hessian_eigenpairs`, Lanczos,
   tol 1e-3): first call (compile + run) and warm time, HVPs used, and the max
   relative residual ``||H v - lambda v|| / |lambda|`` recomputed independently
   (:func:`benchmarks.eigensolvers.verify`);
3. Monte Carlo ``Delta_k`` for every k (:func:`jaxland.delta_monte_carlo`, one
   device, draws shared) in float32 and with bf16 matmuls: time, draws per
   second, and the kernel's FLOP rate (contractions counted from the layer
   sizes, :func:`benchmarks.scaling.kernel_flops`) as a fraction of a plain
   ``jnp`` matmul of the kernel's dominant shapes in the same dtype
   (:func:`benchmarks.scaling.dominant_matmuls`), timed in interleaved rounds;
   the bf16 curve's deviation from float32 in Monte Carlo standard errors;
4. the torch per-draw baseline of the original procedure
   (:mod:`benchmarks.torch_delta`) on the first ``torch_draws`` draws, its
   ms per draw against jaxland's, and the agreement of the two curves on those draws.

Torch runs on CUDA when JAX's backend is the GPU and torch sees one, else on
CPU; without torch (or with ``--no-torch``) the baselines are skipped and the
JSON says why. Every timing blocks on the device result (``block_until_ready``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from benchmarks.common import RESULTS, data_dir, reference_problem, timeit, write_result
from benchmarks.eigensolvers import verify
from benchmarks.hvp import torch_hvp_time
from benchmarks.scaling import dominant_matmuls, kernel_flops


class Size(NamedTuple):
    """Problem and effort of one suite run (every field is recorded in the JSON)."""

    name: str
    n: int  # training samples = data of every estimate
    hidden: tuple  # hidden widths of the 784-...-10 MLP
    epochs: int  # Adam 1e-3, batch 64
    draws: int  # Monte Carlo T
    torch_draws: int  # draws for the torch per-draw baseline
    repeats: int  # warm timings (median) / interleaved Delta_k rounds (min for the fraction)
    d: int = 10
    batch_size: int = 64
    sigma: float = 1.0
    chunk: int = 16  # draws per vmapped kernel step (the library default)
    sample_block: int = 512  # samples per kernel block (the library default)


SIZES = {
    "paper": Size("paper", 9984, (256, 256), 10, 1024, 64, 3),
    "small": Size("small", 1024, (256, 256), 10, 128, 16, 2),
    "tiny": Size("tiny", 512, (32, 32), 2, 64, 4, 1, sample_block=128),
}


def problem(size: Size):
    """(model, w*, x, y, info): the MLP trained on the first ``size.n`` MNIST images (weights cached)."""
    if tuple(size.hidden) == jl.reference_mlp().sizes[1:-1]:
        return reference_problem(size.n, epochs=size.epochs)
    folder, how = data_dir()
    ds = jl.load_dataset("mnist", limit=size.n, data_dir=folder) if folder else jl.load_dataset("mnist_10k", limit=size.n)
    model = jl.MLPConfig((784, *size.hidden, 10))
    res = jl.cached_train(model, ds.x, ds.y, key=jax.random.key(0), data_tag=f"mnist/train/{size.n}/standard", epochs=size.epochs, progress=False)
    return model, res.params, jnp.asarray(ds.x), jnp.asarray(ds.y), {"data_source": ds.source, "data_dir": folder, "data_dir_from": how, "train_accuracy": res.train_accuracy}


def _jaxlib_version():
    try:
        import jaxlib

        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


def device_info() -> dict:
    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "platform": dev.platform, "device_kind": dev.device_kind,
            "count": jax.device_count(), "local_count": jax.local_device_count(), "process_count": jax.process_count(),
            "default_matmul_precision": str(jax.config.jax_default_matmul_precision)}


def load_torch(enabled: bool):
    """(torch module or None, device string or None, reason when skipped)."""
    if not enabled:
        return None, None, "disabled (--no-torch)"
    try:
        import torch
    except ImportError as e:  # the bench extra is optional
        return None, None, f"torch not importable ({e})"
    dev = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    return torch, dev, None


def thread_counts(torch_dev) -> list:
    """CPU torch gets its best of 1 thread and its default: OpenMP spin-waits collapse on a shared, busy CPU."""
    import torch

    return [None] if torch_dev != "cpu" else sorted({1, torch.get_num_threads()})


@contextlib.contextmanager
def torch_threads(n):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def warm_and_first(fn, repeats: int) -> dict:
    """First call (compile + run) and the warm median/min of ``fn()`` (which blocks on its result)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    return {"first_call_s": first, **timeit(fn, repeats=repeats, warmup=0)}, out


# ----------------------------------------------------------------------------- parts


def measure_hvp(model, w, x, y, size, torch_dev):
    v = jax.random.normal(jax.random.key(1), w.shape, w.dtype)
    th, hv = warm_and_first(lambda: jax.block_until_ready(jl.hvp(model, w, x, y, v)), size.repeats)
    tl, _ = warm_and_first(lambda: jax.block_until_ready(jl.loss_and_grad(model, w, x, y)), size.repeats)
    out = {"n": int(x.shape[0]), "num_params": int(model.num_params), "hvp": th, "loss_grad": tl,
           "hvp_s": th["median_s"], "hvp_over_loss_grad": th["median_s"] / tl["median_s"]}
    if torch_dev is not None:
        from benchmarks.torch_models import flat_to_torch_order

        by_threads = {}
        for nt in thread_counts(torch_dev):
            with torch_threads(nt):
                by_threads[nt] = torch_hvp_time(model, w, x, y, v, size.repeats, device=torch_dev)
        best = min(by_threads, key=lambda nt: by_threads[nt][0]["median_s"])
        tt, ref = by_threads[best]
        ours = np.concatenate([a.ravel() for a in flat_to_torch_order(model, hv)])
        out["torch"] = {"double_backward_hvp": tt, "hvp_s": tt["median_s"], "device": torch_dev, "threads": best,
                        "hvp_s_by_threads": {str(k): v[0]["median_s"] for k, v in by_threads.items()},
                        "max_rel_diff": float(np.abs(ours - ref).max() / np.abs(ref).max())}
    return out


def measure_eigen(model, w, x, y, size):
    key = jax.random.key(2)
    t, res = warm_and_first(lambda: jax.block_until_ready(jl.hessian_eigenpairs(model, w, x, y, size.d, key=key)), 1)
    check = verify(model, w, x, y, res.eigenvalues, res.eigenvectors)
    return {"method": "lanczos", "tol": 1e-3, "d": size.d, "time": t, "wall_s": t["median_s"],
            "num_hvps": int(res.num_matvecs), "converged": bool(res.converged),
            "solver_max_relres": float(np.max(np.asarray(res.relative_residuals))),
            "verified_max_relres": check["max_relres"], "eigenvalues": np.asarray(res.eigenvalues).tolist()}, res


def _blocked_reps(f, reps):
    # dispatch `reps` calls back to back and block once: on an accelerator this times the device, not the launch
    return lambda: jax.block_until_ready([f() for _ in range(reps)])


def _reps_for(f, target_s: float = 0.2) -> int:
    jax.block_until_ready(f())
    t0 = time.perf_counter()
    jax.block_until_ready(f())
    return int(np.clip(target_s / max(time.perf_counter() - t0, 1e-6), 5, 2000))


def measure_delta(model, sub, x, y, size):
    """Delta_k in float32 and bf16 on the same draws, and the matmul ceiling of each dtype, interleaved."""
    n, t = int(x.shape[0]), size.draws
    thetas = jl.draw_thetas(jax.random.key(3), t, size.d, size.sigma)
    blk = min(size.sample_block, n)
    flops = kernel_flops(model.sizes, size.d, n, t, blk)
    dtypes = {"float32": None, "bf16": "bf16"}

    def mc(dt, th=thetas):
        return jl.delta_monte_carlo(model, sub, x, y, sigma=size.sigma, thetas=th, samples_per_k=size.batch_size,
                                    chunk_size=size.chunk, sample_block=blk, mesh=1, matmul_dtype=dt)

    fns, firsts, results = {}, {}, {}
    for name, dt in dtypes.items():
        t0 = time.perf_counter()
        results[name] = mc(dt)
        jax.block_until_ready(results[name].delta)
        firsts[name] = time.perf_counter() - t0
        fns[f"delta_{name}"] = lambda dt=dt: jax.block_until_ready(mc(dt).delta)
        mms, mm_flops = dominant_matmuls(model.sizes, size.chunk, blk, jnp.bfloat16 if dt else None)
        for kind, f in mms.items():
            reps = _reps_for(f)
            fns[f"matmul_{kind}_{name}"] = _blocked_reps(f, reps)
            fns[f"matmul_{kind}_{name}"].flops = mm_flops * reps
    times = {k: [] for k in fns}
    for _ in range(max(size.repeats, 1)):  # interleaved rounds: every figure sees the same load
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    out = {"n": n, "draws": t, "d": size.d, "sigma": size.sigma, "batch_size": size.batch_size, "num_k": int(len(results["float32"].k)),
           "chunk": size.chunk, "sample_block": blk, "devices_used": 1, "kernel_flops": flops}
    for name in dtypes:
        tm = times[f"delta_{name}"]
        ceil = {kind: fns[f"matmul_{kind}_{name}"].flops / min(times[f"matmul_{kind}_{name}"]) / 1e9 for kind in ("batched", "2d")}
        gflops = flops / min(tm) / 1e9
        out[name] = {"first_call_s": firsts[name], "times_s": tm, "median_s": float(np.median(tm)), "min_s": float(min(tm)),
                     "draws_per_s": t / float(np.median(tm)), "kernel_gflops": gflops,
                     "matmul_gflops": ceil, "ceiling_gflops": max(ceil.values()), "fraction_of_matmul": gflops / max(ceil.values())}
    a, b, se = (np.asarray(v) for v in (results["float32"].delta, results["bf16"].delta, results["float32"].stderr))
    out["bf16_vs_float32"] = {"max_abs_diff_over_se": float(np.max(np.abs(b - a) / se)), "max_rel_diff": float(np.max(np.abs(b - a) / np.abs(a))),
                              "time_ratio": out["bf16"]["median_s"] / out["float32"]["median_s"]}
    out["note"] = ("time = whole delta_monte_carlo call on one device (median of interleaved rounds); fraction = kernel "
                   "contraction FLOPs / min time against the faster of a batched and a 2-D matmul of the kernel's "
                   "dominant shape in the same dtype, min over the same rounds; elementwise work not counted")
    return out, thetas, results["float32"]


def measure_torch_delta(model, w, sub, x, y, thetas, size, torch_dev):
    from benchmarks import torch_delta

    bd = min(size.torch_draws, size.draws)
    th, w_np = np.asarray(thetas[:bd]), np.asarray(w)
    probe = {}
    for nt in thread_counts(torch_dev):
        with torch_threads(nt):
            probe[nt] = torch_delta.run(model, w_np, sub.directions, th[:2], x, y, batch_size=size.batch_size, device=torch_dev)["wall_s"] / 2
    best = min(probe, key=probe.get)
    with torch_threads(best):
        tr = torch_delta.run(model, w_np, sub.directions, th, x, y, batch_size=size.batch_size, device=torch_dev)
    ours = jl.delta_monte_carlo(model, sub, x, y, sigma=size.sigma, thetas=thetas[:bd], samples_per_k=size.batch_size, mesh=1)
    comb = np.sqrt(np.asarray(ours.stderr) ** 2 + tr["stderr"] ** 2)
    z = np.abs(np.asarray(ours.delta) - tr["delta"]) / comb
    return {"draws": bd, "wall_s": tr["wall_s"], "ms_per_draw": 1e3 * tr["wall_s"] / bd, "device": torch_dev,
            "torch_threads": tr["torch_threads"], "probe_ms_per_draw_by_threads": {str(k): 1e3 * v for k, v in probe.items()},
            "max_abs_diff_over_combined_se": float(z.max()),
            "procedure": "per draw: deep-copy, perturb along all d directions, DataLoader in batches (benchmarks/torch_delta.py)"}


# ----------------------------------------------------------------------------- driver


def run_suite(size: Size | str = "small", *, use_torch: bool = True, out: str | Path | None = None, write: bool = True) -> dict:
    """Run every measurement at ``size``; write the JSON (default ``benchmarks/results/suite-<backend>-<size>.json``)."""
    if isinstance(size, str):
        if size not in SIZES:
            raise jl.ConfigError(f"size must be one of {sorted(SIZES)}, got {size!r}; pass a Size for a custom one")
        size = SIZES[size]
    t_start, load_start = time.perf_counter(), os.getloadavg()
    torch, torch_dev, torch_skip = load_torch(use_torch)
    model, w, x, y, info = problem(size)
    print(f"suite {size.name}: {model.name}, N = {x.shape[0]}, backend {jax.default_backend()} "
          f"({jax.devices()[0].device_kind}), torch {torch_dev or torch_skip}", flush=True)

    payload = {"size": size.name, "config": {**size._asdict(), "hidden": list(size.hidden)}, "device": device_info(),
               "problem": {"model": list(model.sizes), "num_params": int(model.num_params), "n": int(x.shape[0]), **info}}
    parts = payload["part_wall_s"] = {"problem": time.perf_counter() - t_start}
    t0 = time.perf_counter()
    payload["hvp"] = measure_hvp(model, w, x, y, size, torch_dev)
    parts["hvp"], t0 = time.perf_counter() - t0, time.perf_counter()
    print(f"  hvp {1e3 * payload['hvp']['hvp_s']:.1f} ms", flush=True)
    payload["eigenpairs"], eig = measure_eigen(model, w, x, y, size)
    parts["eigenpairs"], t0 = time.perf_counter() - t0, time.perf_counter()
    print(f"  top-{size.d} eigenpairs {payload['eigenpairs']['wall_s']:.2f} s", flush=True)
    sub = jl.Subspace(w, eig.eigenvectors)
    payload["delta"], thetas, _ = measure_delta(model, sub, x, y, size)
    parts["delta"], t0 = time.perf_counter() - t0, time.perf_counter()
    print(f"  delta_k f32 {payload['delta']['float32']['median_s']:.2f} s, bf16 {payload['delta']['bf16']['median_s']:.2f} s", flush=True)
    if torch_dev is not None:
        payload["torch_delta"] = measure_torch_delta(model, w, sub, x, y, thetas, size, torch_dev)
        payload["torch"] = {"version": torch.__version__, "device": torch_dev, "threads": torch.get_num_threads()}
        parts["torch_delta"] = time.perf_counter() - t0
    else:
        payload["torch"] = {"skipped": torch_skip}

    h, dl = payload["hvp"], payload["delta"]
    ratios = {"hvp_over_loss_grad": h["hvp_over_loss_grad"], "delta_bf16_time_over_float32": dl["bf16_vs_float32"]["time_ratio"]}
    if torch_dev is not None:
        ratios["hvp_torch_over_jaxland"] = h["torch"]["hvp_s"] / h["hvp_s"]
        ratios["delta_torch_per_draw_over_jaxland_float32"] = payload["torch_delta"]["ms_per_draw"] / (1e3 / dl["float32"]["draws_per_s"])
    payload["ratios"] = ratios
    payload["versions"] = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": _jaxlib_version(),
                           "numpy": np.__version__, "torch": torch.__version__ if torch is not None else None}
    payload["load_average"] = {"start": load_start, "end": os.getloadavg(), "cpus": os.cpu_count()}
    payload["wall_s"] = time.perf_counter() - t_start
    if write:
        name = f"suite-{jax.default_backend()}-{size.name}"
        payload["path"] = str(write_result(name, payload, out if out else RESULTS / f"{name}.json"))
    return payload


def table(p: dict) -> str:
    """The figures as a plain-text table: measurement, jaxland, baseline, ratio."""
    h, e, dl = p["hvp"], p["eigenpairs"], p["delta"]
    tdl = p.get("torch_delta")
    rows = [("full-data HVP", f"{1e3 * h['hvp_s']:.1f} ms", f"torch {1e3 * h['torch']['hvp_s']:.1f} ms" if "torch" in h else "-",
             f"{p['ratios']['hvp_torch_over_jaxland']:.2f}x" if "torch" in h else "-"),
            ("loss+grad", f"{1e3 * h['loss_grad']['median_s']:.1f} ms", "", f"HVP/it {h['hvp_over_loss_grad']:.2f}"),
            (f"top-{e['d']} eigenpairs", f"{e['wall_s']:.2f} s, {e['num_hvps']} HVPs", f"max rel. res. {e['verified_max_relres']:.1e}", "")]
    for name in ("float32", "bf16"):
        r = dl[name]
        rows.append((f"Delta_k {name} (T={dl['draws']}, {dl['num_k']} k)", f"{r['median_s']:.2f} s, {r['draws_per_s']:.0f} draws/s",
                     f"matmul {r['ceiling_gflops']:.0f} GFLOP/s", f"{100 * r['fraction_of_matmul']:.0f}% ({r['kernel_gflops']:.0f} GFLOP/s)"))
    rows.append(("bf16 vs float32", f"max |diff|/SE {dl['bf16_vs_float32']['max_abs_diff_over_se']:.3f}", "", f"time {dl['bf16_vs_float32']['time_ratio']:.2f}x"))
    if tdl:
        jms = 1e3 / dl["float32"]["draws_per_s"]
        rows.append(("Delta_k per draw", f"{jms:.2f} ms", f"torch {tdl['ms_per_draw']:.1f} ms ({tdl['draws']} draws)",
                     f"{p['ratios']['delta_torch_per_draw_over_jaxland_float32']:.1f}x"))
    else:
        rows.append(("torch baselines", "skipped", p["torch"]["skipped"], ""))
    widths = [max(len(r[i]) for r in rows + [("measurement", "jaxland", "baseline", "ratio")]) for i in range(4)]
    fmt = lambda r: "  ".join(c.ljust(wd) for c, wd in zip(r, widths))
    d = p["device"]
    head = f"jaxland suite, size {p['size']}, {d['backend']} ({d['device_kind']} x{d['count']}), load {p['load_average']['start'][0]:.1f}, {p['wall_s']:.0f} s"
    return "\n".join([head, fmt(("measurement", "jaxland", "baseline", "ratio")), fmt(tuple("-" * wd for wd in widths))] + [fmt(r) for r in rows])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/suite-<backend>-<size>.json)")
    ap.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True, help="run the torch baselines when torch is importable")
    ap.add_argument("--chunk", type=int, default=None, help="draws per kernel step (default 16)")
    ap.add_argument("--sample-block", type=int, default=None, help="samples per kernel block (default 512)")
    args = ap.parse_args(argv)
    size = SIZES[args.size]
    size = size._replace(chunk=args.chunk or size.chunk, sample_block=args.sample_block or size.sample_block)
    payload = run_suite(size, use_torch=args.torch, out=args.out)
    print(table(payload))
    return payload


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
