"""Loss-landscape convergence estimates in a subspace, for every k at once.

Notation (REFERENCE.md): per-sample losses ``l_i(w)``, ``L_k = (1/k) sum_{i<=k} l_i``,
subspace ``w(theta) = w* + theta @ P`` (:class:`~jaxland.Subspace`), and

    Delta_k = E_theta[(L_{k+1}(w(theta)) - L_k(w(theta)))^2],  theta ~ N(0, sigma^2 I_d).

Everything starts from one per-sample loss matrix ``l_i(w(theta_t))`` (T, N),
computed by one compiled program (:func:`per_sample_loss_matrix`). Every
``L_k`` then follows by cumulative means, and the increments use the exact
identity ``L_{k+1} - L_k = (l_{k+1} - L_k) / (k+1)`` (no cancellation between
two large cumulative sums). k counts samples, or batches of ``batch_size``
consecutive samples (``L_k`` = mean of the first k batch losses; a trailing
incomplete batch is dropped).

The sample order is the order of ``x`` and is shared by every draw. Averaging
over R random orderings is explicit (``orderings=R`` plus a key, or an (R, N)
array of permutations); the loss matrix does not depend on the order, so the
orderings cost only cumulative sums.

The theory side (:func:`subspace_curvature`, :func:`theory_delta`) computes
per-sample ``c_i = l_i(w*)``, ``g_i = P grad l_i(w*)``, ``G_i = P Hess l_i(w*) P^T``
in one forward-mode pass and turns cumulative means of them into the
second-order prediction of ``Delta_k`` for every k.

Models: an :class:`~jaxland.MLPConfig`, or any hashable object with
``num_params`` and a method ``per_sample_losses(w, x, y) -> (n,)`` (e.g. an
exactly quadratic test model). MLPs get the fast first-layer path.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .errors import ConfigError
from .model import ACTIVATIONS, MLPConfig
from .model import per_sample_losses as _mlp_per_sample_losses
from .sharding import AXIS as _AXIS
from .sharding import DEFAULT_MEMORY_BUDGET, auto_chunk
from .subspace import Subspace

_P = jax.sharding.PartitionSpec

__all__ = [
    "DeltaResult",
    "TheoryResult",
    "SurfaceResult",
    "LossDifferenceResult",
    "SubspaceCurvature",
    "CumulativeCurvature",
    "draw_thetas",
    "per_sample_loss_matrix",
    "StreamPlan",
    "stream_plan",
    "cumulative_means",
    "loss_increments",
    "delta_from_losses",
    "delta_monte_carlo",
    "subspace_curvature",
    "cumulative_curvature",
    "theory_delta",
    "theory_delta_eigensolver",
    "sufficient_k",
    "moving_mean",
    "loss_surface",
    "loss_differences",
]

# Measured on 2 CPU cores, reference MLP, d = 10 (benchmarks/delta.py): a block
# of samples stays in cache while all draws of a chunk reuse it.
DEFAULT_DRAW_CHUNK = 16
DEFAULT_SAMPLE_BLOCK = 512


# ----------------------------------------------------------------------------- results


class DeltaResult(NamedTuple):
    """Monte Carlo ``Delta_k`` for k = 1..K-1 (K = number of samples, or of batches).

    ``delta[j]`` is ``Delta_{k[j]}``, ``stderr`` its Monte Carlo standard error
    over the T draws (``std_t / sqrt(T)``, ddof = 1, of the per-draw squared
    increment averaged over orderings), ``delta_k2 = delta * k^2`` and
    ``stderr_k2`` likewise. ``unit`` is ``"samples"`` or ``"batches"``.
    """

    k: np.ndarray
    delta: jax.Array
    stderr: jax.Array
    delta_k2: jax.Array
    stderr_k2: jax.Array
    sigma: float
    num_draws: int
    dim: int
    batch_size: int | None
    num_orderings: int
    unit: str
    fast_first_layer: bool


class SubspaceCurvature(NamedTuple):
    """Per-sample Taylor data in the subspace at ``w*``: ``c`` (N,), ``g`` (N, d), ``G`` (N, d, d)."""

    c: jax.Array
    g: jax.Array
    G: jax.Array


class CumulativeCurvature(NamedTuple):
    """Prefix means for k = 1..K: ``loss`` L_k(w*) (K,), ``grad`` P grad L_k (K, d), ``hess`` P H_k P^T (K, d, d)."""

    k: np.ndarray
    loss: jax.Array
    grad: jax.Array
    hess: jax.Array


class TheoryResult(NamedTuple):
    """Second-order predictions of ``Delta_k`` for k = 1..K-1.

    ``paper``: Theorem 1, ``sigma^4/4 (2 sum_i dl_i^2 + (sum_i dl_i)^2)`` with
    ``dl_i = lambda_i(P H_{k+1} P^T) - lambda_i(P H_k P^T)`` (signed, descending).
    ``exact``: ``(c + sigma^2 tr A/2)^2 + sigma^2 |g|^2 + sigma^4 tr(A^2)/2`` with
    ``c = L_{k+1}(w*) - L_k(w*)``, ``g = P (grad L_{k+1} - grad L_k)``,
    ``A = P (H_{k+1} - H_k) P^T`` -- exact for a quadratic loss.
    ``quadratic``: ``exact`` with c = g = 0 (the curvature term alone).
    ``eigenvalues`` (K, d): Ritz values of ``P H_k P^T`` for k = 1..K.
    """

    k: np.ndarray
    paper: jax.Array
    exact: jax.Array
    quadratic: jax.Array
    eigenvalues: jax.Array
    sigma: float
    batch_size: int | None
    unit: str


class SurfaceResult(NamedTuple):
    """2-D surfaces on the grid ``alphas x betas``; ``[..., i, j]`` is at ``(alphas[i], betas[j])``.

    ``loss[m]`` = ``L_{ks[m]}``, ``diff_sq[m]`` = ``(L_{ks[m]+1} - L_{ks[m]})^2``,
    ``loss_full`` = ``L_K`` (all samples or batches).
    """

    alphas: jax.Array
    betas: jax.Array
    ks: np.ndarray
    loss: jax.Array
    diff_sq: jax.Array
    loss_full: jax.Array
    batch_size: int | None
    unit: str


class LossDifferenceResult(NamedTuple):
    """``|L_{k+1}(w) - L_k(w)|`` for k = 1..K-1, averaged over orderings; ``stderr`` over orderings (NaN if R = 1)."""

    k: np.ndarray
    diff: jax.Array
    stderr: jax.Array
    num_orderings: int
    batch_size: int | None
    unit: str


# ----------------------------------------------------------------------------- validation


def _check_sigma(sigma) -> float:
    try:
        s = float(sigma)
    except (TypeError, ValueError):
        raise ConfigError(f"sigma must be a positive number, got {sigma!r}") from None
    if not (math.isfinite(s) and s > 0):
        raise ConfigError(f"sigma must be a positive finite number (theta ~ N(0, sigma^2 I)), got {sigma!r}")
    return s


def _check_data(x, y) -> int:
    n = int(x.shape[0])
    if y is not None and int(y.shape[0]) != n:
        raise ConfigError(f"x has {n} samples but y has {y.shape[0]}")
    if n < 2:
        raise ConfigError(f"need at least 2 samples to compare L_k and L_(k+1), got {n}")
    return n


def _check_subspace(model, subspace) -> int:
    if not isinstance(subspace, Subspace):
        raise ConfigError(f"expected a jaxland.Subspace(center, directions), got {type(subspace).__name__}")
    p = subspace.directions
    if p.ndim != 2:
        raise ConfigError(f"subspace.directions must be (d, D), got shape {tuple(p.shape)}")
    dim = int(model.num_params)
    if subspace.center.shape != (dim,) or p.shape[1] != dim:
        raise ConfigError(
            f"subspace has center {tuple(subspace.center.shape)} and directions {tuple(p.shape)}, "
            f"but the model has D={dim} parameters"
        )
    if p.shape[0] < 1 or p.shape[0] > dim:
        raise ConfigError(f"subspace dimension d={p.shape[0]} must be in [1, D={dim}]")
    return int(p.shape[0])


def _num_groups(n: int, batch_size) -> int:
    """K: the number of samples, or of complete batches; must be >= 2."""
    if batch_size is None:
        return n
    if int(batch_size) != batch_size or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    k = n // int(batch_size)
    if k < 2:
        raise ConfigError(f"batch_size={batch_size} leaves {k} complete batch(es) of {n} samples; need >= 2")
    return k


def _unit(batch_size) -> str:
    return "samples" if batch_size is None else "batches"


def _check_chunk(name, v, default):
    if v is None:
        return default
    if int(v) != v or v < 1:
        raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _orderings(orderings, n, key):
    """None, an (R, N) integer array of permutations, or an int R with ``key``."""
    if orderings is None:
        return None
    if isinstance(orderings, (int, np.integer)):
        r = int(orderings)
        if r < 1:
            raise ConfigError(f"orderings must be >= 1, got {r}")
        if key is None:
            raise ConfigError("orderings=R needs an explicit key for the random permutations (ordering_key=/key=)")
        keys = jax.random.split(key, r)
        return jax.vmap(lambda k: jax.random.permutation(k, n))(keys)
    perms = np.asarray(orderings)
    if perms.ndim == 1:
        perms = perms[None]
    if perms.ndim != 2 or perms.shape[1] != n or not np.issubdtype(perms.dtype, np.integer):
        raise ConfigError(f"orderings must be an int R or an (R, {n}) integer array of permutations, got {perms.shape}")
    if not np.all(np.sort(perms, axis=1) == np.arange(n)):
        raise ConfigError("every row of orderings must be a permutation of range(N)")
    return jnp.asarray(perms)


# ----------------------------------------------------------------------------- loss matrix


def _losses(model, w, x, y):
    if isinstance(model, MLPConfig):
        return _mlp_per_sample_losses(model, w, x, y)
    return model.per_sample_losses(w, x, y)


def draw_thetas(key: jax.Array, num_draws: int, d: int, sigma: float, dtype=jnp.float32) -> jax.Array:
    """``theta_t ~ N(0, sigma^2 I_d)``, shape (T, d); the same key gives the same draws."""
    sigma = _check_sigma(sigma)
    if int(num_draws) != num_draws or num_draws < 2:
        raise ConfigError(f"num_draws (T) must be an integer >= 2 (a standard error needs 2 draws), got {num_draws!r}")
    return sigma * jax.random.normal(key, (int(num_draws), int(d)), dtype)


def _pad_rows(a, m):
    pad = (-a.shape[0]) % m
    if pad == 0:
        return a
    return jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])


def _resolve_mesh(mesh):
    """None -> every visible device (None if only one); an int -> the first n devices; a Mesh as is.

    Returns None when the work runs on one device (the unsharded program).
    """
    from .sharding import device_mesh

    if mesh is None:
        if jax.device_count() == 1:
            return None
        mesh = device_mesh()
    elif isinstance(mesh, (int, np.integer)):
        mesh = device_mesh(int(mesh))
    elif not isinstance(mesh, jax.sharding.Mesh):
        raise ConfigError(f"mesh must be None, a device count or a jax.sharding.Mesh, got {type(mesh).__name__}")
    if mesh.axis_names != (_AXIS,):
        raise ConfigError(f"mesh must be 1-D with axis {_AXIS!r} (jaxland.device_mesh), got axes {mesh.axis_names}")
    return None if mesh.size == 1 else mesh


def _check_matmul_dtype(model, matmul_dtype):
    if matmul_dtype is None:
        return None
    if isinstance(matmul_dtype, str):
        names = {"bf16": jnp.bfloat16, "bfloat16": jnp.bfloat16, "f32": None, "float32": None, "fp32": None}
        if matmul_dtype.lower() not in names:
            raise ConfigError(f"matmul_dtype must be None, 'bf16' or a jnp dtype, got {matmul_dtype!r}")
        matmul_dtype = names[matmul_dtype.lower()]
        if matmul_dtype is None:
            return None
    dt = jnp.dtype(matmul_dtype)
    if dt not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        if dt == jnp.dtype(jnp.float32):
            return None
        raise ConfigError(f"matmul_dtype must be bfloat16 (or float16/float32), got {dt}")
    if not isinstance(model, MLPConfig):
        raise ConfigError("matmul_dtype needs an MLPConfig model (other models run their own forward pass)")
    return dt


def _mm(a, b, dt, spec=None):
    """``a @ b`` (or an einsum) with inputs cast to ``dt`` and float accumulation in the inputs' dtype."""
    if dt is None:
        return a @ b if spec is None else jnp.einsum(spec, a, b)
    out = jnp.result_type(a, b)
    a, b = a.astype(dt), b.astype(dt)
    if spec is None:
        return jnp.matmul(a, b, preferred_element_type=out)
    return jnp.einsum(spec, a, b, preferred_element_type=out)


def _mlp_losses(model, w, x, y, dt):
    """Per-sample losses of an MLP with matmul inputs in ``dt`` (None: the model's own forward pass)."""
    if dt is None:
        return _losses(model, w, x, y)
    act = ACTIVATIONS[model.activation]
    layers = model.layers(w)
    h = x
    for i, layer in enumerate(layers):
        h = _mm(h, layer.kernel, dt)
        if layer.bias is not None:
            h = h + layer.bias
        if i < len(layers) - 1:
            h = act(h)
    return optax.softmax_cross_entropy_with_integer_labels(h, y)


def _block_losses(model, subspace, thetas, *, draw_chunk, fast, matmul_dtype=None):
    """``block((xs, ys)) -> (T, b)``: every draw's per-sample losses on one block of samples."""
    center, p = subspace.center, subspace.directions
    dt = matmul_dtype

    if fast:
        act = ACTIVATIONS[model.activation]
        lc = model.layers(center)
        lp = jax.vmap(model.layers)(p)  # kernels (d, in, out), biases (d, out)

        def block(args):
            xs, ys = args
            # First layer: x @ (W1* + sum_j theta_j P1_j) = x @ W1* + sum_j theta_j (x @ P1_j);
            # the d+1 products are made once per block and reused by every draw.
            h0 = _mm(xs, lc[0].kernel, dt)
            hp = _mm(xs, lp[0].kernel, dt, "bi,dio->dbo")
            if lc[0].bias is not None:
                h0 = h0 + lc[0].bias

            def draw(th):
                h = h0 + jnp.einsum("d,dbo->bo", th, hp)
                if lc[0].bias is not None:
                    h = h + th @ lp[0].bias
                for c, q in zip(lc[1:], lp[1:]):
                    h = _mm(act(h), c.kernel + jnp.einsum("d,dio->io", th, q.kernel), dt)
                    if c.bias is not None:
                        h = h + c.bias + th @ q.bias
                return optax.softmax_cross_entropy_with_integer_labels(h, ys)

            return jax.lax.map(draw, thetas, batch_size=draw_chunk)

        return block

    def block(args):
        xs, ys = args
        return jax.lax.map(lambda th: _mlp_losses(model, center + th @ p, xs, ys, dt), thetas, batch_size=draw_chunk)

    return block


def _blocks(a, sample_block):
    return _pad_rows(a, sample_block).reshape(-1, sample_block, *a.shape[1:])


def _loss_body(model, subspace, thetas, x, y, *, draw_chunk, sample_block, fast, matmul_dtype=None):
    """(T, n) per-sample losses on one device: sample blocks outside, draws (vmapped by chunks) inside."""
    n, t = x.shape[0], thetas.shape[0]
    block = _block_losses(model, subspace, thetas, draw_chunk=draw_chunk, fast=fast, matmul_dtype=matmul_dtype)
    out = jax.lax.map(block, (_blocks(x, sample_block), _blocks(y, sample_block)))  # (blocks, T, block)
    return jnp.moveaxis(out, 0, 1).reshape(t, -1)[:, :n]


def _sample_stream_stats(model, subspace, thetas, valid, x, y, *, draw_chunk, sample_block, fast, matmul_dtype, batch_size):
    """Per-k (count, mean, M2) of ``q_t,k = (L_{k+1} - L_k)^2`` over the given draws, data order.

    A scan over blocks of samples carries each draw's running sum of the
    per-sample (or per-batch) losses, so memory is O(T * sample_block): the
    (T, N) matrix never exists and the first-layer products of a block are
    made once for all draws. ``sample_block`` is a multiple of ``batch_size``.
    """
    g = 1 if batch_size is None else batch_size
    kmax = x.shape[0] // g
    used = kmax * g  # a trailing incomplete batch is dropped
    bs = min(sample_block, used)  # both multiples of g
    gb = bs // g  # groups per block
    block = _block_losses(model, subspace, thetas, draw_chunk=draw_chunk, fast=fast, matmul_dtype=matmul_dtype)
    dtype = thetas.dtype
    local = jnp.arange(gb)

    def step(carry, j):
        # blocks are read in place (no padded copy of the data): the last one is
        # moved back to end at `used`, and its first `og` groups, already counted, are masked
        start = jnp.minimum(j * bs, used - bs)
        og = (j * bs - start) // g
        l = block((jax.lax.dynamic_slice_in_dim(x, start, bs), jax.lax.dynamic_slice_in_dim(y, start, bs)))  # (T, bs)
        m = l.reshape(l.shape[0], gb, g).mean(-1) if g > 1 else l
        sums = carry[:, None] + jnp.cumsum(jnp.where(local >= og, m, 0), axis=1)  # S_i = sum of groups 0..i
        before = jnp.concatenate([carry[:, None], sums[:, :-1]], axis=1)  # S_{i-1}
        i = (start // g + local).astype(dtype)
        # group i (0-based) is the (k+1)-th with k = i: L_{k+1} - L_k = (m_i - S_{i-1}/i) / (i+1)
        q = ((m - before / jnp.maximum(i, 1)) / (i + 1)) ** 2
        n, mean, m2 = _chunk_stats(q, valid)
        # position p of this step's output <-> group j*gb + p
        return sums[:, -1], (jnp.roll(mean, -og), jnp.roll(m2, -og))

    nb = -(-used // bs)
    _, (mean, m2) = jax.lax.scan(step, jnp.zeros(thetas.shape[0], dtype), jnp.arange(nb))
    n = jnp.sum(valid.astype(dtype))
    # k = 1..K-1 are groups 1..K-1; group 0 has no increment, positions past K-1 are wrapped leftovers
    return n, mean.reshape(-1)[1:kmax], m2.reshape(-1)[1:kmax]


@functools.partial(
    jax.jit, static_argnames=("model", "draw_chunk", "sample_block", "fast", "matmul_dtype", "mesh")
)
def _loss_matrix(model, subspace, thetas, x, y, *, draw_chunk, sample_block, fast, matmul_dtype=None, mesh=None):
    kw = dict(draw_chunk=draw_chunk, sample_block=sample_block, fast=fast, matmul_dtype=matmul_dtype)
    if mesh is None:
        return _loss_body(model, subspace, thetas, x, y, **kw)
    t = thetas.shape[0]
    # draws are split over the devices; every device sees all samples
    body = lambda th, s, xx, yy: _loss_body(model, s, th, xx, yy, **kw)
    out = jax.shard_map(body, mesh=mesh, in_specs=(_P(_AXIS), _P(), _P(), _P()), out_specs=_P(_AXIS), check_vma=False)(
        _pad_rows(thetas, mesh.size), subspace, x, y
    )
    return out[:t]


def _replicate(mesh, *arrays):
    """Put concrete inputs on every device of ``mesh`` (committed single-device arrays would clash)."""
    if mesh is None:
        return arrays
    rep = jax.sharding.NamedSharding(mesh, _P())
    return tuple(jax.device_put(a, rep) if a is not None else None for a in arrays)


def _gather(tree):
    """Multi-host: make a sharded result whole on every process (process 0 writes it)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    def whole(a):
        # a result computed by this process alone (one-device mesh) is already whole
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return multihost_utils.process_allgather(a, tiled=True)
        return a

    return jax.tree.map(whole, tree)


def per_sample_loss_matrix(
    model,
    subspace: Subspace,
    thetas: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    chunk: int | None = None,
    sample_block: int | None = None,
    fast_first_layer: bool = True,
    mesh=None,
    matmul_dtype=None,
) -> jax.Array:
    """``l_i(w* + theta_t @ P)`` for every draw t and sample i: shape (T, N).

    One jitted program (data are arguments, never constants): an outer
    ``lax.map`` over blocks of ``sample_block`` samples and, inside, a
    ``lax.map`` over draws vmapped ``chunk`` at a time, so memory stays
    O(chunk * sample_block * width) and each block of samples stays in cache
    while all draws use it. Defaults: ``chunk = 16`` draws, ``sample_block =
    max(512, 8 d)`` samples (measured on 2 CPU cores, reference MLP).

    ``fast_first_layer`` (MLPs only; ignored for other models): the first layer
    sees fixed inputs, so ``x @ W1(theta) = x @ W1* + sum_j theta_j (x @ P1_j)``.
    The d+1 products are formed once per sample block; each draw then pays d
    instead of ``in_dim`` multiply-adds per hidden unit in that layer. The
    deeper layers use ``W_l(theta) = W_l* + sum_j theta_j P_l,j`` formed per
    draw (d/sample_block of the layer's cost). It is used only when
    ``d < in_dim`` (otherwise it saves nothing).

    ``mesh``: the draws are split over the devices of a 1-D mesh
    (:func:`jaxland.device_mesh`; an int n means the first n devices). The
    default None uses every visible device, which with one device is the
    plain single-device program. Each device computes its draws on all
    samples; the numbers equal the single-device ones to float rounding.

    ``matmul_dtype`` (MLPs only): e.g. ``jnp.bfloat16`` or ``"bf16"`` casts the
    inputs of the layer matmuls to that type, accumulating in float32 (worth it
    on GPU/TPU; the error against float32 is measured in
    ``benchmarks/scaling.py``). Default None: full precision.
    """
    d = _check_subspace(model, subspace)
    _check_data(x, y)
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2 or thetas.shape[1] != d:
        raise ConfigError(f"thetas must be (T, d={d}), got shape {tuple(thetas.shape)}")
    chunk = _check_chunk("chunk", chunk, DEFAULT_DRAW_CHUNK)
    block = _sample_block(sample_block, d, int(x.shape[0]))
    fast = _uses_fast_path(model, d, fast_first_layer)
    dt = _check_matmul_dtype(model, matmul_dtype)
    mesh = _resolve_mesh(mesh)
    subspace, x, y = _replicate(mesh, subspace, x, y)
    out = _loss_matrix(
        model, subspace, thetas, x, y, draw_chunk=chunk, sample_block=block, fast=fast, matmul_dtype=dt, mesh=mesh
    )
    return _gather(out)


def _sample_block(sample_block, d, n):
    # per (block, draw) the deeper layers' W(theta) cost d/block of the forward pass: keep block >= 8d
    block = _check_chunk("sample_block", sample_block, max(DEFAULT_SAMPLE_BLOCK, 8 * d))
    return min(block, n)


def _uses_fast_path(model, d, requested) -> bool:
    return bool(requested) and isinstance(model, MLPConfig) and d < model.sizes[0]


# ----------------------------------------------------------------------------- cumulative means


def _group(a, batch_size):
    """(..., N) per-sample values -> (..., K) batch means (or unchanged)."""
    if batch_size is None:
        return a
    k = a.shape[-1] // batch_size
    return a[..., : k * batch_size].reshape(*a.shape[:-1], k, batch_size).mean(-1)


def cumulative_means(losses: jax.Array, batch_size: int | None = None) -> jax.Array:
    """``L_k`` for k = 1..K along the last axis: ``cumsum(l)_k / k`` (over batch means when batched)."""
    l = _group(jnp.asarray(losses), batch_size)
    k = jnp.arange(1, l.shape[-1] + 1, dtype=l.dtype)
    return jnp.cumsum(l, axis=-1) / k


def loss_increments(losses: jax.Array, batch_size: int | None = None) -> jax.Array:
    """``L_{k+1} - L_k`` for k = 1..K-1 via the exact identity ``(l_{k+1} - L_k) / (k+1)``."""
    l = _group(jnp.asarray(losses), batch_size)
    big_l = cumulative_means(l)
    k1 = jnp.arange(2, l.shape[-1] + 1, dtype=l.dtype)
    return (l[..., 1:] - big_l[..., :-1]) / k1


def _squared_increments(losses, perms, batch_size):
    """q_t,k = mean over orderings of (L_{k+1} - L_k)^2 for each draw t: (T, K-1)."""
    if perms is None:
        return loss_increments(losses, batch_size) ** 2

    def body(r, acc):
        return acc + loss_increments(losses[:, perms[r]], batch_size) ** 2

    k = _group(losses[:1], batch_size).shape[-1]
    acc = jnp.zeros((losses.shape[0], k - 1), losses.dtype)
    return jax.lax.fori_loop(0, perms.shape[0], body, acc) / perms.shape[0]


@functools.partial(jax.jit, static_argnames="batch_size")
def _delta_stats(losses, perms, *, batch_size):
    q = _squared_increments(losses, perms, batch_size)
    t = q.shape[0]
    return q.mean(0), q.std(0, ddof=1) / jnp.sqrt(t)


# Streaming statistics over draws: (count, mean, M2 = sum of squared deviations)
# per k, merged chunk by chunk and device by device with Chan et al.'s pairwise
# update, which is the sum/sum-of-squares accumulation without its cancellation.


def _chunk_stats(q, valid):
    v = valid.astype(q.dtype)[:, None]
    n = jnp.sum(v)
    mean = jnp.sum(v * q, 0) / jnp.maximum(n, 1)
    return n, mean, jnp.sum(v * (q - mean) ** 2, 0)


def _merge_stats(a, b):
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    delta = mb - ma
    frac = nb / jnp.maximum(n, 1)
    return n, ma + delta * frac, sa + sb + delta * delta * na * frac


def _psum_stats(stats, axis):
    n, mean, m2 = stats
    total = jax.lax.psum(n, axis)
    gmean = jax.lax.psum(n * mean, axis) / total
    return total, gmean, jax.lax.psum(m2 + n * (mean - gmean) ** 2, axis)


@functools.partial(
    jax.jit,
    static_argnames=("model", "draw_chunk", "sample_block", "fast", "matmul_dtype", "mesh", "batch_size", "pass_draws"),
)
def _delta_stream(
    model, subspace, thetas, valid, x, y, perms, *, draw_chunk, sample_block, fast, matmul_dtype, mesh, batch_size, pass_draws
):
    kw = dict(draw_chunk=draw_chunk, sample_block=sample_block, fast=fast, matmul_dtype=matmul_dtype)

    def local(th, val, sub, xx, yy, pp):
        th = th.reshape(-1, pass_draws, th.shape[-1])
        val = val.reshape(-1, pass_draws)

        def step(acc, chunk):
            thc, vc = chunk
            if pp is None:
                stats = _sample_stream_stats(model, sub, thc, vc, xx, yy, batch_size=batch_size, **kw)
            else:
                losses = _loss_body(model, sub, thc, xx, yy, **kw)  # (pass_draws, N): the only big array
                stats = _chunk_stats(_squared_increments(losses, pp, batch_size), vc)
            return _merge_stats(acc, stats), None

        kq = _group(jnp.zeros((1, xx.shape[0])), batch_size).shape[-1] - 1
        zero = jnp.zeros(kq, th.dtype)
        stats, _ = jax.lax.scan(step, (jnp.zeros((), th.dtype), zero, zero), (th, val))
        return stats if mesh is None else _psum_stats(stats, _AXIS)

    if mesh is None:
        return local(thetas, valid, subspace, x, y, perms)
    return jax.shard_map(
        local, mesh=mesh, in_specs=(_P(_AXIS), _P(_AXIS), _P(), _P(), _P(), _P()), out_specs=_P(), check_vma=False
    )(thetas, valid, subspace, x, y, perms)


class StreamPlan(NamedTuple):
    """How :func:`delta_monte_carlo` splits T draws: ``devices`` x ``passes`` x ``pass_draws`` (>= T, padded)."""

    devices: int
    passes: int
    pass_draws: int
    bytes_per_draw: int


def stream_plan(
    num_draws: int,
    num_samples: int,
    *,
    devices: int = 1,
    memory_budget: int | None = None,
    itemsize: int = 4,
    sample_block: int | None = None,
) -> StreamPlan:
    """How many draws one pass of :func:`delta_monte_carlo` holds so that it fits ``memory_budget``.

    Data order (``sample_block`` given): a pass scans the samples block by
    block, so a draw holds about 8 arrays of ``sample_block`` values (losses,
    group means, running sums, increments, squares). With orderings
    (``sample_block=None``) a draw holds about 8 arrays of N values (its loss
    row, the transpose out of the sample-block map, a permuted copy, cumulative
    sums, increments, squares). ``memory_budget`` is in bytes per device
    (default :data:`jaxland.sharding.DEFAULT_MEMORY_BUDGET`, 1 GiB). The draws
    of each device are split into equal passes, padded by at most
    ``passes - 1``. The kernel's own working set (``chunk`` draws on one sample
    block) does not grow with T or N.
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else _check_chunk("memory_budget", memory_budget, None)
    per_device = -(-int(num_draws) // int(devices))
    row = int(num_samples) if sample_block is None else min(int(sample_block), int(num_samples))
    bytes_per_draw = 8 * row * int(itemsize)
    c = auto_chunk(per_device, bytes_per_draw, budget)
    passes = -(-per_device // c)
    return StreamPlan(int(devices), passes, -(-per_device // passes), bytes_per_draw)


def delta_from_losses(
    losses: jax.Array,
    *,
    batch_size: int | None = None,
    orderings=None,
    ordering_key=None,
    sigma: float = float("nan"),
    fast_first_layer: bool = False,
) -> DeltaResult:
    """``Delta_k`` and its standard error from a (T, N) per-sample loss matrix.

    For each draw t, ``q_t,k = mean_r (L^(r)_{k+1} - L^(r)_k)^2`` over the
    orderings r (one ordering -- the data order -- by default); then
    ``Delta_k = mean_t q_t,k`` and ``stderr = std_t(q_t,k) / sqrt(T)``.
    """
    losses = jnp.asarray(losses)
    if losses.ndim != 2 or losses.shape[0] < 2:
        raise ConfigError(f"losses must be (T >= 2, N), got shape {tuple(losses.shape)}")
    n = int(losses.shape[1])
    _check_data(losses.T, None)
    kmax = _num_groups(n, batch_size)
    perms = _orderings(orderings, n, ordering_key)
    delta, se = _delta_stats(losses, perms, batch_size=batch_size)
    return _delta_result(
        delta, se, kmax, perms, batch_size,
        sigma=float(sigma), num_draws=int(losses.shape[0]), dim=-1, fast_first_layer=bool(fast_first_layer),
    )


def _delta_result(delta, se, kmax, perms, batch_size, **meta) -> DeltaResult:
    """Attach k = 1..kmax-1 and the k^2-scaled curves to per-k Delta estimates."""
    k = np.arange(1, kmax)
    k2 = jnp.asarray(k, delta.dtype) ** 2
    return DeltaResult(
        k=k,
        delta=delta,
        stderr=se,
        delta_k2=delta * k2,
        stderr_k2=se * k2,
        batch_size=batch_size,
        num_orderings=1 if perms is None else int(perms.shape[0]),
        unit=_unit(batch_size),
        **meta,
    )


def delta_monte_carlo(
    model,
    subspace: Subspace,
    x: jax.Array,
    y: jax.Array,
    *,
    sigma: float,
    num_draws: int | None = None,
    key: jax.Array | None = None,
    batch_size: int | None = None,
    orderings=None,
    ordering_key=None,
    thetas: jax.Array | None = None,
    chunk: int | None = None,
    sample_block: int | None = None,
    fast_first_layer: bool = True,
    mesh=None,
    memory_budget: int | None = None,
    matmul_dtype=None,
) -> DeltaResult:
    """Monte Carlo ``Delta_k = E_theta[(L_{k+1} - L_k)^2]`` at ``w* + theta @ P`` for every k.

    ``theta_t ~ N(0, sigma^2 I_d)``, t = 1..T (``num_draws``), drawn from
    ``key`` along all d directions (or given as ``thetas`` (T, d), e.g. to
    share draws with another implementation; ``sigma`` is then only recorded).
    The per-sample losses of a draw on all N samples
    (:func:`per_sample_loss_matrix`) give every k at once. k counts samples,
    or batches of ``batch_size`` consecutive samples.

    ``orderings``: None (the data order, shared by every draw), an int R (R
    random permutations from ``ordering_key``, default
    ``jax.random.fold_in(key, 1)``), or an (R, N) array of permutations.

    Memory is bounded; the (T, N) loss matrix is never held when it exceeds
    the budget. In the data order a scan over blocks of ``sample_block``
    samples carries each draw's running loss sum and emits, per k, the count,
    the mean of ``q_t,k = (L_{k+1} - L_k)^2`` over draws and its sum of
    squared deviations: memory O(T * sample_block), and the (T, N) matrix never
    exists. With orderings the draws go in passes whose (pass_draws, N) rows
    fit ``memory_budget`` (bytes per device, default 1 GiB; :func:`stream_plan`).
    Passes and devices are merged with Chan's pairwise update of (count, mean,
    M2), i.e. the sums of q and q^2 without their cancellation. The result
    equals the one-matrix route (:func:`delta_from_losses`) to float rounding.

    ``mesh``: draws split over a 1-D device mesh (None: every visible device;
    an int: that many; the statistics are merged across devices with a psum,
    so every process gets the whole result). ``matmul_dtype``: see
    :func:`per_sample_loss_matrix`.
    """
    sigma = _check_sigma(sigma)
    d = _check_subspace(model, subspace)
    n = _check_data(x, y)
    _num_groups(n, batch_size)
    if thetas is None:
        if num_draws is None or key is None:
            raise ConfigError("delta_monte_carlo needs num_draws and an explicit key (or thetas)")
        thetas = draw_thetas(key, num_draws, d, sigma, subspace.directions.dtype)
    elif num_draws is not None and thetas.shape[0] != num_draws:
        raise ConfigError(f"thetas has {thetas.shape[0]} rows but num_draws={num_draws}")
    if thetas.shape[0] < 2:
        raise ConfigError(f"num_draws (T) must be >= 2, got {thetas.shape[0]}")
    if orderings is not None and ordering_key is None:
        if key is None:
            raise ConfigError("orderings need an explicit ordering_key (or key)")
        ordering_key = jax.random.fold_in(key, 1)
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2 or thetas.shape[1] != d:
        raise ConfigError(f"thetas must be (T, d={d}), got shape {tuple(thetas.shape)}")
    kmax = _num_groups(n, batch_size)
    perms = _orderings(orderings, n, ordering_key)
    fast = _uses_fast_path(model, d, fast_first_layer)
    dt = _check_matmul_dtype(model, matmul_dtype)
    mesh = _resolve_mesh(mesh)
    t = int(thetas.shape[0])
    block = _sample_block(sample_block, d, n)
    if batch_size is not None:  # the data-order stream needs whole batches in a block
        block = max(int(batch_size), block // int(batch_size) * int(batch_size))
    plan = stream_plan(
        t,
        n,
        devices=1 if mesh is None else mesh.size,
        memory_budget=memory_budget,
        itemsize=thetas.dtype.itemsize,
        sample_block=block if perms is None else None,
    )
    total = plan.devices * plan.passes * plan.pass_draws
    # padded draws (zeros) carry weight 0; device i gets rows [i*total/dev, (i+1)*total/dev), in passes
    th = _pad_rows(thetas, total)
    valid = jnp.arange(total) < t
    if mesh is not None:
        rows = jax.sharding.NamedSharding(mesh, _P(_AXIS))
        th, valid = jax.device_put(th, rows), jax.device_put(valid, rows)
    subspace, x, y, perms = _replicate(mesh, subspace, x, y, perms)
    count, delta, m2 = _delta_stream(
        model,
        subspace,
        th,
        valid,
        x,
        y,
        perms,
        draw_chunk=_check_chunk("chunk", chunk, DEFAULT_DRAW_CHUNK),
        sample_block=block,
        fast=fast,
        matmul_dtype=dt,
        mesh=mesh,
        batch_size=batch_size,
        pass_draws=plan.pass_draws,
    )
    se = jnp.sqrt(m2 / (count - 1)) / jnp.sqrt(count)
    return _delta_result(delta, se, kmax, perms, batch_size, sigma=sigma, num_draws=t, dim=d, fast_first_layer=fast)


# ----------------------------------------------------------------------------- theory


def _curvature_body(model, subspace, x, y, sample_block):
    n = x.shape[0]
    d = subspace.directions.shape[0]
    xb = _pad_rows(x, sample_block).reshape(-1, sample_block, *x.shape[1:])
    yb = _pad_rows(y, sample_block).reshape(-1, sample_block, *y.shape[1:])

    def block(args):
        xs, ys = args
        f = lambda th: _losses(model, subspace.center + th @ subspace.directions, xs, ys)

        def jac(th):
            j, val = jax.jacfwd(lambda s: (f(s), f(s)), has_aux=True)(th)
            return j, (val, j)

        # forward-over-forward: all d^2 second-order tangents in one batched pass
        hess, (val, grad) = jax.jacfwd(jac, has_aux=True)(jnp.zeros(d, subspace.directions.dtype))
        return val, grad, hess

    c, g, h = jax.lax.map(block, (xb, yb))
    return (
        c.reshape(-1)[:n],
        g.reshape(-1, d)[:n],
        h.reshape(-1, d, d)[:n],
    )


@functools.partial(jax.jit, static_argnames=("model", "sample_block", "mesh"))
def _curvature(model, subspace, x, y, *, sample_block, mesh=None):
    if mesh is None:
        return _curvature_body(model, subspace, x, y, sample_block)
    # samples are split over the devices (each block of samples is independent)
    n = x.shape[0]
    body = lambda xx, yy, s: _curvature_body(model, s, xx, yy, sample_block)
    out = jax.shard_map(body, mesh=mesh, in_specs=(_P(_AXIS), _P(_AXIS), _P()), out_specs=_P(_AXIS), check_vma=False)(
        _pad_rows(x, mesh.size), _pad_rows(y, mesh.size), subspace
    )
    return tuple(o[:n] for o in out)


def subspace_curvature(
    model, subspace: Subspace, x: jax.Array, y: jax.Array, *, chunk: int | None = None, mesh=None
) -> SubspaceCurvature:
    """Per-sample ``c_i = l_i(w*)``, ``g_i = P grad l_i(w*)`` (N, d), ``G_i = P Hess l_i(w*) P^T`` (N, d, d).

    With ``f(theta) = (l_i(w* + theta @ P))_i`` (R^d -> R^N), ``g = J_f(0)`` and
    ``G = jacfwd(jacfwd(f))(0)``: one batched forward-mode pass per block of
    ``chunk`` samples (``lax.map``), no per-sample HVPs (about 16x faster on the
    reference MLP, same numbers). Cumulative means of these give
    ``L_k(w*)``, ``P grad L_k`` and ``P H_k P^T`` for every k
    (:func:`cumulative_curvature`).

    ``mesh``: the samples are split over a 1-D device mesh (None: every
    visible device; an int: that many), ``chunk`` at a time on each device;
    the same numbers as on one device to float rounding.
    """
    _check_subspace(model, subspace)
    n = _check_data(x, y)
    mesh = _resolve_mesh(mesh)
    local = n if mesh is None else -(-n // mesh.size)
    block = _check_chunk("chunk", chunk, 1024)
    block = -(-local // -(-local // block))  # equal blocks: the least padding
    subspace, x, y = _replicate(mesh, subspace, x, y)
    return SubspaceCurvature(*_gather(_curvature(model, subspace, x, y, sample_block=block, mesh=mesh)))


def _cummean(a, axis=0):
    k = jnp.arange(1, a.shape[axis] + 1, dtype=a.dtype).reshape((-1,) + (1,) * (a.ndim - 1 - axis))
    return jnp.cumsum(a, axis=axis) / k


def _group0(a, batch_size):
    if batch_size is None:
        return a
    k = a.shape[0] // batch_size
    return a[: k * batch_size].reshape(k, batch_size, *a.shape[1:]).mean(1)


def cumulative_curvature(curv: SubspaceCurvature, *, batch_size: int | None = None) -> CumulativeCurvature:
    """``L_k(w*)``, ``P grad L_k(w*)``, ``P H_k(w*) P^T`` for k = 1..K by prefix means of the per-sample terms."""
    kmax = _num_groups(int(curv.c.shape[0]), batch_size)
    c, g, h = (_group0(jnp.asarray(a), batch_size) for a in curv)
    return CumulativeCurvature(np.arange(1, kmax + 1), _cummean(c), _cummean(g), _cummean(h))


@functools.partial(jax.jit, static_argnames="batch_size")
def _theory(c, g, h, sigma, *, batch_size):
    c, g, h = _group0(c, batch_size), _group0(g, batch_size), _group0(h, batch_size)
    cc, gc, hc = _cummean(c), _cummean(g), _cummean(h)
    k1 = jnp.arange(2, c.shape[0] + 1, dtype=c.dtype)
    # increments by the exact identity X_{k+1} - X_k = (x_{k+1} - X_k) / (k+1)
    dc = (c[1:] - cc[:-1]) / k1
    dg = (g[1:] - gc[:-1]) / k1[:, None]
    da = (h[1:] - hc[:-1]) / k1[:, None, None]
    da = 0.5 * (da + jnp.swapaxes(da, -1, -2))
    s2 = sigma * sigma
    tr = jnp.trace(da, axis1=-2, axis2=-1)
    tr2 = jnp.sum(da * da, axis=(-2, -1))
    exact = (dc + s2 * tr / 2) ** 2 + s2 * jnp.sum(dg * dg, -1) + s2 * s2 * tr2 / 2
    quadratic = s2 * s2 * (tr**2 / 4 + tr2 / 2)
    sym = 0.5 * (hc + jnp.swapaxes(hc, -1, -2))
    lam = jnp.linalg.eigvalsh(sym)[..., ::-1]  # descending, signed
    dl = lam[1:] - lam[:-1]
    paper = s2 * s2 / 4 * (2 * jnp.sum(dl * dl, -1) + jnp.sum(dl, -1) ** 2)
    return paper, exact, quadratic, lam


def theory_delta(curv: SubspaceCurvature, sigma: float, *, batch_size: int | None = None) -> TheoryResult:
    """Second-order ``Delta_k`` for every k = 1..K-1 from per-sample curvature, in one pass.

    Prefix means of ``c_i``, ``g_i``, ``G_i`` (over batch means when
    ``batch_size`` is set) give ``L_k(w*)``, ``P grad L_k`` and ``P H_k P^T``;
    increments use ``X_{k+1} - X_k = (x_{k+1} - X_k)/(k+1)``. With
    ``c, g, A`` the increments of those three and ``theta ~ N(0, sigma^2 I)``:

    * exact (no assumptions beyond a quadratic loss in the subspace)::

        E[(c + g.theta + theta^T A theta / 2)^2]
          = (c + sigma^2 tr(A)/2)^2 + sigma^2 |g|^2 + sigma^4 tr(A^2)/2

    * paper (Theorem 1; assumes c = 0, g = 0 and diagonal ``P H_k P^T``)::

        sigma^4/4 * (2 sum_i dl_i^2 + (sum_i dl_i)^2),
        dl_i = lambda_i(P H_{k+1} P^T) - lambda_i(P H_k P^T)

      with signed Ritz values sorted descending. The sigma^4 factor is kept.
    """
    sigma = _check_sigma(sigma)
    n = int(curv.c.shape[0])
    kmax = _num_groups(n, batch_size)
    paper, exact, quadratic, lam = _theory(
        jnp.asarray(curv.c), jnp.asarray(curv.g), jnp.asarray(curv.G), sigma, batch_size=batch_size
    )
    return TheoryResult(np.arange(1, kmax), paper, exact, quadratic, lam, sigma, batch_size, _unit(batch_size))


def theory_delta_eigensolver(
    model, w, x, y, ks, d: int, sigma: float, *, batch_size: int | None = None, key=None, **eig_kwargs
) -> dict:
    """The paper's literal route, for validation on a few k: top-``d`` eigenvalues of ``H_k`` and ``H_{k+1}``.

    For each requested k (in samples, or batches of ``batch_size``), the
    top-``d`` signed eigenvalues of the full Hessians ``H_k(w*)`` and
    ``H_{k+1}(w*)`` (on the first k, k+1 groups, data sliced so each matvec
    costs O(k)) come from :func:`jaxland.eigen.top_eigenpairs`, and Theorem 1
    gives ``sigma^4/4 (2 sum dl^2 + (sum dl)^2)``. Costs ~2 eigensolves per k:
    use :func:`theory_delta` for all k.

    Returns ``{"k": ks, "paper": (len(ks),), "eigenvalues": (len(ks), 2, d)}``.
    """
    from .subspace import _hessian_top

    sigma = _check_sigma(sigma)
    n = _check_data(x, y)
    kmax = _num_groups(n, batch_size)
    ks = np.atleast_1d(np.asarray(ks, dtype=int))
    if ks.size == 0 or ks.min() < 1 or ks.max() > kmax - 1:
        raise ConfigError(f"every k must be in [1, {kmax - 1}], got {ks.tolist()}")
    if key is None:
        key = jax.random.key(0)
    bs = 1 if batch_size is None else int(batch_size)
    out, lams = [], []
    for k in ks:
        pair = []
        for kk in (k, k + 1):
            m = kk * bs
            res = _hessian_top(model, w, x[:m], y[:m], d, key=key, **eig_kwargs)
            pair.append(np.asarray(res.eigenvalues))
        dl = pair[1] - pair[0]
        out.append(sigma**4 / 4 * (2 * np.sum(dl**2) + np.sum(dl) ** 2))
        lams.append(pair)
    return {"k": ks, "paper": np.asarray(out), "eigenvalues": np.asarray(lams)}


# ----------------------------------------------------------------------------- sufficient k


def moving_mean(a, window: int) -> np.ndarray:
    """Centred moving mean with edge replication (the paper's smoothing); ``window`` odd."""
    a = np.asarray(a, dtype=float)
    if int(window) != window or window < 1 or window % 2 == 0:
        raise ConfigError(f"smoothing window must be an odd positive integer, got {window!r}")
    if window == 1:
        return a.copy()
    if window > a.shape[0]:
        raise ConfigError(f"smoothing window {window} is longer than the curve ({a.shape[0]} points)")
    h = window // 2
    padded = np.concatenate([np.full(h, a[0]), a, np.full(h, a[-1])])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def sufficient_k(delta, tol: float, *, k=None, smooth: int | None = None):
    """Definition 4: ``K = min{k : Delta_k' < tol for every k' >= k}``, or None if the curve never settles.

    ``delta``: a curve (values at ``k``, default 1..len) or a result with
    ``.delta`` and ``.k`` (:class:`DeltaResult`). ``smooth``: odd window of a
    centred, edge-replicated moving mean applied first (the paper used 11).
    NaN counts as not below ``tol``. When the last value is not below ``tol``
    a ``RuntimeWarning`` says so and None is returned.
    """
    if hasattr(delta, "delta") and hasattr(delta, "k"):
        k = delta.k if k is None else k
        delta = delta.delta
    curve = np.asarray(delta, dtype=float)
    if curve.ndim != 1 or curve.size == 0:
        raise ConfigError(f"delta must be a non-empty 1-D curve, got shape {curve.shape}")
    try:
        tol_f = float(tol)
    except (TypeError, ValueError):
        raise ConfigError(f"tol must be a positive number, got {tol!r}") from None
    if not (math.isfinite(tol_f) and tol_f > 0):
        raise ConfigError(f"tol must be a positive finite number, got {tol!r}")
    ks = np.arange(1, curve.size + 1) if k is None else np.asarray(k)
    if ks.shape != curve.shape:
        raise ConfigError(f"k has shape {ks.shape} but delta has {curve.shape}")
    if smooth is not None:
        curve = moving_mean(curve, smooth)
    below = curve < tol_f  # NaN -> False
    if not below[-1]:
        warnings.warn(
            f"Delta never settles below tol={tol_f:g}: the last value (k={ks[-1]}) is {curve[-1]:.4g}; "
            "more data (or a larger tol) is needed",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    above = np.nonzero(~below)[0]
    first = 0 if above.size == 0 else above[-1] + 1
    return int(ks[first])


# ----------------------------------------------------------------------------- surfaces and companion paper


def loss_surface(
    model,
    subspace2d: Subspace,
    x: jax.Array,
    y: jax.Array,
    ks,
    *,
    grid: int = 21,
    extent: float = 1.0,
    batch_size: int | None = None,
    chunk: int | None = None,
    fast_first_layer: bool = True,
    mesh=None,
    matmul_dtype=None,
) -> SurfaceResult:
    """``L_k(alpha, beta)`` and ``(L_{k+1} - L_k)^2`` on a ``grid x grid`` mesh of ``[-extent, extent]^2``.

    The point ``(alpha, beta)`` is ``w* + alpha P_1 + beta P_2``. One (grid^2, N)
    per-sample loss matrix gives every requested k (1 <= k <= K-1; in
    batches when ``batch_size`` is set, e.g. the paper's "max k" is K-1).
    ``mesh``: the grid points are split over the devices like Monte Carlo
    draws (:func:`per_sample_loss_matrix`).
    """
    d = _check_subspace(model, subspace2d)
    if d != 2:
        raise ConfigError(f"loss_surface needs a 2-D subspace, got d={d}")
    n = _check_data(x, y)
    kmax = _num_groups(n, batch_size)
    ks = np.atleast_1d(np.asarray(ks))
    if ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or ks.min() < 1 or ks.max() > kmax - 1:
        raise ConfigError(f"every k must be an integer in [1, {kmax - 1}] ({_unit(batch_size)}), got {ks.tolist()}")
    if int(grid) != grid or grid < 2:
        raise ConfigError(f"grid must be an integer >= 2, got {grid!r}")
    if not (math.isfinite(float(extent)) and extent > 0):
        raise ConfigError(f"extent must be positive, got {extent!r}")
    dtype = subspace2d.directions.dtype
    alphas = jnp.linspace(-extent, extent, int(grid), dtype=dtype)
    betas = jnp.linspace(-extent, extent, int(grid), dtype=dtype)
    aa, bb = jnp.meshgrid(alphas, betas, indexing="ij")
    thetas = jnp.stack([aa.ravel(), bb.ravel()], axis=-1)
    losses = per_sample_loss_matrix(
        model, subspace2d, thetas, x, y, chunk=chunk, fast_first_layer=fast_first_layer, mesh=mesh, matmul_dtype=matmul_dtype
    )
    big_l = cumulative_means(losses, batch_size)  # (G^2, K)
    inc = loss_increments(losses, batch_size)  # (G^2, K-1)
    idx = jnp.asarray(ks - 1)
    shape = (len(ks), int(grid), int(grid))
    return SurfaceResult(
        alphas,
        betas,
        ks,
        big_l[:, idx].T.reshape(shape),
        (inc[:, idx] ** 2).T.reshape(shape),
        big_l[:, -1].reshape(shape[1:]),
        batch_size,
        _unit(batch_size),
    )


@functools.partial(jax.jit, static_argnames="batch_size")
def _abs_increments(l, perms, *, batch_size):
    return jax.lax.map(lambda p: jnp.abs(loss_increments(l[p], batch_size)), perms)


def loss_differences(
    model, w: jax.Array, x: jax.Array, y: jax.Array, *, orderings=None, key=None, batch_size: int | None = None
) -> LossDifferenceResult:
    """Companion paper: ``|L_{k+1}(w) - L_k(w)|`` for k = 1..K-1, averaged over orderings.

    One per-sample loss evaluation; each ordering costs a cumulative sum.
    ``orderings``: None (data order), an int R (R random permutations from
    ``key``), or an (R, N) array of permutations. The paper used R = 100 and
    k in samples; ``stderr`` is the standard error over orderings.
    """
    n = _check_data(x, y)
    kmax = _num_groups(n, batch_size)
    perms = _orderings(orderings, n, key)
    if perms is None:
        perms = jnp.arange(n)[None]
    l = jax.jit(_losses, static_argnums=0)(model, w, x, y)
    a = _abs_increments(l, perms, batch_size=batch_size)  # (R, K-1)
    r = int(a.shape[0])
    se = a.std(0, ddof=1) / np.sqrt(r) if r > 1 else jnp.full(a.shape[1], jnp.nan, a.dtype)
    return LossDifferenceResult(np.arange(1, kmax), a.mean(0), se, r, batch_size, _unit(batch_size))
