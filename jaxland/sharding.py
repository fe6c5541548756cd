"""Running jaxland's batched estimators over many devices and hosts.

jaxland's expensive programs are maps over independent rows: Monte Carlo
draws, samples of the per-sample curvature pass, vectors of a block HVP.
:func:`map_rows` splits such rows over a 1-D device mesh with
``jax.shard_map`` (each device runs the same compiled, chunked program on its
block), and gathers the result. On one device it is just the chunked map, so
the numbers do not depend on the number of devices beyond float rounding.

The estimators take the mesh as an option: ``delta_monte_carlo``,
``per_sample_loss_matrix`` and ``loss_surface`` split draws (grid points),
``subspace_curvature`` splits samples, ``sharded_hvp`` splits data or
vectors. ``mesh=None`` in the estimators means every visible device (with one
device, the plain program); an int n means the first n devices; pass
``device_mesh(1)`` to force one device.

Multi-host (TPU pod slices, GPU clusters): run the same script in every
process and call :func:`initialize_distributed` (``jax.distributed.initialize()``)
first, before any other JAX call. Build every input the same way in every
process (same keys, same data files, same trained weights), then call the
estimators as usual: ``jax.devices()`` then lists the devices of all
processes, so the default mesh spans them. Every process gets the whole
result -- ``delta_monte_carlo`` merges its per-k statistics with a ``psum``;
row-wise outputs (loss matrices, curvature) are gathered with
``process_allgather`` -- and :func:`is_main_process` (process 0) alone should
write files and figures::

    import jax, jaxland as jl
    jl.initialize_distributed()          # TPU pod / SLURM / Open MPI: auto-detected
    # elsewhere: jl.initialize_distributed(coordinator_address="host0:1234",
    #                                      num_processes=N, process_id=i)
    res = jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=4096,
                               key=jax.random.key(0))   # draws over all devices
    if jl.is_main_process():
        jl.write_json("delta.json", {"delta": res.delta.tolist()})

On CPU hosts (tested: 2 processes x 2 forced devices on one machine) set
``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before
initialising. Each process holds its own copy of the data; only draws,
samples or vectors are divided.

Memory: rows are processed ``chunk`` at a time per device (``lax.map`` with
``batch_size``), so the working set is bounded by the chunk, not by the
number of rows; :func:`auto_chunk` picks the chunk from a byte budget.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from .errors import ConfigError

__all__ = [
    "AXIS",
    "device_mesh",
    "map_rows",
    "auto_chunk",
    "initialize_distributed",
    "is_main_process",
    "DEFAULT_MEMORY_BUDGET",
]

AXIS = "rows"
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of intermediates per device per chunk


def device_mesh(devices: int | Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``"rows"`` over ``devices`` (default: every device, all hosts).

    ``devices`` may be a count (the first n of ``jax.devices()``) or a list.
    """
    all_devices = jax.devices()
    if devices is None:
        devs = all_devices
    elif isinstance(devices, int):
        if not 1 <= devices <= len(all_devices):
            raise ConfigError(f"devices={devices} but {len(all_devices)} are visible ({jax.default_backend()})")
        devs = all_devices[:devices]
    else:
        devs = list(devices)
    return jax.sharding.Mesh(np.asarray(devs), (AXIS,))


def auto_chunk(num_rows: int, bytes_per_row: float, budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Largest chunk of rows whose intermediates fit in ``budget`` bytes (at least 1, at most num_rows)."""
    if num_rows < 1:
        raise ConfigError(f"num_rows must be >= 1, got {num_rows}")
    return int(max(1, min(num_rows, budget // max(1, int(bytes_per_row)))))


def _chunked(fn: Callable, chunk: int | None):
    """``fn`` mapped over the leading axis of its first argument, ``chunk`` rows at a time."""

    def run(rows, *rest):
        n = rows.shape[0]
        c = n if chunk is None else max(1, min(chunk, n))
        if c >= n:
            return fn(rows, *rest)
        # lax.map over blocks of c rows: bounded memory, one compiled body.
        pad = (-n) % c
        padded = jnp.concatenate([rows, jnp.repeat(rows[-1:], pad, axis=0)]) if pad else rows
        blocks = padded.reshape(-1, c, *rows.shape[1:])
        out = jax.lax.map(lambda b: fn(b, *rest), blocks)
        out = jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[:n], out)
        return out

    return run


def map_rows(
    fn: Callable,
    rows: jax.Array,
    *args,
    chunk: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
):
    """``fn(rows, *args)`` for a row-wise ``fn``, chunked and sharded over a device mesh.

    ``fn(block, *args)`` must map a block of rows (b, ...) to outputs whose
    leading axis is b, row by row (row i of the output depends only on row i
    of the input). ``args`` are replicated. With ``mesh=None`` or a one-device
    mesh this is the chunked map on the default device. Rows are padded to a
    multiple of the device count and the padding is dropped from the result.

    Call it inside or outside ``jit``; outside, the result is gathered to every
    process (multi-host).
    """
    body = _chunked(fn, chunk)
    if mesh is None or mesh.size == 1:
        return body(rows, *args)
    ndev = mesh.size
    n = rows.shape[0]
    pad = (-n) % ndev
    if pad:
        rows = jnp.concatenate([rows, jnp.repeat(rows[-1:], pad, axis=0)])
    row_sharding = NamedSharding(mesh, P(AXIS))
    rep = NamedSharding(mesh, P())
    rows = jax.device_put(rows, row_sharding) if not isinstance(rows, jax.core.Tracer) else jax.lax.with_sharding_constraint(rows, row_sharding)
    args = tuple(jax.device_put(a, rep) if not isinstance(a, jax.core.Tracer) else a for a in args)
    sharded = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(P(AXIS),) + tuple(P() for _ in args),
        out_specs=P(AXIS),
        check_vma=False,
    )
    out = sharded(rows, *args)
    out = jax.tree.map(lambda o: o[:n], out)
    if jax.process_count() > 1 and not isinstance(out, jax.core.Tracer):
        from jax.experimental import multihost_utils

        out = multihost_utils.process_allgather(out, tiled=True)
    return out


def initialize_distributed(**kwargs) -> None:
    """``jax.distributed.initialize(**kwargs)`` once per process (no-op if already initialised).

    Call it at the top of the script in every process, before any other JAX
    call. On Cloud TPU pod slices and SLURM/Open MPI GPU clusters the arguments
    are discovered automatically; elsewhere pass ``coordinator_address``
    ("host:port" of process 0), ``num_processes`` and ``process_id``. On CPU
    set ``jax_cpu_collectives_implementation="gloo"`` first. Afterwards
    ``jax.devices()`` (and so :func:`device_mesh`) spans every process.
    """
    try:
        jax.distributed.initialize(**kwargs)
    except RuntimeError as e:
        if "already" not in str(e).lower():
            raise


def is_main_process() -> bool:
    """True on process 0: the one that writes results in a multi-host run."""
    return jax.process_index() == 0
