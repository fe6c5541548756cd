"""Will a call fit in memory? Peak bytes estimated from shapes and dtypes, before anything is allocated.

Every expensive entry point (:func:`jaxland.train`, :func:`jaxland.delta_monte_carlo`,
:func:`jaxland.subspace_curvature`, the eigensolvers) adds up its largest
buffers here and is refused with a :class:`~jaxland.ConfigError` that states the
estimate, its parts, the memory available and the fix, when it cannot fit;
where a setting can make it fit (Monte Carlo draws in passes, a smaller
sample block) the caller applies it instead. Nothing is computed: the sizes
come from the arguments' shapes and from abstract traces of the model
(``jax.make_jaxpr`` on ``jax.ShapeDtypeStruct`` inputs, no FLOPs).

Activations. For a function ``f`` of a batch of b samples, the bytes of every
intermediate value in the traced program of ``f`` at b = 2 minus those at
b = 1 are the bytes that grow with each sample (what does not grow, like the
views of ``w`` into layers, cancels). Outputs of elementwise operations
(:data:`FUSED`) are left out: XLA fuses them into the operation that consumes
them, so they are never buffers of their own. The sum still counts every
other intermediate as if all were alive at once, an upper bound on what XLA
keeps (for one HVP: 1.5x XLA's buffer assignment for a 0.8M-parameter GPT on
256 sequences, 2.7x for the papers' MLP, 2.6x for LeNet-5, 1.5x for the ViT;
counting the elementwise outputs too gave 6-10x, and refused runs that fit);
it is multiplied by the batch the call really runs.

Available memory: on an accelerator ``bytes_limit - bytes_in_use`` of
``device.memory_stats()``; on a CPU ``MemAvailable`` of ``/proc/meminfo``
(else the physical memory). A call is refused when its estimate exceeds
:data:`HEADROOM` of that.
"""

from __future__ import annotations

import functools
import gc
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .errors import ConfigError

__all__ = [
    "HEADROOM",
    "FUSED",
    "MemoryEstimate",
    "available_bytes",
    "nbytes",
    "per_sample_bytes",
    "estimate",
    "require",
    "draw_budget",
    "human",
    "train_parts",
    "monte_carlo_parts",
    "curvature_parts",
    "krylov_parts",
    "hvp_parts",
    "MAX_MAPPINGS",
    "release_compiled_programs",
]

HEADROOM = 0.9  # the share of the available memory a call may plan to use

# elementwise primitives: XLA fuses each into its consumer, so their outputs are not buffers
FUSED = frozenset({
    "abs", "add", "add_any", "and", "ceil", "clamp", "convert_element_type", "copy", "copy_p", "cos", "div", "eq", "erf",
    "erf_inv", "exp", "exp2", "expand_dims", "floor", "ge", "gt", "integer_pow", "is_finite", "le", "log", "log1p",
    "logistic", "lt", "max", "min", "mul", "ne", "neg", "nextafter", "not", "or", "pow", "rem", "reshape", "round", "rsqrt",
    "select_n", "sign", "sin", "sqrt", "square", "squeeze", "stop_gradient", "sub", "tanh", "broadcast_in_dim", "iota",
})


class MemoryEstimate(NamedTuple):
    """``parts``: bytes of each large buffer of the call (name -> bytes); ``available``: bytes free on the device."""

    parts: dict
    available: int

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    @property
    def fits(self) -> bool:
        return self.total <= HEADROOM * self.available


def human(n: float) -> str:
    """``n`` bytes as text, e.g. ``"18.7 GB"``."""
    try:
        n = float(n)
    except OverflowError:
        return "more than 1e308 B"
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_bytes(device=None) -> int:
    """Bytes a new buffer can still take on ``device`` (default: the first local device; ``"host"``: the
    machine's memory, for numpy work); see the module docstring."""
    if isinstance(device, str) and device == "host":
        free = _meminfo_available()
        return free if free is not None else _physical()
    device = jax.local_devices()[0] if device is None else device
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (backends without memory statistics)
        stats = None
    if stats and "bytes_limit" in stats:
        return max(0, int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
    free = _meminfo_available()
    return free if free is not None else _physical()


MAX_MAPPINGS = 20_000  # memory mappings a process may hold before compiled programs are released


def _mappings() -> int | None:
    try:
        with open("/proc/self/maps", "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return None


def release_compiled_programs(max_mappings: int | None = MAX_MAPPINGS) -> bool:
    """Free jax's compiled programs once the process holds more than ``max_mappings`` memory mappings.

    Each XLA CPU executable keeps its machine code in a few memory mappings
    for as long as jax's caches hold it. A long process that compiles
    thousands of programs (a test suite, a notebook sweeping many shapes, the
    main job) passes Linux's limit of 65,530 mappings per process
    (``vm.max_map_count``), and the next compilation dies with a segmentation
    fault inside LLVM. Call this between independent pieces of work: below
    the threshold it does nothing, so later work still reuses the compiled
    programs; above it (or always, where ``/proc/self/maps`` cannot be read,
    or with ``max_mappings=None``) it calls :func:`jax.clear_caches` and
    collects garbage. Returns whether it released them.
    """
    n = _mappings()
    if max_mappings is not None and n is not None and n <= max_mappings:
        return False
    jax.clear_caches()
    gc.collect()
    return True


def _physical() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def nbytes(shape, dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (Python ints: no overflow for absurd shapes)."""
    return math.prod(int(s) for s in shape) * jnp.dtype(dtype).itemsize


def _jaxpr_bytes(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        for v in () if eqn.primitive.name in FUSED else eqn.outvars:
            aval = getattr(v, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                try:
                    total += nbytes(aval.shape, aval.dtype)
                except TypeError:  # extended dtypes (PRNG keys)
                    continue
        for p in eqn.params.values():
            for sub in p if isinstance(p, (list, tuple)) else (p,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    total += _jaxpr_bytes(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    total += _jaxpr_bytes(sub)
    return total


def _forward(model, w, x, y):
    return model.per_sample_losses(w, x, y)


def _value_and_grad(model, w, x, y):
    from .models.functions import prefix_mean_loss

    return jax.value_and_grad(prefix_mean_loss, argnums=1)(model, w, x, y)


def _hvp(model, w, x, y):
    from .models.functions import prefix_mean_loss

    grad = lambda w_: jax.grad(prefix_mean_loss, argnums=1)(model, w_, x, y)
    return jax.jvp(grad, (w,), (w,))[1]


_PROGRAMS = {"forward": _forward, "value_and_grad": _value_and_grad, "hvp": _hvp}


def _traced_growth(model, program: str, w_dtype, x_shape: tuple, x_dtype, y_shape: tuple, y_dtype) -> int:
    w = jax.ShapeDtypeStruct((int(model.num_params),), w_dtype)

    def traced(b):
        xs = jax.ShapeDtypeStruct((b, *x_shape), x_dtype)
        ys = jax.ShapeDtypeStruct((b, *y_shape), y_dtype)
        return _jaxpr_bytes(jax.make_jaxpr(functools.partial(_PROGRAMS[program], model))(w, xs, ys).jaxpr)

    return max(0, traced(2) - traced(1))


_cached_growth = functools.lru_cache(maxsize=128)(_traced_growth)


def per_sample_bytes(model, x, y, *, program: str = "forward", w_dtype=jnp.float32) -> int:
    """Bytes of the intermediates that grow with each sample in ``model``'s per-sample losses on ``x, y``
    (``program="forward"``), in the value and gradient of their mean (``"value_and_grad"``) or in a
    Hessian-vector product of it (``"hvp"``).

    Cached per model and shapes. Returns 0 when the model cannot be traced
    abstractly (its own error surfaces when the call runs).
    """
    args = (program, jnp.dtype(w_dtype), tuple(x.shape[1:]), jnp.dtype(x.dtype), tuple(y.shape[1:]), jnp.dtype(y.dtype))
    try:
        try:
            return _cached_growth(model, *args)
        except TypeError as e:  # an unhashable model: trace it each time
            if "unhashable" not in str(e):
                raise
            return _traced_growth(model, *args)
    except Exception:  # noqa: BLE001  (a shape error of the user's model: the call itself reports it)
        return 0


def estimate(parts: dict, device=None) -> MemoryEstimate:
    """A :class:`MemoryEstimate` of ``parts`` (name -> bytes) against the memory available on ``device``."""
    return MemoryEstimate({k: int(v) for k, v in parts.items() if v}, available_bytes(device))


def require(what: str, parts: dict, *, fix: str, device=None) -> MemoryEstimate:
    """The estimate of ``parts``; a :class:`ConfigError` naming ``what``, the parts, the available memory and ``fix``
    when the total exceeds :data:`HEADROOM` of the available memory."""
    est = estimate(parts, device)
    if not est.fits:
        big = sorted(est.parts.items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{name} {human(b)}" for name, b in big[:5])
        if isinstance(device, str):
            where = "the host"
        else:
            dev = jax.local_devices()[0] if device is None else device
            where = f"{dev.platform} device {dev.id}"
        raise ConfigError(
            f"{what} needs about {human(est.total)} of memory ({listed}) but {human(est.available)} is available on "
            f"{where}: it cannot fit; {fix}"
        )
    return est


def draw_budget(fixed: int, requested: int, device=None) -> int:
    """Bytes the Monte Carlo passes may use: ``requested``, lowered to what is left after ``fixed`` bytes."""
    left = int(HEADROOM * available_bytes(device)) - int(fixed)
    return int(max(0, min(int(requested), left)))


# ----------------------------------------------------------------------------- the calls


def train_parts(model, x, y, *, batch_size: int, dtype=jnp.float32) -> dict:
    """Peak buffers of :func:`jaxland.train` with Adam: w, its two moments, the gradient and the update (D each),
    and one minibatch (its gathered samples and its forward and backward intermediates)."""
    p = nbytes((int(model.num_params),), dtype)
    act = per_sample_bytes(model, x, y, program="value_and_grad", w_dtype=dtype) * int(batch_size)
    batch = (nbytes(x.shape[1:], x.dtype) + nbytes(y.shape[1:], y.dtype)) * int(batch_size)
    return {"parameters w": p, "Adam moments (2 x D)": 2 * p, "gradient and update (2 x D)": 2 * p,
            f"activations of a minibatch of {int(batch_size)}": act + batch}


def monte_carlo_parts(model, subspace, x, y, *, num_draws: int, draw_chunk: int, sample_block: int,
                      num_orderings: int = 0, control_variate: bool = False) -> dict:
    """Fixed buffers of :func:`jaxland.delta_monte_carlo` (everything but its passes' rows, which the
    memory budget sizes): the draws (T, d), the orderings (R, N), one kernel block (draw_chunk draws x
    sample_block samples x the model's per-sample intermediates) and, with the control variate, its
    curvature pass."""
    d, dim = (int(s) for s in subspace.directions.shape)
    dtype = subspace.directions.dtype
    fwd = per_sample_bytes(model, x, y, w_dtype=dtype)
    draw_chunk = min(int(draw_chunk), int(num_draws))  # a chunk never holds more draws than there are
    parts = {
        f"draws theta ({int(num_draws)} x {d}, 2 copies)": 2 * nbytes((int(num_draws), d), dtype),
        f"kernel block ({int(draw_chunk)} draws x {int(sample_block)} samples)": int(draw_chunk) * int(sample_block) * fwd
        + nbytes((int(draw_chunk), dim), dtype),
        f"orderings ({int(num_orderings)} x N)": nbytes((int(num_orderings), int(x.shape[0])), jnp.int32),
    }
    if control_variate:
        parts.update(curvature_parts(model, subspace, x, y, sample_block=min(1024, int(x.shape[0]))))
    return parts


def curvature_parts(model, subspace, x, y, *, sample_block: int) -> dict:
    """Buffers of :func:`jaxland.subspace_curvature`: the outputs c, g, G (N (1 + d + d^2) values) and one
    block's forward-over-forward pass, whose intermediates carry (1 + d)^2 tangents per sample."""
    d, dim = (int(s) for s in subspace.directions.shape)
    dtype = subspace.directions.dtype
    n = int(x.shape[0])
    fwd = per_sample_bytes(model, x, y, w_dtype=dtype)
    return {
        f"per-sample c, g, G ({n} x (1 + {d} + {d}^2))": nbytes((n, 1 + d + d * d), dtype),
        f"curvature block of {int(sample_block)} samples x (1 + d)^2 tangents": int(sample_block) * fwd * (1 + d) ** 2,
    }


def krylov_parts(dim: int, *, method: str, d: int, block_size: int, max_matvecs: int | None, itemsize: int = 4) -> dict:
    """Buffers of an eigensolver on a (dim, dim) operator: the Krylov basis Q, its products W = A Q and the
    copy of Q that the compiled loop updates (max_matvecs x dim each; XLA's buffer assignment of the
    reference MLP's Lanczos at 60 vectors: 205 MB of temporaries, three 64.6 MB arrays and the product's
    15 MB) for Lanczos, the deflated vectors for power iteration, the matrix for dense."""
    dim, d, b = int(dim), int(d), max(1, int(block_size))
    vec = dim * int(itemsize)
    if method in ("lanczos", "block"):
        m = min(dim, int(max_matvecs) if max_matvecs is not None else max(6 * d, d + 50) + (10 * b if b > 1 else 0))
        return {f"Krylov basis Q, A Q and the loop's copy of Q (3 x {m} x {dim})": 3 * m * vec, f"Rayleigh-Ritz ({m} x {m})": m * m * int(itemsize)}
    if method == "power":
        return {f"eigenvectors and products (2 x {d} x {dim})": 2 * d * vec}
    if method == "lobpcg":
        return {f"LOBPCG blocks (~8 x {b} x {dim})": 8 * b * vec}
    return {f"dense matrix and eigenvectors (2 x {dim}^2)": 2 * dim * vec}


def hvp_parts(model, x, y, *, dtype=jnp.float32) -> dict:
    """The working set of one Hessian-vector product of ``L(w)`` on all of ``x, y`` (what an eigensolver's
    operator holds while it multiplies)."""
    n = int(x.shape[0])
    return {f"Hessian-vector product on {n} samples": n * per_sample_bytes(model, x, y, program="hvp", w_dtype=dtype)}
