"""Cost of the shipped architectures on the reference data: sizes the experiment presets.

For LeNet5, ResNet and ViT with default settings (and the reference MLP
784-256-256-10 side by side, as the baseline), on the first 9,984 MNIST images
(28x28x1, channels last): parameter count, forward FLOPs per image, the jitted
forward pass of the whole batch, and one Hessian-vector product of the mean
cross-entropy over the flat parameter vector (``jvp`` of ``grad``, data as jit
arguments), with compile times. Weights are Flax's initialisation (seed 0): the
cost does not depend on their values.

    python -m benchmarks.architecture_costs [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

import jaxland as jl
from jaxland.models.architectures import ARCHITECTURES, flops_per_sample

from .common import timeit, write_result


def functional(module):
    """``(w, rest, f)`` with ``f(w, rest, x) -> logits``: only ``nnx.Param`` leaves are in ``w``."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    w, unravel = ravel_pytree(params)
    return w, rest, lambda w, rest, x: nnx.merge(graphdef, unravel(w), rest)(x)


def measure(name, module, x, y, repeats, flops):
    w, rest, f = functional(module)
    loss = lambda w, rest, x, y: optax.softmax_cross_entropy_with_integer_labels(f(w, rest, x), y).mean()
    fwd = jax.jit(f)
    hvp = jax.jit(lambda w, v, rest, x, y: jax.jvp(lambda u: jax.grad(loss)(u, rest, x, y), (w,), (v,))[1])
    v = jax.random.normal(jax.random.key(1), w.shape, w.dtype)
    t = time.perf_counter()
    jax.block_until_ready(fwd(w, rest, x))
    fwd_compile = time.perf_counter() - t
    t = time.perf_counter()
    hv = jax.block_until_ready(hvp(w, v, rest, x, y))
    hvp_compile = time.perf_counter() - t
    assert bool(jnp.all(jnp.isfinite(hv)))
    tf = timeit(lambda: jax.block_until_ready(fwd(w, rest, x)), repeats=repeats)
    th = timeit(lambda: jax.block_until_ready(hvp(w, v, rest, x, y)), repeats=repeats)
    row = {
        "num_params": int(w.size),
        "forward_mflop_per_image": flops / 1e6,
        "forward_s": tf,
        "forward_compile_s": fwd_compile,
        "forward_gflops_per_s": flops * x.shape[0] / tf["median_s"] / 1e9,
        "hvp_s": th,
        "hvp_compile_s": hvp_compile,
        "hvp_over_forward": th["median_s"] / tf["median_s"],
    }
    print(f"{name:8s} params {row['num_params']:>7,d}  {flops / 1e6:5.2f} MFLOP/img  forward {tf['median_s'] * 1e3:7.1f} ms "
          f"({row['forward_gflops_per_s']:5.1f} GFLOP/s, compile {fwd_compile:.1f} s)  HVP {th['median_s'] * 1e3:7.1f} ms "
          f"({row['hvp_over_forward']:.1f}x forward, compile {hvp_compile:.1f} s)", flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n", type=int, default=9984)
    args = p.parse_args(argv)
    ds = jl.load_dataset("mnist_10k", limit=args.n, flatten=False)
    x, y = jnp.asarray(ds.x), jnp.asarray(ds.y)
    if x.ndim == 3:
        x = x[..., None]
    load_before = os.getloadavg()
    rows = {}
    mlp = jl.reference_mlp()
    mlp_module = mlp.module(nnx.Rngs(0))
    mlp_flops = 2 * sum(a * b for a, b in zip(mlp.sizes[:-1], mlp.sizes[1:]))
    flat = x.reshape(x.shape[0], -1)
    rows["mlp (baseline)"] = measure("mlp", mlp_module, flat, y, args.repeats, mlp_flops)
    for name, cls in ARCHITECTURES.items():
        rows[name] = measure(name, cls(tuple(x.shape[1:]), rngs=nnx.Rngs(0)), x, y, args.repeats, flops_per_sample(name, input_shape=tuple(x.shape[1:])))
    base = rows["mlp (baseline)"]
    for row in rows.values():
        row["hvp_vs_mlp_hvp"] = row["hvp_s"]["median_s"] / base["hvp_s"]["median_s"]
    write_result("architecture_costs", {
        "n": int(x.shape[0]), "input_shape": list(x.shape[1:]), "data_source": ds.source,
        "flops_counted": "2 per multiply-add of convolutions, dense layers and attention matmuls",
        "results": rows, "load_average": {"before": load_before, "after": os.getloadavg()},
    })


if __name__ == "__main__":
    main()
