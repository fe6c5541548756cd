"""Fully connected networks: the papers' model, and its fast Monte Carlo kernel.

:class:`MLPConfig` implements the model protocol (:mod:`jaxland.models.base`) for
``Linear -> act -> ... -> Linear`` networks. It is a frozen dataclass, so it is
hashable by value: the same sizes give the same compiled programs and the same
weight-cache entry::

    model = MLPConfig((784, 256, 256, 10))
    w = model.init(jax.random.key(0))          # (269322,)
    logits = model.apply(w, x)                  # pure function of arrays
    losses = model.per_sample_losses(w, x, y)   # (n,)

Besides the generic protocol it provides two specialisations that every
estimator picks up automatically: the first-layer precompute of the Monte
Carlo kernel (:meth:`MLPConfig.subspace_kernel`) and low-precision matmuls with
float32 accumulation (:meth:`MLPConfig.per_sample_losses_lowp`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.flatten_util import ravel_pytree

from ..errors import ConfigError
from .base import Model, _loss_fn, _loss_name

__all__ = ["MLP", "MLPConfig", "Layer", "ACTIVATIONS", "reference_mlp"]

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
    found = {}

    def flat_zeros():  # traced abstractly: the unravel function needs only shapes, so nothing of size D is allocated
        flat, found["unravel"] = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state))
        return flat

    size = jax.eval_shape(flat_zeros).size
    return graphdef, found["unravel"], int(size)


def _mm(a, b, dt, spec=None):
    """``a @ b`` (or an einsum) with inputs cast to ``dt`` and accumulation in the inputs' float type."""
    if dt is None:
        return a @ b if spec is None else jnp.einsum(spec, a, b)
    out = jnp.result_type(a, b)
    a, b = a.astype(dt), b.astype(dt)
    if spec is None:
        return jnp.matmul(a, b, preferred_element_type=out)
    return jnp.einsum(spec, a, b, preferred_element_type=out)


@dataclasses.dataclass(frozen=True)
class MLPConfig(Model):
    """Hashable description of an MLP; the static half of the functional view.

    Attributes:
      sizes: layer widths, input first, outputs last, e.g. ``(784, 256, 256, 10)``.
      activation: a key of :data:`ACTIVATIONS`.
      use_bias: the companion paper uses bias-free networks (``False``).
      loss: ``"cross_entropy"`` (default), ``"mse"`` or a callable (see :mod:`jaxland.models.base`).
    """

    sizes: tuple[int, ...] = (784, 256, 256, 10)
    activation: str = "relu"
    use_bias: bool = True
    loss: Any = "cross_entropy"

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"MLP sizes must be >= 2 positive widths (input, ..., classes), got {self.sizes}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        _loss_fn(self.loss)

    @classmethod
    def from_shape(cls, in_dim: int, hidden: int, depth: int, out_dim: int, **kw) -> "MLPConfig":
        """``depth`` hidden layers of width ``hidden`` (``Linear(in,h)+act``, then ``depth-1`` x ``Linear(h,h)+act``)."""
        return cls((in_dim,) + (hidden,) * depth + (out_dim,), **kw)

    # -- the protocol
    @property
    def name(self) -> str:
        return f"MLP {'-'.join(map(str, self.sizes))}" + ("" if self.use_bias else " (no bias)")

    @property
    def spec(self) -> dict:
        return {"architecture": "mlp", "sizes": list(self.sizes), "activation": self.activation,
                "use_bias": self.use_bias, "loss": _loss_name(self.loss)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.sizes[0],)

    def module(self, rngs: nnx.Rngs) -> MLP:
        return MLP(self.sizes, activation=self.activation, use_bias=self.use_bias, rngs=rngs)

    @property
    def num_params(self) -> int:
        return _structure(self)[2]

    @property
    def initial_params(self):
        return None

    def init(self, key: jax.Array) -> jax.Array:
        """Flax's default initialisation, raveled to a flat float32 vector."""
        _, state = nnx.split(self.module(nnx.Rngs(params=key)))
        return ravel_pytree(state)[0]

    def unravel(self, w: jax.Array) -> nnx.State:
        return _structure(self)[1](w)

    def to_module(self, w: jax.Array) -> MLP:
        """An NNX module holding the parameters ``w`` (for users who want the object)."""
        return nnx.merge(_structure(self)[0], self.unravel(w))

    def layers(self, w: jax.Array) -> list[Layer]:
        """Per-layer (kernel, bias) views of a flat vector (or of a direction in parameter space)."""
        state = self.unravel(w)
        out = []
        for i in range(len(self.sizes) - 1):
            p = state["layers"][i]
            out.append(Layer(p["kernel"][...], p["bias"][...] if self.use_bias else None))
        return out

    def _forward(self, w, x, dt=None):
        act = ACTIVATIONS[self.activation]
        layers = self.layers(w)
        h = x
        for i, layer in enumerate(layers):
            h = _mm(h, layer.kernel, dt)
            if layer.bias is not None:
                h = h + layer.bias
            if i < len(layers) - 1:
                h = act(h)
        return h

    def apply(self, w: jax.Array, x: jax.Array) -> jax.Array:
        """Outputs of the MLP with flat parameters ``w`` on inputs ``x`` (n, in)."""
        return self._forward(w, x)

    def per_sample_losses_lowp(self, w, x, y, dtype):
        """Matmul inputs in ``dtype``, accumulation and everything else in ``w``'s float type."""
        return _loss_fn(self.loss)(self._forward(w, x, dtype), y)

    def has_subspace_kernel(self, d: int) -> bool:
        return d < self.sizes[0]

    def subspace_kernel(self, subspace, thetas, *, draw_chunk: int, matmul_dtype=None):
        """Every draw's per-sample losses on a block of samples, with the first layer precomputed.

        The first layer sees fixed inputs, so ``x @ W1(theta) = x @ W1* + sum_j
        theta_j (x @ P1_j)``: the d+1 products are formed once per block of
        samples and each draw pays d instead of ``in_dim`` multiply-adds per
        hidden unit there. The deeper layers use ``W_l(theta) = W_l* + sum_j
        theta_j P_l,j`` formed per draw (d / block of the layer's cost). Used
        only when ``d < in_dim`` (otherwise it saves nothing): returns None then.
        """
        if not self.has_subspace_kernel(subspace.directions.shape[0]):
            return None
        act, loss, dt = ACTIVATIONS[self.activation], _loss_fn(self.loss), matmul_dtype
        lc = self.layers(subspace.center)
        lp = jax.vmap(self.layers)(subspace.directions)  # kernels (d, in, out), biases (d, out)

        def block(args):
            xs, ys = args
            h0 = _mm(xs, lc[0].kernel, dt)
            hp = _mm(xs, lp[0].kernel, dt, "bi,dio->dbo")
            if lc[0].bias is not None:
                h0 = h0 + lc[0].bias

            def draw(th):
                h = h0 + jnp.einsum("d,dbo->bo", th, hp)
                if lc[0].bias is not None:
                    h = h + th @ lp[0].bias
                for c, q in zip(lc[1:], lp[1:]):
                    h = _mm(act(h), c.kernel + jnp.einsum("d,dio->io", th, q.kernel), dt)
                    if c.bias is not None:
                        h = h + c.bias + th @ q.bias
                return loss(h, ys)

            return jax.lax.map(draw, thetas, batch_size=draw_chunk)

        return block


def reference_mlp() -> MLPConfig:
    """The paper's network: 784-256-256-10, ReLU, with biases (269,322 parameters)."""
    return MLPConfig((784, 256, 256, 10), "relu", True)
