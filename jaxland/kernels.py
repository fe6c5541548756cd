"""The compiled Monte Carlo programs behind :mod:`jaxland.montecarlo` and :mod:`jaxland.surfaces`.

Everything starts from per-sample losses ``l_i(w* + theta_t @ P)`` of draws t
on blocks of samples: an outer ``lax.map`` (or ``scan``) over blocks of
``sample_block`` samples and, inside, a ``lax.map`` over draws vmapped
``draw_chunk`` at a time, so a block of samples stays in cache while every
draw uses it and memory is O(draw_chunk x sample_block x width).

The per-block kernel is the model's own when it has one
(``model.subspace_kernel``, e.g. the MLP's first-layer precompute) and
otherwise the generic one, which evaluates ``model.per_sample_losses`` at
``center + theta @ directions`` -- any architecture, vmapped per chunk of draws.

Statistics over draws are streamed as (count, mean, M2 = sum of squared
deviations) per k and merged chunk by chunk and device by device with Chan et
al.'s pairwise update: the sum/sum-of-squares accumulation without its
cancellation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .prefix import batch_means, loss_increments
from .sharding import AXIS, ceil_div, map_rows, pad_rows, shard_rows

# Measured on 2 CPU cores, reference MLP, d = 10 (benchmarks/delta.py): a block
# of samples stays in cache while all draws of a chunk reuse it.
DEFAULT_DRAW_CHUNK = 16
DEFAULT_SAMPLE_BLOCK = 512


def block_losses(model, subspace, thetas, *, draw_chunk, fast, matmul_dtype=None):
    """``block((xs, ys)) -> (T, b)``: every draw's per-sample losses on one block of samples."""
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
    """Whether ``model`` has a specialised Monte Carlo kernel for a d-dimensional subspace."""
    check = getattr(model, "has_subspace_kernel", None)
    return bool(check is not None and check(d))


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


def chunk_stats(q, valid):
    """(count, mean, M2) over the valid rows of ``q`` (rows = draws)."""
    v = valid.astype(q.dtype)[:, None]
    n = jnp.sum(v)
    mean = jnp.sum(v * q, 0) / jnp.maximum(n, 1)
    return n, mean, jnp.sum(v * (q - mean) ** 2, 0)


def merge_stats(a, b):
    """Chan et al.'s pairwise merge of two (count, mean, M2) triples."""
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    delta = mb - ma
    frac = nb / jnp.maximum(n, 1)
    return n, ma + delta * frac, sa + sb + delta * delta * na * frac


def psum_stats(stats, axis):
    """:func:`merge_stats` across the devices of a mesh axis."""
    n, mean, m2 = stats
    total = jax.lax.psum(n, axis)
    gmean = jax.lax.psum(n * mean, axis) / total
    return total, gmean, jax.lax.psum(m2 + n * (mean - gmean) ** 2, axis)


def squared_increments(losses, perms, batch_size):
    """``q_t,k`` = mean over orderings of ``(L_{k+1} - L_k)^2`` for each draw t: (T, K-1)."""
    if perms is None:
        return loss_increments(losses, batch_size) ** 2

    def body(r, acc):
        return acc + loss_increments(losses[:, perms[r]], batch_size) ** 2

    num_k = batch_means(losses[:1], batch_size).shape[-1]
    acc = jnp.zeros((losses.shape[0], num_k - 1), losses.dtype)
    return jax.lax.fori_loop(0, perms.shape[0], body, acc) / perms.shape[0]


def data_order_stats(model, subspace, thetas, valid, x, y, *, draw_chunk, sample_block, fast, matmul_dtype, batch_size):
    """Per-k (count, mean, M2) of ``q_t,k = (L_{k+1} - L_k)^2`` over the given draws, in data order.

    A scan over blocks of samples carries each draw's running sum of the
    per-sample (or per-batch) losses, so memory is O(T * sample_block): the
    (T, N) matrix never exists. ``sample_block`` is a multiple of ``batch_size``.
    """
    group = 1 if batch_size is None else batch_size
    num_k = x.shape[0] // group
    used = num_k * group  # a trailing incomplete batch is dropped
    size = min(sample_block, used)  # both multiples of group
    groups_per_block = size // group
    block = block_losses(model, subspace, thetas, draw_chunk=draw_chunk, fast=fast, matmul_dtype=matmul_dtype)
    dtype = thetas.dtype
    local = jnp.arange(groups_per_block)

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
        q = ((m - before / jnp.maximum(i, 1)) / (i + 1)) ** 2
        _, mean, m2 = chunk_stats(q, valid)
        # position p of this step's output <-> group j * groups_per_block + p
        return sums[:, -1], (jnp.roll(mean, -overlap), jnp.roll(m2, -overlap))

    num_blocks = ceil_div(used, size)
    _, (mean, m2) = jax.lax.scan(step, jnp.zeros(thetas.shape[0], dtype), jnp.arange(num_blocks))
    n = jnp.sum(valid.astype(dtype))
    # k = 1..K-1 are groups 1..K-1; group 0 has no increment, positions past K-1 are wrapped leftovers
    return n, mean.reshape(-1)[1:num_k], m2.reshape(-1)[1:num_k]


@functools.partial(
    jax.jit,
    static_argnames=("model", "draw_chunk", "sample_block", "fast", "matmul_dtype", "mesh", "batch_size", "pass_draws"),
)
def delta_stream(
    model, subspace, thetas, valid, x, y, perms, *, draw_chunk, sample_block, fast, matmul_dtype, mesh, batch_size, pass_draws
):
    """(count, mean, M2) of ``q_t,k`` over all draws, in passes of ``pass_draws`` draws per device."""
    kw = dict(draw_chunk=draw_chunk, sample_block=sample_block, fast=fast, matmul_dtype=matmul_dtype)

    def local(rows, sub, xx, yy, pp):
        th, val = rows
        th = th.reshape(-1, pass_draws, th.shape[-1])
        val = val.reshape(-1, pass_draws)

        def step(acc, chunk):
            thc, vc = chunk
            if pp is None:
                stats = data_order_stats(model, sub, thc, vc, xx, yy, batch_size=batch_size, **kw)
            else:
                losses = loss_body(model, sub, thc, xx, yy, **kw)  # (pass_draws, N): the only big array
                stats = chunk_stats(squared_increments(losses, pp, batch_size), vc)
            return merge_stats(acc, stats), None

        num_q = batch_means(jnp.zeros((1, xx.shape[0])), batch_size).shape[-1] - 1
        zero = jnp.zeros(num_q, th.dtype)
        stats, _ = jax.lax.scan(step, (jnp.zeros((), th.dtype), zero, zero), (th, val))
        return stats if mesh is None else psum_stats(stats, AXIS)

    if mesh is None:
        return local((thetas, valid), subspace, x, y, perms)
    return shard_rows(local, (thetas, valid), subspace, x, y, perms, mesh=mesh, replicated_output=True)
