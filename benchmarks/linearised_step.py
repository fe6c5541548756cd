"""The host loop's compiled step: rebuilt from the operator (forward, backward, then the linear part) against the stored
linearisation (:mod:`jaxland.curvature.linearised`: the linear part only), per product and per vector of a chunk.

For each architecture (weights of :func:`benchmarks.architectures.problem`, the
spectrum part's images) and each operator kind: seconds per host step of one
vector with the operator as operand (the step before this change) and with the
linearisation as operand, the one-off cost of the linearisation, its residual
bytes, and the relative difference of the two products (0 means bitwise equal);
then seconds per vector for chunks of 1, 2, 4 vectors on the Hessian. Medians of
``--repeats`` warm calls; the load average is recorded per architecture.

    python -m benchmarks.linearised_step [--archs mlp,lenet5,linen_cnn] [--kinds hessian,ggn,fisher]
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from jaxland.curvature.linearised import _linearised, linearise, residual_bytes
from jaxland.curvature.operators import curvature_operator, linear_map
from jaxland.linalg.loops import _host_chunk

from .architectures import SETTINGS, problem
from .common import timeit, write_result


def _median(fn, repeats):
    """Median seconds of ``fn()`` (blocked on its result) after one warm-up call."""
    return timeit(lambda: jax.block_until_ready(fn()), repeats=repeats)["median_s"]


def measure(arch, kinds, epochs, repeats) -> dict:
    n = SETTINGS[arch]["spectrum_samples"]
    model, w, x, y, _ = problem(arch, SETTINGS[arch]["n"], epochs)
    x, y = x[:n], y[:n]
    out = {"images": n, "load_avg_before": os.getloadavg(), "kinds": {}}
    for kind in kinds:
        op = curvature_operator(model, w, x, y, kind=kind)
        res = linearise(op)
        V = jax.random.normal(jax.random.key(0), (1, op.dim), op.dtype)
        old = _median(lambda: _host_chunk(linear_map, op, V), repeats)
        new = _median(lambda: _host_chunk(_linearised, res, V), repeats)
        a, b = np.asarray(_host_chunk(linear_map, op, V)), np.asarray(_host_chunk(_linearised, res, V))
        out["kinds"][kind] = {"operator_step_s": old, "linearised_step_s": new, "speedup": old / new,
                              "linearise_s": _median(lambda: linearise(op), repeats),
                              "residual_bytes": residual_bytes(op),
                              "rel_diff": float(np.linalg.norm(a - b) / np.linalg.norm(a))}
        print(f"{arch} {kind}: step {old:.4f} -> {new:.4f} s (x{old / new:.2f}), residuals "
              f"{residual_bytes(op) / 1e6:.1f} MB", flush=True)
    op = curvature_operator(model, w, x, y, kind="hessian")
    res = linearise(op)
    chunks = {}
    for c in (1, 2, 4):
        V = jax.random.normal(jax.random.key(0), (c, op.dim), op.dtype)
        chunks[c] = {"operator_s_per_vector": _median(lambda: _host_chunk(linear_map, op, V), repeats) / c,
                     "linearised_s_per_vector": _median(lambda: _host_chunk(_linearised, res, V), repeats) / c}
    out["hessian_chunks"] = chunks
    out["load_avg_after"] = os.getloadavg()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="mlp,lenet5,linen_cnn")
    p.add_argument("--kinds", default="hessian,ggn,fisher")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    kinds = args.kinds.split(",")
    res = {a: measure(a, kinds, args.epochs, args.repeats) for a in args.archs.split(",")}
    write_result("linearised_step", {"setup": {"repeats": args.repeats, "epochs": args.epochs, "backend": jax.default_backend()},
                                     "architectures": res})


if __name__ == "__main__":
    main()
