"""Value checks against independent references for routines that were only smoke-tested before."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl


def _known_spectrum(n, evals, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return jnp.asarray(q @ np.diag(evals) @ q.T), q


@pytest.mark.parametrize("method", ["power", "block"])
def test_solver_factories_find_known_eigenpairs(x64, method):
    evals = np.array([9.0, -7.0, 4.0, 2.5, 1.0, 0.5, 0.25, 0.1, 0.05, 0.01, 0.0, -0.02])
    a, q = _known_spectrum(12, evals)
    if method == "power":
        solve = jl.power_iteration(3, tol=1e-9, max_matvecs=4000)
        res = jax.jit(lambda v0: solve(lambda v: a @ v, v0))(jax.random.normal(jax.random.key(0), (12,), jnp.float64))
    else:
        solve = jl.block_lanczos(3, block_size=2, tol=1e-9)
        res = jax.jit(lambda v0: solve(lambda V: V @ a, v0))(jax.random.normal(jax.random.key(0), (2, 12), jnp.float64))
    order = np.argsort(evals)[::-1][:3]  # largest algebraic: 9, 4, 2.5 (not -7)
    np.testing.assert_allclose(res.eigenvalues, evals[order], rtol=1e-6)
    overlap = np.abs(np.sum(np.asarray(res.eigenvectors) * q[:, order].T, axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-5)
    assert bool(np.all(res.converged))


@pytest.mark.slow
def test_theory_delta_eigensolver_matches_the_dense_route(mlp):
    model, w, x, y, _ = mlp
    ks, d, sigma = [2, 5], 3, 0.7
    got = jl.theory_delta_eigensolver(model, w, x, y, k=ks, d=d, sigma=sigma, key=jax.random.key(0), tol=1e-9, method="dense")
    for i, k in enumerate(ks):
        lam = [np.linalg.eigvalsh(np.asarray(jl.dense_hessian(model, w, x[:m], y[:m])))[::-1][:d] for m in (k, k + 1)]
        dl = lam[1] - lam[0]
        np.testing.assert_allclose(got.eigenvalues[i], lam, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(got.theorem1[i], sigma**4 / 4 * (2 * np.sum(dl**2) + np.sum(dl) ** 2), rtol=1e-8)
    assert got.k.tolist() == ks and got.info.unit == "samples"


def test_ema_is_the_bias_corrected_recursion():
    x = np.array([[1.0, 3.0, -2.0, 5.0], [0.0, 1.0, 0.0, 1.0]])
    out = jl.ema(x, decay=0.5)
    for row, got in zip(x, out):
        m, ref = 0.0, []
        for t, v in enumerate(row, 1):
            m = 0.5 * m + 0.5 * v
            ref.append(m / (1 - 0.5**t))
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    np.testing.assert_allclose(jl.ema(x.T, decay=0.5, axis=0), out.T)
    assert out[0, 0] == 1.0  # the first point keeps the data's scale


def test_normalize_filters_rescales_each_dense_column(mlp):
    model, w, _, _, _ = mlp
    raw = jax.random.normal(jax.random.key(3), (2, model.num_params), jnp.float64)
    out = jl.normalize_filters(model, w, raw)
    for r_raw, r_out in zip(raw, out):
        for lw, lr, lo in zip(model.layers(w), model.layers(r_raw), model.layers(r_out)):
            scale = np.linalg.norm(lw.kernel, axis=0) / np.linalg.norm(lr.kernel, axis=0)
            np.testing.assert_allclose(lo.kernel, np.asarray(lr.kernel) * scale, rtol=1e-12)  # column j scaled to ||W[:, j]||
            np.testing.assert_array_equal(lo.bias, 0.0)
