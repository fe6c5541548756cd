"""Hessian-vector products of the empirical loss on any prefix of the data, for any model.

All functions take the data as arguments (never closed over), so XLA does not
constant-fold a dataset into the program, and the prefix length ``k`` is a
traced value (a mask), so changing it does not recompile.

``H_k(w) v`` is computed forward-over-reverse: ``jax.jvp`` of ``jax.grad`` of
``L_k``; one HVP costs about 1.6x a loss+gradient evaluation. ``model`` is any
object of the model protocol (:func:`jaxland.as_model`, :class:`jaxland.MLPConfig`).

The public functions check their inputs (:mod:`jaxland.validate`) when called
with concrete arrays; inside a caller's ``jit`` the checks that need values are
skipped and the compiled kernels (``_hvp`` ...) run directly.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from ..errors import ConfigError
from ..models.base import prefix_mean_loss as mean_loss  # unchecked; clamps a traced k to [1, N]
from ..sharding import AXIS, map_rows, pad_rows, replicate, resolve_mesh, shard_rows
from ..validate import as_array, check_data, check_params, check_prefix, check_vectors, clamp_prefix, finite_result

_OVERFLOW = "the loss or its derivatives overflow: w, x or v too large for the model"

__all__ = ["loss_and_grad", "hvp", "hvp_batch", "sharded_hvp", "hessian_matvec", "dense_hessian"]


def _check(model, w, x, y, k, vectors=None, name="v", ndim=1):
    n = check_data(model, x, y, min_samples=1)
    check_params(model, w)
    if vectors is not None:
        check_vectors(model, vectors, name, ndim=ndim, like=w)
    check_prefix(k, n)


@functools.partial(jax.jit, static_argnames="model")
def _loss_and_grad(model, w, x, y, k):
    return jax.value_and_grad(mean_loss, argnums=1)(model, w, x, y, k)


def loss_and_grad(model, w, x, y, k=None):
    """``(L_k(w), grad L_k(w))``."""
    _check(model, w, x, y, k)
    return finite_result("loss_and_grad", _loss_and_grad(model, w, x, y, k), cause=_OVERFLOW, raw_hint=False)


def _hvp_body(model, w, v, x, y, k):
    g = lambda w_: jax.grad(mean_loss, argnums=1)(model, w_, x, y, k)
    return jax.jvp(g, (w,), (v,))[1]


_hvp = jax.jit(_hvp_body, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _hvp_batch(model, w, vs, x, y, k):
    g = lambda w_: jax.grad(mean_loss, argnums=1)(model, w_, x, y, k)
    _, lin = jax.linearize(g, w)
    return jax.vmap(lin)(vs)


def hvp(model, w, v, x, y, k=None):
    """``H_k(w) v`` for one flat vector ``v`` (forward-over-reverse); ``k`` in 1..N (None: all N).

    A concrete ``k`` outside 1..N is refused; a traced ``k`` (inside ``jit``) is clamped to ``[1, N]``.
    """
    v = as_array("v", v)
    _check(model, w, x, y, k, v, "v")
    return finite_result("hvp", _hvp(model, w, v, x, y, k), cause=_OVERFLOW, raw_hint=False)


def hvp_batch(model, w, vs, x, y, k=None):
    """``H_k(w) v`` for each row of ``vs`` (m, D) at once: the block operator for block eigensolvers.

    The gradient is linearised once and the linear map is vmapped over the
    vectors, so the m products share one forward/backward structure.
    """
    _check(model, w, x, y, k, vs, "vs", 2)
    return _hvp_batch(model, w, vs, x, y, k)


def hessian_matvec(model, w, x, y, k=None) -> Callable[[jax.Array], jax.Array]:
    """A ``matvec(v) = H_k(w) v`` closure for eigensolvers (inputs checked once, here).

    The closure only forwards its arrays to the jitted HVP as arguments;
    nothing is baked into the compiled program as a constant. Inside another
    ``jit`` (e.g. an eigensolver's compiled loop) the call is inlined with
    ``w, x, y`` as that program's inputs.
    """
    _check(model, w, x, y, k)
    return lambda v: _hvp(model, w, v, x, y, k)


@functools.partial(jax.jit, static_argnums=0)
def _dense_hessian(model, w, x, y, k):
    return jax.hessian(mean_loss, argnums=1)(model, w, x, y, k)


def dense_hessian(model, w, x, y, k=None):
    """Explicit (D, D) Hessian of ``L_k`` via ``jax.hessian`` (small models only: the exact reference)."""
    _check(model, w, x, y, k)
    return _dense_hessian(model, w, x, y, k)


def sharded_hvp(model, w, vs, x, y, k=None, *, mesh=None, over: str = "data", chunk: int | None = None):
    """``H_k(w) v`` for each row of ``vs`` (m, D), spread over the devices of ``mesh``.

    ``over="data"``: the samples are split over the devices, each computes the
    HVP of its share of ``sum_i l_i`` and a ``psum`` adds them (what a big
    dataset needs). ``over="vectors"``: the vectors are split, data replicated
    (what a block eigensolver with many vectors needs). Both equal
    :func:`hvp_batch` up to float rounding. ``mesh=None`` means one device
    (an int n: the first n devices).
    """
    if over not in ("data", "vectors"):
        raise ConfigError(f"over must be 'data' or 'vectors', got {over!r}")
    vs = jnp.atleast_2d(vs)
    _check(model, w, x, y, k, vs, "vs", 2)
    mesh = None if mesh is None else resolve_mesh(mesh)
    if mesh is None:
        return _hvp_batch(model, w, vs, x, y, k)
    n = int(x.shape[0])
    kk = jnp.asarray(n if k is None else k)
    if over == "vectors":
        return _vector_parallel_hvp(model, mesh, chunk, vs, *replicate(mesh, w, x, y, kk))
    return _data_parallel_hvp(model, mesh, n, pad_rows(x, mesh.size), pad_rows(y, mesh.size), *replicate(mesh, w, vs, kk))


@functools.partial(jax.jit, static_argnames=("model", "mesh", "chunk"))
def _vector_parallel_hvp(model, mesh, chunk, vs, w, x, y, k):
    body = lambda V, w_, x_, y_, k_: jax.vmap(lambda v: _hvp_body(model, w_, v, x_, y_, k_))(V)
    return map_rows(body, vs, w, x, y, k, chunk=chunk, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("model", "mesh", "n"))
def _data_parallel_hvp(model, mesh, n, x, y, w, vs, k):
    local = x.shape[0] // mesh.size

    def body(rows, w_, vs_, k_):
        x_, y_ = rows
        k_ = clamp_prefix(k_, n)
        idx = jax.lax.axis_index(AXIS) * local + jnp.arange(local)
        valid = (idx < k_) & (idx < n)  # the prefix, without the padded rows
        masked_sum = lambda ww: jnp.sum(jnp.where(valid, model.per_sample_losses(ww, x_, y_), 0.0))
        _, lin = jax.linearize(jax.grad(masked_sum), w_)
        return jax.lax.psum(jax.vmap(lin)(vs_), AXIS) / k_.astype(w_.dtype)

    return shard_rows(body, (x, y), w, vs, k, mesh=mesh, replicated_output=True)
