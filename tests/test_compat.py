"""Old keyword spellings keep working with a DeprecationWarning; both spellings, or a removed one, are errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl


def _curv():
    rng = np.random.default_rng(0)
    n, d = 12, 2
    return jl.landscape.SubspaceCurvature(jnp.asarray(rng.normal(size=n)), jnp.asarray(rng.normal(size=(n, d))),
                                          jnp.asarray(rng.normal(size=(n, d, d))))


def test_old_keyword_gives_the_same_numbers_with_a_warning():
    curv = _curv()
    new = jl.theory_delta(curv, sigma=0.5, samples_per_k=3).second_order
    with pytest.warns(DeprecationWarning, match=r"theory_delta\(batch_size=\) is now samples_per_k="):
        old = jl.theory_delta(curv, sigma=0.5, batch_size=3).second_order
    np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    assert new.shape == (3,)  # 12 samples in groups of 3: K = 4, increments k = 1..3


def test_both_spellings_or_a_removed_keyword_are_errors():
    with pytest.raises(jl.ConfigError, match="samples_per_k= only"):
        jl.theory_delta(_curv(), sigma=0.5, samples_per_k=3, batch_size=3)
    model = jl.MLPConfig((3, 2))
    w = model.init(jax.random.key(0))
    sub = jl.Subspace(w, jnp.eye(1, w.size, dtype=w.dtype))
    x, y = jnp.ones((8, 3)), jnp.zeros(8, jnp.int32)
    with pytest.raises(jl.ConfigError, match="ordering_key= is no longer accepted; the orderings come from key"):
        jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=4, key=jax.random.key(0), orderings=2,
                             ordering_key=jax.random.key(1))


def test_moved_top_level_names_still_resolve():
    assert jl.batch_means is jl.landscape.batch_means
    assert jl.lanczos is jl.linalg.lanczos
    assert "batch_means" not in jl.__all__
    with pytest.raises(AttributeError):
        jl.no_such_name
