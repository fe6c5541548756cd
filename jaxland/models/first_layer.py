"""A network's first layer, split off its per-sample losses when it is linear in its weights and sees only the data.

For Monte Carlo over ``w(theta) = w* + sum_j theta_j p_j`` the first layer of
most networks needs computing once per direction, not once per draw: a Dense,
Conv or Embed applied to the inputs is linear in its parameters (bias
included), so

    f1(x; w*_1 + sum_j theta_j p_j,1) = f1(x; w*_1) + sum_j theta_j f1(x; p_j,1),

and the d + 1 outputs on a block of samples give every draw's first-layer
output by d multiply-adds per output entry, instead of the layer's fan-in.

:func:`split_first_layer` finds that layer in the jaxpr of ``per_sample_losses(w,
x, y)`` (traced on abstract values, never run): the first operation that
combines the weights with the data must be a convolution
(``conv_general_dilated``: data on the left, weights on the right), a matrix
product (``dot_general``: a Dense, either side) or a gather from the weights at
data-given indices (an Embed); its weight operand must be a linear view of
``w`` (slices, reshapes, transposes, casts, broadcasts -- how every parameter
pytree is unravelled); its data operand may be any function of ``x`` and ``y``
alone (a normalisation, a reshape). Everything before it that does not touch
the data, and everything after it, stays as it was. It returns
:class:`FirstLayer`:

* ``first(w, x, y)``: that operation's output (linear in ``w``);
* ``rest(w, x, y, h)``: the per-sample losses with ``h`` in place of it, so
  ``rest(w, x, y, first(w, x, y)) == per_sample_losses(w, x, y)`` exactly (the
  same operations, in the same order); any other use of ``x`` still sees ``x``.

The split works on the jaxpr, so it covers every model of the protocol: NNX
modules (:func:`jaxland.as_model`), pure functions with a parameter pytree
(Linen's ``module.apply``), and the shipped LeNet-5, ResNet and ViT, whose
first convolutions (the ViT's patch embedding) it finds. A model whose first
weight-data operation is anything else (an elementwise scale of the input, a
layer norm before the first Dense) gets ``None`` and the generic kernel.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
from jax.extend import core as jax_core

__all__ = ["FirstLayer", "split_first_layer"]

# primitives whose sub-jaxpr is walked through (calls that do not change the values)
_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
          "checkpoint", "remat")
# operations that keep a weight view linear in w
_VIEWS = ("split", "slice", "reshape", "squeeze", "expand_dims", "broadcast_in_dim", "transpose", "convert_element_type",
          "copy", "copy_p", "rev", "concatenate", "neg", "dynamic_slice")
_LAYERS = ("conv_general_dilated", "dot_general", "gather")

# what a variable depends on: constants only, the data only, a linear view of w, w otherwise, both
CONST, DATA, VIEW, WEIGHT, MIXED = range(5)


class FirstLayer(NamedTuple):
    """``per_sample_losses(w, x, y) = rest(w, x, y, first(w, x, y))`` with ``first`` linear in ``w``.

    ``primitive``: the operation found (``"conv_general_dilated"``,
    ``"dot_general"`` or ``"gather"``); ``shape``: the shape of its output on
    the traced block; ``fan_in``: its multiply-adds per output entry (a
    convolution's window times input channels, a Dense's inputs; 0 for a
    gather); ``share``: its multiply-adds over those of every convolution and
    matrix product of the losses. Combining d precomputed outputs costs d per
    entry, so the split saves ``(1 - d / fan_in) * share`` of the forward pass's
    multiply-adds (when ``d < fan_in``).
    """

    first: Callable
    rest: Callable
    primitive: str
    shape: tuple
    fan_in: int
    share: float


def _sub(eqn):
    """``(jaxpr, consts)`` of a call-like equation walked through, else None."""
    if eqn.primitive.name not in _CALLS:
        return None
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        if sub is None:
            continue
        if isinstance(sub, jax_core.ClosedJaxpr):
            return sub.jaxpr, sub.consts
        if isinstance(sub, jax_core.Jaxpr):
            return sub, ()
    return None


def _kind(eqn, kinds):
    """What the outputs of a leaf equation depend on, from what its inputs depend on."""
    ins = set(kinds)
    if ins <= {CONST}:
        return CONST
    if ins <= {CONST, DATA}:
        return DATA
    if MIXED in ins or (DATA in ins and (VIEW in ins or WEIGHT in ins)):
        return MIXED
    name = eqn.primitive.name
    if name == "concatenate" and CONST in ins:  # joined with constants: affine, not linear
        return WEIGHT
    if WEIGHT not in ins and (name in _VIEWS or (name == "mul" and CONST in ins and len(kinds) == 2)):
        return VIEW
    if name in ("add", "sub") and ins == {VIEW}:
        return VIEW
    return WEIGHT


class _Found(Exception):
    def __init__(self, ordinal, ok, primitive=None, shape=None, fan_in=0):
        self.ordinal, self.ok, self.primitive, self.shape, self.fan_in = ordinal, ok, primitive, shape, fan_in


def _fan_in(eqn) -> int:
    """Multiply-adds per output entry of a convolution or matrix product (0 for anything else)."""
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out_dim = eqn.params["dimension_numbers"].rhs_spec[0]
        return int(math.prod(rhs) // rhs[out_dim])
    if name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        shape = eqn.invars[0].aval.shape
        return int(math.prod(shape[d] for d in lc))
    return 0


def _macs(jaxpr) -> int:
    """Multiply-adds of the convolutions and matrix products of ``jaxpr`` (a loop body counted once)."""
    total = 0
    for eqn in jaxpr.eqns:
        for sub in jax_core.jaxprs_in_params(eqn.params):
            total += _macs(sub)
        fan = _fan_in(eqn)
        if fan:
            total += fan * math.prod(eqn.outvars[0].aval.shape)
    return total


def _qualifies(eqn, kinds) -> bool:
    """Whether the first equation that meets weights and data is a first layer linear in a weight view."""
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        return kinds[0] == DATA and kinds[1] == VIEW
    if name == "dot_general":
        return sorted(kinds[:2]) == [DATA, VIEW]
    if name == "gather":
        return kinds[0] == VIEW and kinds[1] == DATA
    return False


def _analyse(jaxpr, in_kinds, counter):
    env = {}
    read = lambda v: CONST if isinstance(v, jax_core.Literal) else env[v]
    for v, k in zip(jaxpr.invars, in_kinds):
        env[v] = k
    for v in jaxpr.constvars:
        env.setdefault(v, CONST)
    for eqn in jaxpr.eqns:
        kinds = [read(v) for v in eqn.invars]
        sub = _sub(eqn)
        if sub is not None:
            sj, _ = sub
            outs = _analyse(sj, kinds[len(kinds) - len(sj.invars):], counter)
            for v, k in zip(eqn.outvars, outs):
                env[v] = k
            continue
        counter[0] += 1
        out = _kind(eqn, kinds)
        if out == MIXED:
            ok = _qualifies(eqn, kinds) and len(eqn.outvars) == 1
            raise _Found(counter[0], ok, eqn.primitive.name, tuple(eqn.outvars[0].aval.shape), _fan_in(eqn) if ok else 0)
        for v in eqn.outvars:
            env[v] = out
    return [read(v) for v in jaxpr.outvars]


class _Stop(Exception):
    def __init__(self, value):
        self.value = value


def _interpret(jaxpr, consts, args, state):
    """Evaluate ``jaxpr`` with call-like equations inlined; the ``state["target"]``-th leaf is cut."""
    env = {}
    read = lambda v: v.val if isinstance(v, jax_core.Literal) else env[v]
    for v, a in zip(jaxpr.constvars, consts):
        env[v] = a
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        sub = _sub(eqn)
        if sub is not None:
            sj, sc = sub
            outvals = _interpret(sj, sc, invals[len(invals) - len(sj.invars):], state)
        else:
            state["count"] += 1
            if state["count"] == state["target"] and state["h"] is not None:
                outvals = [state["h"]]
            else:
                with eqn.ctx.manager:
                    outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
                if state["count"] == state["target"]:
                    raise _Stop(outvals)
                if not eqn.primitive.multiple_results:
                    outvals = [outvals]
        for v, val in zip(eqn.outvars, outvals):
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def split_first_layer(per_sample_losses: Callable, w, x, y) -> FirstLayer | None:
    """:class:`FirstLayer` of ``per_sample_losses(w, x, y)`` at the shapes of ``w, x, y``, or None (see the module docstring).

    ``w, x, y``: arrays or :class:`jax.ShapeDtypeStruct` of one block of
    samples (the jaxpr, and so ``first`` and ``rest``, is specific to these
    shapes and dtypes). Tracing only: nothing is computed here.
    """
    aval = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)
    closed = jax.make_jaxpr(per_sample_losses)(aval(w), aval(x), aval(y))
    try:
        _analyse(closed.jaxpr, [VIEW, DATA, DATA], [0])
        return None  # the weights never meet the data
    except _Found as found:
        if not found.ok:
            return None
        target, primitive, shape, fan_in = found.ordinal, found.primitive, found.shape, found.fan_in

    def first(w_, x_, y_):
        try:
            _interpret(closed.jaxpr, closed.consts, (w_, x_, y_), {"count": 0, "target": target, "h": None})
        except _Stop as stop:
            return stop.value
        raise AssertionError("the first layer was not reached")  # the same jaxpr as the analysis: cannot happen

    def rest(w_, x_, y_, h):
        return _interpret(closed.jaxpr, closed.consts, (w_, x_, y_), {"count": 0, "target": target, "h": h})[0]

    share = fan_in * math.prod(shape) / max(_macs(closed.jaxpr), 1)
    return FirstLayer(first, rest, primitive, shape, fan_in, float(share))
