"""The compiled Monte Carlo programs behind :mod:`jaxland.landscape.montecarlo` and :mod:`jaxland.landscape.surfaces`.

Everything starts from per-sample losses ``l_i(w* + theta_t @ P)`` of draws t
on blocks of samples: an outer ``lax.map`` (or ``scan``) over blocks of
``sample_block`` samples and, inside, a ``lax.map`` over draws vmapped
``draw_chunk`` at a time, so a block of samples stays in cache while every
draw uses it and memory is O(draw_chunk x sample_block x width).

The per-block kernel is the model's own when it has one
(``model.subspace_kernel``, e.g. the MLP's first-layer precompute); else the
first-layer kernel when the model's first layer splits off
(``model.first_layer``: a Dense, Conv or Embed on the data, linear in its
weights): ``f1(x; w*_1 + theta @ P_1) = f1(x; w*_1) + theta @ f1(x; P_1)``, the
d + 1 outputs formed once per block of samples and each draw's first-layer
output by d multiply-adds per entry; otherwise the generic one, which
evaluates ``model.per_sample_losses`` at ``center + theta @ directions`` -- any
architecture. Within a block the draws go ``draw_chunk`` at a time through
``lax.map`` (vmapped within a chunk); a convolutional network wants
``draw_chunk = 1``: vmapped over weight draws every convolution becomes a
grouped one (2.6x slower for LeNet-5, 12x for the ResNet, per draw).

Statistics over draws are streamed as (count, mean, co-moment) per k and
merged chunk by chunk and device by device with Chan et al.'s pairwise update
(:mod:`jaxland.landscape.moments`): the sum/sum-of-squares accumulation
without its cancellation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .moments import chan_merge, psum_moments, unit_moments
from .prefix import batch_means, loss_increments, prefix_increments
from ..linalg.loops import has_convolution
from ..sharding import AXIS, ceil_div, map_rows, pad_rows, shard_rows
from ..validate import is_sequence_model
from .variance import quadratic_features

# Measured on 2 CPU cores, reference MLP, d = 10 (benchmarks/delta.py): a block
# of samples stays in cache while all draws of a chunk reuse it.
DEFAULT_DRAW_CHUNK = 16
DEFAULT_SAMPLE_BLOCK = 512
# A network with a convolution, on a CPU (benchmarks/architectures.py --parts sweep, per draw, 2 CPU cores): draws
# mapped one at a time (vmapped 4 at a time: 3.0x slower for the ResNet, 1.9x for LeNet-5, 1.0x for the ViT and the
# Linen CNN) over blocks of 128 samples (within 4%, 0%, 12%, 0% of the best block of 64, 128, 256 for LeNet-5, the
# ViT, the Linen CNN, the ResNet; the MLP's 512-sample blocks with 16 draws vmapped were 2.5-4.3x slower).
CONV_DRAW_CHUNK = 1
CONV_SAMPLE_BLOCK = 128
# Any other model: the same blocks, 4 draws vmapped (untimed here: no such shipped model).
OTHER_DRAW_CHUNK = 4
OTHER_SAMPLE_BLOCK = 128
# A language model (loss "sequence_cross_entropy"), on any backend: blocks of about 4,096 tokens, draws one at a time
# (0.8M-parameter GPT, 256 sequences of 64, d = 2, 2 CPU cores: 3.0 s for 16 draws over blocks of 64 sequences,
# 3.2 s over 128, 3.4 s over 256; with 2 or 4 draws vmapped over 256, 6.4 s and 7.0 s).
SEQUENCE_BLOCK_TOKENS = 4096
SEQUENCE_DRAW_CHUNK = 1
# The first-layer kernel is used where it saves at least this share of the forward pass's multiply-adds: LeNet-5
# (first convolution 5x5, 28% of the multiply-adds: saves 17%) measured 1.2x faster per draw; the ViT's patch
# embedding (7x7, 4%: saves 3%) measured 0.9-1.0x.
FIRST_LAYER_MIN_SAVING = 0.1


def default_blocks(model, kernel, subspace, x, y) -> tuple[int, int]:
    """``(sample_block, draw_chunk)`` for ``model``: the measured rule (see the constants above).

    The MLP's own kernel: 512 samples, 16 draws vmapped. On the CPU backend, a
    model whose per-sample loss has a convolution: :data:`CONV_SAMPLE_BLOCK`,
    draws one at a time; any other model: :data:`OTHER_SAMPLE_BLOCK` and
    :data:`OTHER_DRAW_CHUNK`. Elsewhere (accelerators): the MLP's defaults. A
    language model, anywhere: blocks of :data:`SEQUENCE_BLOCK_TOKENS` tokens
    (``4096 // T`` sequences), draws one at a time.
    """
    if is_sequence_model(model):
        seq_len = max(1, int(x.shape[1])) if x.ndim > 1 else 1
        return max(1, SEQUENCE_BLOCK_TOKENS // seq_len), SEQUENCE_DRAW_CHUNK
    if kernel == "model" or jax.default_backend() != "cpu":
        return DEFAULT_SAMPLE_BLOCK, DEFAULT_DRAW_CHUNK
    aval = lambda a: jax.ShapeDtypeStruct((1,) + tuple(a.shape[1:]), a.dtype)
    w = jax.ShapeDtypeStruct(subspace.center.shape, subspace.center.dtype)
    if has_convolution(model.per_sample_losses, w, aval(x), aval(y)):
        return CONV_SAMPLE_BLOCK, CONV_DRAW_CHUNK
    return OTHER_SAMPLE_BLOCK, OTHER_DRAW_CHUNK


def _first_layer_block(model, subspace, thetas, draw_chunk):
    """The first-layer kernel (see the module docstring), or None when the model's first layer does not split off."""
    center, p = subspace.center, subspace.directions

    def block(args):
        xs, ys = args
        split = model.first_layer(center, xs, ys)
        h0 = split.first(center, xs, ys)
        hp = jax.vmap(lambda q: split.first(q, xs, ys))(p)  # (d, *h0.shape): linear in the weights

        def draw(th):
            return split.rest(center + th @ p, xs, ys, h0 + jnp.tensordot(th, hp, axes=1))

        return jax.lax.map(draw, thetas, batch_size=draw_chunk)

    return block


def block_losses(model, subspace, thetas, *, draw_chunk, fast, matmul_dtype=None):
    """``block((xs, ys)) -> (T, b)``: every draw's per-sample losses on one block of samples.

    ``fast``: ``"model"`` (the model's own :meth:`subspace_kernel`),
    ``"first_layer"`` or a false value (the generic kernel); see :func:`fast_kernel`.
    """
    if fast == "first_layer" and matmul_dtype is None:
        return _first_layer_block(model, subspace, thetas, draw_chunk)
    if fast:
        kernel = model.subspace_kernel(subspace, thetas, draw_chunk=draw_chunk, matmul_dtype=matmul_dtype)
        if kernel is not None:
            return kernel
    center, p = subspace.center, subspace.directions
    if matmul_dtype is None:
        losses = model.per_sample_losses
    else:
        losses = lambda w, xs, ys: model.per_sample_losses_lowp(w, xs, ys, matmul_dtype)

    def block(args):
        xs, ys = args
        return jax.lax.map(lambda th: losses(center + th @ p, xs, ys), thetas, batch_size=draw_chunk)

    return block


def has_fast_kernel(model, d: int) -> bool:
    """Whether ``model`` has a specialised Monte Carlo kernel of its own for a d-dimensional subspace."""
    check = getattr(model, "has_subspace_kernel", None)
    return bool(check is not None and check(d))


def fast_kernel(model, subspace, x, y, *, enabled=True, matmul_dtype=None):
    """Which kernel :func:`block_losses` uses: ``"model"``, ``"first_layer"`` or None (generic).

    ``enabled=True``: the model's own kernel when it has one for this d; else
    the first-layer kernel when ``model.first_layer`` splits the losses on a
    block of these shapes (full precision only) and that saves at least
    :data:`FIRST_LAYER_MIN_SAVING` of the forward pass's multiply-adds
    (``(1 - d / fan_in) * share``: a LeNet-5's 5x5 first convolution, not a 3x3
    one on one channel, nor a ViT's patch embedding, nor an embedding lookup);
    else the generic kernel.
    ``enabled="first_layer"``: the first-layer kernel whenever the first layer
    splits off. ``enabled=False``: generic. Tracing only.
    """
    if not enabled:
        return None
    d = subspace.directions.shape[0]
    if enabled is True and has_fast_kernel(model, d):
        return "model"
    split = getattr(model, "first_layer", None)
    if split is None or matmul_dtype is not None:
        return None
    aval = lambda a: jax.ShapeDtypeStruct((1,) + tuple(a.shape[1:]), a.dtype)
    center = jax.ShapeDtypeStruct(subspace.center.shape, subspace.center.dtype)
    found = split(center, aval(x), aval(y))
    if found is None:
        return None
    saving = (1 - d / found.fan_in) * found.share if found.fan_in else 0.0
    return "first_layer" if enabled == "first_layer" or saving >= FIRST_LAYER_MIN_SAVING else None


def loss_body(model, subspace, thetas, x, y, *, draw_chunk, sample_block, fast, matmul_dtype=None):
    """(T, n) per-sample losses on one device: sample blocks outside, draws (chunked) inside."""
    n, t = x.shape[0], thetas.shape[0]
    block = block_losses(model, subspace, thetas, draw_chunk=draw_chunk, fast=fast, matmul_dtype=matmul_dtype)
    blocks = lambda a: pad_rows(a, sample_block).reshape(-1, sample_block, *a.shape[1:])
    out = jax.lax.map(block, (blocks(x), blocks(y)))  # (blocks, T, block)
    return jnp.moveaxis(out, 0, 1).reshape(t, -1)[:, :n]


@functools.partial(jax.jit, static_argnames=("model", "draw_chunk", "sample_block", "fast", "matmul_dtype", "mesh"))
def loss_matrix(model, subspace, thetas, x, y, *, draw_chunk, sample_block, fast, matmul_dtype=None, mesh=None):
    """(T, N) per-sample losses; with a mesh the draws are split over the devices (each sees all samples)."""
    body = lambda th, sub, xx, yy: loss_body(
        model, sub, th, xx, yy, draw_chunk=draw_chunk, sample_block=sample_block, fast=fast, matmul_dtype=matmul_dtype
    )
    return map_rows(body, thetas, subspace, x, y, mesh=mesh)


# ----------------------------------------------------------------------------- streamed statistics


def squared_increments(losses, perms, samples_per_k):
    """``q_t,k`` = mean over orderings of ``(L_{k+1} - L_k)^2`` for each draw t: (T, K-1)."""
    if perms is None:
        return loss_increments(losses, samples_per_k) ** 2

    def body(r, acc):
        return acc + loss_increments(losses[:, perms[r]], samples_per_k) ** 2

    num_k = batch_means(losses[:1], samples_per_k).shape[-1]
    acc = jnp.zeros((losses.shape[0], num_k - 1), losses.dtype)
    return jax.lax.fori_loop(0, perms.shape[0], body, acc) / perms.shape[0]


def joint_increments(losses, perms, samples_per_k, feats, coef):
    """Per draw, ``f = (L_{k+1} - L_k)^2`` and the quadratic model's ``h``, averaged over orderings: (T, K-1, V).

    ``feats`` (T, F) and ``coef`` (N, F) (None: V = 1, f only) are the draws'
    :func:`jaxland.landscape.variance.quadratic_features` and the per-sample
    :func:`jaxland.landscape.variance.curvature_coefficients`; ``feats @ inc.T`` with
    ``inc`` the prefix increments of the (permuted) coefficients is the
    quadratic model of ``L_{k+1} - L_k``.
    """
    def values(p):
        q = loss_increments(losses if p is None else losses[:, p], samples_per_k) ** 2
        if coef is None:
            return q[..., None]
        inc = prefix_increments(coef if p is None else coef[p], samples_per_k, axis=0)
        return jnp.stack([q, (feats @ inc.T) ** 2], -1)

    if perms is None:
        return values(None)
    acc = jax.lax.fori_loop(0, perms.shape[0], lambda r, a: a + values(perms[r]), jnp.zeros_like(values(perms[0])))
    return acc / perms.shape[0]


def data_order_stats(
    model, subspace, thetas, units, x, y, coef, *, draw_chunk, sample_block, fast, matmul_dtype, samples_per_k,
    unit_draws, draw_level,
):
    """Per-k moments of ``f_t,k = (L_{k+1} - L_k)^2`` (and of the control variate ``h_t,k``) in data order.

    A scan over blocks of samples carries each draw's running sum of the
    per-sample (or per-batch) losses, so memory is O(T * sample_block): the
    (T, N) matrix never exists. ``sample_block`` is a multiple of ``samples_per_k``.
    ``units`` = (valid, halves) per unit of ``unit_draws`` consecutive draws;
    ``coef`` (N, F) or None (see :func:`joint_increments`). Returns
    (unit moments, draw moments or None), k = 1..K-1 along the K axis.
    """
    valid, halves = units
    group = 1 if samples_per_k is None else samples_per_k
    num_k = x.shape[0] // group
    used = num_k * group  # a trailing incomplete batch is dropped
    size = min(sample_block, used)  # both multiples of group
    groups_per_block = size // group
    block = block_losses(model, subspace, thetas, draw_chunk=draw_chunk, fast=fast, matmul_dtype=matmul_dtype)
    dtype = thetas.dtype
    local = jnp.arange(groups_per_block)
    if coef is not None:
        feats = quadratic_features(thetas)
        # increments of group i (0-based) are those of k = i; group 0 has none
        inc = jnp.concatenate([jnp.zeros((1, coef.shape[1]), coef.dtype), prefix_increments(coef, samples_per_k, axis=0)])

    def step(carry, j):
        # blocks are read in place (no padded copy of the data): the last one is moved back
        # to end at `used`, and its first `overlap` groups, already counted, are masked
        start = jnp.minimum(j * size, used - size)
        overlap = (j * size - start) // group
        l = block((jax.lax.dynamic_slice_in_dim(x, start, size), jax.lax.dynamic_slice_in_dim(y, start, size)))
        m = l.reshape(l.shape[0], groups_per_block, group).mean(-1) if group > 1 else l
        sums = carry[:, None] + jnp.cumsum(jnp.where(local >= overlap, m, 0), axis=1)  # S_i = sum of groups 0..i
        before = jnp.concatenate([carry[:, None], sums[:, :-1]], axis=1)  # S_{i-1}
        i = (start // group + local).astype(dtype)
        # group i (0-based) is the (k+1)-th with k = i: L_{k+1} - L_k = (m_i - S_{i-1}/i) / (i+1)
        vals = (((m - before / jnp.maximum(i, 1)) / (i + 1)) ** 2)[..., None]
        if coef is not None:
            cb = jax.lax.dynamic_slice_in_dim(inc, start // group, groups_per_block)
            vals = jnp.concatenate([vals, ((feats @ cb.T) ** 2)[..., None]], -1)
        stats = unit_moments(vals, valid, halves, unit_draws, draw_level)
        # position p of this step's output <-> group j * groups_per_block + p
        rolled = [None if s is None else tuple(jnp.roll(a, -overlap, axis=1) for a in s[1:]) for s in stats]
        return sums[:, -1], rolled

    num_blocks = ceil_div(used, size)
    _, out = jax.lax.scan(step, jnp.zeros(thetas.shape[0], dtype), jnp.arange(num_blocks))

    def finish(scanned, rows_valid):
        if scanned is None:
            return None
        # (blocks, 2, groups, ...) -> (2, K, ...); k = 1..K-1 are groups 1..K-1, positions past K-1 are wrapped leftovers
        mean, com = (jnp.moveaxis(a, 0, 1).reshape(2, -1, *a.shape[3:])[:, 1:num_k] for a in scanned)
        w = jax.nn.one_hot(rows_valid[1], 2, dtype=dtype) * rows_valid[0].astype(dtype)[:, None]
        return jnp.sum(w, 0), mean, com

    rep = lambda a: jnp.repeat(a, unit_draws)
    return finish(out[0], (valid, halves)), finish(out[1], (rep(valid), rep(halves)))


@functools.partial(
    jax.jit,
    static_argnames=(
        "model", "draw_chunk", "sample_block", "fast", "matmul_dtype", "mesh", "samples_per_k", "pass_units",
        "unit_draws", "draw_level",
    ),
)
def delta_stream(
    model, subspace, thetas, valid, halves, x, y, perms, coef, *, draw_chunk, sample_block, fast, matmul_dtype, mesh,
    samples_per_k, pass_units, unit_draws, draw_level,
):
    """Per-half moments of ``f`` (and ``h``) over all units, in passes of ``pass_units`` units per device.

    ``thetas`` (U, unit_draws, d), ``valid`` and ``halves`` (U,): the units,
    padded to devices x passes x pass_units. Returns (unit moments, draw
    moments or None), each (count (2,), mean (2, K-1, V), co-moment (2, K-1, V, V)).
    """
    kw = dict(draw_chunk=draw_chunk, sample_block=sample_block, fast=fast, matmul_dtype=matmul_dtype)

    def local(rows, sub, xx, yy, pp, cc):
        th, val, hv = rows
        d = th.shape[-1]
        th = th.reshape(-1, pass_units * unit_draws, d)
        val, hv = val.reshape(-1, pass_units), hv.reshape(-1, pass_units)

        def step(acc, chunk):
            thc, vc, hc = chunk
            if pp is None:
                stats = data_order_stats(model, sub, thc, (vc, hc), xx, yy, cc, samples_per_k=samples_per_k,
                                         unit_draws=unit_draws, draw_level=draw_level, **kw)
            else:
                losses = loss_body(model, sub, thc, xx, yy, **kw)  # (pass draws, N): the only big array
                feats = None if cc is None else quadratic_features(thc)
                stats = unit_moments(joint_increments(losses, pp, samples_per_k, feats, cc), vc, hc, unit_draws, draw_level)
            return tuple(None if a is None else chan_merge(a, b) for a, b in zip(acc, stats)), None

        num_q = batch_means(jnp.zeros((1, xx.shape[0])), samples_per_k).shape[-1] - 1
        v = 1 if cc is None else 2
        zero = (jnp.zeros(2, th.dtype), jnp.zeros((2, num_q, v), th.dtype), jnp.zeros((2, num_q, v, v), th.dtype))
        stats, _ = jax.lax.scan(step, (zero, zero if draw_level else None), (th, val, hv))
        return stats if mesh is None else tuple(None if s is None else psum_moments(s, AXIS) for s in stats)

    if mesh is None:
        return local((thetas, valid, halves), subspace, x, y, perms, coef)
    return shard_rows(local, (thetas, valid, halves), subspace, x, y, perms, coef, mesh=mesh, replicated_output=True)
