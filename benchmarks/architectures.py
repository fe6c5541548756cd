"""Per-architecture cost: jaxland against the PyTorch twin of the same network on the same weights.

For each shipped architecture (``mlp`` = the reference 784-256-256-10,
``lenet5``, ``resnet``, ``vit``, defaults of :func:`jaxland.build_model`) on the
first ``n`` MNIST training images (:mod:`benchmarks.common` data), trained with
Adam 1e-3, batch 64 for ``--epochs`` epochs (cached), and d = 10 top Hessian
directions (Lanczos, ``--eig-tol``, on the Hessian of the first
``eig_samples`` images):

1. one full-data HVP: jaxland ``jl.hvp`` (jvp of grad, jitted; median of
   repeats, compile time apart) against torch double backward on the twin
   (:func:`benchmarks.torch_models.torch_twin`, or ``torch_mlp`` for the MLP),
   with the relative difference of the two products;
2. Monte Carlo ``Delta_k`` per draw (sigma = 1, T draws, k in batches of 64):
   ``jl.delta_monte_carlo`` (a first call that compiles, then the timed call)
   against the per-draw no-grad loop
   :func:`benchmarks.torch_delta.module_batch_losses` (deep copy, perturb along
   all d directions, fixed data order, batches of 64), timed between the two
   jaxland calls, on the SAME T draws and data; the ratio is per draw. For
   the image models also jaxland with ``sample_block=64, chunk=4`` (the
   default 512-sample blocks are tuned on the MLP; smaller blocks keep conv and
   attention activations in cache), reported apart as ``jaxland_tuned``;
3. agreement on those draws: ``max_k |Delta_jax - Delta_torch| /
   sqrt(SE_jax^2 + SE_torch^2)`` (the two should differ by float rounding only).

On this CPU XLA's convolutions run at a few GFLOP/s (a full-data HVP on 9,984
images takes ~95 s for the ResNet), so the data size, T and eigensolve size are
set per architecture (:data:`SETTINGS`, overridable for all with ``--n``,
``--draws``, ``--eig-samples``) to keep the whole run near 20 minutes; each
choice is recorded in the JSON. Writes ``benchmarks/results/architectures.json``
with the load average before and after every architecture and the versions.

    python -m benchmarks.architectures [--archs mlp,lenet5,resnet,vit] [--draws T] [--n N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl

from . import torch_delta
from .common import RESULTS, block, data_dir, timeit, write_result
from .torch_models import flat_to_torch_order, nnx_flat_to_torch, torch_mlp, torch_twin

def problem(arch: str, n: int, epochs: int, seed: int = 0):
    """``(model, w*, x, y, info)`` of ``arch`` trained on the first ``n`` MNIST images (cached weights)."""
    folder, how = data_dir()
    name = "mnist" if folder else "mnist_10k"
    ds = jl.load_dataset(name, limit=n, data_dir=folder, flatten=arch == "mlp")
    model = jl.reference_mlp() if arch == "mlp" else jl.build_model(arch, ds.x.shape[1:], ds.num_classes)
    res = jl.cached_train(model, ds.x, ds.y, key=jax.random.key(seed), data_tag=f"mnist/train/{n}/standard", epochs=epochs)
    return model, res.params, jnp.asarray(ds.x), jnp.asarray(ds.y), {"data_source": ds.source, "data_dir": folder, "data_dir_from": how, "train_accuracy": float(res.train_accuracy)}


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

    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()
    params = list(net.parameters())
    vt = layout(v)

    def run():
        # the math attention kernel: torch's fused CPU attention has no double backward
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
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


# Per architecture: images, Monte Carlo draws (both sides), images behind the eigensolve's Hessian.
# The MLP gets the paper's 9,984 images and T = 256; the convolutional and attention networks fewer
# images (XLA CPU convolutions at a few GFLOP/s) and the ResNet, ~5 MFLOP per image, fewer draws.
SETTINGS = {
    "mlp": {"n": 9984, "draws": 256, "eig_samples": 9984},
    "lenet5": {"n": 2048, "draws": 128, "eig_samples": 512},
    "vit": {"n": 1024, "draws": 128, "eig_samples": 256},
    "resnet": {"n": 1024, "draws": 64, "eig_samples": 128},
}


TUNED = {"sample_block": 64, "chunk": 4}


def best_threads(net, dirs, thetas, x, y, bs) -> tuple[int, dict]:
    """torch thread count (1 or 2) with the lower per-draw time on two draws: OpenMP spin-waits collapse on a busy CPU."""
    probe = {}
    for nt in (1, 2):
        r = torch_delta.run_module(net, dirs, thetas[:2], x, y, batch_size=bs, threads=nt)
        probe[nt] = r["wall_s"] / 2
    return min(probe, key=probe.get), {str(k): v for k, v in probe.items()}


def settings(arch: str, args) -> dict:
    s = dict(SETTINGS.get(arch, SETTINGS["lenet5"]))
    for name in ("n", "draws", "eig_samples"):
        if getattr(args, name) is not None:
            s[name] = getattr(args, name)
    s["eig_samples"] = min(s["eig_samples"], s["n"])
    return s


def bench_arch(arch: str, args, key) -> dict:
    load0, t_arch = os.getloadavg(), time.perf_counter()
    st = settings(arch, args)
    n, T, bs = st["n"], st["draws"], args.batch_size
    model, w, x, y, info = problem(arch, n, args.epochs)
    t = time.perf_counter()
    m = st["eig_samples"]  # sliced, not a prefix k: a traced prefix would still cost a pass over all n images
    eig = jl.hessian_eigenpairs(model, w, x[:m], y[:m], args.d, key=jax.random.fold_in(key, 1), tol=args.eig_tol)
    sub = jl.Subspace(w, jnp.asarray(eig.eigenvectors))
    eig_s = time.perf_counter() - t
    print(f"[{arch}] {model.num_params} params, n = {n}, T = {T}, train acc {info['train_accuracy']:.3f}; top-{args.d} eig on "
          f"{st['eig_samples']} images {eig_s:.1f} s ({int(eig.num_matvecs)} HVPs)", flush=True)

    # 1. one full-data HVP
    v = jax.random.normal(jax.random.fold_in(key, 2), w.shape, w.dtype)
    t = time.perf_counter()
    hv = block(jl.hvp(model, w, x, y, v))
    hvp_first = time.perf_counter() - t
    jax_hvp = timeit(lambda: block(jl.hvp(model, w, x, y, v)), repeats=args.hvp_repeats, warmup=0)
    net, layout = twin_and_layout(model, w)
    th_hvp, th_hv = torch_hvp(net, layout, x, y, v, args.hvp_repeats)
    jax_hv = np.concatenate([t.numpy().ravel() for t in layout(hv)])
    hvp_rel = float(np.linalg.norm(jax_hv - th_hv) / np.linalg.norm(th_hv))
    print(f"[{arch}] HVP jaxland {jax_hvp['median_s'] * 1e3:.0f} ms (first call {hvp_first:.1f} s), torch {th_hvp['median_s'] * 1e3:.0f} ms, "
          f"rel diff {hvp_rel:.1e}", flush=True)

    # 2. Monte Carlo Delta_k per draw on the same T draws: jaxland (compile), torch, jaxland (timed)
    thetas = jl.draw_thetas(jax.random.fold_in(key, 3), T, args.d, 1.0)
    mc = lambda: jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=thetas, samples_per_k=bs)
    t = time.perf_counter()
    block(mc().delta)
    mc_first = time.perf_counter() - t
    th_np = np.asarray(thetas, np.float64)
    dirs = [layout(p) for p in np.asarray(sub.directions)]
    threads, probe = best_threads(net, dirs, th_np, x, y, bs)
    res_torch = torch_delta.run_module(net, dirs, th_np, x, y, batch_size=bs, threads=threads)
    t = time.perf_counter()
    res_jax = mc()
    block(res_jax.delta)
    jax_per_draw = (time.perf_counter() - t) / T
    tuned = None
    if arch != "mlp":
        # blocks of 64 samples, 4 draws vmapped: the default 512-sample block (tuned on the MLP) spills the cache on
        # conv and attention activations; measured 2x per draw for the ViT, 1.5x for LeNet-5
        mct = lambda: jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=thetas, samples_per_k=bs, sample_block=TUNED["sample_block"], chunk_size=TUNED["chunk"])
        block(mct().delta)
        t = time.perf_counter()
        block(mct().delta)
        tuned = {**TUNED, "jaxland_s": (time.perf_counter() - t) / T}
        tuned["ratio_torch_over_jaxland"] = res_torch["wall_s"] / T / tuned["jaxland_s"]
    torch_per_draw = res_torch["wall_s"] / T
    agree = agreement(res_jax.delta, res_jax.stderr, res_torch["delta"], res_torch["stderr"])
    print(f"[{arch}] Delta_k per draw: jaxland {jax_per_draw * 1e3:.1f} ms (first call {mc_first:.1f} s), "
          f"torch {torch_per_draw * 1e3:.1f} ms ({threads} threads) -> {torch_per_draw / jax_per_draw:.2f}x; "
          f"agreement {agree['max_abs_diff_over_combined_se']:.2e} SE; {time.perf_counter() - t_arch:.0f} s for {arch}", flush=True)
    if tuned:
        print(f"[{arch}] jaxland with sample_block={TUNED['sample_block']}, chunk={TUNED['chunk']}: {tuned['jaxland_s'] * 1e3:.1f} ms per draw -> "
              f"{tuned['ratio_torch_over_jaxland']:.2f}x", flush=True)
    return {
        "params": int(model.num_params),
        # the MLP: 2 FLOPs per weight (biases included, 0.2% high)
        "mflop_per_image": 2 * model.num_params / 1e6 if arch == "mlp" else jl.architectures.flops_per_sample(arch) / 1e6,
        "n": n, "draws": T, "eig_samples": st["eig_samples"],
        "train_epochs": args.epochs,
        **info,
        "eigensolve": {"wall_s": eig_s, "num_matvecs": int(eig.num_matvecs), "eigenvalues": np.asarray(eig.eigenvalues).tolist(), "tol": args.eig_tol,
                       "images": st["eig_samples"]},
        "hvp": {"jaxland": jax_hvp, "jaxland_first_call_s": hvp_first, "torch_double_backward": th_hvp,
                "ratio_torch_over_jaxland": th_hvp["median_s"] / jax_hvp["median_s"], "rel_diff_of_products": hvp_rel},
        "delta_per_draw": {
            "jaxland_s": jax_per_draw, "jaxland_first_call_s": mc_first, "jaxland_kernel": res_jax.info.kernel,
            "torch_s": torch_per_draw, "torch_threads": threads, "torch_thread_probe_s_per_draw": probe,
            "ratio_torch_over_jaxland": torch_per_draw / jax_per_draw,
            "jaxland_tuned": tuned,
        },
        "agreement_same_draws": {"draws": T, **agree},
        "delta_k2_tail_mean_jaxland": float(np.mean(np.asarray(res_jax.delta_k2)[len(res_jax.k) // 2:])),
        "wall_s": time.perf_counter() - t_arch,
        "load_avg_before": list(load0),
        "load_avg_after": list(os.getloadavg()),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="mlp,lenet5,vit,resnet")
    ap.add_argument("--n", type=int, default=None, help="images for every architecture (default: SETTINGS per architecture)")
    ap.add_argument("--draws", type=int, default=None, help="Monte Carlo draws T for both sides (default: SETTINGS)")
    ap.add_argument("--eig-samples", type=int, default=None, help="images behind the eigensolve's Hessian (default: SETTINGS)")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs (Adam 1e-3, batch 64; weights cached)")
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--eig-tol", type=float, default=1e-2)
    ap.add_argument("--hvp-repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the other architectures' entries of an existing result file")
    args = ap.parse_args(argv)
    key = jax.random.key(args.seed)
    results, t0 = {}, time.perf_counter()
    path = Path(args.out) if args.out else RESULTS / "architectures.json"
    if args.keep and path.exists():
        results = json.loads(path.read_text()).get("architectures", {})
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        results[arch] = bench_arch(arch, args, jax.random.fold_in(key, jl.MODEL_NAMES.index(arch)))
        # partial results survive an interrupted run
        write_result("architectures", _payload(results, args, t0), args.out)
    summary = {a: {"hvp_ratio": round(r["hvp"]["ratio_torch_over_jaxland"], 2), "delta_ratio": round(r["delta_per_draw"]["ratio_torch_over_jaxland"], 2),
                   "agreement_se": r["agreement_same_draws"]["max_abs_diff_over_combined_se"]} for a, r in results.items()}
    print(summary)


def _payload(results, args, t0) -> dict:
    import torch

    return {
        "setup": {"per_architecture": {a: {k: r[k] for k in ("n", "draws", "eig_samples")} for a, r in results.items()},
                  "d": args.d, "sigma": 1.0, "batch_size": args.batch_size,
                  "train_epochs": args.epochs, "eig_tol": args.eig_tol, "hvp_repeats": args.hvp_repeats, "torch_version": torch.__version__,
                  "timing": "per draw on the same T draws and data for both sides; jaxland timed after a compiling call, torch between the two",
                  "target": "jaxland >= 2x faster than the torch twin (ratio_torch_over_jaxland >= 2)"},
        "architectures": results,
        "ratios": {a: {"hvp": r["hvp"]["ratio_torch_over_jaxland"], "delta_per_draw": r["delta_per_draw"]["ratio_torch_over_jaxland"]} for a, r in results.items()},
        "total_s": time.perf_counter() - t0,
        "load_avg": list(os.getloadavg()),
    }


if __name__ == "__main__":
    main()
