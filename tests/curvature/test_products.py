import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl


from jaxland.curvature.operators import _matvec


@pytest.fixture
def tiny(mlp):
    return mlp[:4]


def test_hvp_equals_dense_hessian(tiny):
    model, w, x, y = tiny
    v = jax.random.normal(jax.random.key(2), w.shape, jnp.float64)
    H = jax.jit(jax.hessian(lambda w_, x_, y_: jl.mean_loss(model, w_, x_, y_)))(w, x, y)
    np.testing.assert_allclose(jl.hvp(model, w, x, y, v), H @ v, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(jl.dense_hessian(model, w, x, y), H, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(H, H.T, atol=1e-12)


def test_prefix_hvp_equals_sliced_data_and_does_not_recompile(tiny):
    model, w, x, y = tiny
    v = jax.random.normal(jax.random.key(3), w.shape, jnp.float64)
    ks = (3, 7, 11, 23)
    sliced = [jl.hvp(model, w, x[:k], y[:k], v) for k in ks]
    jl.hvp(model, w, x, y, v, k=1)
    size = _matvec._cache_size()
    for k, ref in zip(ks, sliced):
        np.testing.assert_allclose(jl.hvp(model, w, x, y, v, k=k), ref, rtol=1e-10, atol=1e-14)
    assert _matvec._cache_size() == size  # a new k reuses the compiled program


def test_batched_hvp_matches_single(tiny):
    model, w, x, y = tiny
    vs = jax.random.normal(jax.random.key(4), (6, w.size), jnp.float64)
    out = jl.hvp_batch(model, w, x, y, vs, k=9)
    ref = jnp.stack([jl.hvp(model, w, x, y, v, k=9) for v in vs])
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-14)
    mv = jl.hessian_matvec(model, w, x, y, k=9)
    np.testing.assert_allclose(mv(vs[0]), ref[0], rtol=1e-12)


def test_loss_and_grad(tiny):
    model, w, x, y = tiny
    l, g = jl.loss_and_grad(model, w, x, y, k=5)
    np.testing.assert_allclose(l, jl.mean_loss(model, w, x[:5], y[:5]), rtol=1e-12)
    np.testing.assert_allclose(g, jax.grad(lambda w_: jl.mean_loss(model, w_, x[:5], y[:5]))(w), rtol=1e-10, atol=1e-14)
