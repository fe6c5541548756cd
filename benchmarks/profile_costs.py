"""Where the time of one HVP and one Monte Carlo ``Delta_k`` draw goes, for one architecture (default: the ResNet).

Each piece is its own compiled program, timed warm (median of ``--repeats``):

* HVP on ``n`` images (the ``hvp`` part's count): the forward pass (per-sample
  losses), forward + backward (``value_and_grad``), the full product (``op @ v``,
  forward-over-reverse: forward, backward and the tangent pass), the stored
  linearisation (:func:`jaxland.curvature.linearised.linearise`: forward and
  backward, residuals kept) and its linear part alone (one host step).
* one ``Delta_k`` draw: ``jl.delta_monte_carlo`` with the model's defaults, per
  draw (``--draws`` draws after a compiling call), against one standalone forward
  pass over the same ``n`` images at one draw's weights ``w* + theta @ P``.
* the convolutions and matrix products: every ``conv_general_dilated`` and
  ``dot_general`` of the HVP's and of the forward pass's jaxprs, each compiled and
  timed on its own with random operands of its shapes, summed by primitive and
  by role (a convolution whose output is a kernel, not a batch of samples, is a
  weight gradient); the slowest few are listed with their shapes.

The load average is recorded before and after. Writes
``benchmarks/results/profile_costs.json``.

    python -m benchmarks.profile_costs [--arch resnet] [--repeats 5] [--draws 8]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

import jaxland as jl
from jaxland.curvature.linearised import _linearised, linearise, residual_bytes
from jaxland.curvature.operators import _matvec
from jaxland.linalg.loops import _host_chunk

from .architectures import SETTINGS, problem
from .common import timeit, write_result

PRIMITIVES = ("conv_general_dilated", "dot_general")


def _median(fn, repeats):
    """Median seconds of ``fn()`` (blocked on its result) after one warm-up call."""
    return timeit(lambda: jax.block_until_ready(fn()), repeats=repeats)["median_s"]


def _eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax_core.jaxprs_in_params(eqn.params):
            yield from _eqns(sub)


def _random(aval, key):
    if jnp.issubdtype(aval.dtype, jnp.floating):
        return jax.random.normal(key, aval.shape, aval.dtype)
    return jnp.zeros(aval.shape, aval.dtype)


def primitive_times(fn, args, repeats, top=5) -> dict:
    """Seconds of each convolution and matrix product of ``fn(*args)``'s jaxpr, each compiled and run on its own.

    Products inside a loop body count once (the HVP and the forward pass have none).
    """
    closed = jax.make_jaxpr(fn)(*args)
    rows, key = [], jax.random.key(0)
    for eqn in _eqns(closed.jaxpr):
        name = eqn.primitive.name
        if name not in PRIMITIVES:
            continue
        avals = [v.aval for v in eqn.invars]
        key, *ks = jax.random.split(key, len(avals) + 1)
        operands = [_random(a, k) for a, k in zip(avals, ks)]
        f = jax.jit(lambda *ops, _e=eqn: _e.primitive.bind(*ops, **_e.params))
        s = _median(lambda: f(*operands), repeats)
        rows.append({"primitive": name, "s": s, "shapes": [list(a.shape) for a in avals],
                     "out": [list(v.aval.shape) for v in eqn.outvars]})
    for r in rows:  # a convolution whose output is not batched over the samples makes a weight gradient
        r["role"] = ("weight_gradient" if r["primitive"] == "conv_general_dilated" and r["out"][0][0] != r["shapes"][0][0]
                     else r["primitive"])
    roles = sorted({r["role"] for r in rows})
    by_role = {k: {"s": float(sum(r["s"] for r in rows if r["role"] == k)), "count": sum(1 for r in rows if r["role"] == k)}
               for k in roles}
    total = {p: float(sum(r["s"] for r in rows if r["primitive"] == p)) for p in PRIMITIVES}
    count = {p: sum(1 for r in rows if r["primitive"] == p) for p in PRIMITIVES}
    return {"seconds": total, "count": count, "by_role": by_role, "slowest": sorted(rows, key=lambda r: -r["s"])[:top]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--d", type=int, default=10)
    args = p.parse_args(argv)
    arch, R = args.arch, args.repeats
    n = SETTINGS[arch]["n"]
    load_before = os.getloadavg()
    model, w, x, y, _ = problem(arch, n, args.epochs)
    key = jax.random.key(0)
    v = jax.random.normal(key, w.shape, w.dtype)
    op = jl.hessian_operator(model, w, x, y)
    losses = jax.jit(lambda w_, x_, y_: jnp.mean(model.per_sample_losses(w_, x_, y_)))
    vg = jax.jit(jax.value_and_grad(lambda w_, x_, y_: jnp.mean(model.per_sample_losses(w_, x_, y_))))
    res = linearise(op)
    hvp = {"images": n,
           "forward_s": _median(lambda: losses(w, x, y), R),
           "forward_backward_s": _median(lambda: vg(w, x, y), R),
           "hvp_s": _median(lambda: _matvec(op, v), R),
           "linearise_s": _median(lambda: linearise(op), R),
           "linear_part_s": _median(lambda: _host_chunk(_linearised, res, v[None]), R),
           "residual_bytes": residual_bytes(op)}
    hvp["primitives"] = primitive_times(lambda w_, v_: jax.jvp(jax.grad(lambda u: jnp.mean(model.per_sample_losses(u, x, y))),
                                                               (w_,), (v_,))[1], (w, v), R)
    print("HVP", {k: v for k, v in hvp.items() if k != "primitives"}, hvp["primitives"]["seconds"], flush=True)

    sub = jl.Subspace(w, jl.random_directions(model, w, args.d, key=jax.random.key(1)))
    thetas = jl.draw_thetas(jax.random.key(2), args.draws, args.d, 1.0)
    mc = lambda th: jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=64)
    jax.block_until_ready(mc(thetas).delta)
    res = mc(thetas)
    per_draw = _median(lambda: mc(thetas).delta, max(1, R // 2)) / args.draws
    w1 = w + thetas[0] @ sub.directions
    per_losses = jax.jit(model.per_sample_losses)
    draw = {"images": n, "draws": args.draws, "kernel": res.info.kernel, "per_draw_s": per_draw,
            "standalone_forward_s": _median(lambda: per_losses(w1, x, y), R)}
    draw["primitives"] = primitive_times(lambda w_: model.per_sample_losses(w_, x, y), (w1,), R)
    print("draw", {k: v for k, v in draw.items() if k != "primitives"}, draw["primitives"]["seconds"], flush=True)
    write_result("profile_costs", {"arch": arch, "params": int(w.shape[0]), "hvp": hvp, "delta_draw": draw,
                                   "load_avg_before": load_before, "load_avg_after": os.getloadavg()})


if __name__ == "__main__":
    main()
