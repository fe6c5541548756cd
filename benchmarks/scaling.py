"""Scale-out benchmark: devices, problem size, the matmul ceiling and bf16 error of the Monte Carlo estimates.

Parts (one JSON, ``benchmarks/results/scaling.json``):

1. ``devices``: throughput for 1, 2, 4, 8 devices, one subprocess per count
   (``XLA_FLAGS=--xla_force_host_platform_device_count=n`` on CPU): draw x
   sample loss evaluations per second of :func:`jaxland.delta_monte_carlo`
   (draws sharded; the Monte Carlo kernel plus its streamed statistics) and
   HVPs per second of :func:`jaxland.sharded_hvp` (over data and over vectors).
   Forced host devices share the machine's cores: on a 2-core CPU the
   multi-device throughput cannot exceed about 2x the 1-device throughput of a
   single-threaded program, and XLA already uses both cores on one device, so
   this part checks that sharding costs little, not that it speeds up.
2. ``size``: wall time of ``delta_monte_carlo`` against N (samples, real MNIST
   when available) and against T (draws), with least-squares slopes of
   log(time) on log(size): 1 means linear.
3. ``ceiling``: FLOP rate of the Monte Carlo kernel (contractions counted
   from the layer sizes) against a plain ``jnp`` matmul of the kernel's
   dominant shapes timed in the same run, interleaved: the fraction reached.
4. ``bf16``: ``matmul_dtype=bfloat16`` against float32 on the reference
   problem (trained MLP, 9,984 MNIST images, top-10 Hessian directions,
   sigma = 1, batches of 64, same draws): relative error of Delta_k and
   error in units of the Monte Carlo standard error, and the time of both.
5. ``memory``: peak resident memory of a 60,000-sample x 1,024-draw
   ``delta_monte_carlo`` (subprocess) against the (T, N) loss matrix it never
   holds.

    python -m benchmarks.scaling [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from jaxland.landscape.kernels import DEFAULT_DRAW_CHUNK, DEFAULT_SAMPLE_BLOCK
from benchmarks.common import block, data_dir, reference_problem, timeit, write_result

D = 10


# ----------------------------------------------------------------------------- problem


def mnist(n: int):
    """The first n MNIST training images (60k real when the shared files exist), else n synthetic inputs."""
    folder, _ = data_dir()
    if folder and n <= 60_000:
        ds = jl.load_dataset("mnist", limit=n, data_dir=folder)
        return jnp.asarray(ds.x), jnp.asarray(ds.y), f"mnist ({folder})"
    x = jax.random.normal(jax.random.key(1), (n, 784))
    return x, jnp.arange(n) % 10, "synthetic"


def random_problem(n: int, seed: int = 0):
    """Reference MLP at its initial weights with d random filter-normalised directions (timing only)."""
    model = jl.reference_mlp()
    w = model.init(jax.random.key(seed))
    sub = jl.Subspace(w, jl.random_directions(model, w, D, key=jax.random.key(seed + 1)))
    x, y, src = mnist(n)
    return model, sub, x, y, src


def kernel_flops(sizes, d: int, n: int, t: int, block: int) -> float:
    """Contraction FLOPs (2 per multiply-add) of the fast first-layer kernel for T draws on N samples.

    Per block of ``block`` samples: the d+1 first-layer products, then per draw
    the first-layer combination, the deeper weights ``W + sum_j theta_j P_j``
    and the deeper matmuls. Counted on the N real samples (padding is free).
    """
    s = list(sizes)
    nblocks = n / block
    pre = 2 * block * s[0] * s[1] * (d + 1)
    per_draw = 2 * d * block * s[1] + 2 * d * s[1]
    for a, b in zip(s[1:-1], s[2:]):
        per_draw += 2 * d * a * b + 2 * d * b + 2 * block * a * b
    return nblocks * (pre + t * per_draw)


def loglog_slope(xs, ts):
    xs, ts = np.log(np.asarray(xs, float)), np.log(np.asarray(ts, float))
    full = float(np.polyfit(xs, ts, 1)[0])
    h = len(xs) // 2
    upper = float(np.polyfit(xs[h:], ts[h:], 1)[0]) if len(xs) - h >= 2 else full
    return {"slope": full, "slope_upper_half": upper}


# ----------------------------------------------------------------------------- part 1: devices (worker)


def worker_devices(args):
    n_dev = jax.device_count()
    model, sub, x, y, src = random_problem(args.n)
    th = jl.draw_thetas(jax.random.key(2), args.draws, D, 1.0)
    mesh = jl.device_mesh(n_dev)

    def mc():
        block(jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=64, mesh=mesh).delta)

    t0 = time.perf_counter()
    mc()
    first = time.perf_counter() - t0
    tm = timeit(mc, repeats=args.repeats, warmup=0)
    blk = DEFAULT_SAMPLE_BLOCK
    pre = kernel_flops(model.sizes, D, args.n, 0, blk)
    out = {
        "devices": n_dev,
        "data": src,
        "n": args.n,
        "draws": args.draws,
        "mc_first_call_s": first,
        "mc_time": tm,
        "mc_evals_per_s": args.draws * args.n / tm["min_s"],
        "mc_kernel_gflops": kernel_flops(model.sizes, D, args.n, args.draws, blk) / tm["min_s"] / 1e9,
        # each device makes the d+1 first-layer products of every sample block for its own draws
        "first_layer_precompute_share": n_dev * pre / (n_dev * pre + kernel_flops(model.sizes, D, args.n, args.draws, blk) - pre),
    }
    xh, yh = x[: args.hvp_n], y[: args.hvp_n]
    w = sub.center
    vs = jax.random.normal(jax.random.key(5), (args.hvp_vectors, w.size))
    for over in ("data", "vectors"):
        f = lambda: block(jl.sharded_hvp(model, w, xh, yh, vs, mesh=mesh, over=over))
        f()
        th_ = timeit(f, repeats=args.repeats, warmup=0)
        out[f"hvp_{over}"] = {"time": th_, "hvps_per_s": args.hvp_vectors / th_["min_s"], "n": args.hvp_n, "vectors": args.hvp_vectors}
    print("RESULT " + json.dumps(out), flush=True)


def run_devices(args):
    rows = []
    for nd in args.device_counts:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={nd}"}
        cmd = [sys.executable, "-m", "benchmarks.scaling", "--worker", "devices", "--n", str(args.dev_n), "--draws", str(args.dev_draws),
               "--repeats", str(args.repeats), "--hvp-n", str(args.hvp_n), "--hvp-vectors", str(args.hvp_vectors)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            raise RuntimeError(f"devices={nd} worker failed:\n{r.stderr[-3000:]}")
        row = json.loads([l for l in r.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
        row["subprocess_wall_s"] = time.perf_counter() - t0
        row["load_after"] = os.getloadavg()
        rows.append(row)
        print(f"devices={nd}: MC {row['mc_evals_per_s'] / 1e6:.1f} M evals/s ({row['mc_time']['min_s']:.2f} s), "
              f"HVP data {row['hvp_data']['hvps_per_s']:.1f}/s, vectors {row['hvp_vectors']['hvps_per_s']:.1f}/s", flush=True)
    base = rows[0]
    for row in rows:
        row["mc_speedup_vs_1"] = row["mc_evals_per_s"] / base["mc_evals_per_s"]
        row["hvp_data_speedup_vs_1"] = row["hvp_data"]["hvps_per_s"] / base["hvp_data"]["hvps_per_s"]
        row["hvp_vectors_speedup_vs_1"] = row["hvp_vectors"]["hvps_per_s"] / base["hvp_vectors"]["hvps_per_s"]
    return {
        "rows": rows,
        "note": (
            f"forced host devices (XLA_FLAGS=--xla_force_host_platform_device_count=n) on a {os.cpu_count()}-core CPU: "
            "every 'device' shares the same cores, so multi-device throughput cannot exceed ~2x one device, and "
            "XLA already spreads one device's matmuls over both cores; the figures show the cost of sharding "
            "(padding, per-device first-layer precompute, collectives), not a speed-up. On real devices the "
            "draws split with no communication beyond one psum of per-k statistics."
        ),
    }


# ----------------------------------------------------------------------------- part 2: size


def run_size(args):
    out = {}
    model, sub, xall, yall, src = random_problem(max(args.ns))
    th_all = jl.draw_thetas(jax.random.key(3), max(max(args.ts), args.n_draws), D, 1.0)

    def time_delta(n, t):
        x, y, th = xall[:n], yall[:n], th_all[:t]
        f = lambda: block(jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=None, mesh=1).delta)
        t0 = time.perf_counter()
        f()
        first = time.perf_counter() - t0
        tm = timeit(f, repeats=min(args.repeats, 2), warmup=0)
        return {"first_call_s": first, **tm, "evals_per_s": n * t / tm["min_s"]}

    rows = []
    for n in args.ns:
        r = {"n": n, "draws": args.n_draws, **time_delta(n, args.n_draws)}
        rows.append(r)
        print(f"N={n}: {r['min_s']:.3f} s ({r['evals_per_s'] / 1e6:.1f} M evals/s)", flush=True)
    out["vs_n"] = {"data": src, "draws": args.n_draws, "rows": rows, **loglog_slope([r["n"] for r in rows], [r["min_s"] for r in rows])}
    rows = []
    for t in args.ts:
        r = {"n": args.t_n, "draws": t, **time_delta(args.t_n, t)}
        rows.append(r)
        print(f"T={t}: {r['min_s']:.3f} s ({r['evals_per_s'] / 1e6:.1f} M evals/s)", flush=True)
    out["vs_t"] = {"n": args.t_n, "rows": rows, **loglog_slope([r["draws"] for r in rows], [r["min_s"] for r in rows])}
    out["note"] = ("time of the whole delta_monte_carlo (k in samples, one device); slope = least-squares slope of log time "
                   "on log size (1 = linear); a fixed per-call cost (dispatch, per-N first-layer products) pulls the "
                   "slope below 1 at the small end")
    print(f"slopes: N {out['vs_n']['slope']:.2f} (upper half {out['vs_n']['slope_upper_half']:.2f}), "
          f"T {out['vs_t']['slope']:.2f} (upper half {out['vs_t']['slope_upper_half']:.2f})", flush=True)
    return out


# ----------------------------------------------------------------------------- part 3: ceiling


def dominant_matmuls(sizes, chunk: int, blk: int, matmul_dtype=None):
    """Plain ``jnp`` matmuls of the Monte Carlo kernel's dominant contraction, for its throughput ceiling.

    One vmapped draw chunk computes ``act(h) (chunk, blk, h1) @ W(theta) (chunk, h1, h2)``;
    returns ``({"batched": f, "2d": g}, flops)``: zero-argument functions running
    that contraction as a batched einsum and as one 2-D ``(chunk * blk, h1) @
    (h1, h2)`` matmul (unblocked results), and the FLOPs of one call
    (``2 * chunk * blk * h1 * h2``). ``matmul_dtype`` (e.g. ``jnp.bfloat16``)
    casts the inputs and accumulates in float32, as the kernel's option does.
    """
    s = list(sizes)
    a = jax.random.normal(jax.random.key(6), (chunk, blk, s[1]))
    b = jax.random.normal(jax.random.key(7), (chunk, s[1], s[2]))
    if matmul_dtype is not None:
        a, b = a.astype(matmul_dtype), b.astype(matmul_dtype)
    acc = jnp.float32 if matmul_dtype is not None else None
    mm_batched = jax.jit(lambda a, b: jnp.einsum("cbi,cio->cbo", a, b, preferred_element_type=acc))
    mm_2d = jax.jit(lambda a, b: jnp.matmul(a.reshape(-1, a.shape[-1]), b[0], preferred_element_type=acc))
    return {"batched": lambda: mm_batched(a, b), "2d": lambda: mm_2d(a, b)}, 2 * chunk * blk * s[1] * s[2]


def run_ceiling(args):
    model, sub, x, y, src = random_problem(args.c_n)
    th = jl.draw_thetas(jax.random.key(4), args.c_draws, D, 1.0)
    chunk, blk = DEFAULT_DRAW_CHUNK, DEFAULT_SAMPLE_BLOCK
    s = model.sizes
    flops = kernel_flops(s, D, args.c_n, args.c_draws, blk)

    kern = lambda: block(jl.per_sample_loss_matrix(model, sub, th, x, y, mesh=1))
    full = lambda: block(jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=64, mesh=1).delta)
    mms, mm_flops = dominant_matmuls(s, chunk, blk)
    mm_reps = 20
    bm = lambda: [block(mms["batched"]()) for _ in range(mm_reps)]
    b2 = lambda: [block(mms["2d"]()) for _ in range(mm_reps)]
    for f in (kern, full, bm, b2):
        f()
    times = {"kernel": [], "delta_monte_carlo": [], "matmul_batched": [], "matmul_2d": []}
    for _ in range(args.c_rounds):  # interleaved: every figure sees the same load
        for name, f in (("kernel", kern), ("delta_monte_carlo", full), ("matmul_batched", bm), ("matmul_2d", b2)):
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    g_kernel = flops / best["kernel"] / 1e9
    g_full = flops / best["delta_monte_carlo"] / 1e9
    g_bm = mm_flops * mm_reps / best["matmul_batched"] / 1e9
    g_2d = mm_flops * mm_reps / best["matmul_2d"] / 1e9
    ceiling = max(g_bm, g_2d)
    out = {
        "n": args.c_n,
        "draws": args.c_draws,
        "d": D,
        "draw_chunk": chunk,
        "sample_block": blk,
        "kernel_flops": flops,
        "plain_forward_flops_equivalent": 2 * args.c_n * args.c_draws * sum(a_ * b_ for a_, b_ in zip(s[:-1], s[1:])),
        "times_s": times,
        "kernel_gflops": g_kernel,
        "delta_monte_carlo_gflops": g_full,
        "matmul_batched_gflops": g_bm,
        "matmul_2d_gflops": g_2d,
        "ceiling_gflops": ceiling,
        "fraction_kernel": g_kernel / ceiling,
        "fraction_delta_monte_carlo": g_full / ceiling,
        "note": ("kernel = per_sample_loss_matrix (fast first-layer path, 1 device); FLOPs = its contractions "
                 "(first-layer products per block, per-draw first-layer combination, W(theta) formation, deeper "
                 "matmuls; elementwise work and padding not counted); ceiling = the faster of a batched "
                 f"({chunk}, {blk}, {s[1]}) x ({chunk}, {s[1]}, {s[2]}) matmul and the 2-D ({chunk * blk}, {s[1]}) x "
                 f"({s[1]}, {s[2]}) one, min over {args.c_rounds} interleaved rounds"),
    }
    print(f"ceiling: kernel {g_kernel:.0f} GFLOP/s, delta_monte_carlo {g_full:.0f}, matmul {g_bm:.0f} (batched) / "
          f"{g_2d:.0f} (2-D) -> {100 * g_kernel / ceiling:.0f}% of the ceiling", flush=True)
    return out


# ----------------------------------------------------------------------------- part 4: bf16


def run_bf16(args):
    model, w, x, y, info = reference_problem()
    t0 = time.perf_counter()
    sub, res = jl.hessian_subspace(model, w, x, y, D, key=jax.random.key(11), tol=1e-4)
    eig_s = time.perf_counter() - t0
    th = jl.draw_thetas(jax.random.key(12), args.bf16_draws, D, 1.0)
    out = {"setup": {"n": int(x.shape[0]), "d": D, "sigma": 1.0, "batch_size": 64, "draws": args.bf16_draws,
                     "directions": "top-10 Hessian eigenvectors (jaxland lanczos, tol 1e-4)", "eigensolve_s": eig_s, **info}}
    res = {}
    for name, dt in (("float32", None), ("bfloat16", jnp.bfloat16)):
        f = lambda: jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=64, mesh=1, matmul_dtype=dt)
        r = f()
        block(r.delta)
        tm = timeit(lambda: block(f().delta), repeats=1, warmup=0)
        res[name] = r
        out[f"{name}_time_s"] = tm["min_s"]
    a, b = np.asarray(res["float32"].delta), np.asarray(res["bfloat16"].delta)
    rel = np.abs(b - a) / np.abs(a)
    z = np.abs(b - a) / np.asarray(res["float32"].stderr)
    out.update({
        "delta_rel_error_max": float(rel.max()),
        "delta_rel_error_median": float(np.median(rel)),
        "delta_abs_error_over_mc_stderr_max": float(z.max()),
        "delta_abs_error_over_mc_stderr_median": float(np.median(z)),
        "note": ("same draws, same weights; bf16 casts every layer matmul's inputs (first-layer products and the "
                 "per-draw layers), accumulating in float32. On this CPU bf16 is not faster (no native bf16 matmul "
                 "path in XLA:CPU); the option is for GPU/TPU."),
    })
    print(f"bf16 vs float32: Delta_k rel error max {rel.max():.2e}, median {np.median(rel):.2e}; "
          f"|diff|/SE max {z.max():.3f}; time f32 {out['float32_time_s']:.2f} s, bf16 {out['bfloat16_time_s']:.2f} s", flush=True)
    return out


# ----------------------------------------------------------------------------- part 5: memory (worker)


def rss_mib():
    """Peak resident memory of this process in MiB since the last :func:`reset_peak` (VmHWM), else since start."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return float("nan")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker_memory(args):
    model, sub, x, y, src = random_problem(args.n)
    th = jl.draw_thetas(jax.random.key(2), args.draws, D, 1.0)
    block(x)
    resident = current_rss_mib()
    reset = reset_peak()
    before = rss_mib()
    t0 = time.perf_counter()
    r = jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=64, mesh=1)
    block(r.delta)
    wall = time.perf_counter() - t0
    peak = rss_mib()
    plan = jl.stream_plan(args.draws, args.n, sample_block=DEFAULT_SAMPLE_BLOCK)
    print("RESULT " + json.dumps({
        "n": args.n, "draws": args.draws, "data": src, "wall_s_incl_compile": wall,
        "rss_before_mib": resident, "peak_reset": reset, "peak_rss_before_mib": before, "peak_rss_after_mib": peak,
        "peak_rss_growth_mib": peak - resident,
        "loss_matrix_mib": args.n * args.draws * 4 / 2**20,
        "stream_plan": plan._asdict(),
        "evals_per_s_incl_compile": args.n * args.draws / wall,
    }), flush=True)


def run_memory(args):
    rows = []
    for draws in (args.mem_draws // 4, args.mem_draws):  # the growth must not follow T
        cmd = [sys.executable, "-m", "benchmarks.scaling", "--worker", "memory", "--n", str(args.mem_n), "--draws", str(draws)]
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"memory worker failed:\n{r.stderr[-3000:]}")
        row = json.loads([l for l in r.stdout.splitlines() if l.startswith("RESULT ")][-1][7:])
        rows.append(row)
        print(f"memory: N={row['n']} x T={row['draws']}: peak RSS +{row['peak_rss_growth_mib']:.0f} MiB "
              f"(loss matrix would be {row['loss_matrix_mib']:.0f} MiB), {row['wall_s_incl_compile']:.1f} s", flush=True)
    return {
        "rows": rows,
        "note": ("fresh process per row: resident memory with the data loaded (rss_before_mib), then its peak (VmHWM, "
                 "reset just before) over the whole delta_monte_carlo call (k in batches of 64) including "
                 "compilation; growth = peak - before; loss_matrix_mib is the (T, N) float32 matrix it never holds"),
    }


# ----------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (about 2-3 minutes)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--parts", default="devices,size,ceiling,bf16,memory")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", choices=("devices", "memory"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=4096, help=argparse.SUPPRESS)
    ap.add_argument("--draws", type=int, default=256, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hvp-n", type=int, default=4096)
    ap.add_argument("--hvp-vectors", type=int, default=8)
    args = ap.parse_args(argv)
    if args.worker == "devices":
        return worker_devices(args)
    if args.worker == "memory":
        return worker_memory(args)

    # sizes: default (full) / --quick / --smoke
    full = dict(device_counts=[1, 2, 4, 8], dev_n=4096, dev_draws=512, ns=[1000, 2000, 4000, 8000, 16000, 30000, 60000],
                n_draws=64, ts=[64, 128, 256, 512, 1024, 2048, 4096], t_n=2048, c_n=9984, c_draws=256, c_rounds=3,
                bf16_draws=256, mem_n=60000, mem_draws=1024)
    quick = dict(full, dev_draws=128, ns=[1000, 4000, 16000, 60000], n_draws=32, ts=[64, 256, 1024], t_n=1024,
                 c_draws=128, c_rounds=2, bf16_draws=64, mem_draws=256)
    smoke = dict(quick, device_counts=[1, 2], dev_n=512, dev_draws=16, ns=[500, 1000], n_draws=8, ts=[16, 32],
                 t_n=256, c_n=1024, c_draws=16, c_rounds=1, bf16_draws=8, mem_n=2000, mem_draws=32)
    sizes = smoke if args.smoke else quick if args.quick else full
    if args.smoke:
        args.hvp_n, args.hvp_vectors, args.repeats = 256, 2, 1
    for k, v in sizes.items():
        setattr(args, k, v)
    parts = args.parts.split(",")

    load_start = os.getloadavg()
    t_start = time.perf_counter()
    payload = {"mode": "smoke" if args.smoke else "quick" if args.quick else "full", "sizes": sizes,
               "hvp": {"n": args.hvp_n, "vectors": args.hvp_vectors}, "model": list(jl.reference_mlp().sizes), "d": D}
    for name, fn in (("devices", run_devices), ("size", run_size), ("ceiling", run_ceiling), ("bf16", run_bf16), ("memory", run_memory)):
        if name in parts:
            t0 = time.perf_counter()
            payload[name] = fn(args)
            payload[name]["part_wall_s"] = time.perf_counter() - t0
    payload["wall_s"] = time.perf_counter() - t_start
    payload["load_average"] = {
        "start": load_start,
        "end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "note": "os.getloadavg() at start and end; the machine may be shared, which lowers every figure alike",
    }
    payload["backend"] = jax.default_backend()
    name = "scaling" if not args.smoke else "scaling_smoke"
    if set(parts) != set(ap.get_default("parts").split(",")):
        # a partial run updates those parts of the existing results
        from benchmarks.common import RESULTS

        path = args.out or RESULTS / f"{name}.json"
        if os.path.exists(path):
            with open(path) as f:
                old = json.load(f)
            old.pop("meta", None)
            old.pop("benchmark", None)
            rerun = {p: {"load_average": payload["load_average"], "wall_s": payload["wall_s"]} for p in parts}
            payload = {**old, **{p: payload[p] for p in parts}, "partial_reruns": {**old.get("partial_reruns", {}), **rerun}}
    write_result(name, payload, args.out)


if __name__ == "__main__":
    main()
