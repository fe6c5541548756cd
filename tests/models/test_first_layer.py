"""The first layer found in the jaxpr of the per-sample losses (:mod:`jaxland.models.first_layer`).

``rest(first(w))`` must be the per-sample losses bit for bit (the same
operations in the same order) and ``first`` linear in ``w``; a weight applied
to the input before the first Dense, or no layer on the data, gives None.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxland as jl
from jaxland.models.first_layer import split_first_layer


class Scaled(nnx.Module):
    """The input scaled elementwise by a weight before the first Dense: no linear first layer to split off."""

    def __init__(self, *, rngs):
        self.scale = nnx.Param(jnp.ones((4,)))
        self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.dense(x * self.scale[...])


class Tokens(nnx.Module):
    """An embedding of integer tokens, mean over positions, dense head."""

    def __init__(self, *, rngs):
        self.embed = nnx.Embed(11, 4, rngs=rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.embed(x)).mean(1))


def test_first_layer_splits_off_exactly_and_linearly(first_layer_net):
    model, w, x, y = first_layer_net()
    split = model.first_layer(w, x, y)
    assert split is not None and split.primitive == "conv_general_dilated"
    # op by op: the same operations in the same order, so the same bits
    np.testing.assert_array_equal(split.rest(w, x, y, split.first(w, x, y)), model.per_sample_losses(w, x, y))
    p = jax.random.normal(jax.random.key(2), w.shape, jnp.float64)
    np.testing.assert_allclose(split.first(w + 3 * p, x, y), split.first(w, x, y) + 3 * split.first(p, x, y),
                               rtol=1e-12, atol=1e-12)


def test_first_layer_of_an_embedding_and_none_for_a_weight_on_the_input(x64):
    model = jl.as_model(Tokens)
    w = model.init(jax.random.key(0)).astype(jnp.float64)
    x, y = jax.random.randint(jax.random.key(1), (5, 6), 0, 11), jnp.arange(5) % 3
    split = model.first_layer(w, x, y)
    assert split.primitive == "gather" and split.shape == (5, 6, 4)
    np.testing.assert_array_equal(split.rest(w, x, y, split.first(w, x, y)), model.per_sample_losses(w, x, y))
    scaled = jl.as_model(Scaled)
    assert scaled.first_layer(scaled.init(jax.random.key(0)), jnp.ones((2, 4)), jnp.zeros(2, jnp.int32)) is None
    assert split_first_layer(lambda w_, x_, y_: jnp.sum(w_) + 0 * x_[:, 0], jnp.ones(3), jnp.ones((2, 1)), y[:2]) is None
