"""Hessian-vector products of the empirical loss on any prefix of the data.

All functions take the data as arguments (never closed over), so XLA does not
constant-fold a dataset into the program, and the prefix length ``k`` is a
traced value (a mask), so changing it does not recompile.

``H_k(w) v`` is computed forward-over-reverse: ``jax.jvp`` of ``jax.grad`` of
``L_k``; one HVP costs about 1.6x a loss+gradient evaluation.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from .model import MLPConfig, mean_loss

__all__ = ["loss_and_grad", "hvp", "hvp_batch", "sharded_hvp", "hessian_matvec", "hessian_batch_matvec", "dense_hessian"]


@functools.partial(jax.jit, static_argnames="model")
def loss_and_grad(model: MLPConfig, w, x, y, k=None):
    """``(L_k(w), grad L_k(w))``."""
    return jax.value_and_grad(mean_loss, argnums=1)(model, w, x, y, k)


def _hvp(model, w, v, x, y, k):
    g = lambda w_: jax.grad(mean_loss, argnums=1)(model, w_, x, y, k)
    return jax.jvp(g, (w,), (v,))[1]


@functools.partial(jax.jit, static_argnames="model")
def hvp(model: MLPConfig, w, v, x, y, k=None):
    """``H_k(w) v`` for one flat vector ``v`` (forward-over-reverse)."""
    return _hvp(model, w, v, x, y, k)


@functools.partial(jax.jit, static_argnames="model")
def hvp_batch(model: MLPConfig, w, vs, x, y, k=None):
    """``H_k(w) v`` for each row of ``vs`` (m, D) at once: the block operator for block eigensolvers.

    The gradient is linearised once and the linear map is vmapped over the
    vectors, so the m products share one forward/backward structure.
    """
    g = lambda w_: jax.grad(mean_loss, argnums=1)(model, w_, x, y, k)
    _, lin = jax.linearize(g, w)
    return jax.vmap(lin)(vs)


def hessian_matvec(model: MLPConfig, w, x, y, k=None) -> Callable[[jax.Array], jax.Array]:
    """A ``matvec(v) = H_k(w) v`` closure for eigensolvers.

    The closure only forwards its arrays to the jitted :func:`hvp` as
    arguments; nothing is baked into the compiled program as a constant.
    Inside another ``jit`` (e.g. an eigensolver's compiled loop) the call is
    inlined with ``w, x, y`` as that program's inputs.
    """
    return lambda v: hvp(model, w, v, x, y, k)


def hessian_batch_matvec(model: MLPConfig, w, x, y, k=None) -> Callable[[jax.Array], jax.Array]:
    """``matmat(V) = V H_k(w)`` for a (m, D) block of row vectors."""
    return lambda vs: hvp_batch(model, w, vs, x, y, k)


@functools.partial(jax.jit, static_argnames="model")
def dense_hessian(model: MLPConfig, w, x, y, k=None):
    """Explicit (D, D) Hessian of ``L_k`` via ``jax.hessian`` (small models only: the exact reference)."""
    return jax.hessian(mean_loss, argnums=1)(model, w, x, y, k)


def _masked_sum_loss(model, w, x, y, valid):
    from .model import per_sample_losses

    return jnp.sum(jnp.where(valid, per_sample_losses(model, w, x, y), 0.0))


def sharded_hvp(model: MLPConfig, w, vs, x, y, k=None, *, mesh=None, over: str = "data", chunk: int | None = None):
    """``H_k(w) v`` for each row of ``vs`` (m, D), spread over the devices of ``mesh``.

    ``over="data"``: the samples are split over the devices, each computes the
    HVP of its share of ``sum_i l_i`` and a ``psum`` adds them (what a big
    dataset needs). ``over="vectors"``: the vectors are split, data replicated
    (what a block eigensolver with many vectors needs). Both equal
    :func:`hvp_batch` up to float rounding; with ``mesh=None`` they are it.
    """
    from .sharding import AXIS

    vs = jnp.atleast_2d(vs)
    n = x.shape[0]
    kk = jnp.asarray(n if k is None else k)
    if mesh is None or mesh.size == 1:
        return hvp_batch(model, w, vs, x, y, k)
    if over == "vectors":
        # one compiled program per (model, mesh, chunk): an eager shard_map of a fresh lambda retraced every call
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        rep = NamedSharding(mesh, P())
        out = _vector_parallel_hvp(model, mesh, chunk, *jax.device_put((vs, w, x, y, kk), rep))
        if jax.process_count() > 1 and not out.is_fully_addressable:
            from jax.experimental import multihost_utils

            out = multihost_utils.process_allgather(out, tiled=True)
        return out
    if over != "data":
        from .errors import ConfigError

        raise ConfigError(f"over must be 'data' or 'vectors', got {over!r}")
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    pad = (-n) % mesh.size
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
        y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
    rows, rep = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
    put = jax.device_put
    return _data_parallel_hvp(model, mesh, n, put(x, rows), put(y, rows), put(w, rep), put(vs, rep), put(kk, rep))


@functools.partial(jax.jit, static_argnames=("model", "mesh", "chunk"))
def _vector_parallel_hvp(model, mesh, chunk, vs, w, x, y, k):
    from .sharding import map_rows

    body = lambda V, w_, x_, y_, k_: jax.vmap(lambda v: _hvp(model, w_, v, x_, y_, k_))(V)
    return map_rows(body, vs, w, x, y, k, chunk=chunk, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("model", "mesh", "n"))
def _data_parallel_hvp(model, mesh, n, x, y, w, vs, k):
    from jax.sharding import PartitionSpec as P

    from .sharding import AXIS

    local = x.shape[0] // mesh.size

    def body(x_, y_, w_, vs_, k_):
        idx = jax.lax.axis_index(AXIS) * local + jnp.arange(local)
        valid = (idx < k_) & (idx < n)
        g = lambda ww: jax.grad(_masked_sum_loss, argnums=1)(model, ww, x_, y_, valid)
        _, lin = jax.linearize(g, w_)
        return jax.lax.psum(jax.vmap(lin)(vs_), AXIS) / k_.astype(w_.dtype)

    return jax.shard_map(body, mesh=mesh, in_specs=(P(AXIS), P(AXIS), P(), P(), P()), out_specs=P(), check_vma=False)(
        x, y, w, vs, k
    )
