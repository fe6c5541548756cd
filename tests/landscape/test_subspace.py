
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.errors import ConfigError


@pytest.fixture
def small():
    model = jl.MLPConfig((6, 5, 4, 3))
    w = model.init(jax.random.key(0))
    return model, w


def _filter_norms(model, v):
    return [jnp.linalg.norm(layer.kernel, axis=0) for layer in model.layers(v)]


def test_filter_normalised_directions(small):
    model, w = small
    dirs = jl.random_directions(model, w, 3, key=jax.random.key(1))
    assert dirs.shape == (3, model.num_params)
    mask = model.bias_mask()
    np.testing.assert_array_equal(np.asarray(dirs)[:, np.asarray(mask) == 1], 0.0)
    wn = _filter_norms(model, w)
    for row in dirs:  # each output unit's filter has the norm of the weights' filter (no global rescale)
        for a, b in zip(_filter_norms(model, row), wn):
            np.testing.assert_allclose(a, b, rtol=1e-5)
    again = jl.random_directions(model, w, 3, key=jax.random.key(1))
    np.testing.assert_array_equal(dirs, again)
    other = jl.random_directions(model, w, 3, key=jax.random.key(2))
    assert not np.allclose(dirs, other)


def test_orthonormalised_and_raw_directions(small):
    model, w = small
    q = jl.random_directions(model, w, 4, key=jax.random.key(3), orthonormalize=True)
    np.testing.assert_allclose(q @ q.T, np.eye(4), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(q)[:, np.asarray(model.bias_mask()) == 1], 0.0)
    raw = jl.random_directions(model, w, 2, key=jax.random.key(3), filter_normalize=False)
    assert np.all(np.asarray(raw)[:, np.asarray(model.bias_mask()) == 1] != 0.0)


def test_subspace_point(small):
    model, w = small
    dirs = jl.random_directions(model, w, 2, key=jax.random.key(4))
    s = jl.Subspace(w, dirs)
    theta = jnp.array([0.5, -2.0])
    np.testing.assert_allclose(s.w(theta), w + 0.5 * dirs[0] - 2.0 * dirs[1], rtol=1e-6, atol=1e-7)
    assert s.dim == 2


@pytest.mark.parametrize("d", [0, -1, 10**6])
def test_bad_dimension(small, d):
    model, w = small
    with pytest.raises(ConfigError, match="dimension"):
        jl.random_directions(model, w, d, key=jax.random.key(0))


def test_hessian_subspace_matches_dense_eigh(x64):
    model = jl.MLPConfig((4, 3, 2), activation="tanh")
    w = model.init(jax.random.key(0)).astype(jnp.float64)
    x = jax.random.normal(jax.random.key(1), (30, 4), jnp.float64)
    y = jnp.arange(30) % 2
    sub, res = jl.hessian_subspace(model, w, x, y, 3, key=jax.random.key(2), tol=1e-8)
    evals, evecs = np.linalg.eigh(np.asarray(jl.dense_hessian(model, w, x, y)))
    np.testing.assert_allclose(res.eigenvalues, evals[::-1][:3], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(sub.center, w)
    overlap = np.abs(np.asarray(sub.directions) @ evecs[:, ::-1][:, :3])
    np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-4)
