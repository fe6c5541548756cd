"""The model protocol: every estimate for any NNX module or pure function, against exact references."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxland as jl
from jaxland.curvature.operators import _matvec
from jaxland.errors import ConfigError
from jaxland.landscape.kernels import delta_stream


class TinyCNN(nnx.Module):
    """conv 3x3 (2 channels) -> BatchNorm -> relu -> mean pool -> dense: a CNN small enough for a dense Hessian."""

    def __init__(self, *, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(2, rngs=rngs)
        self.head = nnx.Linear(2, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.bn(self.conv(x))).mean((1, 2)))


def _pure_params(key):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (5, 4)) * 0.5, "b1": jnp.zeros(4), "w2": jax.random.normal(k2, (4, 3)) * 0.5}


def _pure_apply(p, x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"] + p["b1"]) @ p["w2"]


def _tiny_models():
    """(name, model, input shape per sample): a CNN with BatchNorm, a residual net, a ViT, a pure function."""
    cnn = jl.as_model(TinyCNN, name="tiny-cnn", input_shape=(5, 5, 1))
    resnet = jl.build_model("resnet", (4, 4, 1), 3, depth=8, width=1)
    vit = jl.build_model("vit", (4, 4, 1), 3, patch_size=2, dim=4, depth=1, heads=2, mlp_dim=4)
    pure = jl.as_model(_pure_apply, params=_pure_params(jax.random.key(9)), init=_pure_params, name="pure")
    return [("cnn", cnn, (5, 5, 1)), ("resnet", resnet, (4, 4, 1)), ("vit", vit, (4, 4, 1)), ("pure", pure, (5,))]


MODELS = _tiny_models()


def _problem(model, shape, n=13, seed=0):
    w = model.init(jax.random.key(seed)).astype(jnp.float64)
    x = jax.random.normal(jax.random.key(seed + 1), (n, *shape), jnp.float64)
    y = jnp.arange(n) % 3
    return w, x, y


@pytest.mark.slow
@pytest.mark.parametrize("name,model,shape", MODELS, ids=[m[0] for m in MODELS])
def test_hvp_and_eigenpairs_match_dense_hessian(x64, name, model, shape):
    w, x, y = _problem(model, shape)
    assert model.num_params < 400, model.num_params  # small enough for a dense reference
    H = jax.jit(jax.hessian(lambda w_, x_, y_: jl.mean_loss(model, w_, x_, y_, 9)))(w, x, y)  # jitted: op-by-op dispatch of jacfwd takes 20 s here
    v = jax.random.normal(jax.random.key(5), w.shape, jnp.float64)
    np.testing.assert_allclose(jl.hvp(model, w, x, y, v, k=9), H @ v, rtol=1e-8, atol=1e-12)
    evals, evecs = np.linalg.eigh(np.asarray(H))
    res = jl.hessian_eigenpairs(model, w, x, y, 3, k=9, key=jax.random.key(1), tol=1e-8, max_matvecs=model.num_params)
    np.testing.assert_allclose(res.eigenvalues, evals[::-1][:3], rtol=1e-6, atol=1e-10)
    overlap = np.abs(np.sum(np.asarray(res.eigenvectors) * evecs[:, ::-1][:, :3].T, axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name,model,shape", MODELS, ids=[m[0] for m in MODELS])
def test_delta_monte_carlo_equals_a_plain_loop_over_draws(x64, name, model, shape):
    w, x, y = _problem(model, shape, n=12)
    dirs = jax.random.normal(jax.random.key(3), (2, model.num_params), jnp.float64) * 0.1
    sub = jl.Subspace(w, dirs)
    mc = jl.delta_monte_carlo(model, sub, x, y, sigma=0.7, num_draws=9, key=jax.random.key(4), samples_per_k=3, sample_block=6)
    thetas = jl.draw_thetas(jax.random.key(4), 9, 2, 0.7, jnp.float64)
    q = []
    for th in thetas:  # the definition, one draw at a time
        losses = np.asarray(model.per_sample_losses(w + th @ dirs, x, y)).reshape(4, 3).mean(1)
        big_l = np.cumsum(losses) / np.arange(1, 5)
        q.append((big_l[1:] - big_l[:-1]) ** 2)
    q = np.asarray(q)
    np.testing.assert_allclose(mc.delta, q.mean(0), rtol=1e-9)
    np.testing.assert_allclose(mc.stderr, q.std(0, ddof=1) / 3.0, rtol=1e-7)
    # generic, or the first layer once per direction where that saves arithmetic (jaxland.landscape.kernels.fast_kernel)
    assert mc.info.kernel in ("generic", "first_layer") and mc.unit == "batches"


def test_mlp_takes_its_specialised_kernel_and_agrees_with_the_generic_one(mlp):
    model, w, x, y, sub = mlp
    fast = jl.delta_monte_carlo(model, sub, x, y, sigma=0.5, num_draws=7, key=jax.random.key(0))
    plain = jl.delta_monte_carlo(model, sub, x, y, sigma=0.5, num_draws=7, key=jax.random.key(0), fast_kernel=False)
    assert fast.info.kernel == "specialised" and plain.info.kernel == "generic"
    np.testing.assert_allclose(fast.delta, plain.delta, rtol=1e-9)


def test_callable_loss_and_mse_match_hand_written(x64):
    def hinge(out, y):
        margin = out - jnp.take_along_axis(out, y[:, None], 1)
        return jnp.sum(jnp.maximum(0.0, 1.0 + margin), 1) - 1.0

    w, x, y = _problem(MODELS[0][1], (5, 5, 1))
    custom = jl.as_model(TinyCNN, loss=hinge)
    out = custom.apply(w, x)
    ref = np.array([sum(max(0.0, 1.0 + o[j] - o[c]) for j in range(3)) - 1.0 for o, c in zip(np.asarray(out), np.asarray(y))])
    np.testing.assert_allclose(custom.per_sample_losses(w, x, y), ref, rtol=1e-12)
    reg = jl.as_model(TinyCNN, loss="mse")
    targets = jax.random.normal(jax.random.key(7), (13, 3), jnp.float64)
    np.testing.assert_allclose(reg.per_sample_losses(w, x, targets), np.mean((np.asarray(out) - np.asarray(targets)) ** 2, 1), rtol=1e-12)
    mlp_reg = jl.MLPConfig((4, 3, 2), loss="mse")
    wm = mlp_reg.init(jax.random.key(0))
    xm, tm = jnp.ones((5, 4)), jnp.zeros((5, 2))
    np.testing.assert_allclose(mlp_reg.per_sample_losses(wm, xm, tm), jnp.mean(mlp_reg.apply(wm, xm) ** 2, 1), rtol=1e-6)
    sub = jl.Subspace(wm, jnp.eye(mlp_reg.num_params)[:2])
    assert jl.delta_monte_carlo(mlp_reg, sub, xm, tm, sigma=1.0, num_draws=4, key=jax.random.key(1)).delta.shape == (4,)


def test_filter_normalisation_per_output_channel_of_a_conv_kernel():
    model = jl.as_model(TinyCNN)
    w = model.init(jax.random.key(0))
    dirs = jl.random_directions(model, w, 3, key=jax.random.key(1))
    sw = model.unravel(w)
    for row in dirs:
        sd = model.unravel(row)
        kd, kw = np.asarray(sd["conv"]["kernel"][...]), np.asarray(sw["conv"]["kernel"][...])
        assert kd.shape == (3, 3, 1, 2)
        np.testing.assert_allclose(np.linalg.norm(kd.reshape(-1, 2), axis=0), np.linalg.norm(kw.reshape(-1, 2), axis=0), rtol=1e-5)
        for leaf in (sd["conv"]["bias"], sd["bn"]["scale"], sd["bn"]["bias"], sd["head"]["bias"]):
            np.testing.assert_array_equal(np.asarray(leaf[...]), 0.0)  # biases and norm scales are not perturbed


def test_new_k_sigma_or_key_does_not_recompile():
    model = jl.build_model("lenet5", (28, 28, 1), 10)
    w = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 28, 28, 1))
    y = jnp.arange(8) % 10
    jl.hvp(model, w, x, y, w, k=3)
    n = _matvec._cache_size()
    jl.hvp(model, w, x, y, w * 2, k=6)
    assert _matvec._cache_size() == n
    sub = jl.Subspace(w, jl.random_directions(model, w, 2, key=jax.random.key(2)))
    jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=4, key=jax.random.key(3))
    n = delta_stream._cache_size()
    jl.delta_monte_carlo(model, sub, x, y, sigma=0.3, num_draws=4, key=jax.random.key(4))
    assert delta_stream._cache_size() == n
    assert jl.build_model("lenet5", (28, 28, 1), 10) == model  # a rebuilt model reuses the compiled programs


@pytest.mark.slow
def test_inference_mode_state_is_a_constant_and_losses_are_per_sample():
    module = jl.ResNet((4, 4, 1), 3, width=1, rngs=nnx.Rngs(0))
    module.stem_bn.mean[...] = jnp.full((1,), 0.5)
    model = jl.as_model(module)
    w = model.initial_params
    x = jax.random.normal(jax.random.key(1), (6, 4, 4, 1))
    y = jnp.arange(6) % 3
    np.testing.assert_allclose(model.per_sample_losses(w, x[:2], y[:2]), model.per_sample_losses(w, x, y)[:2], rtol=1e-6)
    np.testing.assert_allclose(model.apply(w, x), module(x), rtol=1e-6)  # the stored statistics are used
    assert jl.as_model(jl.ResNet((4, 4, 1), 3, width=1, rngs=nnx.Rngs(0))) != model
    np.testing.assert_allclose(model.to_module(w)(x), module(x), rtol=1e-6)
    with pytest.raises(ConfigError, match="factory"):
        model.init(jax.random.key(0))


@pytest.mark.slow
def test_training_and_the_weight_cache_work_for_any_model(tmp_path):
    model = jl.build_model("vit", (4, 4, 1), 3, patch_size=2, dim=4, depth=1, heads=2, mlp_dim=4)
    x = jax.random.normal(jax.random.key(1), (64, 4, 4, 1))
    y = (x.mean((1, 2, 3)) > 0).astype(jnp.int32) + (x[:, 0, 0, 0] > 1)
    a = jl.cached_train(model, x, y, key=jax.random.key(0), data_tag="toy", epochs=3, batch_size=16, cache_dir=tmp_path, progress=False)
    b = jl.cached_train(model, x, y, key=jax.random.key(0), data_tag="toy", epochs=3, batch_size=16, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(a.params, b.params)
    assert len(list(tmp_path.glob("w_*.npz"))) == 1
    other = jl.build_model("vit", (4, 4, 1), 3, patch_size=2, dim=4, depth=1, heads=1, mlp_dim=4)
    jl.cached_train(other, x, y, key=jax.random.key(0), data_tag="toy", epochs=1, batch_size=16, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("w_*.npz"))) == 2  # another hyper-parameter, another entry
    assert a.loss_history[-1].mean() < a.loss_history[0].mean()


def test_bf16_forward_for_a_generic_model_is_close_to_float32():
    model = jl.build_model("lenet5", (28, 28, 1), 10)
    w = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (64, 28, 28, 1))
    y = jnp.arange(64) % 10
    sub = jl.Subspace(w, jl.random_directions(model, w, 2, key=jax.random.key(2)))
    f32 = jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=16, key=jax.random.key(3), samples_per_k=8)
    b16 = jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=16, key=jax.random.key(3), samples_per_k=8, matmul_dtype="bf16")
    assert np.all(np.abs(b16.delta - f32.delta) < 0.5 * f32.stderr + 0.05 * f32.delta)


class NoParams(nnx.Module):
    def __init__(self):
        self.scale = 2.0

    def __call__(self, x):
        return x * self.scale


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: jl.as_model(NoParams()), "no nnx.Param"),
        (lambda: jl.as_model(TinyCNN, loss="hinge"), "unknown loss"),
        (lambda: jl.as_model(42), "nnx.Module"),
        (lambda: jl.as_model(lambda p, x: x), "factory"),
        (lambda: jl.build_model("transformer"), "unknown architecture"),
    ],
)
def test_bad_models_are_refused(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_data_names_the_problem():
    model = jl.as_model(TinyCNN, input_shape=(5, 5, 1))
    w = model.init(jax.random.key(0))
    x = jnp.ones((4, 5, 5, 1))
    y = jnp.array([0, 1, 2, 0])
    with pytest.raises(ConfigError, match=r"expects \(n, 5, 5, 1\)"):
        jl.hvp(model, w, jnp.ones((4, 25)), y, w)
    with pytest.raises(ConfigError, match=r"labels y must lie in \[0, 3\)"):
        jl.hvp(model, w, x, jnp.array([0, 1, 2, 3]), w)
    with pytest.raises(ConfigError, match="one value per sample"):
        jl.hvp(jl.as_model(TinyCNN, loss=lambda out, y: jnp.mean(out)), w, x, y, w)
    with pytest.raises(ConfigError, match="non-finite"):
        jl.hvp(model, w, x.at[1, 2, 2, 0].set(jnp.nan), y, w)
    with pytest.raises(ConfigError, match=r"k=0 must be in \[1, 4\]"):
        jl.hvp(model, w, x, y, w, k=0)
    with pytest.raises(ConfigError, match=r"k=5 must be in \[1, 4\]"):
        jl.hvp(model, w, x, y, w, k=5)
    with pytest.raises(ConfigError, match="integer class labels"):
        jl.hvp(model, w, x, y.astype(jnp.float32), w)
