"""Per-architecture cost: jaxland against the PyTorch twin and PyHessian, side by side in one process.

Architectures: ``mlp`` (the reference 784-256-256-10), ``lenet5``, ``resnet``,
``vit`` (defaults of :func:`jaxland.build_model`) and ``linen_cnn`` (a
26,698-parameter Linen CNN written like the Flax MNIST example, two 3x3 convs
with average pooling and two dense layers, passed as a pure function with
``jl.as_model(apply_fn, params=)``). Each is trained (Adam 1e-3, batch 64,
``--epochs``, cached) on the first ``n`` MNIST images; d = 10 top Hessian
directions. Parts (``--parts``):

1. ``hvp``: one full-data HVP, jaxland ``jl.hvp`` (jitted, median of repeats)
   against torch double backward on the twin (:mod:`benchmarks.torch_models`),
   with the relative difference of the two products.
2. ``spectrum`` (on the first ``spectrum_samples`` images): a standalone HVP;
   top-10 eigenpairs by ``jl.hessian_eigenpairs`` (Lanczos, ``loop="auto"``;
   warm call timed: seconds, products, worst relative residual) and the
   product inside the solver (seconds / products) against the standalone one;
   for a model with a convolution also the compiled loop's product (an AOT-compiled
   Lanczos of 4 products: the in-loop penalty this work removes); PyHessian's
   top-10 (power iteration with deflation, its defaults ``maxIter=100,
   tol=1e-3``; products counted, residuals from torch HVPs afterwards);
   Hutch++ trace against PyHessian's Hutchinson at equal products
   (``--trace-products``); SLQ density against PyHessian's at equal products
   (``--probes`` x ``--steps``). PyHessian reuses one graph of the gradient
   for all its products (its single-batch mode; :mod:`benchmarks.torch_spectrum`).
3. ``delta``: Monte Carlo ``Delta_k`` per draw (sigma = 1, T draws, k in
   batches of 64) with jaxland's defaults for the model (after a compiling
   call) against the twin's per-draw no-grad loop
   (:func:`benchmarks.torch_delta.module_batch_losses`) on the SAME draws and
   data, and the curves' agreement in combined standard errors; "before": the
   generic kernel at the MLP's defaults (512-sample blocks, 16 draws vmapped),
   what every non-MLP model got before, on the first ``--before-draws`` draws.
4. ``sweep``: per draw for the kernel (generic / first layer) x (sample block,
   draw chunk) grid that the defaults come from, and the host loop's product per
   vector for probe chunks of 1, 2, 4, 8 vectors (``PROBE_CHUNK_HOST``).

torch runs with ``torch.set_num_threads(1)`` (its OpenMP spin-waits collapse on
this shared 2-core CPU), jaxland with XLA's default threads. The load average is
recorded before and after every architecture. Writes
``benchmarks/results/architectures.json`` after each architecture.

    python -m benchmarks.architectures [--archs mlp,lenet5,resnet,vit,linen_cnn] [--parts hvp,spectrum,delta,sweep]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from jaxland.curvature.eigen import _eig_jit
from jaxland.curvature.operators import _matvec, loop_mode
from jaxland.landscape import kernels
from jaxland.models.architectures import ARCHITECTURES, flops_per_sample

from .common import RESULTS, block, data_dir, timeit, write_result
from .torch_models import flat_to_torch_order, linen_cnn_twin, nnx_flat_to_torch, torch_mlp, torch_twin
from .torch_spectrum import flat, pyhessian_spectrum, torch_hvp

ARCHS = ("mlp", "lenet5", "resnet", "vit", "linen_cnn")

# Per architecture: images (HVP, Delta_k), Monte Carlo draws (both sides), images behind the spectrum part.
# The brief's counts: conv nets 2,048 images, ViT and ResNet 1,024. The spectrum part runs PyHessian's power
# iteration (hundreds of products) on each, so it takes fewer images, except the Linen CNN whose density target
# is set on 1,024 images.
SETTINGS = {
    "mlp": {"n": 9984, "draws": 256, "spectrum_samples": 2048},
    "lenet5": {"n": 2048, "draws": 128, "spectrum_samples": 512},
    "vit": {"n": 1024, "draws": 128, "spectrum_samples": 256},
    "resnet": {"n": 1024, "draws": 64, "spectrum_samples": 256},
    "linen_cnn": {"n": 2048, "draws": 128, "spectrum_samples": 1024},
}
# the grid of benchmarks.architectures --parts sweep: (sample_block, draw_chunk)
SWEEP = ((64, 1), (64, 4), (128, 1), (256, 1), (512, 16))
BEFORE = {"sample_block": 512, "chunk_size": 16, "fast_kernel": False}


# --------------------------------------------------------------------------- the problems


def _linen_cnn():
    import flax.linen as nn

    class CNN(nn.Module):
        """The Flax MNIST example's CNN, narrowed to 8 and 16 channels and 32 hidden units (26,698 parameters)."""

        @nn.compact
        def __call__(self, x):
            x = nn.avg_pool(nn.relu(nn.Conv(8, (3, 3))(x)), (2, 2), (2, 2))
            x = nn.avg_pool(nn.relu(nn.Conv(16, (3, 3))(x)), (2, 2), (2, 2))
            x = nn.relu(nn.Dense(32)(x.reshape(x.shape[0], -1)))
            return nn.Dense(10)(x)

    return CNN()


def linen_cnn_apply(params, x):
    return _linen_cnn().apply({"params": params}, x)


def linen_cnn_init(key):
    return _linen_cnn().init(key, jnp.zeros((1, 28, 28, 1)))["params"]


def problem(arch: str, n: int, epochs: int, seed: int = 0):
    """``(model, w*, x, y, info)`` of ``arch`` trained on the first ``n`` MNIST images (cached weights)."""
    folder, how = data_dir()
    name = "mnist" if folder else "mnist_10k"
    ds = jl.load_dataset(name, limit=n, data_dir=folder, flatten=arch == "mlp")
    if arch == "mlp":
        model = jl.reference_mlp()
    elif arch == "linen_cnn":
        model = jl.as_model(linen_cnn_apply, params=linen_cnn_init(jax.random.key(seed)), init=linen_cnn_init,
                            name="linen_cnn", input_shape=(28, 28, 1))
    else:
        model = jl.build_model(arch, ds.x.shape[1:], ds.num_classes)
    res = jl.cached_train(model, ds.x, ds.y, key=jax.random.key(seed), data_tag=f"mnist/train/{n}/standard", epochs=epochs)
    return model, res.params, jnp.asarray(ds.x), jnp.asarray(ds.y), {
        "data_source": ds.source, "data_dir": folder, "data_dir_from": how, "train_accuracy": float(res.train_accuracy)}


def twin_and_layout(model, w):
    """The torch twin at ``w`` and a map ``flat jaxland vector -> list of tensors in twin.parameters() order``."""
    import torch

    if isinstance(model, jl.MLPConfig):
        net = torch_mlp(model, np.asarray(w))
        return net, lambda v: [torch.from_numpy(np.ascontiguousarray(a)) for a in flat_to_torch_order(model, np.asarray(v))]
    if model.name == "linen_cnn":
        return linen_cnn_twin(model.unravel, w)
    module = model.to_module(w)
    net = torch_twin(module)
    names = [name for name, _ in net.named_parameters()]

    def layout(v):
        arrays = nnx_flat_to_torch(module, np.asarray(v))
        return [torch.from_numpy(arrays[name]) for name in names]

    return net, layout


def agreement(a_delta, a_se, b_delta, b_se) -> dict:
    a_delta, a_se, b_delta, b_se = (np.asarray(v, np.float64) for v in (a_delta, a_se, b_delta, b_se))
    z = np.abs(a_delta - b_delta) / np.sqrt(a_se**2 + b_se**2)
    return {"max_abs_diff_over_combined_se": float(z.max()), "max_rel_diff": float(np.max(np.abs(a_delta - b_delta) / np.abs(b_delta)))}


def settings(arch: str, args) -> dict:
    s = dict(SETTINGS[arch])
    for name in ("n", "draws", "spectrum_samples"):
        if getattr(args, name) is not None:
            s[name] = getattr(args, name)
    s["spectrum_samples"] = min(s["spectrum_samples"], s["n"])
    return s


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out)
    return out, time.perf_counter() - t


# --------------------------------------------------------------------------- parts


def part_hvp(model, w, x, y, net, layout, args, key) -> dict:
    v = jax.random.normal(key, w.shape, w.dtype)
    hv, first = _timed(lambda: jl.hvp(model, w, x, y, v))
    jax_hvp = timeit(lambda: block(jl.hvp(model, w, x, y, v)), repeats=args.hvp_repeats, warmup=0)
    th_hvp, th_hv = torch_hvp(net, layout, x, y, v, timeit, args.hvp_repeats)
    rel = float(np.linalg.norm(flat(layout(hv)) - th_hv) / np.linalg.norm(th_hv))
    return {"jaxland": jax_hvp, "jaxland_first_call_s": first, "torch_double_backward": th_hvp,
            "ratio_torch_over_jaxland": th_hvp["median_s"] / jax_hvp["median_s"], "rel_diff_of_products": rel}


def _compiled_loop_product(op, key, products: int = 4) -> float:
    """Seconds per product of the compiled loop (Lanczos, exactly ``products`` products), compile time excluded."""
    static = dict(d=1, method="lanczos", tol=1e-30, max_matvecs=products, block_size=1, which="largest", basis_dtype=None)
    compiled = _eig_jit.lower(op, key, **static).compile()
    res, s = _timed(lambda: compiled(op, key))
    assert int(res.num_matvecs) == products, int(res.num_matvecs)
    return s / products


def part_spectrum(model, w, x, y, net, args, key) -> dict:
    d, out = args.d, {}
    op = jl.hessian_operator(model, w, x, y)
    mode = loop_mode(op, "auto")
    v = jax.random.normal(jax.random.fold_in(key, 0), w.shape, w.dtype)
    block(_matvec(op, v))
    standalone = timeit(lambda: block(_matvec(op, v)), repeats=args.hvp_repeats, warmup=0)["median_s"]
    out["loop"], out["standalone_hvp_s"] = mode, standalone

    # top-10 eigenpairs: a first call compiles, the second is timed
    eig = lambda k: jl.hessian_eigenpairs(model, w, x, y, d, key=k, tol=args.eig_tol)
    _, first = _timed(lambda: eig(jax.random.fold_in(key, 1)).eigenvalues)
    res, wall = _timed(lambda: eig(jax.random.fold_in(key, 2)))
    per = wall / int(res.num_matvecs)
    out["eigenpairs"] = {"wall_s": wall, "first_call_s": first, "num_matvecs": int(res.num_matvecs),
                         "max_relative_residual": float(np.max(np.asarray(res.relative_residuals))),
                         "converged": bool(res.converged), "tol": args.eig_tol,
                         "eigenvalues": np.asarray(res.eigenvalues).tolist(), "in_solver_product_s": per,
                         "in_solver_over_standalone": per / standalone}
    if mode == "host" and not args.no_compiled_baseline:
        c = _compiled_loop_product(op, jax.random.fold_in(key, 3))
        out["compiled_loop_product_s"], out["compiled_loop_over_standalone"] = c, c / standalone
    print(f"  top-{d} eig ({mode} loop) {wall:.1f} s, {int(res.num_matvecs)} products, {per:.3f} s each "
          f"(standalone {standalone:.3f} s, x{per / standalone:.2f})"
          + (f"; compiled loop {out['compiled_loop_product_s']:.3f} s per product" if "compiled_loop_product_s" in out else ""),
          flush=True)

    m, p, s = args.trace_products, args.probes, args.steps
    tr = lambda k: jl.hessian_trace(model, w, x, y, num_probes=m, key=k)
    _timed(lambda: tr(jax.random.fold_in(key, 4)).trace)
    tres, twall = _timed(lambda: tr(jax.random.fold_in(key, 5)))
    dens = lambda k: jl.spectral_density(model, w, x, y, num_probes=p, lanczos_steps=s, key=k)
    _, dfirst = _timed(lambda: dens(jax.random.fold_in(key, 6)).nodes)
    dres, dwall = _timed(lambda: dens(jax.random.fold_in(key, 7)))
    out["trace"] = {"products": m, "jaxland_s": twall, "jaxland_method": "hutch++", "jaxland_trace": float(tres.trace),
                    "jaxland_stderr": float(tres.stderr)}
    out["density"] = {"probes": p, "steps": s, "products": p * s, "jaxland_s": dwall, "jaxland_first_call_s": dfirst,
                      "jaxland_node_range": [float(np.min(dres.nodes)), float(np.max(dres.nodes))]}

    ph = pyhessian_spectrum(net, x, y, d=d, trace_products=m, probes=p, steps=s, seed=args.seed)
    out["pyhessian_eigenpairs"] = ph["eigenpairs"]
    out["eigenpairs_ratio_pyhessian_over_jaxland"] = ph["eigenpairs"]["wall_s"] / wall
    out["trace"].update(pyhessian_s=ph["trace"]["wall_s"], pyhessian_products=ph["trace"]["products"],
                        pyhessian_trace=ph["trace"]["trace"], pyhessian_stderr=ph["trace"]["stderr"],
                        ratio_pyhessian_over_jaxland=ph["trace"]["wall_s"] / twall)
    out["density"].update(pyhessian_s=ph["density"]["wall_s"], ratio_pyhessian_over_jaxland=ph["density"]["wall_s"] / dwall)
    pe = ph["eigenpairs"]
    print(f"  PyHessian top-{d}: {pe['wall_s']:.1f} s, {pe['num_matvecs']} products, max rel residual "
          f"{pe['max_relative_residual']:.2e} (jaxland {out['eigenpairs']['max_relative_residual']:.2e}) -> "
          f"x{out['eigenpairs_ratio_pyhessian_over_jaxland']:.2f}", flush=True)
    print(f"  trace, {m} products: jaxland {twall:.1f} s ({float(tres.trace):.1f} +- {float(tres.stderr):.1f}), "
          f"PyHessian {ph['trace']['wall_s']:.1f} s ({ph['trace']['trace']:.1f} +- {ph['trace']['stderr']:.1f}) -> "
          f"x{out['trace']['ratio_pyhessian_over_jaxland']:.2f}", flush=True)
    print(f"  density {p} x {s}: jaxland {dwall:.1f} s (first call {dfirst:.1f} s), PyHessian {ph['density']['wall_s']:.1f} s "
          f"-> x{out['density']['ratio_pyhessian_over_jaxland']:.2f}", flush=True)
    return out


def part_delta(model, w, x, y, net, layout, sub, args, key, T) -> dict:
    from . import torch_delta

    bs = args.batch_size
    thetas = jl.draw_thetas(key, T, args.d, 1.0)
    mc = lambda th, **kw: jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=bs, **kw)
    _, first = _timed(lambda: mc(thetas).delta)
    dirs = [layout(p) for p in np.asarray(sub.directions)]
    res_torch = torch_delta.run_module(net, dirs, np.asarray(thetas, np.float64), x, y, batch_size=bs, threads=1)
    res_jax, wall = _timed(lambda: mc(thetas))
    torch_per, jax_per = res_torch["wall_s"] / T, wall / T
    tb = min(args.before_draws, T)
    _timed(lambda: mc(thetas[:tb], **BEFORE).delta)
    _, bwall = _timed(lambda: mc(thetas[:tb], **BEFORE).delta)
    block0, chunk0 = kernels.default_blocks(model, kernels.fast_kernel(model, sub, x, y), sub, x, y)
    agree = agreement(res_jax.delta, res_jax.stderr, res_torch["delta"], res_torch["stderr"])
    print(f"  Delta_k per draw: jaxland {jax_per * 1e3:.1f} ms ({res_jax.info.kernel} kernel, block {block0}, chunk {chunk0}; "
          f"first call {first:.1f} s), torch {torch_per * 1e3:.1f} ms -> x{torch_per / jax_per:.2f}; before "
          f"{bwall / tb * 1e3:.1f} ms (x{torch_per / (bwall / tb):.2f}); agreement "
          f"{agree['max_abs_diff_over_combined_se']:.2e} SE", flush=True)
    return {"jaxland_s": jax_per, "jaxland_first_call_s": first, "jaxland_kernel": res_jax.info.kernel,
            "sample_block": block0, "draw_chunk": chunk0, "torch_s": torch_per, "torch_threads": 1,
            "ratio_torch_over_jaxland": torch_per / jax_per,
            "before": {**BEFORE, "draws": tb, "jaxland_s": bwall / tb, "ratio_torch_over_jaxland": torch_per / (bwall / tb)},
            "agreement_same_draws": {"draws": T, **agree},
            "delta_k2_tail_mean_jaxland": float(np.mean(np.asarray(res_jax.delta_k2)[len(res_jax.k) // 2:]))}


def part_sweep(model, w, x, y, sub, args, key, m) -> dict:
    """Per draw for each (kernel, sample block, draw chunk), and per vector for host probe chunks.

    Every configuration is compiled first; then ``--sweep-rounds`` rounds time
    each in turn and the minimum is kept, so a burst of load on the shared CPU
    hits one round of every configuration rather than all rounds of one.
    """
    T = args.sweep_draws
    thetas = jl.draw_thetas(key, T, args.d, 1.0)
    split = kernels.fast_kernel(model, sub, x, y, enabled="first_layer") == "first_layer"
    kinds = [("generic", False)] + ([("first_layer", "first_layer")] if split else [])
    if isinstance(model, jl.MLPConfig):
        kinds = [("specialised", True)]
    runs = {}
    for name, fast in kinds:
        for blk, ch in SWEEP:
            runs[(name, blk, ch)] = functools.partial(
                jl.delta_monte_carlo, model, sub, x, y, sigma=1.0, thetas=thetas, samples_per_k=args.batch_size,
                sample_block=blk, chunk_size=ch, fast_kernel=fast)
    op = jl.hessian_operator(model, w, x[:m], y[:m])
    host = loop_mode(op, "auto") == "host"
    V = jax.random.normal(key, (8, op.dim), op.dtype)
    if host:
        for c in (1, 2, 4, 8):
            runs[("probes", c)] = functools.partial(op.matmat, V, chunk_size=c, loop="host")
    for f in runs.values():
        _timed(lambda: f())
    best = {k: float("inf") for k in runs}
    for _ in range(args.sweep_rounds):
        for k, f in runs.items():
            best[k] = min(best[k], _timed(lambda: f())[1])
    rows = [{"kernel": k[0], "sample_block": k[1], "draw_chunk": k[2], "s_per_draw": best[k] / T}
            for k in runs if k[0] != "probes"]
    for r in rows:
        print(f"  sweep {r['kernel']} block {r['sample_block']} chunk {r['draw_chunk']}: {r['s_per_draw'] * 1e3:.1f} ms per draw",
              flush=True)
    out = {"draws": T, "rounds": args.sweep_rounds, "per_draw": rows}
    if host:
        out["probe_chunk_s_per_vector"] = {str(k[1]): best[k] / 8 for k in runs if k[0] == "probes"}
        print("  host products per vector, by vectors vmapped: "
              + ", ".join(f"{c}: {s:.3f} s" for c, s in out["probe_chunk_s_per_vector"].items()), flush=True)
    return out


# --------------------------------------------------------------------------- driver


def bench_arch(arch: str, args, key) -> dict:
    import torch

    torch.set_num_threads(1)
    load0, t_arch = os.getloadavg(), time.perf_counter()
    st = settings(arch, args)
    n, T, m = st["n"], st["draws"], st["spectrum_samples"]
    model, w, x, y, info = problem(arch, n, args.epochs)
    net, layout = twin_and_layout(model, w)
    print(f"[{arch}] {model.num_params} params, n = {n}, T = {T}, spectrum on {m} images, train acc "
          f"{info['train_accuracy']:.3f}, load {load0[0]:.1f}", flush=True)
    out = {"params": int(model.num_params), "n": n, "draws": T, "spectrum_samples": m, "train_epochs": args.epochs, **info}
    if arch in ARCHITECTURES:
        out["mflop_per_image"] = flops_per_sample(arch) / 1e6
    parts = args.parts
    if "hvp" in parts:
        out["hvp"] = part_hvp(model, w, x, y, net, layout, args, jax.random.fold_in(key, 1))
        h = out["hvp"]
        print(f"  HVP on {n}: jaxland {h['jaxland']['median_s'] * 1e3:.0f} ms, torch {h['torch_double_backward']['median_s'] * 1e3:.0f} ms "
              f"-> x{h['ratio_torch_over_jaxland']:.2f}, rel diff {h['rel_diff_of_products']:.1e}", flush=True)
    if "spectrum" in parts:
        out["spectrum"] = part_spectrum(model, w, x[:m], y[:m], net, args, jax.random.fold_in(key, 2))
    if "delta" in parts or "sweep" in parts:
        eig = jl.hessian_eigenpairs(model, w, x[:m], y[:m], args.d, key=jax.random.fold_in(key, 3), tol=args.eig_tol)
        sub = jl.Subspace(w, jnp.asarray(eig.eigenvectors))
        if "delta" in parts:
            out["delta_per_draw"] = part_delta(model, w, x, y, net, layout, sub, args, jax.random.fold_in(key, 4), T)
        if "sweep" in parts:
            out["sweep"] = part_sweep(model, w, x, y, sub, args, jax.random.fold_in(key, 5), m)
    out["wall_s"] = time.perf_counter() - t_arch
    out["load_avg_before"], out["load_avg_after"] = list(load0), list(os.getloadavg())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--parts", default="hvp,spectrum,delta", help="any of hvp,spectrum,delta,sweep")
    ap.add_argument("--n", type=int, default=None, help="images for every architecture (default: SETTINGS)")
    ap.add_argument("--draws", type=int, default=None, help="Monte Carlo draws T for both sides (default: SETTINGS)")
    ap.add_argument("--spectrum-samples", dest="spectrum_samples", type=int, default=None,
                    help="images behind the spectrum part (default: SETTINGS)")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs (Adam 1e-3, batch 64; weights cached)")
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--eig-tol", type=float, default=1e-2)
    ap.add_argument("--trace-products", type=int, default=30)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--hvp-repeats", type=int, default=3)
    ap.add_argument("--before-draws", type=int, default=16)
    ap.add_argument("--sweep-draws", type=int, default=16)
    ap.add_argument("--sweep-rounds", type=int, default=3)
    ap.add_argument("--no-compiled-baseline", action="store_true", help="skip the compiled loop's per-product time")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the other architectures' entries of an existing result file")
    args = ap.parse_args(argv)
    args.parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    key = jax.random.key(args.seed)
    results, t0 = {}, time.perf_counter()
    path = Path(args.out) if args.out else RESULTS / "architectures.json"
    if args.keep and path.exists():
        results = json.loads(path.read_text()).get("architectures", {})
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        entry = bench_arch(arch, args, jax.random.fold_in(key, ARCHS.index(arch)))
        results[arch] = {**results.get(arch, {}), **entry} if args.keep else entry
        write_result("architectures", _payload(results, args, t0), args.out)  # partial results survive an interrupted run
    print(json.dumps(_ratios(results), indent=1))


def _ratios(results) -> dict:
    pick = {"hvp": ("hvp", "ratio_torch_over_jaxland"), "delta_per_draw": ("delta_per_draw", "ratio_torch_over_jaxland"),
            "eigenpairs_vs_pyhessian": ("spectrum", "eigenpairs_ratio_pyhessian_over_jaxland"),
            "in_solver_over_standalone": ("spectrum", "eigenpairs", "in_solver_over_standalone"),
            "trace_vs_pyhessian": ("spectrum", "trace", "ratio_pyhessian_over_jaxland"),
            "density_vs_pyhessian": ("spectrum", "density", "ratio_pyhessian_over_jaxland")}

    def get(r, path):
        for p in path:
            if not isinstance(r, dict) or p not in r:
                return None
            r = r[p]
        return r

    return {a: {name: get(r, path) for name, path in pick.items()} for a, r in results.items()}


def _payload(results, args, t0) -> dict:
    import torch

    return {
        "setup": {"per_architecture": {a: {k: r.get(k) for k in ("n", "draws", "spectrum_samples")} for a, r in results.items()},
                  "parts": sorted(args.parts), "d": args.d, "sigma": 1.0, "batch_size": args.batch_size,
                  "train_epochs": args.epochs, "eig_tol": args.eig_tol, "trace_products": args.trace_products,
                  "density": [args.probes, args.steps], "hvp_repeats": args.hvp_repeats, "torch_version": torch.__version__,
                  "torch_threads": 1, "jax_version": jax.__version__, "backend": jax.default_backend(),
                  "timing": "side by side in one process; jaxland timed after a compiling call; torch pinned to 1 thread",
                  "targets": "in-solver product <= 1.3x standalone; jaxland >= 2x the torch twin (Delta_k per draw) and "
                             "PyHessian (top-10, trace, density at equal products); Linen CNN density 4x40 on 1,024 "
                             "images < 60 s"},
        "architectures": results,
        "ratios": _ratios(results),
        "total_s": time.perf_counter() - t0,
        "load_avg": list(os.getloadavg()),
    }


if __name__ == "__main__":
    main()
