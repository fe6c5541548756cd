"""Running jaxland's batched estimators over many devices and hosts.

jaxland's expensive programs are maps over independent rows: Monte Carlo
draws, samples of the per-sample curvature pass, vectors of a block HVP.
:func:`map_rows` splits such rows over a 1-D device mesh with
``jax.shard_map`` (each device runs the same compiled, chunked program on its
block), and gathers the result. On one device it is just the chunked map, so
the numbers do not depend on the number of devices beyond float rounding.

Every estimator goes through this module: :func:`map_rows` for row-wise
maps (loss matrices split draws, ``subspace_curvature`` splits samples,
``sharded_hvp(over="vectors")`` splits vectors) and :func:`shard_rows` for
maps that reduce across devices (``delta_monte_carlo``'s per-k statistics,
``sharded_hvp(over="data")``), with :func:`pad_rows`, :func:`replicate` and
:func:`gather` as the one way to pad, place and collect. ``mesh=None`` in the estimators means every visible device (with one
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
    "resolve_mesh",
    "map_rows",
    "shard_rows",
    "pad_rows",
    "replicate",
    "gather",
    "auto_chunk",
    "ceil_div",
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


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive integers."""
    return -(-int(a) // int(b))


def auto_chunk(num_rows: int, bytes_per_row: float, budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Largest chunk of rows whose intermediates fit in ``budget`` bytes (at least 1, at most num_rows)."""
    if num_rows < 1:
        raise ConfigError(f"num_rows must be >= 1, got {num_rows}")
    return int(max(1, min(num_rows, budget // max(1, int(bytes_per_row)))))


def resolve_mesh(mesh) -> jax.sharding.Mesh | None:
    """The estimators' ``mesh=`` option: None -> every visible device; an int n -> the first n; a Mesh as is.

    Returns None when the work runs on one device (the plain, unsharded program).
    """
    if mesh is None:
        if jax.device_count() == 1:
            return None
        mesh = device_mesh()
    elif isinstance(mesh, (int, np.integer)):
        mesh = device_mesh(int(mesh))
    elif not isinstance(mesh, jax.sharding.Mesh):
        raise ConfigError(f"mesh must be None, a device count or a jax.sharding.Mesh, got {type(mesh).__name__}")
    if mesh.axis_names != (AXIS,):
        raise ConfigError(f"mesh must be 1-D with axis {AXIS!r} (jaxland.device_mesh), got axes {mesh.axis_names}")
    return None if mesh.size == 1 else mesh


def pad_rows(a: jax.Array, multiple: int) -> jax.Array:
    """``a`` with its last row repeated until the number of rows is a multiple of ``multiple``.

    Repeating a real row (rather than zeros) keeps every padded evaluation
    finite; callers drop or mask the padded rows.
    """
    pad = (-a.shape[0]) % multiple
    return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a


def replicate(mesh, *trees):
    """Concrete inputs put on every device of ``mesh`` (committed single-device arrays would clash)."""
    if mesh is None:
        return trees
    rep = NamedSharding(mesh, P())
    put = lambda a: a if isinstance(a, jax.core.Tracer) else jax.device_put(a, rep)
    return tuple(None if t is None else jax.tree.map(put, t) for t in trees)


def gather(tree):
    """Multi-host: make a sharded result whole on every process (process 0 writes it)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    def whole(a):
        # a result computed by this process alone (one-device mesh) is already whole
        if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer) and not a.is_fully_addressable:
            return multihost_utils.process_allgather(a, tiled=True)
        return a

    return jax.tree.map(whole, tree)


def shard_rows(fn: Callable, rows, *args, mesh: jax.sharding.Mesh, replicated_output: bool = False):
    """``fn(local_rows, *args)`` on each device of ``mesh``, the leading axis of ``rows`` split over them.

    ``rows`` is an array or a tuple of arrays with a common leading axis,
    already a multiple of ``mesh.size`` (:func:`pad_rows`); ``args`` are
    replicated. Outputs are row-sharded, or, with ``replicated_output=True``,
    identical on every device (``fn`` then combines across devices itself,
    e.g. with ``jax.lax.psum(..., AXIS)``). ``jax.lax.axis_index(AXIS)``
    inside ``fn`` gives the device's position.
    """
    tup = isinstance(rows, tuple)
    row_specs = tuple(P(AXIS) for _ in rows) if tup else P(AXIS)
    body = (lambda r, *a: fn(r, *a)) if not tup else (lambda r, *a: fn(tuple(r), *a))
    return jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(row_specs,) + tuple(P() for _ in args),
        out_specs=P() if replicated_output else P(AXIS),
        check_vma=False,
    )(rows, *args)


def _chunked(fn: Callable, chunk: int | None):
    """``fn`` mapped over the leading axis of its first argument (a tuple of arrays), ``chunk`` rows at a time."""

    def run(rows, *rest):
        n = rows[0].shape[0]
        c = n if chunk is None else max(1, min(chunk, n))
        if c >= n:
            return fn(rows, *rest)
        # lax.map over blocks of c rows: bounded memory, one compiled body.
        blocks = tuple(pad_rows(r, c).reshape(-1, c, *r.shape[1:]) for r in rows)
        out = jax.lax.map(lambda b: fn(b, *rest), blocks)
        return jax.tree.map(lambda o: o.reshape(-1, *o.shape[2:])[:n], out)

    return run


def map_rows(
    fn: Callable,
    rows,
    *args,
    chunk: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
):
    """``fn(rows, *args)`` for a row-wise ``fn``, chunked and sharded over a device mesh.

    ``fn(block, *args)`` must map a block of rows (b, ...) -- an array, or a
    tuple of arrays with a common leading axis -- to outputs whose leading axis
    is b, row by row (row i of the output depends only on row i of the
    input). ``args`` are replicated. With ``mesh=None`` or a one-device mesh
    this is the chunked map on the default device. Rows are padded to a
    multiple of the device count and the padding is dropped from the result.

    Call it inside or outside ``jit``; outside, the result is gathered to every
    process (multi-host).
    """
    tup = isinstance(rows, tuple)
    rows_t = rows if tup else (rows,)
    call = fn if tup else (lambda r, *a: fn(r[0], *a))
    body = _chunked(call, chunk)
    if mesh is None or mesh.size == 1:
        return body(rows_t, *args)
    n = rows_t[0].shape[0]
    padded = tuple(pad_rows(r, mesh.size) for r in rows_t)
    if not isinstance(padded[0], jax.core.Tracer):
        padded = tuple(jax.device_put(r, NamedSharding(mesh, P(AXIS))) for r in padded)
        args = replicate(mesh, *args)
    out = shard_rows(body, padded, *args, mesh=mesh)
    return gather(jax.tree.map(lambda o: o[:n], out))


def _distributed_is_initialized() -> bool:
    check = getattr(jax.distributed, "is_initialized", None)
    if check is not None:
        return bool(check())
    from jax._src import distributed  # older jax: the client exists once initialised

    return distributed.global_state.client is not None


def _check_distributed_kwargs(kwargs) -> None:
    """The arguments of ``jax.distributed.initialize``, checked before JAX sees them."""
    import inspect

    allowed = set(inspect.signature(jax.distributed.initialize).parameters)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"initialize_distributed got unknown argument(s) {unknown}; allowed: {sorted(allowed)}")
    addr = kwargs.get("coordinator_address")
    if addr is not None:
        host, sep, port = addr.rpartition(":") if isinstance(addr, str) else ("", "", "")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"coordinator_address must be 'host:port' (process 0's address), got {addr!r}")
    for name in ("num_processes", "process_id", "initialization_timeout", "heartbeat_timeout_seconds",
                 "shutdown_timeout_seconds", "slice_index", "partition_index"):
        v = kwargs.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (1 if name == "num_processes" else 0)):
            raise ConfigError(f"{name} must be an integer >= {1 if name == 'num_processes' else 0}, got {v!r}")
    n, i = kwargs.get("num_processes"), kwargs.get("process_id")
    if n is not None and i is not None and not i < n:
        raise ConfigError(f"process_id={i} must be in [0, num_processes={n})")
    ids = kwargs.get("local_device_ids")
    if ids is not None:
        seq = [ids] if isinstance(ids, (int, np.integer)) else ids
        if isinstance(seq, (str, bytes)) or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
                                                    for d in seq):
            raise ConfigError(f"local_device_ids must be a device index or a sequence of them, got {ids!r}")
    for name in ("cluster_detection_method", "coordinator_bind_address"):
        if kwargs.get(name) is not None and not isinstance(kwargs[name], str):
            raise ConfigError(f"{name} must be a string, got {kwargs[name]!r}")


def initialize_distributed(**kwargs) -> None:
    """``jax.distributed.initialize(**kwargs)`` once per process; a no-op when already initialised.

    Call it at the top of the script in every process, before any other JAX
    call. On Cloud TPU pod slices and SLURM/Open MPI GPU clusters the arguments
    are discovered automatically; elsewhere pass ``coordinator_address``
    ("host:port" of process 0), ``num_processes`` and ``process_id``. On CPU
    set ``jax_cpu_collectives_implementation="gloo"`` first. Afterwards
    ``jax.devices()`` (and so :func:`device_mesh`) spans every process.
    Impossible arguments, or a first call after JAX has started its backends,
    raise :class:`~jaxland.ConfigError`.
    """
    if _distributed_is_initialized():
        return
    _check_distributed_kwargs(kwargs)
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, TypeError, IndexError) as e:
        raise ConfigError(f"initialize_distributed({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): {e}") from None
    except RuntimeError as e:
        if _distributed_is_initialized():
            return
        if "before any JAX" in str(e) or "must be called before" in str(e):
            raise ConfigError(
                "initialize_distributed must run before any other JAX call in the process (JAX has already started "
                "its backends); call it first thing in the script"
            ) from None
        raise


def is_main_process() -> bool:
    """True on process 0: the one that writes results in a multi-host run."""
    return jax.process_index() == 0
