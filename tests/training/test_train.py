import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl


def test_reference_mlp_parameter_count():
    assert jl.reference_mlp().num_params == 269_322
    assert jl.reference_mlp().init(jax.random.key(0)).shape == (269_322,)
    assert jl.MLPConfig.from_shape(784, 16, 5, 10, use_bias=False).num_params == 784 * 16 + 4 * 16 * 16 + 16 * 10


def test_flat_apply_matches_nnx_module():
    model = jl.MLPConfig((12, 7, 5, 3), activation="tanh")
    w = model.init(jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (9, 12))
    np.testing.assert_allclose(model.apply(w, x), model.to_module(w)(x), rtol=1e-6, atol=1e-6)
    layers = model.layers(w)
    assert [l.kernel.shape for l in layers] == [(12, 7), (7, 5), (5, 3)]
    mask = model.bias_mask()
    assert float(mask.sum()) == 7 + 5 + 3 and mask.shape == (model.num_params,)


def test_bad_model_config():
    with pytest.raises(jl.ConfigError, match="unknown activation"):
        jl.MLPConfig((4, 2), activation="swish2")
    with pytest.raises(jl.ConfigError, match="sizes"):
        jl.MLPConfig((4,))


def test_mean_loss_prefix():
    model = jl.MLPConfig((6, 4, 3))
    w = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (10, 6))
    y = jnp.arange(10) % 3
    l = jl.per_sample_losses(model, w, x, y)
    np.testing.assert_allclose(jl.mean_loss(model, w, x, y, 4), l[:4].mean(), rtol=1e-6)
    np.testing.assert_allclose(jl.mean_loss(model, w, x, y), l.mean(), rtol=1e-6)


def test_training_is_deterministic_and_learns():
    ds = jl.load_dataset("mnist_10k", limit=512)
    model = jl.MLPConfig((784, 32, 10))
    r1 = jl.train(model, ds.x, ds.y, key=jax.random.key(0), epochs=3, batch_size=64, progress=False)
    r2 = jl.train(model, ds.x, ds.y, key=jax.random.key(0), epochs=3, batch_size=64, progress=False)
    r3 = jl.train(model, ds.x, ds.y, key=jax.random.key(1), epochs=3, batch_size=64, progress=False)
    np.testing.assert_array_equal(r1.params, r2.params)
    assert np.linalg.norm(r1.params - r3.params) > 0.1 * np.linalg.norm(r1.params)  # another key, another network
    assert r1.loss_history.shape == (3, 8)
    assert r1.loss_history[-1].mean() < 0.5 * r1.loss_history[0].mean()


def test_reference_mlp_reaches_97_percent_on_embedded_mnist():
    """The paper's setup: 784-256-256-10, Adam 1e-3, batch 64, 10 epochs, 9,984 images."""
    ds = jl.load_dataset("mnist_10k", limit=9984)
    res = jl.cached_train(jl.reference_mlp(), ds.x, ds.y, key=jax.random.key(0), data_tag="mnist_10k/9984", progress=False)
    assert res.train_accuracy >= 0.97, res.train_accuracy
    assert res.loss_history.shape == (10, 156)


def test_nan_input_is_refused_before_training():
    x = np.ones((128, 4), np.float32)
    x[5, 0] = np.nan
    with pytest.raises(jl.ConfigError, match="1 non-finite value"):
        jl.train(jl.MLPConfig((4, 3)), x, np.zeros(128, np.int32), key=jax.random.key(0), epochs=1, progress=False)


def test_nan_loss_is_a_clear_error():
    """A loss that turns non-finite during training names the epoch (finite inputs, so validation lets it through)."""
    base = jl.MLPConfig((4, 3))
    params = base.init(jax.random.key(0))
    model = jl.as_model(lambda w, x: base.apply(w, x), params=params, loss=lambda out, y: jnp.log(out[:, 0] - 1e6))
    x = np.ones((128, 4), np.float32)
    with pytest.raises(jl.TrainingError, match="non-finite.*epoch 1"):
        jl.train(model, x, np.zeros(128, np.int32), key=jax.random.key(0), epochs=1, progress=False)


def test_bad_training_arguments():
    x = np.ones((10, 4), np.float32)
    y = np.zeros(10, np.int32)
    with pytest.raises(jl.ConfigError, match="batch_size=64 exceeds"):
        jl.train(jl.MLPConfig((4, 3)), x, y, key=jax.random.key(0), progress=False)
    with pytest.raises(jl.ConfigError, match="features"):
        jl.train(jl.MLPConfig((5, 3)), x, y, key=jax.random.key(0), batch_size=2, progress=False)


def test_save_load_roundtrip(tmp_path):
    model = jl.MLPConfig((5, 4, 2), use_bias=False)
    w = model.init(jax.random.key(0))
    path = jl.save_params(tmp_path / "w.npz", model, w, note="hi")
    m2, w2, meta = jl.load_params(path)
    assert m2 == model and meta == {"note": "hi"}
    np.testing.assert_array_equal(w, w2)
    assert not list(tmp_path.glob(".*tmp"))


def test_cached_train_reuses_weights(tmp_path):
    ds = jl.load_dataset("mnist_10k", limit=128)
    model = jl.MLPConfig((784, 8, 10))
    kw = dict(key=jax.random.key(0), data_tag="t", epochs=1, cache_dir=tmp_path, progress=False)
    a = jl.cached_train(model, ds.x, ds.y, **kw)
    assert len(list(tmp_path.glob("w_*.npz"))) == 1
    b = jl.cached_train(model, ds.x, ds.y, **kw)
    np.testing.assert_array_equal(a.params, b.params)
    jl.cached_train(model, ds.x, ds.y, **{**kw, "key": jax.random.key(1)})
    assert len(list(tmp_path.glob("w_*.npz"))) == 2
