import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxland.models.architectures import ARCHITECTURES, LeNet5, ResNet, ViT, flops_per_sample
from jaxland.errors import ConfigError

# Small variants keep the file fast; defaults are covered by the shape and count tests.
SMALL = {
    "lenet5": ({}, {}),
    "resnet": (dict(width=4), dict(width=4)),
    "vit": (dict(dim=16, heads=2, mlp_dim=24), dict(patch_size=8, dim=16, heads=2, mlp_dim=24, pool="mean")),
}
SHAPES = ((28, 28, 1), (32, 32, 3))


@functools.cache
def _built(name, which, seed):
    # Abstract construction, then random values from numpy: eager or jitted initialisation would
    # compile every initializer shape (seconds on a loaded 2-core machine) for values the tests replace.
    shape = SHAPES[which]
    return randomize(nnx.eval_shape(lambda: ARCHITECTURES[name](shape, **SMALL[name][which], rngs=nnx.Rngs(0))), seed)


def small(name, which=0, seed=0):
    """A small random-weight module (random BatchNorm statistics too) and its input shape."""
    return nnx.clone(_built(name, which, seed)), SHAPES[which]


def num_params(module):
    return ravel_pytree(nnx.state(module, nnx.Param))[0].size


def images(shape, n=5, key=1):
    return np.random.default_rng(key).standard_normal((n, *shape)).astype(np.float32)


def randomize(module, seed):
    """Random parameters (scale 0.3) and, for BatchNorm, random means and variances in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    new = []
    for path, v in nnx.to_flat_state(nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat))):
        if path[-1] == "var":
            val = rng.uniform(0.5, 2.0, v.shape)
        else:
            val = 0.3 * rng.standard_normal(v.shape)
        new.append((path, v.replace(value=jnp.asarray(val, jnp.float32))))
    nnx.update(module, nnx.from_flat_state(new))
    return module


@nnx.jit
def logits(module, x):
    return module(x)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("which", [0, 1])
def test_output_shapes(name, which):
    module, shape = small(name, which)
    assert logits(module, images(shape)).shape == (5, 10)
    # The default sizes, abstractly (shapes only, nothing computed).
    kw = {"patch_size": 8} if (name == "vit" and which == 1) else {}
    big = nnx.eval_shape(lambda: ARCHITECTURES[name](shape, 7, **kw, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(big)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, jax.ShapeDtypeStruct((3, *shape), jnp.float32))
    assert out.shape == (3, 7)


def test_documented_parameter_counts():
    def count(cls, *a, **kw):
        return sum(v.size for v in jax.tree.leaves(nnx.state(nnx.eval_shape(lambda: cls(*a, **kw, rngs=nnx.Rngs(0))), nnx.Param)))

    assert count(LeNet5) == 61_706
    assert count(LeNet5, (32, 32, 3)) == 62_006
    assert count(ResNet) == 19_810
    assert count(ResNet, (32, 32, 3)) == 19_954
    assert count(ResNet, width=16) == 77_754
    assert count(ResNet, depth=20) == 68_642
    assert count(ViT) == 72_074
    assert count(ViT, pool="mean") == 71_946
    assert count(ViT, (32, 32, 3), patch_size=8) == 81_226
    # Only the BatchNorm statistics are state besides the parameters (no RNG streams, no dropout).
    for name in ARCHITECTURES:
        assert jax.tree.leaves(nnx.split(small(name)[0], nnx.Param, nnx.BatchStat, ...)[3]) == []
    assert jax.tree.leaves(nnx.state(small("vit")[0], nnx.BatchStat)) == []


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (LeNet5, dict(input_shape=(28, 28)), "input_shape must be \\(H, W, C\\)"),
        (LeNet5, dict(input_shape=(784,)), "input_shape"),
        (LeNet5, dict(input_shape=(11, 11, 1)), "too small for LeNet5.*H, W >= 12"),
        (LeNet5, dict(input_shape=(12, 12, 1), conv1_padding="VALID"), "H, W >= 16"),
        (LeNet5, dict(num_classes=0), "num_classes"),
        (LeNet5, dict(conv1_padding="FULL"), "conv1_padding"),
        (ResNet, dict(depth=10), "depth must be 6n \\+ 2"),
        (ResNet, dict(depth=2), "depth must be an int >= 8"),
        (ResNet, dict(width=0), "width"),
        (ViT, dict(input_shape=(32, 32, 3)), "not divisible by patch_size=7"),
        (ViT, dict(dim=30, heads=4), "dim=30 is not divisible by heads=4"),
        (ViT, dict(pool="max"), "pool must be"),
        (ViT, dict(depth=0), "depth"),
    ],
)
def test_argument_errors(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_wrong_image_shape_names_expected_shape(name):
    module, _ = small(name)
    with pytest.raises(ConfigError, match=r"expects images of shape \(n, 28, 28, 1\)"):
        module(jnp.zeros((2, 784)))


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_pure_function_of_params_and_stats(name):
    module, shape = small(name)
    x = images(shape, 6)
    before = jax.tree.map(jnp.copy, nnx.state(module))
    out = logits(module, x)
    # A call changes no state (BatchNorm statistics included), and a second call gives the same logits.
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(module))
    np.testing.assert_array_equal(logits(module, x), out)
    jax.tree.map(np.testing.assert_array_equal, before, nnx.state(module))
    # Each sample's logits ignore the rest of the batch (BatchNorm in inference mode).
    np.testing.assert_allclose(logits(module, x[:2]), out[:2], rtol=1e-5, atol=1e-5)
    # The functional view the model protocol uses: logits = f(w, x), jitted, w flat.
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    w, unravel = ravel_pytree(params)
    f = jax.jit(lambda w, x: nnx.merge(graphdef, unravel(w), rest)(x))
    np.testing.assert_allclose(f(w, x), out, rtol=1e-5, atol=1e-5)
    assert not np.allclose(f(w * 0.5, x), out)


def test_resnet_batch_stats_set_and_calibrate():
    module, shape = small("resnet")
    randomize(module, 4)
    x = images(shape, 32)
    stats = module.batch_stats()
    shifted = jax.tree.map(lambda a: a + 0.5, stats)
    out = logits(module, x)
    module.set_batch_stats(shifted)
    assert not np.allclose(logits(module, x), out)
    jax.tree.map(np.testing.assert_array_equal, module.batch_stats(), shifted)
    with pytest.raises(ConfigError, match="structure and shapes"):
        module.set_batch_stats(nnx.eval_shape(lambda: ResNet(shape, width=8, rngs=nnx.Rngs(0))).batch_stats())
    with pytest.raises(ConfigError, match="negative BatchNorm variance"):
        module.set_batch_stats(jax.tree.map(lambda a: a - 10.0, stats))
    # Calibrated statistics reproduce the train-mode (batch-statistics) forward pass on the same batch.
    module.calibrate_batch_stats(x)
    calibrated = logits(module, x)
    bns = [m for _, m in nnx.iter_modules(module) if isinstance(m, nnx.BatchNorm)]
    assert all(bn.use_running_average for bn in bns)
    for bn in bns:
        bn.use_running_average = False
    np.testing.assert_allclose(calibrated, logits(module, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_flops_match_xla_cost_analysis(name):
    # Default sizes, compiled from shapes only; XLA also counts the elementwise work we leave out.
    graphdef, state = nnx.split(nnx.eval_shape(lambda: ARCHITECTURES[name](rngs=nnx.Rngs(0))))
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    cost = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    ours = flops_per_sample(name)
    assert abs(ours - cost["flops"]) < 0.08 * cost["flops"], (ours, cost["flops"])


def test_flops_argument_errors():
    with pytest.raises(ConfigError, match="unknown architecture 'mlp'"):
        flops_per_sample("mlp")
    with pytest.raises(ConfigError, match="depth must be 6n"):
        flops_per_sample("resnet", depth=9)


# --------------------------------------------------------------------------- torch twins


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("which", [0, 1])
def test_torch_twin_matches(name, which):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_models import torch_twin

    module, shape = small(name, which)
    randomize(module, 5)
    x = np.asarray(images(shape, 6, key=6))
    out = np.asarray(logits(module, x))
    with torch.no_grad():
        twin_out = torch_twin(module)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(twin_out, out, rtol=1e-5, atol=1e-5 * np.abs(out).max())


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_flat_vector_maps(name):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_models import nnx_flat_to_torch, torch_to_nnx_flat, torch_twin

    module, shape = small(name)
    randomize(module, 7)
    n = num_params(module)
    w2 = (0.2 * np.random.default_rng(8).standard_normal(n)).astype(np.float32)
    twin = torch_twin(module, w2)
    named = dict(twin.named_parameters())
    mapped = nnx_flat_to_torch(module, w2)
    assert set(mapped) == set(named) and all(mapped[k].shape == tuple(named[k].shape) for k in named)
    np.testing.assert_array_equal(torch_to_nnx_flat(module, twin.named_parameters()), w2)
    # The twin built on w2 computes the NNX module with parameters w2.
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    x = np.asarray(images(shape, 4, key=9))
    unravel = ravel_pytree(params)[1]
    f = jax.jit(lambda w, x: nnx.merge(graphdef, unravel(w), rest)(x))
    out = np.asarray(f(jnp.asarray(w2), x))
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.tensor(x)).numpy(), out, rtol=1e-5, atol=1e-5 * np.abs(out).max())
