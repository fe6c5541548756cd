"""The first-layer Monte Carlo kernel and the per-model block defaults (:mod:`jaxland.landscape.kernels`).

The reference is the generic kernel (a plain forward pass per draw) and the
per-sample losses evaluated directly; float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.errors import ConfigError
from jaxland.landscape import kernels


def test_first_layer_kernel_gives_the_generic_kernels_delta_curve(first_layer_net):
    model, w, x, y = first_layer_net(16)
    sub = jl.Subspace(w, jax.random.normal(jax.random.key(3), (3, model.num_params), jnp.float64) * 0.05)
    kw = dict(sigma=1.0, num_draws=6, key=jax.random.key(4), samples_per_k=4, sample_block=8)
    fast = jl.delta_monte_carlo(model, sub, x, y, fast_kernel="first_layer", **kw)
    plain = jl.delta_monte_carlo(model, sub, x, y, fast_kernel=False, **kw)
    assert fast.info.kernel == "first_layer" and plain.info.kernel == "generic"
    np.testing.assert_allclose(fast.delta, plain.delta, rtol=1e-10)
    np.testing.assert_allclose(fast.stderr, plain.stderr, rtol=1e-9)
    th = jl.draw_thetas(jax.random.key(5), 4, 3, 1.0, jnp.float64)
    direct = jax.vmap(lambda t: model.per_sample_losses(w + t @ sub.directions, x, y))(th)
    got = jl.per_sample_loss_matrix(model, sub, th, x, y, sample_block=8, fast_kernel="first_layer")
    np.testing.assert_allclose(got, direct, rtol=1e-10)


def test_first_layer_kernel_only_where_it_saves_arithmetic(x64, cnn):
    model, w, x, y, _ = cnn  # its first layer: a 3x3 convolution of one channel, 9 multiply-adds per output
    for d, kernel in ((8, "first_layer"), (9, "generic")):
        sub = jl.Subspace(w, jax.random.normal(jax.random.key(d), (d, model.num_params), jnp.float64) * 0.05)
        kw = dict(sigma=1.0, num_draws=4, key=jax.random.key(4), samples_per_k=3)
        assert jl.delta_monte_carlo(model, sub, x, y, **kw).info.kernel == kernel
    forced = jl.delta_monte_carlo(model, sub, x, y, fast_kernel="first_layer", **kw)
    plain = jl.delta_monte_carlo(model, sub, x, y, fast_kernel=False, **kw)
    assert forced.info.kernel == "first_layer"
    np.testing.assert_allclose(forced.delta, plain.delta, rtol=1e-10)
    with pytest.raises(ConfigError, match="fast_kernel"):
        jl.delta_monte_carlo(model, sub, x, y, fast_kernel="fast", **kw)
    split = model.first_layer(w, x, y)
    assert split.fan_in == 9 and split.share == pytest.approx(25 * 2 * 9 / (25 * 2 * 9 + 2 * 3))  # conv, then the head


def test_first_layer_rule_on_the_shipped_architectures(x64):
    """LeNet-5's 5x5 first convolution saves arithmetic at d = 10; a ViT's patch embedding and 3x3 stems do not."""
    want = {"lenet5": "first_layer", "vit": None, "resnet": None}
    for name, kernel in want.items():
        model = jl.build_model(name, (28, 28, 1), 10)
        w = jax.ShapeDtypeStruct((model.num_params,), jnp.float32)
        sub = jl.Subspace(w, jax.ShapeDtypeStruct((10, model.num_params), jnp.float32))
        x, y = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32)
        assert kernels.fast_kernel(model, sub, x, y) == kernel, name


def test_default_blocks_map_the_draws_of_a_conv_net_one_at_a_time(x64, cnn, mlp):
    model, w, x, y, _ = cnn
    sub = jl.Subspace(w, jnp.ones((2, model.num_params), jnp.float64))
    expect = (kernels.CONV_SAMPLE_BLOCK, kernels.CONV_DRAW_CHUNK) if jax.default_backend() == "cpu" else (512, 16)
    assert kernels.default_blocks(model, "first_layer", sub, x, y) == expect
    model, w, x, y, sub = mlp
    assert kernels.default_blocks(model, "model", sub, x, y) == (kernels.DEFAULT_SAMPLE_BLOCK, kernels.DEFAULT_DRAW_CHUNK)
