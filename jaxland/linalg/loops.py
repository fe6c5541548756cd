"""Where an iterative method's loop runs: inside one compiled program, or on the host around one compiled step.

An iterative solver is an :class:`Iteration`: hashable static settings and
four pure functions of arrays,

* ``init(matvec, v0) -> state`` (may use products, e.g. LOBPCG's ``A X``),
* ``step(matvec, state) -> state``: one product (or one batched product) and the solver's update,
* ``cond(state) -> bool``: whether another step is needed,
* ``finish(state) -> result``: no products.

Two drivers run it, with the same arithmetic:

* :func:`run_compiled`: ``lax.while_loop`` -- one program, jit- and vmap-able
  (what an accelerator wants, and what the MLP wants on a CPU).
* :func:`run_host`: a Python loop; each step is one compiled call
  ``step(operand, state)`` that builds the product from ``operand`` (the
  weights and data, or a linearisation computed once before the loop:
  :mod:`jaxland.curvature.linearised`; arguments, never constants), compiled
  once per settings and shapes, with the state's buffers donated so that the
  Krylov basis is updated in place. Nothing leaves the device but one flag per step.

Why two: XLA's CPU backend runs a convolution inside a loop body far slower
than the same convolution in a program of its own: a
Hessian-vector product of a 27k-parameter CNN on 1,024 MNIST images took
9-10 s per product inside ``fori_loop`` (also vmapped over 4 vectors) against
0.5-0.95 s standalone, in one process on 2 shared CPU cores. A host loop
pays one dispatch and one flag read per step (well under a millisecond).

:func:`host_rows` is the host counterpart of ``lax.map(matvec, V, batch_size=c)``
for the estimators that multiply many independent vectors (Hutchinson,
Hutch++, the dense reference): chunks of ``c`` rows vmapped in one compiled
call each, the chunks padded to one shape so that one program serves them all.
:func:`has_convolution` is the test ``loop="auto"`` uses.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

__all__ = ["LOOPS", "Iteration", "run_compiled", "run_host", "host_rows", "has_convolution", "resolve_loop"]

LOOPS = ("auto", "compiled", "host")


class Iteration(Protocol):
    """An iterative method split into pure pieces (hashable: it is a static argument of the compiled step)."""

    def init(self, matvec: Callable, v0: jax.Array) -> Any: ...

    def step(self, matvec: Callable, state: Any) -> Any: ...

    def cond(self, state: Any) -> jax.Array: ...

    def finish(self, state: Any) -> Any: ...


def run_compiled(it: Iteration, matvec: Callable, v0: jax.Array):
    """``it`` to completion inside the caller's trace: ``finish(while_loop(cond, step, init))``."""
    state = it.init(matvec, v0)
    state = jax.lax.while_loop(it.cond, lambda s: it.step(matvec, s), state)
    return it.finish(state)


# ----------------------------------------------------------------------------- host driver


def _batched(fn, batched):
    return jax.vmap(fn) if batched else fn


@functools.partial(jax.jit, static_argnames=("it", "make", "batched"))
def _host_init(it, make, operand, v0, batched):
    mv = make(operand)
    state = _batched(lambda v: it.init(mv, v), batched)(v0)
    return state, jnp.any(_batched(it.cond, batched)(state))


@functools.partial(jax.jit, static_argnames=("it", "make", "batched"), donate_argnames="state")
def _host_step(it, make, operand, state, batched):
    mv = make(operand)
    state = _batched(lambda s: it.step(mv, s), batched)(state)
    return state, jnp.any(_batched(it.cond, batched)(state))


@functools.partial(jax.jit, static_argnames=("it", "batched"))
def _host_finish(it, state, batched):
    return _batched(it.finish, batched)(state)


def run_host(it: Iteration, make: Callable, operand, v0: jax.Array, *, batched: bool = False):
    """``it`` to completion with a Python loop around one compiled step.

    ``make(operand)`` returns the product ``v -> A v`` (``make``: hashable, e.g. a
    module-level function or a frozen dataclass; ``operand``: a pytree of arrays,
    e.g. a curvature operator). ``batched=True``: ``v0`` has a leading axis and
    the iteration runs for each row in lockstep (its products vmapped: one
    batched product per step), for fixed-length iterations only (every row
    takes the same number of steps, as SLQ's Lanczos runs do).
    Returns ``finish(state)`` (batched when ``batched``).
    """
    state, go = _host_init(it, make, operand, v0, batched)
    while bool(go):
        state, go = _host_step(it, make, operand, state, batched)
    return _host_finish(it, state, batched)


@functools.partial(jax.jit, static_argnames=("make",))
def _host_chunk(make, operand, V):
    return jax.vmap(make(operand))(V)


def host_rows(make: Callable, operand, V: jax.Array, chunk_size: int | None = None) -> jax.Array:
    """``A v`` for every row of ``V`` (m, D): chunks of ``chunk_size`` rows vmapped, one compiled call per chunk.

    The chunks are balanced (``ceil(m / ceil(m / chunk_size))`` rows each) and the
    last one padded with zero rows, so one program serves every chunk; at most
    one row per chunk is wasted. ``chunk_size=None``: all rows in one call.
    """
    m = V.shape[0]
    c = m if chunk_size is None else max(1, min(int(chunk_size), m))
    chunks = -(-m // c)
    c = -(-m // chunks)
    pad = chunks * c - m
    Vp = jnp.concatenate([V, jnp.zeros((pad,) + V.shape[1:], V.dtype)]) if pad else V
    out = [_host_chunk(make, operand, Vp[i * c:(i + 1) * c]) for i in range(chunks)]
    return jnp.concatenate(out)[:m] if chunks > 1 or pad else out[0]


# ----------------------------------------------------------------------------- the choice


_CONV_PRIMITIVES = ("conv_general_dilated",)


def _jaxprs(jaxpr):
    yield jaxpr
    for eqn in jaxpr.eqns:
        for sub in jax_core.jaxprs_in_params(eqn.params):
            yield from _jaxprs(sub)


def has_convolution(fn: Callable, *args) -> bool:
    """Whether ``fn(*args)`` (arrays or ``jax.ShapeDtypeStruct``; traced, never run) contains a convolution."""
    closed = jax.make_jaxpr(fn)(*args)
    return any(eqn.primitive.name in _CONV_PRIMITIVES for j in _jaxprs(closed.jaxpr) for eqn in j.eqns)


def resolve_loop(loop: str, has_conv: Callable[[], bool]) -> str:
    """``"compiled"`` or ``"host"`` for the option ``loop`` (validated by the caller).

    ``"auto"``: the host loop on the CPU backend when the product contains a
    convolution (``has_conv()``, called only then), the compiled loop otherwise.
    """
    if loop != "auto":
        return loop
    return "host" if jax.default_backend() == "cpu" and has_conv() else "compiled"
