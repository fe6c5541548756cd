"""Curvature operators: the Hessian, the generalised Gauss-Newton matrix and the empirical Fisher of ``L_k`` at ``w``.

A model's per-sample losses are ``l_i(w) = loss(f(w, x_i), y_i)`` (``f``: the
outputs, ``model.apply``), and ``L_k(w) = (1/k) sum_{i<=k} l_i(w)`` is the mean of
the first k. The three symmetric ``D x D`` matrices of ``L_k`` at ``w``:

* **Hessian** ``H_k(w) = nabla^2 L_k(w)`` (indefinite in general). Product:
  forward-over-reverse, ``jax.jvp`` of ``jax.grad``.
* **Generalised Gauss-Newton** ``G_k(w) = (1/k) sum_{i<=k} J_i^T H_out,i J_i``,
  ``J_i = d f(w, x_i) / dw`` the Jacobian of sample i's outputs and
  ``H_out,i = d^2 loss(o, y_i) / do^2`` at ``o = f(w, x_i)``. It is ``H_k``
  without the terms in the second derivatives of the outputs, so ``G_k = H_k``
  for a model linear in ``w``. **PSD** whenever the loss is convex in the
  outputs (softmax cross-entropy, MSE; for a custom loss, when its output
  Hessian is PSD). Product: ``J v`` by the outputs' linearisation (a jvp), the
  output-space Hessian product (a jvp of the loss gradient in output space),
  ``J^T u`` by the transposed linearisation (a vjp); ``J`` is never formed.
* **Empirical Fisher** ``F_k(w) = (1/k) sum_{i<=k} g_i g_i^T``, ``g_i = nabla l_i(w)``
  the per-sample gradients. Always **PSD**, of rank at most k. Product:
  ``J_l^T (J_l v) / k`` with ``J_l`` the (n, D) Jacobian of the per-sample loss
  vector: one linearisation, a jvp and its transpose; no per-sample gradient is formed.

An operator is built once, and checked once, by :func:`hessian_operator`,
:func:`ggn_operator` or :func:`fisher_operator`; then ``op @ v`` and
``op.matmat(V)`` multiply without checking the data again. It is a pytree: the
arrays ``w, x, y, k`` are its leaves (``k`` an integer array, ``N`` when not
given), the model and the kind are static, so it crosses ``jit`` as an argument
-- the data are inputs of the compiled program, never constants -- and a new
``w`` or ``k`` of the same shapes reuses the compiled program. The prefix is a
mask, so the shapes never depend on ``k``.

The estimators (:func:`jaxland.curvature.eigenpairs`, :func:`~jaxland.curvature.trace`,
:func:`~jaxland.curvature.density`) take an operator; inside their compiled
loop they call :func:`linear_map` once, which does the work every product shares
(the forward pass and its linearisation) before the first product. In a host
loop (:func:`loop_mode`: the default for a model with a convolution on a CPU)
a step that multiplies one vector takes the linearisation, computed once per
solve in a compiled call of its own (:func:`jaxland.curvature.linearised.linearise`),
as its argument and costs the linear part of a product; a step of several
vectors, or residuals over the memory budget, takes the operator and calls
:func:`linear_map` itself (one forward and backward pass per step).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from ..errors import ConfigError
from ..linalg.loops import has_convolution, host_rows, resolve_loop
from ..models.base import _loss_fn
from ..validate import (check_data, check_loop, check_output_loss, check_params, check_prefix, check_vectors,
                        clamp_prefix, positive_int)

__all__ = ["KINDS", "DENSE_MAX_DIM", "CurvatureOperator", "hessian_operator", "ggn_operator", "fisher_operator",
           "curvature_operator", "linear_map", "linear_rows", "loop_mode"]

KINDS = ("hessian", "ggn", "fisher")
DENSE_MAX_DIM = 4096  # op.dense() builds a D x D matrix from D products


# ----------------------------------------------------------------------------- products
# Each kind's products for per-sample weights: the objective is sum_i [mask_i] l_i * scale,
# so the prefix mean (mask = i < k, scale = 1/k) and a device's share of it (mask = its rows
# below k) are the same code. ``prepare`` does the work all products share and returns v -> A v
# as a jax.tree_util.Partial: its leaves are the linearisation's residuals, so it can also be
# returned from one compiled call and passed to others (jaxland.curvature.linearised).


def _masked_sum(values, mask, scale):
    return jnp.sum(jnp.where(mask, values, 0.0)) * scale.astype(values.dtype)


def _hessian_prepare(model, w, x, y, mask, scale):
    grad = jax.grad(lambda w_: _masked_sum(model.per_sample_losses(w_, x, y), mask, scale))
    _, lin = jax.linearize(grad, w)
    return lin


def _hessian_product(model, w, x, y, mask, scale, v):
    """One product by forward-over-reverse (jvp of grad), for a single ``H v``: nothing is kept for a next product."""
    grad = jax.grad(lambda w_: _masked_sum(model.per_sample_losses(w_, x, y), mask, scale))
    return jax.jvp(grad, (w,), (v,))[1]


def _ggn_apply(jvp, out_hvp, v):
    """``J^T H_out J v`` from the outputs' linearisation ``jvp`` and the output-space Hessian product ``out_hvp``."""
    vjp = jax.linear_transpose(jvp, v)
    return vjp(out_hvp(jvp(v)))[0]


def _ggn_prepare(model, w, x, y, mask, scale):
    loss = _loss_fn(model.loss)
    out, jvp = jax.linearize(lambda w_: model.apply(w_, x), w)
    _, out_hvp = jax.linearize(jax.grad(lambda o: _masked_sum(loss(o, y), mask, scale)), out)
    return Partial(_ggn_apply, jvp, out_hvp)


def _fisher_apply(jvp, c, v):
    """``J_l^T (c * J_l v)`` from the per-sample losses' linearisation ``jvp`` and the prefix weights ``c``."""
    vjp = jax.linear_transpose(jvp, v)
    return vjp(c * jvp(v))[0]


def _fisher_prepare(model, w, x, y, mask, scale):
    losses, jvp = jax.linearize(lambda w_: model.per_sample_losses(w_, x, y), w)
    return Partial(_fisher_apply, jvp, jnp.where(mask, scale.astype(losses.dtype), 0.0))


_PREPARE = {"hessian": _hessian_prepare, "ggn": _ggn_prepare, "fisher": _fisher_prepare}


def weighted_linear_map(kind, model, w, x, y, mask, scale):
    """``v -> A v`` of ``kind`` for the objective ``scale * sum_i [mask_i] l_i`` (a device's share, in sharded products)."""
    return _PREPARE[kind](model, w, x, y, mask, scale)


def _prefix(op):
    n = op.x.shape[0]
    k = clamp_prefix(op.k, n)  # a traced k cannot be checked: k > N means all N, k < 1 the first sample
    return jnp.arange(n) < k, 1.0 / k.astype(op.w.dtype)


def linear_map(op: "CurvatureOperator"):
    """``v -> A v`` for use inside a compiled program: the shared work (forward pass, linearisation) is done here, once.

    Call it inside ``jit`` (or a loop body's enclosing function) and apply the
    result to many vectors; each application costs only the linear part.
    """
    return weighted_linear_map(op.kind, op.model, op.w, op.x, op.y, *_prefix(op))


def linear_rows(op: "CurvatureOperator"):
    """``V -> A V`` row by row (vmapped), one shared linearisation: the batched product of block solvers."""
    return jax.vmap(linear_map(op))


def shapes_key(*arrays) -> tuple:
    """``((shape, dtype name), ...)`` of ``arrays``: a hashable key for what is traced once per model and shapes."""
    return tuple((tuple(a.shape), jnp.dtype(a.dtype).name) for a in arrays)


@functools.lru_cache(maxsize=256)
def _model_has_convolution(model, shapes) -> bool:
    (w, x, y) = (jax.ShapeDtypeStruct(s, d) for s, d in shapes)
    return has_convolution(model.per_sample_losses, w, x, y)


def loop_mode(op: "CurvatureOperator", loop: str = "auto") -> str:
    """``"compiled"`` or ``"host"`` for the estimators' ``loop=`` option (already checked) on ``op``.

    ``"auto"``: ``"host"`` on the CPU backend when the model's per-sample loss
    contains a convolution (found in its jaxpr, traced once per model and
    shapes, never run), else ``"compiled"``.
    """
    return resolve_loop(loop, lambda: _model_has_convolution(op.model, shapes_key(op.w, op.x, op.y)))


@jax.jit
def _matvec(op, v):
    if op.kind == "hessian":
        return _hessian_product(op.model, op.w, op.x, op.y, *_prefix(op), v)
    return linear_map(op)(v)


@functools.partial(jax.jit, static_argnames="chunk_size")
def _matmat(op, V, chunk_size=None):
    lin = linear_map(op)
    return jax.vmap(lin)(V) if chunk_size is None else jax.lax.map(lin, V, batch_size=chunk_size)


@functools.partial(jax.jit, static_argnames="chunk_size")
def _dense(op, chunk_size):
    rows = jax.lax.map(linear_map(op), jnp.eye(op.dim, dtype=op.dtype), batch_size=chunk_size)
    return rows.T  # column j is A e_j


# ----------------------------------------------------------------------------- the operator


@jax.tree_util.register_pytree_node_class
class CurvatureOperator:
    """A symmetric ``D x D`` curvature matrix of ``L_k`` at ``w``, seen through its products.

    Build it with :func:`hessian_operator`, :func:`ggn_operator` or
    :func:`fisher_operator` (the math is in the module docstring); those check
    the inputs once. ``op @ v`` (``v``: (D,), or (D, m) for ``A V``) and
    ``op.matmat(V)`` (``V``: (b, D), one product per row) check only the
    vector's shape and dtype (no host round trip). A pytree (leaves ``w, x,
    y, k``; the model and ``kind`` static): pass it into ``jit`` as an argument.

    Attributes:
      model, kind: the model and one of :data:`KINDS`.
      w, x, y: parameters (D,) and data (N, ...), (N, ...).
      k: the prefix length as an integer array (``N`` when not given).
    """

    __slots__ = ("model", "kind", "w", "x", "y", "k")

    def __init__(self, model, kind, w, x, y, k):
        # no checks here: unflattening inside jit builds operators from tracers
        self.model, self.kind, self.w, self.x, self.y, self.k = model, kind, w, x, y, k

    def tree_flatten(self):
        return (self.w, self.x, self.y, self.k), (self.model, self.kind)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*aux, *children)

    @property
    def dim(self) -> int:
        """D, the number of parameters."""
        return int(self.w.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    @property
    def dtype(self):
        """The products' dtype (that of ``w``)."""
        return self.w.dtype

    @property
    def num_samples(self) -> int:
        """N, the samples held (the operator uses the first ``k``)."""
        return int(self.x.shape[0])

    def __repr__(self):
        name = getattr(self.model, "name", type(self.model).__name__)
        return f"CurvatureOperator(kind={self.kind!r}, model={name}, dim={self.dim}, samples={self.num_samples}, dtype={self.dtype})"

    def __matmul__(self, v):
        """``A v`` for ``v`` (D,); ``A V`` (D, m) for columns ``V`` (D, m)."""
        if getattr(v, "ndim", None) == 2:
            check_vectors(self.model, v.T, "v.T (v's columns)", ndim=2, like=self.w, values=False)
            return _matmat(self, v.T).T
        check_vectors(self.model, v, "v", like=self.w, values=False)
        return _matvec(self, v)

    def matmat(self, V, *, chunk_size: int | None = None, loop: str = "auto"):
        """``A v_i`` for each row ``v_i`` of ``V`` (b, D) -> (b, D); the rows share one linearisation.

        ``chunk_size`` rows are vmapped together, the chunks run one after
        another (default: all rows at once, what an accelerator wants). On a
        CPU small chunks are faster: reference MLP on 2,048 images, 10 rows, 2 CPU cores,
        ``chunk_size=1`` took 0.51-0.60 s against 1.05-1.11 s for all at once.
        ``loop``: the chunks run inside one program (``"compiled"``, a
        ``lax.map``) or one compiled call each (``"host"``); ``"auto"`` picks the
        host for a convolutional model on a CPU (see :func:`loop_mode`).
        """
        check_vectors(self.model, V, "V", ndim=2, like=self.w, values=False)
        chunk_size = positive_int("chunk_size (rows vmapped together)", chunk_size, None)
        if chunk_size is not None and chunk_size < V.shape[0] and loop_mode(self, check_loop(loop)) == "host":
            from .linearised import host_rows_product  # (imports this module)
            return host_rows(*host_rows_product(self, V.shape[0], chunk_size), V, chunk_size)
        return _matmat(self, V, chunk_size)

    def dense(self, *, chunk_size: int | None = None, loop: str = "auto"):
        """The explicit (D, D) matrix from D products (small models only: ``D <= DENSE_MAX_DIM``).

        ``chunk_size`` products are vmapped together (default: all of them);
        ``loop`` as in :meth:`matmat`.
        """
        if self.dim > DENSE_MAX_DIM:
            raise ConfigError(f"op.dense() would build a {self.dim} x {self.dim} matrix; allowed up to D = {DENSE_MAX_DIM}: "
                              "use op @ v, op.matmat or the matrix-free estimators instead")
        chunk_size = positive_int("chunk_size (products vmapped together)", chunk_size, self.dim)
        if chunk_size < self.dim and loop_mode(self, check_loop(loop)) == "host":
            from .linearised import host_rows_product  # (imports this module)
            eye = jnp.eye(self.dim, dtype=self.dtype)
            return host_rows(*host_rows_product(self, self.dim, chunk_size), eye, chunk_size).T
        return _dense(self, chunk_size)

    def astype(self, dtype) -> "CurvatureOperator":
        """The same operator with products in ``dtype``: ``w`` and a floating ``x`` cast (labels kept)."""
        x = self.x.astype(dtype) if jnp.issubdtype(self.x.dtype, jnp.floating) else self.x
        return CurvatureOperator(self.model, self.kind, self.w.astype(dtype), x, self.y, self.k)

    def at_params(self, w) -> "CurvatureOperator":
        """The same kind, data and ``k`` at other parameters ``w`` (unchecked: for use inside compiled code)."""
        return CurvatureOperator(self.model, self.kind, w, self.x, self.y, self.k)


def curvature_operator(model, w, x, y, *, kind: str = "hessian", k=None) -> CurvatureOperator:
    """The curvature operator of ``kind`` (one of :data:`KINDS`) of ``L_k`` at ``w``, its inputs checked once.

    Checks (:mod:`jaxland.validate`): ``x``, ``y`` fit the model (shapes, finite
    values, labels in range); ``w`` is a finite flat vector of length D; ``k``
    is an integer in ``[1, N]`` (None: all N samples); for ``"ggn"``, the model
    exposes its outputs and the loss of them. All raise :class:`ConfigError`.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    n = check_data(model, x, y, min_samples=1)
    w = check_params(model, w)
    check_prefix(k, n)
    if kind == "ggn":
        check_output_loss(model)
    k = jnp.asarray(n if k is None else k, jnp.int32)
    return CurvatureOperator(model, kind, w, x, y, k)


def hessian_operator(model, w, x, y, *, k=None) -> CurvatureOperator:
    """``H_k(w) = nabla^2 L_k(w)``, the Hessian of the mean of the first ``k`` per-sample losses (None: all).

    Products are forward-over-reverse (jvp of grad). Example::

        op = jl.hessian_operator(model, w, x, y, k=1000)
        hv = op @ v                                  # H_1000(w) v
        eig = jl.curvature.eigenpairs(op, 10, key=jax.random.key(0))
    """
    return curvature_operator(model, w, x, y, kind="hessian", k=k)


def ggn_operator(model, w, x, y, *, k=None) -> CurvatureOperator:
    """``G_k(w) = (1/k) sum_{i<=k} J_i^T H_out,i J_i``, the generalised Gauss-Newton matrix (PSD for convex losses).

    ``J_i``: Jacobian of sample i's outputs ``model.apply(w, x_i)`` with respect
    to ``w``; ``H_out,i``: Hessian of ``model.loss`` with respect to those
    outputs. Positive semi-definite when the loss is convex in the outputs
    (cross-entropy, MSE). Any model of the protocol whose per-sample losses are
    ``model.loss(model.apply(w, x), y)`` (every :func:`jaxland.as_model` model
    and :class:`jaxland.MLPConfig`), with any loss callable.
    """
    return curvature_operator(model, w, x, y, kind="ggn", k=k)


def fisher_operator(model, w, x, y, *, k=None) -> CurvatureOperator:
    """``F_k(w) = (1/k) sum_{i<=k} g_i g_i^T``, the empirical Fisher (always PSD), ``g_i = nabla l_i(w)``.

    Matrix-free: ``F v = J_l^T (J_l v) / k`` with ``J_l`` the Jacobian of the
    per-sample loss vector; needs only ``model.per_sample_losses``.
    """
    return curvature_operator(model, w, x, y, kind="fisher", k=k)
