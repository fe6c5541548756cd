"""The host loop's product from a linearisation computed once per solve.

A host-driven solver (:mod:`jaxland.linalg.loops`) calls one compiled step per
product. Given the operator itself, each step has to redo the work every
product shares -- the forward pass, and for the Hessian the backward pass --
before its linear part (what :func:`~jaxland.curvature.operators.linear_map`
does once inside a compiled loop). Here that shared work runs once, in one
compiled call (:func:`linearise`), which returns the linearisation as a pytree:
``jax.linearize`` gives its linear map as a :class:`jax.tree_util.Partial`
whose leaves are the residuals (the activations and other intermediates the
linear part reads) and whose static part is the linear program. That pytree is
the operand of every later step, which then runs only the linear part:

* Hessian: the linearisation of ``grad L`` at ``w``, ``v -> H v`` (the same
  forward-over-reverse product as the compiled loop's).
* GGN: the outputs' linearisation ``J`` and the output-space Hessian product
  ``H_out``; a step applies ``J^T H_out J v`` (``J^T`` by transposing ``J``).
* Fisher: the per-sample losses' linearisation ``J_l`` and the prefix weights
  ``c``; a step applies ``J_l^T (c * J_l v)``.

Only a step that multiplies one vector takes the linearisation (Lanczos, power,
chunks of one): vmapped over several vectors its linear part ran slower than the
rebuilt product, which then shares one forward and backward pass among them.
The residuals can be large (every activation of every sample, several
copies for the Hessian), so :func:`host_product` sizes them first by tracing
alone (``jax.eval_shape``, nothing runs) and keeps the per-step product when they
exceed the budget: ``residual_budget`` bytes, default :data:`RESIDUAL_SHARE` of
the memory available and at most :data:`RESIDUAL_MAX_BYTES` (past which reading
the residuals made the linear part slower than recomputing them). Because a jit cache hit returns
the same static part every time, one compiled step serves every solve of the same
model, kind and shapes.
"""

from __future__ import annotations

import functools

import jax

from .. import memory
from ..errors import ConfigError
from .operators import CurvatureOperator, linear_map, linear_rows, shapes_key

__all__ = ["RESIDUAL_SHARE", "RESIDUAL_MAX_BYTES", "linearise", "residual_bytes", "host_product", "host_rows_product"]

RESIDUAL_SHARE = 0.25  # of the memory available: the most the stored linearisation may take by default
# ... and never more than this many bytes: past it the linear part is bound by reading the residuals. The ResNet's
# Hessian on 2 CPU cores: 191 MB of residuals (256 images) made a step 1.17-1.20x faster, 381 MB (512) 1.28-1.89x,
# 762 MB (1,024) 0.58-1.09x (slower in 2 of 3 runs).
RESIDUAL_MAX_BYTES = 512 * 2**20


@jax.jit
def linearise(op):
    """``v -> A v`` of ``op`` as a :class:`jax.tree_util.Partial` holding the residuals (one compiled call).

    It is :func:`~jaxland.curvature.operators.linear_map` returned from its own
    compiled call. Apply it inside a compiled function (it is a pytree: pass it
    as an argument); each application costs only the linear part of the product.
    """
    return linear_map(op)


@functools.lru_cache(maxsize=256)
def _residual_bytes(model, kind, shapes) -> int:
    w, x, y, k = (jax.ShapeDtypeStruct(s, d) for s, d in shapes)
    leaves = jax.tree_util.tree_leaves(jax.eval_shape(linearise, CurvatureOperator(model, kind, w, x, y, k)))
    return int(sum(memory.nbytes(a.shape, a.dtype) for a in leaves))


def residual_bytes(op) -> int:
    """Bytes of the residuals :func:`linearise` would store for ``op`` (traced once per model, kind and shapes; nothing runs)."""
    return _residual_bytes(op.model, op.kind, shapes_key(op.w, op.x, op.y, op.k))


def _linearised(res):
    """``make`` for a host loop whose operand is :func:`linearise`'s output: the product is the operand itself."""
    return res


def _linearised_rows(res):
    return jax.vmap(res)


def _budget(residual_budget):
    if residual_budget is None:
        return min(int(RESIDUAL_SHARE * memory.available_bytes()), RESIDUAL_MAX_BYTES)
    if isinstance(residual_budget, bool) or not isinstance(residual_budget, int) or residual_budget < 0:
        raise ConfigError(f"residual_budget must be a non-negative number of bytes or None, got {residual_budget!r}")
    return residual_budget


def host_product(op, vectors_per_step: int = 1, residual_budget: int | None = None):
    """``(make, operand, make_rows)`` for a host loop on ``op``: the stored linearisation where it is faster, else the operator.

    ``make(operand)`` is ``v -> A v`` and ``make_rows(operand)`` its rows
    version. The linearisation is used when each compiled step multiplies one
    vector (``vectors_per_step == 1``) and its residuals take at most
    ``residual_budget`` bytes (default :data:`RESIDUAL_SHARE` of the memory
    available, at most :data:`RESIDUAL_MAX_BYTES`); a step then costs the
    linear part of one product. Otherwise each step rebuilds the product from the operator
    (:func:`~jaxland.curvature.operators.linear_map`): a step that vmaps several
    vectors computes the shared forward and backward pass once for all of them,
    and its batched linear part ran slower from stored residuals than fused
    with the pass that makes them (4 vectors per step, 2 CPU cores: 1.1-1.25x
    the time per vector on LeNet-5 and the Linen CNN; see
    ``benchmarks/results/linearised_step.json``).
    """
    budget = _budget(residual_budget)
    if vectors_per_step == 1 and residual_bytes(op) <= budget:
        return _linearised, linearise(op), _linearised_rows
    return linear_map, op, linear_rows


def host_rows_product(op, rows: int, chunk_size: int, residual_budget: int | None = None):
    """``(make, operand)`` for :func:`~jaxland.linalg.loops.host_rows` of ``rows`` vectors in chunks of ``chunk_size``.

    The linearisation costs about one product's shared work, so it pays only
    when there are at least two chunks; and only for chunks of one vector (see
    :func:`host_product`).
    """
    c = max(1, min(int(chunk_size), int(rows)))
    if -(-rows // c) < 2:
        return linear_map, op
    make, operand, _ = host_product(op, c, residual_budget)
    return make, operand
