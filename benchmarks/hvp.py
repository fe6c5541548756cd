"""One full-data HVP on the reference problem: time, ratio to loss+grad, compile time.

    python -m benchmarks.hvp [--repeats 10] [--out FILE]

Also times the PyTorch double-backward HVP on the same weights and data when
torch is installed (``pip install 'jaxland[bench]'``), measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from jaxland.curvature import operators
from jaxland.curvature import products as curvature

from .common import reference_problem, timeit, write_result


def _compile_time(fn, *args) -> float:
    t = time.perf_counter()
    fn.lower(*args).compile()
    return time.perf_counter() - t


def torch_hvp_time(model, w, x, y, v, repeats, device=None):
    """(timing, H v in torch layout) of the double-backward HVP in torch on ``device`` (default CPU); None without torch."""
    try:
        import torch
    except ImportError:
        return None
    from .torch_models import flat_to_torch_order, torch_mlp

    device = torch.device(device or "cpu")
    net = torch_mlp(model, np.asarray(w)).to(device)
    xt, yt = torch.from_numpy(np.array(x)).to(device), torch.from_numpy(np.array(y)).long().to(device)
    params = [p for p in net.parameters()]
    vt = [torch.from_numpy(np.asarray(a)).reshape(p.shape).to(device) for a, p in zip(flat_to_torch_order(model, v), params)]

    def run():
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, vt))
        out = torch.autograd.grad(dot, params)
        if device.type == "cuda":  # kernels are asynchronous: time them, not their launch
            torch.cuda.synchronize(device)
        return out

    out = run()
    ref = np.concatenate([o.detach().cpu().numpy().ravel() for o in out])
    return timeit(run, repeats=repeats), ref


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--n", type=int, default=9984)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    model, w, x, y, info = reference_problem(args.n)
    v = jax.random.normal(jax.random.key(1), w.shape)
    k = jnp.asarray(args.n)
    vs = jax.random.normal(jax.random.key(2), (10, w.size))

    # the compiled kernels behind the checked public entry points
    op = jl.hessian_operator(model, w, x, y, k=k)
    compile_hvp = _compile_time(operators._matvec, op, v)
    compile_lg = _compile_time(curvature._loss_and_grad, op)
    compile_block = _compile_time(operators._matmat, op, vs)
    t_hvp = timeit(lambda: jax.block_until_ready(jl.hvp(model, w, x, y, v, k=k)), repeats=args.repeats)
    t_lg = timeit(lambda: jax.block_until_ready(jl.loss_and_grad(model, w, x, y, k=k)), repeats=args.repeats)
    t_block = timeit(lambda: jax.block_until_ready(jl.hvp_batch(model, w, x, y, vs, k=k)), repeats=max(3, args.repeats // 3))
    result = {
        "problem": {"model": list(model.sizes), "num_params": model.num_params, "n": args.n, **info},
        "hvp_s": t_hvp["median_s"],
        "loss_grad_s": t_lg["median_s"],
        "ratio_hvp_over_loss_grad": t_hvp["median_s"] / t_lg["median_s"],
        "block_hvp_10_vectors_s": t_block["median_s"],
        "block_hvp_per_vector_s": t_block["median_s"] / 10,
        "compile_s": {"hvp": compile_hvp, "loss_grad": compile_lg, "block_hvp_10": compile_block},
        "timings": {"hvp": t_hvp, "loss_grad": t_lg, "block_hvp_10": t_block},
    }
    tt = torch_hvp_time(model, w, x, y, v, args.repeats)
    if tt is not None:
        t_torch, ref = tt
        from .torch_models import flat_to_torch_order

        ours = np.concatenate([a.ravel() for a in flat_to_torch_order(model, jl.hvp(model, w, x, y, v, k=k))])
        result["torch_double_backward_hvp_s"] = t_torch["median_s"]
        result["speedup_vs_torch"] = t_torch["median_s"] / t_hvp["median_s"]
        result["max_rel_diff_vs_torch"] = float(np.abs(ours - ref).max() / np.abs(ref).max())
        import torch

        result["torch_version"] = torch.__version__
        result["torch_threads"] = torch.get_num_threads()
    for key_, val in result.items():
        if key_ not in ("timings", "problem"):
            print(f"{key_:32s} {val}")
    write_result("hvp", result, args.out)


if __name__ == "__main__":
    main()
