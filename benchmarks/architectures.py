"""Per-architecture cost: jaxland against the PyTorch twin of the same network on the same weights.

For each shipped architecture (``mlp`` = the reference 784-256-256-10,
``lenet5``, ``resnet``, ``vit``, defaults of :func:`jaxland.build_model`) on the
first 9,984 MNIST training images (:mod:`benchmarks.common` data), trained
with Adam 1e-3, batch 64 for ``--epochs`` epochs (cached), and d = 10 top
Hessian directions (Lanczos, ``--eig-tol``):

1. one full-data HVP: jaxland ``jl.hvp`` (jvp of grad, jitted; median of
   repeats, compile time apart) against torch double backward on the twin
   (:func:`benchmarks.torch_models.torch_twin`, or ``torch_mlp`` for the MLP),
   with the relative difference of the two products;
2. Monte Carlo ``Delta_k`` per draw (sigma = 1, T = ``--draws`` >= 256, k in
   batches of 64): ``jl.delta_monte_carlo`` (warm, timed before and after the
   torch loop so that both see the same load) against the per-draw no-grad
   loop :func:`benchmarks.torch_delta.module_batch_losses` (deep copy, perturb
   along all d directions, fixed data order, batches of 64) on the first
   ``--torch-draws`` of the same draws; the ratio is per draw;
3. agreement on the same draws: ``max_k |Delta_jax - Delta_torch| /
   sqrt(SE_jax^2 + SE_torch^2)`` (the two should differ by float rounding only).

Writes ``benchmarks/results/architectures.json`` with the load average before
and after every architecture and the versions.

    python -m benchmarks.architectures [--archs mlp,lenet5,resnet,vit] [--draws 256] [--torch-draws 16]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl

from . import torch_delta
from .common import block, timeit, write_result
from .torch_models import flat_to_torch_order, nnx_flat_to_torch, torch_mlp, torch_twin

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def problem(arch: str, n: int, epochs: int, seed: int = 0):
    """``(model, w*, x, y, info)`` of ``arch`` trained on the first ``n`` MNIST images (cached weights)."""
    data_dir = os.environ.get("JAXLAND_DATA_DIR") or (str(SHARED_DATA) if SHARED_DATA.exists() else None)
    name = "mnist" if data_dir else "mnist_10k"
    ds = jl.load_dataset(name, limit=n, data_dir=data_dir, flatten=arch == "mlp")
    model = jl.reference_mlp() if arch == "mlp" else jl.build_model(arch, ds.x.shape[1:], ds.num_classes)
    res = jl.cached_train(model, ds.x, ds.y, seed=seed, data_tag=f"mnist/train/{n}/standard", epochs=epochs)
    return model, res.params, jnp.asarray(ds.x), jnp.asarray(ds.y), {"data_source": ds.source, "train_accuracy": float(res.train_accuracy)}


def twin_and_layout(model, w):
    """The torch twin at ``w`` and a map ``flat NNX-ordered vector -> list of tensors in twin.parameters() order``."""
    import torch

    if isinstance(model, jl.MLPConfig):
        net = torch_mlp(model, np.asarray(w))
        return net, lambda v: [torch.from_numpy(np.ascontiguousarray(a)) for a in flat_to_torch_order(model, np.asarray(v))]
    module = model.to_module(w)
    net = torch_twin(module)
    names = [name for name, _ in net.named_parameters()]

    def layout(v):
        arrays = nnx_flat_to_torch(module, np.asarray(v))
        return [torch.from_numpy(arrays[name]) for name in names]

    return net, layout


def torch_hvp(net, layout, x, y, v, repeats: int) -> tuple[dict, np.ndarray]:
    """Timing and the product (flattened, twin order) of torch's double-backward HVP of the mean cross-entropy."""
    import torch

    xt, yt = torch.from_numpy(np.asarray(x)), torch.from_numpy(np.asarray(y)).long()
    params = list(net.parameters())
    vt = layout(v)

    def run():
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, vt))
        return torch.autograd.grad(dot, params)

    out = run()
    return timeit(run, repeats=repeats, warmup=0), np.concatenate([o.detach().numpy().ravel() for o in out])


def agreement(a_delta, a_se, b_delta, b_se) -> dict:
    a_delta, a_se, b_delta, b_se = (np.asarray(v, np.float64) for v in (a_delta, a_se, b_delta, b_se))
    z = np.abs(a_delta - b_delta) / np.sqrt(a_se**2 + b_se**2)
    return {"max_abs_diff_over_combined_se": float(z.max()), "max_rel_diff": float(np.max(np.abs(a_delta - b_delta) / np.abs(b_delta)))}


def best_threads(net, dirs, thetas, x, y, bs) -> tuple[int, dict]:
    """torch thread count (1 or 2) with the lower per-draw time on two draws: OpenMP spin-waits collapse on a busy CPU."""
    probe = {}
    for nt in (1, 2):
        r = torch_delta.run_module(net, dirs, thetas[:2], x, y, batch_size=bs, threads=nt)
        probe[nt] = r["wall_s"] / 2
    return min(probe, key=probe.get), {str(k): v for k, v in probe.items()}


def bench_arch(arch: str, args, key) -> dict:
    load0 = os.getloadavg()
    model, w, x, y, info = problem(arch, args.n, args.epochs)
    bs = args.batch_size
    t = time.perf_counter()
    eig = jl.hessian_eigenpairs(model, w, x, y, args.d, key=jax.random.fold_in(key, 1), tol=args.eig_tol)
    sub = jl.Subspace(w, jnp.asarray(eig.eigenvectors))
    eig_s = time.perf_counter() - t
    print(f"[{arch}] {model.num_params} params, train acc {info['train_accuracy']:.3f}; top-{args.d} eig {eig_s:.1f} s ({int(eig.num_matvecs)} HVPs)", flush=True)

    # 1. one full-data HVP
    v = jax.random.normal(jax.random.fold_in(key, 2), w.shape, w.dtype)
    t = time.perf_counter()
    hv = block(jl.hvp(model, w, v, x, y))
    hvp_first = time.perf_counter() - t
    jax_hvp = timeit(lambda: block(jl.hvp(model, w, v, x, y)), repeats=args.hvp_repeats, warmup=0)
    net, layout = twin_and_layout(model, w)
    th_hvp, th_hv = torch_hvp(net, layout, x, y, v, args.hvp_repeats)
    jax_hv = np.concatenate([t.numpy().ravel() for t in layout(hv)])
    hvp_rel = float(np.linalg.norm(jax_hv - th_hv) / np.linalg.norm(th_hv))
    print(f"[{arch}] HVP jaxland {jax_hvp['median_s'] * 1e3:.0f} ms (first call {hvp_first:.1f} s), torch {th_hvp['median_s'] * 1e3:.0f} ms, "
          f"rel diff {hvp_rel:.1e}", flush=True)

    # 2. Monte Carlo Delta_k per draw, same draws
    thetas = jl.draw_thetas(jax.random.fold_in(key, 3), args.draws, args.d, 1.0)
    mc = lambda th: jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, batch_size=bs)
    t = time.perf_counter()
    block(mc(thetas).delta)
    mc_first = time.perf_counter() - t
    t = time.perf_counter()
    res_jax = mc(thetas)
    block(res_jax.delta)
    jax_walls = [time.perf_counter() - t]

    tb = min(args.torch_draws, args.draws)
    th_np = np.asarray(thetas, np.float64)
    dirs = [layout(p) for p in np.asarray(sub.directions)]
    threads, probe = best_threads(net, dirs, th_np, x, y, bs)
    res_torch = torch_delta.run_module(net, dirs, th_np[:tb], x, y, batch_size=bs, threads=threads)

    t = time.perf_counter()
    block(mc(thetas).delta)
    jax_walls.append(time.perf_counter() - t)
    same = mc(thetas[:tb])  # jaxland on exactly the torch draws
    jax_per_draw = float(np.mean(jax_walls)) / args.draws
    torch_per_draw = res_torch["wall_s"] / tb
    agree = agreement(same.delta, same.stderr, res_torch["delta"], res_torch["stderr"])
    print(f"[{arch}] Delta_k per draw: jaxland {jax_per_draw * 1e3:.1f} ms (T = {args.draws}, first call {mc_first:.1f} s), "
          f"torch {torch_per_draw * 1e3:.1f} ms (T = {tb}, {threads} threads) -> {torch_per_draw / jax_per_draw:.2f}x; "
          f"agreement {agree['max_abs_diff_over_combined_se']:.2e} SE", flush=True)
    return {
        "params": int(model.num_params),
        # the MLP: 2 FLOPs per weight (biases included, 0.2% high)
        "mflop_per_image": 2 * model.num_params / 1e6 if arch == "mlp" else jl.architectures.flops_per_sample(arch) / 1e6,
        "train_epochs": args.epochs,
        **info,
        "eigensolve": {"wall_s": eig_s, "num_matvecs": int(eig.num_matvecs), "eigenvalues": np.asarray(eig.eigenvalues).tolist(), "tol": args.eig_tol},
        "hvp": {"jaxland": jax_hvp, "jaxland_first_call_s": hvp_first, "torch_double_backward": th_hvp,
                "ratio_torch_over_jaxland": th_hvp["median_s"] / jax_hvp["median_s"], "rel_diff_of_products": hvp_rel},
        "delta_per_draw": {
            "jaxland_s": jax_per_draw, "jaxland_draws": args.draws, "jaxland_walls_s": jax_walls, "jaxland_first_call_s": mc_first,
            "jaxland_kernel": res_jax.info.kernel,
            "torch_s": torch_per_draw, "torch_draws": tb, "torch_threads": threads, "torch_thread_probe_s_per_draw": probe,
            "ratio_torch_over_jaxland": torch_per_draw / jax_per_draw,
        },
        "agreement_same_draws": {"draws": tb, **agree},
        "delta_k2_tail_mean_jaxland": float(np.mean(np.asarray(res_jax.delta_k2)[len(res_jax.k) // 2:])),
        "load_avg_before": list(load0),
        "load_avg_after": list(os.getloadavg()),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="mlp,lenet5,resnet,vit")
    ap.add_argument("--n", type=int, default=9984)
    ap.add_argument("--epochs", type=int, default=3, help="training epochs (Adam 1e-3, batch 64; weights cached)")
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--eig-tol", type=float, default=1e-2)
    ap.add_argument("--draws", type=int, default=256)
    ap.add_argument("--torch-draws", type=int, default=16)
    ap.add_argument("--hvp-repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.draws < 256:
        print(f"note: --draws {args.draws} < 256, below the benchmark's specification")
    key = jax.random.key(args.seed)
    results, t0 = {}, time.perf_counter()
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        results[arch] = bench_arch(arch, args, jax.random.fold_in(key, len(results)))
        # partial results survive an interrupted run
        write_result("architectures", _payload(results, args, t0), args.out)
    summary = {a: {"hvp_ratio": round(r["hvp"]["ratio_torch_over_jaxland"], 2), "delta_ratio": round(r["delta_per_draw"]["ratio_torch_over_jaxland"], 2),
                   "agreement_se": r["agreement_same_draws"]["max_abs_diff_over_combined_se"]} for a, r in results.items()}
    print(summary)


def _payload(results, args, t0) -> dict:
    import torch

    return {
        "setup": {"n": args.n, "d": args.d, "sigma": 1.0, "batch_size": args.batch_size, "draws": args.draws, "torch_draws": args.torch_draws,
                  "train_epochs": args.epochs, "eig_tol": args.eig_tol, "hvp_repeats": args.hvp_repeats, "torch_version": torch.__version__,
                  "target": "jaxland >= 2x faster than the torch twin (ratio_torch_over_jaxland >= 2)"},
        "architectures": results,
        "ratios": {a: {"hvp": r["hvp"]["ratio_torch_over_jaxland"], "delta_per_draw": r["delta_per_draw"]["ratio_torch_over_jaxland"]} for a, r in results.items()},
        "total_s": time.perf_counter() - t0,
        "load_avg": list(os.getloadavg()),
    }


if __name__ == "__main__":
    main()
