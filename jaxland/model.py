"""Flax NNX MLPs and their flat-parameter functional view.

The network is an ordinary :class:`flax.nnx.Module`. The numerical code never
sees the module: :class:`MLPConfig` is a small, hashable description (so it can
be a static argument of ``jax.jit``), and all numerics work on one flat float
vector ``w`` of length :attr:`MLPConfig.num_params`, obtained once by
``nnx.split`` + ``ravel_pytree``::

    model = MLPConfig((784, 256, 256, 10))
    w = model.init(jax.random.key(0))          # (269322,)
    logits = model.apply(w, x)                  # pure function of arrays
    losses = per_sample_losses(model, w, x, y)  # (n,)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.flatten_util import ravel_pytree

from .errors import ConfigError

__all__ = ["MLP", "MLPConfig", "Layer", "ACTIVATIONS", "reference_mlp", "per_sample_losses", "mean_loss", "accuracy"]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nnx.relu,
    "tanh": jnp.tanh,
    "gelu": nnx.gelu,
    "sigmoid": nnx.sigmoid,
    "softplus": nnx.softplus,
    "silu": nnx.silu,
    "identity": lambda x: x,
}


class MLP(nnx.Module):
    """Fully connected network: ``Linear -> act -> ... -> Linear`` (no activation on the output)."""

    def __init__(self, sizes, *, activation: str = "relu", use_bias: bool = True, rngs: nnx.Rngs):
        self.activation = activation
        self.layers = nnx.List(
            [nnx.Linear(a, b, use_bias=use_bias, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )

    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


class Layer(NamedTuple):
    """Views into a flat parameter vector: ``kernel`` (in, out) and ``bias`` (out,) or None."""

    kernel: jax.Array
    bias: jax.Array | None


@functools.cache
def _structure(config: "MLPConfig"):
    abstract = nnx.eval_shape(lambda: config.module(nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)
    flat, unravel = ravel_pytree(zeros)
    return graphdef, unravel, int(flat.size)


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Hashable description of an MLP; the static half of the functional view.

    Attributes:
      sizes: layer widths, input first, classes last, e.g. ``(784, 256, 256, 10)``.
      activation: a key of :data:`ACTIVATIONS`.
      use_bias: the companion paper uses bias-free networks (``False``).
    """

    sizes: tuple[int, ...] = (784, 256, 256, 10)
    activation: str = "relu"
    use_bias: bool = True

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"MLP sizes must be >= 2 positive widths (input, ..., classes), got {self.sizes}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}")

    @classmethod
    def from_shape(cls, in_dim: int, hidden: int, depth: int, out_dim: int, **kw) -> "MLPConfig":
        """``depth`` hidden layers of width ``hidden`` (``Linear(in,h)+act``, then ``depth-1`` x ``Linear(h,h)+act``)."""
        return cls((in_dim,) + (hidden,) * depth + (out_dim,), **kw)

    # -- the NNX module
    def module(self, rngs: nnx.Rngs) -> MLP:
        return MLP(self.sizes, activation=self.activation, use_bias=self.use_bias, rngs=rngs)

    # -- the flat view
    @property
    def num_params(self) -> int:
        return _structure(self)[2]

    def init(self, key: jax.Array) -> jax.Array:
        """Flax's default initialisation, raveled to a flat float32 vector."""
        _, state = nnx.split(self.module(nnx.Rngs(params=key)))
        return ravel_pytree(state)[0]

    def unravel(self, w: jax.Array) -> nnx.State:
        return _structure(self)[1](w)

    def ravel(self, state) -> jax.Array:
        return ravel_pytree(state)[0]

    def to_module(self, w: jax.Array) -> MLP:
        """An NNX module holding the parameters ``w`` (for users who want the object)."""
        graphdef = _structure(self)[0]
        return nnx.merge(graphdef, self.unravel(w))

    def layers(self, w: jax.Array) -> list[Layer]:
        """Per-layer (kernel, bias) views of a flat vector (or of a direction in parameter space)."""
        state = self.unravel(w)
        out = []
        for i in range(len(self.sizes) - 1):
            p = state["layers"][i]
            out.append(Layer(p["kernel"][...], p["bias"][...] if self.use_bias else None))
        return out

    def bias_mask(self) -> jax.Array:
        """1.0 on bias entries of the flat vector, 0.0 elsewhere."""
        return self._mask(lambda name: name == "bias")

    def _mask(self, pred) -> jax.Array:
        state = self.unravel(jnp.zeros(self.num_params))
        masked = jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.full(leaf.shape, 1.0 if pred(_last_name(path)) else 0.0), state
        )
        return ravel_pytree(masked)[0]

    def apply(self, w: jax.Array, x: jax.Array) -> jax.Array:
        """Logits of the MLP with flat parameters ``w`` on inputs ``x`` (n, in)."""
        act = ACTIVATIONS[self.activation]
        layers = self.layers(w)
        h = x
        for i, layer in enumerate(layers):
            h = h @ layer.kernel
            if layer.bias is not None:
                h = h + layer.bias
            if i < len(layers) - 1:
                h = act(h)
        return h


def _last_name(path) -> str:
    names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    names = [n for n in names if n not in (None, "value")]
    return str(names[-1]) if names else ""


def reference_mlp() -> MLPConfig:
    """The paper's network: 784-256-256-10, ReLU, with biases (269,322 parameters)."""
    return MLPConfig((784, 256, 256, 10), "relu", True)


def per_sample_losses(model: MLPConfig, w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Cross-entropy ``l_i(w)`` of every sample, shape (n,)."""
    return optax.softmax_cross_entropy_with_integer_labels(model.apply(w, x), y)


def mean_loss(model: MLPConfig, w: jax.Array, x: jax.Array, y: jax.Array, k: jax.Array | int | None = None) -> jax.Array:
    """``L_k(w) = (1/k) sum_{i<k} l_i(w)``; the full mean when ``k`` is None.

    ``k`` may be a traced integer: the prefix is selected by a mask, so changing
    ``k`` never changes shapes (and never recompiles).
    """
    losses = per_sample_losses(model, w, x, y)
    if k is None:
        return jnp.mean(losses)
    mask = jnp.arange(losses.shape[0]) < k
    return jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.asarray(k, losses.dtype)


def accuracy(model: MLPConfig, w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(model.apply(w, x), axis=-1) == y)
