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

__all__ = ["loss_and_grad", "hvp", "hvp_batch", "hessian_matvec", "hessian_batch_matvec", "dense_hessian"]


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
