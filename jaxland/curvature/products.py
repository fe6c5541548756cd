"""Gradients and Hessian-vector products of the empirical loss on any prefix of the data, for any model.

``H_k(w) v`` is computed forward-over-reverse: ``jax.jvp`` of ``jax.grad`` of
``L_k``; one HVP costs about 1.6x a loss+gradient evaluation. ``model`` is any
object of the model protocol (:func:`jaxland.as_model`, :class:`jaxland.MLPConfig`).

Every function takes ``(model, w, x, y)`` first, then the vector(s), with ``k``
keyword-only (1..N; None: all N). The data are arguments of the compiled
programs (never closed over), so XLA does not constant-fold a dataset, and
``k`` is a traced value (a mask), so changing it does not recompile. Each
function checks its inputs once, by building the operator
(:func:`~jaxland.curvature.operators.hessian_operator`); to multiply many
times without checking the data again, build the operator yourself and use
``op @ v``. Inside a caller's ``jit`` the checks that need values are skipped.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from .._compat import renamed_kwargs
from ..errors import ConfigError
from ..sharding import AXIS, map_rows, pad_rows, replicate, resolve_mesh, shard_rows
from ..validate import as_array, check_loop, check_operator, check_vectors, clamp_prefix, finite_result, positive_int
from .operators import (CurvatureOperator, _matmat, _matvec, _prefix, hessian_operator, loop_mode,
                        weighted_linear_map)

__all__ = ["loss_and_grad", "hvp", "hvp_batch", "sharded_hvp", "sharded_matmat", "hessian_matvec", "dense_hessian"]


def _prefix_mean(model, w, x, y, k):
    losses = model.per_sample_losses(w, x, y)
    k = clamp_prefix(k, losses.shape[0])  # a traced k cannot be checked: k > N means all N
    return jnp.sum(jnp.where(jnp.arange(losses.shape[0]) < k, losses, 0.0)) / k.astype(losses.dtype)


@jax.jit
def _loss_and_grad(op):
    return jax.value_and_grad(lambda w: _prefix_mean(op.model, w, op.x, op.y, op.k))(op.w)


def loss_and_grad(model, w, x, y, *, k=None):
    """``(L_k(w), grad L_k(w))``."""
    return finite_result("loss_and_grad", _loss_and_grad(hessian_operator(model, w, x, y, k=k)), cause=_OVERFLOW,
                         raw_hint=False)


_OVERFLOW = "the loss or its derivatives overflow: w, x or v too large for the model"


def _vector_after_data(model, x, v, name):
    # the old order was hvp(model, w, v, x, y): a (.., D) "x" beside a non-(.., D) "v" is that call
    dim = int(getattr(model, "num_params", -1))
    xs, vs = tuple(getattr(x, "shape", ())), tuple(getattr(v, "shape", ()))
    if xs[-1:] == (dim,) and vs[-1:] != (dim,):
        raise ConfigError(f"{name}(model, w, x, y, v): the vector comes after the data (the old order {name}(model, w, v, x, y) "
                          f"is gone); got x of shape {xs} (a parameter vector?) and v of shape {vs}")


def hvp(model, w, x, y, v, *, k=None):
    """``H_k(w) v`` for one flat vector ``v`` (D,) (forward-over-reverse); ``k`` in 1..N (None: all N)."""
    v = as_array("v", v)
    _vector_after_data(model, x, v, "hvp")
    op = hessian_operator(model, w, x, y, k=k)
    return finite_result("hvp", _matvec(op, check_vectors(model, v, "v", like=op.w)), cause=_OVERFLOW, raw_hint=False)


def hvp_batch(model, w, x, y, vs, *, k=None):
    """``H_k(w) v`` for each row of ``vs`` (m, D) at once: the block operator for block eigensolvers.

    The gradient is linearised once and the linear map is vmapped over the
    vectors, so the m products share one forward/backward structure.
    """
    _vector_after_data(model, x, vs, "hvp_batch")
    op = hessian_operator(model, w, x, y, k=k)
    return _matmat(op, check_vectors(model, vs, "vs", ndim=2, like=op.w))


def hessian_matvec(model, w, x, y, *, k=None) -> Callable[[jax.Array], jax.Array]:
    """A ``matvec(v) = H_k(w) v`` function for eigensolvers (inputs checked once, here).

    The function only forwards the operator's arrays to the jitted HVP as
    arguments; nothing is baked into the compiled program as a constant, and
    ``v`` is not checked (pass ``(D,)`` vectors of ``w``'s dtype).
    """
    op = hessian_operator(model, w, x, y, k=k)
    return lambda v: _matvec(op, v)


@jax.jit
def _dense_hessian(op):
    return jax.hessian(lambda w: _prefix_mean(op.model, w, op.x, op.y, op.k))(op.w)


def dense_hessian(model, w, x, y, *, k=None):
    """Explicit (D, D) Hessian of ``L_k`` via ``jax.hessian`` (small models only: the exact reference)."""
    return _dense_hessian(hessian_operator(model, w, x, y, k=k))


# ----------------------------------------------------------------------------- many devices


@renamed_kwargs(chunk="chunk_size")
def sharded_matmat(op: CurvatureOperator, vs, *, mesh=None, over: str = "data", chunk_size: int | None = None,
                   loop: str = "auto"):
    """``A v`` for each row of ``vs`` (m, D), ``A`` the curvature operator ``op``, spread over the devices of ``mesh``.

    ``over="data"``: the samples are split over the devices, each computes the
    products of its share of ``sum_{i<=k} l_i / k`` and a ``psum`` adds them
    (what a big dataset needs). ``over="vectors"``: the vectors are split
    (``chunk_size`` at a time per device), data replicated (what a block
    eigensolver with many vectors needs). Both equal ``op.matmat(vs)`` up to
    float rounding. ``mesh=None``: one device, the plain product; an int n:
    the first n devices; or a :func:`jaxland.device_mesh`. ``loop``: the chunks
    of vectors run in one program (``"compiled"``, a ``lax.map`` on each
    device) or one compiled call per chunk (``"host"``); ``"auto"``: the host
    for a convolutional model on a CPU (:func:`~jaxland.curvature.operators.loop_mode`).
    """
    check_operator(op)
    if over not in ("data", "vectors"):
        raise ConfigError(f"over must be 'data' or 'vectors', got {over!r}")
    vs = jnp.atleast_2d(vs)
    check_vectors(op.model, vs, "vs", ndim=2, like=op.w)
    chunk_size = positive_int("chunk_size (vectors per device step)", chunk_size, None)
    mesh = None if mesh is None else resolve_mesh(mesh)
    if mesh is None:
        return op.matmat(vs, chunk_size=chunk_size, loop=loop)
    host = chunk_size is not None and loop_mode(op, check_loop(loop)) == "host"
    if over == "vectors":
        ops = replicate(mesh, op)
        if host and chunk_size * mesh.size < vs.shape[0]:
            # chunk_size vectors per device per compiled call, no loop inside
            step = chunk_size * mesh.size
            padded = pad_rows(vs, step)
            out = [_vector_parallel(mesh, None, padded[i:i + step], *ops) for i in range(0, padded.shape[0], step)]
            return jnp.concatenate(out)[: vs.shape[0]]
        return _vector_parallel(mesh, chunk_size, vs, *ops)
    n = op.num_samples
    x, y = pad_rows(op.x, mesh.size), pad_rows(op.y, mesh.size)
    return _data_parallel(op.model, op.kind, mesh, n, x, y, *replicate(mesh, op.w, vs, op.k))


@renamed_kwargs(chunk="chunk_size")
def sharded_hvp(model, w, x, y, vs, *, k=None, mesh=None, over: str = "data", chunk_size: int | None = None,
                loop: str = "auto"):
    """``H_k(w) v`` for each row of ``vs`` (m, D) over the devices of ``mesh``: :func:`sharded_matmat` of the Hessian.

    Equals :func:`hvp_batch` up to float rounding; ``mesh``, ``over``,
    ``chunk_size`` and ``loop`` as there.
    """
    vs = jnp.atleast_2d(vs)
    _vector_after_data(model, x, vs, "sharded_hvp")
    return sharded_matmat(hessian_operator(model, w, x, y, k=k), vs, mesh=mesh, over=over, chunk_size=chunk_size,
                          loop=loop)


@functools.partial(jax.jit, static_argnames=("mesh", "chunk_size"))
def _vector_parallel(mesh, chunk_size, vs, op):
    body = lambda V, op_: jax.vmap(weighted_linear_map(op_.kind, op_.model, op_.w, op_.x, op_.y, *_prefix(op_)))(V)
    return map_rows(body, vs, op, chunk=chunk_size, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("model", "kind", "mesh", "n"))
def _data_parallel(model, kind, mesh, n, x, y, w, vs, k):
    local = x.shape[0] // mesh.size

    def body(rows, w_, vs_, k_):
        x_, y_ = rows
        k_ = clamp_prefix(k_, n)
        idx = jax.lax.axis_index(AXIS) * local + jnp.arange(local)
        mask = (idx < k_) & (idx < n)  # the prefix, without the padded rows
        lin = weighted_linear_map(kind, model, w_, x_, y_, mask, 1.0 / k_.astype(w_.dtype))
        return jax.lax.psum(jax.vmap(lin)(vs_), AXIS)

    return shard_rows(body, (x, y), w, vs, k, mesh=mesh, replicated_output=True)
