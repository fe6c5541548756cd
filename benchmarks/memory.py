"""How close is :mod:`jaxland.memory`'s estimate to the real peak of a call?

Each call runs in a fresh interpreter, twice. The first run compiles and
runs it: its growth of the peak resident set (``ru_maxrss``) is the buffers
plus what XLA needs to compile. Then the peak is reset (``/proc/self/clear_refs``),
the call runs again from the compiled programs, and the growth of the peak
(``VmHWM`` over the resident set before) is what its buffers take: the
number the estimate is about. Linux CPU only (resident memory).

    python -m benchmarks.memory            # all three calls
    python -m benchmarks.memory train      # one of: train, delta, eigen
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from .common import RESULTS

SETUP = """
import gc, json, resource, jax, jax.numpy as jnp, numpy as np, jaxland as jl
from jaxland import memory
from jaxland.landscape.montecarlo import _sample_block, stream_plan
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def status(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith(field + ":"))

def twice(call):
    before = peak()
    jax.block_until_ready(call())
    first = peak() - before
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    rss = status("VmRSS")
    jax.block_until_ready(call())
    return first, status("VmHWM") - rss
"""

CALLS = {
    # a mid-size MLP, one epoch of Adam on 512 images
    "train": """
        ds = jl.load_dataset("mnist_10k", limit=512)
        model = jl.MLPConfig((784, 4096, 4096, 10))
        parts = memory.train_parts(model, ds.x, ds.y, batch_size=64)
        first, second = twice(lambda: jl.train(model, ds.x, ds.y, key=jax.random.key(0), epochs=1, progress=False).params)
    """,
    # the reference MLP, 2,048 images, d = 10, T = 256 draws, k in batches of 64
    "delta": """
        ds = jl.load_dataset("mnist_10k", limit=2048)
        model = jl.reference_mlp()
        w = model.init(jax.random.key(0))
        sub = jl.Subspace(w, jl.random_directions(model, w, 10, key=jax.random.key(1)))
        block = _sample_block(None, 10, 2048, 64)
        parts = memory.monte_carlo_parts(model, sub, ds.x, ds.y, num_draws=256, draw_chunk=16, sample_block=block)
        plan = stream_plan(256, 2048, sample_block=block)
        parts["passes"] = plan.pass_draws * plan.bytes_per_draw
        first, second = twice(lambda: jl.delta_monte_carlo(model, sub, ds.x, ds.y, sigma=1.0, num_draws=256,
                                                           key=jax.random.key(2), samples_per_k=64).delta)
    """,
    # top-10 Hessian eigenpairs of the reference MLP on 2,048 images (Lanczos; basis of 60 vectors)
    "eigen": """
        ds = jl.load_dataset("mnist_10k", limit=2048)
        model = jl.reference_mlp()
        w = model.init(jax.random.key(0))
        parts = {**memory.krylov_parts(model.num_params, method="lanczos", d=10, block_size=1, max_matvecs=None),
                 **memory.hvp_parts(model, ds.x, ds.y)}
        first, second = twice(lambda: jl.hessian_eigenpairs(model, w, ds.x, ds.y, 10, key=jax.random.key(1)).eigenvalues)
    """,
}

REPORT = """
print(json.dumps({"estimate": sum(parts.values()), "parts": parts, "first_call_growth": first, "peak_growth": second}))
"""


def measure(name: str) -> dict:
    code = SETUP + textwrap.dedent(CALLS[name]) + REPORT
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or list(CALLS)
    path = RESULTS / "memory.json"
    out = json.loads(path.read_text()) if path.exists() else {}  # a partial run updates its calls only
    for name in names:
        m = measure(name)
        out[name] = m
        print(f"{name:6s} estimate {m['estimate'] / 1e6:8.1f} MB   peak growth {m['peak_growth'] / 1e6:8.1f} MB   "
              f"(first call, with compilation: {m['first_call_growth'] / 1e6:.1f} MB)", flush=True)
    from jaxland.io import write_json

    write_json(path, out)


if __name__ == "__main__":
    main()
