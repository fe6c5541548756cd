"""The model protocol: what every jaxland estimate needs from a network.

jaxland's numerical code never sees a module. It sees a *model*: a small,
hashable, static description (a static argument of ``jax.jit``) of a pure
function of one flat parameter vector ``w``:

=========================  ===================================================
``model.num_params``       D, the length of ``w``
``model.init(key)``        a fresh flat ``w`` (D,)
``model.apply(w, x)``      the outputs on a batch ``x`` (n, ...)
``model.per_sample_losses(w, x, y)``  ``l_i(w)``, shape (n,)
``model.unravel(w)``       the parameter pytree (for filter normalisation)
``model.to_module(w)``     back to a :class:`flax.nnx.Module`
``model.name``, ``model.spec``  a readable name; a JSON-able description (cache keys)
``model.first_layer(w, x, y)``  the first layer split off the losses, or None (optional; automatic)
=========================  ===================================================

:func:`as_model` builds one from any :class:`flax.nnx.Module` (an instance,
or a factory ``rngs -> module`` so that ``init(key)`` can re-initialise), or
from a pure ``apply_fn(params, x)`` plus a parameter pytree (Linen, plain JAX).
:class:`jaxland.MLPConfig` is one implementation of the same protocol (and
carries the MLP's fast Monte Carlo kernel).

**What is a parameter.** Only ``nnx.Param`` leaves are in ``w``. Every other
piece of state (BatchNorm running statistics, RNG counters) is a constant of
the model, and the module runs in inference mode (``module.eval()``: BatchNorm
uses its stored statistics, Dropout is off). So ``l_i(w)`` depends on sample i
alone and ``L_k`` is a mean of per-sample losses that does not depend on which
other samples are present -- the quantity the papers study. A network trained
with batch statistics is analysed with the running averages it holds; jaxland's
own :func:`~jaxland.training.loop` also trains in inference mode (BatchNorm then acts
as a fixed affine layer with the statistics the module holds).

**Losses.** ``"cross_entropy"`` (softmax cross-entropy, integer labels; the
default), ``"mse"`` (mean over output entries of the squared error; targets of
the output's shape), ``"sequence_cross_entropy"`` (logits (n, T, V), targets
(n, T), -1 = padding: the mean next-token cross-entropy of each sequence, see
:mod:`jaxland.models.sequence_loss`), or any callable ``loss(outputs, y) -> (n,)``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from ..errors import ConfigError
from .identity import callable_key
from .losses import LOSSES, cross_entropy, loss_fn as _loss_fn, loss_name as _loss_name, mse

__all__ = ["Model", "as_model", "LOSSES", "cross_entropy", "mse"]


class Model:
    """Behaviour shared by every model: losses, flat-vector views, input checks.

    A subclass provides ``num_params``, ``apply(w, x)``, ``unravel(w)``,
    ``init(key)``, ``to_module(w)``, ``name``, ``spec`` and the attribute
    ``loss`` (a name of :data:`LOSSES` or a callable); it must be hashable and
    compare equal only when it computes the same function from the same
    starting weights (callables whose equality cannot be decided, such as two
    lambdas, make models unequal). Across processes the weight cache identifies
    a model by :func:`jaxland.models.identity.model_fingerprint`.
    """

    loss: Any = "cross_entropy"
    input_shape: tuple[int, ...] | None = None

    # -- identity: subclasses that keep ``_key`` (everything that fixes the function) and ``_num_params``
    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return type(other) is type(self) and self._key == other._key

    def __repr__(self):
        return f"{type(self).__name__}({self.name}, D={self._num_params}, loss={_loss_name(self.loss)})"

    @property
    def num_params(self) -> int:
        return self._num_params

    # -- losses
    @property
    def classification(self) -> bool:
        """True for integer-label cross-entropy (labels are then checked against the number of classes)."""
        return self.loss == "cross_entropy"

    def per_sample_losses(self, w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
        """``l_i(w)`` for every sample of the batch, shape (n,)."""
        return _loss_fn(self.loss)(self.apply(w, x), y)

    def per_sample_losses_lowp(self, w, x, y, dtype) -> jax.Array:
        """:meth:`per_sample_losses` with the forward pass in ``dtype`` (e.g. bfloat16), the loss in float32.

        The generic rule casts ``w`` and ``x`` to ``dtype``, so every layer
        computes in it; models with a better kernel (the MLP: float32
        accumulation) override this.
        """
        out = self.apply(w.astype(dtype), x.astype(dtype)).astype(w.dtype)
        return _loss_fn(self.loss)(out, y)

    def has_subspace_kernel(self, d: int) -> bool:
        """Whether :meth:`subspace_kernel` specialises the Monte Carlo kernel for a d-dimensional subspace."""
        return False

    def subspace_kernel(self, subspace, thetas, *, draw_chunk: int, matmul_dtype=None):
        """A specialised ``block((xs, ys)) -> (T, b)`` Monte Carlo kernel, or None for the generic one.

        The generic kernel evaluates :meth:`per_sample_losses` at
        ``center + theta @ directions`` for every draw; a model may return a
        faster equivalent (the MLP's first-layer precompute).
        """
        return None

    def first_layer(self, w, x, y):
        """The first layer split off :meth:`per_sample_losses`, or None: ``FirstLayer(first, rest, ...)``.

        ``per_sample_losses(w, x, y) == rest(w, x, y, first(w, x, y))`` with
        ``first`` linear in ``w`` (a Dense, Conv or Embed applied to the data),
        so Monte Carlo over ``w* + theta @ P`` computes it once per direction
        instead of once per draw. ``w, x, y``: arrays or shape structs of one
        block (the split is specific to their shapes). Found automatically in
        the jaxpr of :meth:`per_sample_losses` for every model, NNX modules and
        pure functions alike (:func:`jaxland.models.first_layer.split_first_layer`
        says which first operations qualify); a model may override it with its own
        split, or return None to opt out.
        """
        from .first_layer import split_first_layer

        return split_first_layer(self.per_sample_losses, w, x, y)

    # -- flat views
    def ravel(self, tree) -> jax.Array:
        return ravel_pytree(tree)[0]

    def bias_mask(self) -> jax.Array:
        """1.0 on the entries of parameters named ``bias`` in the flat vector, 0.0 elsewhere."""
        tree = self.unravel(jnp.zeros(self.num_params))
        masked = jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.full(leaf.shape, 1.0 if _last_name(path) == "bias" else 0.0), tree
        )
        return self.ravel(masked)

    # -- shapes
    def output_shape(self, x_shape: tuple[int, ...], dtype=jnp.float32) -> tuple[int, ...]:
        """Shape of ``apply(w, x)`` for inputs of ``x_shape``, by abstract evaluation (no FLOPs)."""
        w = jax.ShapeDtypeStruct((self.num_params,), dtype)
        x = jax.ShapeDtypeStruct(tuple(x_shape), dtype)
        try:
            return tuple(jax.eval_shape(self.apply, w, x).shape)
        except Exception as e:  # noqa: BLE001  (shape errors come from deep inside the model)
            expected = f"(n, {', '.join(map(str, self.input_shape))})" if self.input_shape else "another shape"
            raise ConfigError(
                f"inputs of shape (n, {', '.join(map(str, x_shape[1:]))}) cannot be fed to {self.name}: it expects {expected} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from None


def _last_name(path) -> str:
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    names = [n for n in names if n not in (None, "value")]
    return str(names[-1]) if names else ""


# ----------------------------------------------------------------------------- NNX modules


def _fingerprint(*trees) -> str:
    """Content hash of arrays (and typed PRNG keys) in pytrees: models equal iff their constants are."""
    h = hashlib.sha256()
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            a = np.asarray(leaf)
            h.update(str((a.shape, a.dtype)).encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:20]


def _structure_text(graphdef) -> str:
    """The graph definition as text without object addresses (stable across processes)."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(graphdef))


class NNXModel(Model):
    """A :class:`flax.nnx.Module` seen through its ``nnx.Param`` leaves (see :func:`as_model`)."""

    def __init__(self, module: nnx.Module, *, loss, name=None, factory=None, spec=None, input_shape=None):
        module = nnx.clone(module)
        module.eval()  # BatchNorm: stored statistics; Dropout: off
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        flat, unravel = ravel_pytree(params)
        if flat.size == 0:
            raise ConfigError(
                f"{type(module).__name__} has no nnx.Param leaves: there is nothing to differentiate; "
                "declare trainable weights as nnx.Param (nnx.Linear, nnx.Conv, ... do)"
            )
        _loss_fn(loss)
        self._graphdef, self._rest, self._unravel = graphdef, rest, unravel
        self._num_params = int(flat.size)
        self._factory = factory
        self._initial = None if factory is not None else np.asarray(flat)
        self.loss = loss
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.name = name or type(module).__name__
        self._spec = dict(spec) if spec is not None else {
            "architecture": self.name,
            "structure": hashlib.sha256(_structure_text(graphdef).encode()).hexdigest()[:20],
        }
        self._spec.update(num_params=self._num_params, loss=_loss_name(loss))
        self.explicit_spec = spec is not None
        # the starting weights belong to the identity: the instance's values, or the factory that draws them
        start = _fingerprint(flat) if factory is None else callable_key(factory)
        self._key = (graphdef, _fingerprint(rest), loss, self.name, self.input_shape, self._num_params, start)

    @property
    def spec(self) -> dict:
        return dict(self._spec)

    @property
    def initial_params(self) -> jax.Array | None:
        """The weights of the module instance the model was built from (None when built from a factory)."""
        return None if self._initial is None else jnp.asarray(self._initial)

    def init(self, key: jax.Array) -> jax.Array:
        if self._factory is None:
            raise ConfigError(
                f"{self.name} was built from a module instance, so it cannot re-initialise itself; pass a factory "
                "to as_model (e.g. jl.as_model(lambda rngs: Net(..., rngs=rngs))), or start from "
                "model.initial_params"
            )
        return self.ravel(nnx.split(self._factory(rngs=nnx.Rngs(key)), nnx.Param, ...)[1])

    def unravel(self, w: jax.Array):
        return self._unravel(w)

    def to_module(self, w: jax.Array) -> nnx.Module:
        """The module (in inference mode) holding the parameters ``w``."""
        return nnx.merge(self._graphdef, self._unravel(w), self._rest)

    def apply(self, w: jax.Array, x: jax.Array) -> jax.Array:
        return self.to_module(w)(x)


# ----------------------------------------------------------------------------- pure functions


def _check_param_leaves(params) -> None:
    """Every leaf of a parameter pytree must be a floating-point array (what ``w`` is raveled from)."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for path, leaf in leaves:
        where = f"params{jax.tree_util.keystr(path)}"
        if not isinstance(leaf, (jax.Array, np.ndarray)):
            raise ConfigError(
                f"as_model: {where} is a {type(leaf).__name__}, not an array: params must hold only the trainable "
                "float arrays (jnp.asarray them); keep names and settings out of it (close over them in apply_fn)"
            )
        dt = leaf.dtype
        try:
            floating = jnp.issubdtype(dt, jnp.floating)
        except TypeError:
            floating = False
        if not floating:
            raise ConfigError(
                f"as_model: {where} has dtype {dt}, but parameters are differentiated and must be floating point; "
                "cast it (e.g. .astype(jnp.float32)) or keep it out of params"
            )


class FunctionModel(Model):
    """``apply_fn(params, x)`` over a parameter pytree (Linen's ``module.apply``, plain JAX)."""

    def __init__(self, apply_fn, params, *, loss, name=None, init_fn=None, input_shape=None):
        _check_param_leaves(params)
        flat, unravel = ravel_pytree(params)
        if flat.size == 0:
            raise ConfigError("params has no array leaves: there is nothing to differentiate")
        _loss_fn(loss)
        self._apply_fn, self._unravel, self._init_fn = apply_fn, unravel, init_fn
        self._initial = np.asarray(flat)
        self._num_params = int(flat.size)
        self.loss = loss
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self.name = name or getattr(apply_fn, "__qualname__", "function")
        treedef = jax.tree.structure(params)
        shapes = tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(params))
        self._key = (apply_fn, treedef, shapes, loss, self.name, self.input_shape, _fingerprint(flat), callable_key(init_fn))

    @property
    def spec(self) -> dict:
        return {"architecture": self.name, "params": [list(s) for s, _ in self._key[2]], "loss": _loss_name(self.loss)}

    @property
    def initial_params(self) -> jax.Array:
        return jnp.asarray(self._initial)

    def init(self, key: jax.Array) -> jax.Array:
        if self._init_fn is None:
            raise ConfigError(f"{self.name}: pass init=lambda key: params to as_model to re-initialise; or start from model.initial_params")
        return self.ravel(self._init_fn(key))

    def unravel(self, w: jax.Array):
        return self._unravel(w)

    def to_module(self, w: jax.Array):
        return self._unravel(w)

    def apply(self, w: jax.Array, x: jax.Array) -> jax.Array:
        return self._apply_fn(self._unravel(w), x)


def as_model(
    obj,
    *,
    loss: str | Callable = "cross_entropy",
    params=None,
    init: Callable | None = None,
    name: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    spec: dict | None = None,
) -> Model:
    """The jaxland model of a network: a hashable description for every jaxland function.

    Args:
      obj: one of
        * an :class:`flax.nnx.Module` instance: ``w`` starts as its weights
          (``model.initial_params``);
        * a factory ``f(rngs=nnx.Rngs) -> nnx.Module`` (e.g.
          ``functools.partial(Net, features=32)``), so ``model.init(key)`` builds
          fresh weights;
        * a pure function ``apply_fn(params, x) -> outputs`` with ``params=`` (a
          pytree of arrays; e.g. ``lambda p, x: net.apply({"params": p}, x)``
          for Linen), optionally ``init=lambda key: params``;
        * a model already (returned unchanged).
      loss: ``"cross_entropy"`` (integer labels), ``"mse"`` or a callable
        ``loss(outputs, y) -> (n,)``.
      name: readable name (default: the class or function name).
      input_shape: per-sample input shape, e.g. ``(28, 28, 1)``, for error
        messages and checks (optional).
      spec: a JSON-able description of the architecture and its
        hyper-parameters, the weight cache's key (default: a hash of the
        module's structure).

    Only ``nnx.Param`` leaves are parameters; other state (BatchNorm
    statistics) is a constant and the module runs in inference mode (see the
    module docstring).
    """
    if isinstance(obj, Model) and params is None:
        return obj
    if isinstance(obj, nnx.Module):
        if params is not None:
            raise ConfigError("params= is for pure functions; an nnx.Module carries its own parameters")
        return NNXModel(obj, loss=loss, name=name, input_shape=input_shape, spec=spec)
    if not callable(obj):
        raise ConfigError(f"as_model needs an nnx.Module, a module factory or a function, got {type(obj).__name__}")
    if params is not None:
        return FunctionModel(obj, params, loss=loss, name=name, init_fn=init, input_shape=input_shape)
    try:
        module = obj(rngs=nnx.Rngs(0))
    except TypeError as e:
        raise ConfigError(
            f"as_model({getattr(obj, '__name__', obj)!r}): a callable without params= must be a module factory "
            f"accepting rngs= ({e}); for a pure apply function pass params=your_params"
        ) from None
    if not isinstance(module, nnx.Module):
        raise ConfigError(f"the factory returned {type(module).__name__}, not an nnx.Module")
    return NNXModel(module, loss=loss, name=name, factory=obj, input_shape=input_shape, spec=spec)
