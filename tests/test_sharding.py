"""Sharded results equal single-device results (8 forced host devices, in a subprocess)."""


import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl


def test_chunked_map_equals_unchunked():
    t = np.random.default_rng(0).normal(size=(37, 4)).astype(np.float32)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    f = lambda a, b: jnp.tanh(a @ b.T)
    ref = f(t, x)
    for chunk in (1, 4, 7, 37, 100):
        np.testing.assert_allclose(jl.map_rows(f, t, x, chunk=chunk), ref, rtol=1e-6, atol=1e-6)


def test_auto_chunk_and_mesh_errors():
    assert jl.auto_chunk(1000, 1 << 20, budget=1 << 24) == 16
    assert jl.auto_chunk(10, 1, budget=1 << 30) == 10
    assert jl.auto_chunk(10, 1 << 40, budget=1 << 30) == 1
    with pytest.raises(jl.ConfigError, match="visible"):
        jl.device_mesh(10_000)


@pytest.mark.slow
def test_sharded_map_and_hvp_match_single_device(run_with_devices):
    out = run_with_devices(
        """
        import jax, jax.numpy as jnp, numpy as np, jaxland as jl
        assert len(jax.devices()) == 8
        with jax.enable_x64(True):
            model = jl.MLPConfig((5, 4, 3), activation="tanh")
            w = model.init(jax.random.key(0)).astype(jnp.float64)
            x = jax.random.normal(jax.random.key(1), (21, 5), jnp.float64)
            y = jnp.arange(21) % 3
            vs = jax.random.normal(jax.random.key(2), (5, w.size), jnp.float64)
            ref = jl.hvp_batch(model, w, x, y, vs, k=13)
            for size in (8, 3):
                mesh = jl.device_mesh(size)
                for over in ("data", "vectors"):
                    got = jl.sharded_hvp(model, w, x, y, vs, k=13, mesh=mesh, over=over, chunk_size=2)
                    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
            # the Gauss-Newton matrix and the empirical Fisher spread the same way
            for make in (jl.ggn_operator, jl.fisher_operator):
                op = make(model, w, x, y, k=13)
                ref = op.dense() @ vs.T
                for over in ("data", "vectors"):
                    got = jl.curvature.sharded_matmat(op, vs, mesh=jl.device_mesh(3), over=over, chunk_size=2)
                    np.testing.assert_allclose(got, ref.T, rtol=1e-12, atol=1e-14)
            t = jax.random.normal(jax.random.key(3), (37, 4))
            f = lambda a, b: jnp.tanh(a @ b.T)
            for chunk in (None, 3):
                got = jl.map_rows(f, t, x[:, :4], chunk=chunk, mesh=jl.device_mesh(8))
                np.testing.assert_allclose(got, f(t, x[:, :4]), rtol=1e-12)
        print("OK")
        """
    )
    assert "OK" in out
