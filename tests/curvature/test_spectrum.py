import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.curvature import spectrum as sp
from jaxland.linalg import stochastic


@pytest.fixture(scope="module")
def problem():
    """A trained 8-32-32-4 MLP (1,476 parameters) in float64 with its exact spectrum."""
    with jax.enable_x64(True):
        model = jl.MLPConfig((8, 32, 32, 4))
        x = jax.random.normal(jax.random.key(1), (256, 8), jnp.float64)
        y = jnp.argmax(x[:, :4], axis=1)
        w = jl.train(model, x, y, key=jax.random.key(0), epochs=5, batch_size=64, lr=1e-2, progress=False).params
        w = w.astype(jnp.float64)
        evals = np.linalg.eigvalsh(np.asarray(jl.dense_hessian(model, w, x, y)))
        yield model, w, x, y, evals


@pytest.mark.slow
@pytest.mark.parametrize("method", sp.TRACE_METHODS)
def test_trace_within_4_stderr_of_exact(x64, problem, method):
    model, w, x, y, evals = problem
    r = sp.hessian_trace(model, w, x, y, num_probes=60, key=jax.random.key(3), method=method)
    assert r.num_matvecs == 60 and r.method == method
    assert 0 < float(r.stderr) < 0.1 * abs(evals.sum())  # informative, not a vacuous bound
    assert abs(float(r.trace) - evals.sum()) < 4 * float(r.stderr)


def test_hutchpp_beats_hutchinson_at_equal_budget(x64, problem):
    # the top eigenvalues dominate Hutchinson's variance; Hutch++ removes them exactly
    model, w, x, y, _ = problem
    se = {m: float(sp.hessian_trace(model, w, x, y, num_probes=60, key=jax.random.key(3), method=m).stderr)
          for m in sp.TRACE_METHODS}
    assert se["hutch++"] < 0.7 * se["hutchinson"]


def test_trace_same_key_same_result_and_no_recompile(x64, problem):
    model, w, x, y, _ = problem
    a = sp.hessian_trace(model, w, x, y, num_probes=12, key=jax.random.key(5))
    b = sp.hessian_trace(model, w, x, y, num_probes=12, key=jax.random.key(5))
    assert float(a.trace) == float(b.trace)
    size = sp._trace_jit._cache_size()
    c = sp.hessian_trace(model, w * 1.01, x, y, num_probes=12, key=jax.random.key(6))
    assert sp._trace_jit._cache_size() == size and float(c.trace) != float(a.trace)


def test_density_moments_within_monte_carlo_error(x64, problem):
    model, w, x, y, evals = problem
    dn = sp.spectral_density(model, w, x, y, num_probes=32, lanczos_steps=20, key=jax.random.key(4))
    assert dn.nodes.shape == (32, 20) and dn.num_matvecs == 640
    np.testing.assert_allclose(np.sum(dn.weights, axis=1), 1.0, rtol=1e-10)
    for p in range(1, 5):
        est, se = sp.density_moments(dn, p)
        exact = np.mean(evals**p)
        assert 0 < se < 0.5 * abs(exact)
        assert abs(est - exact) < 4 * se, (p, est, exact, se)
    # the smoothed density is a probability density whose grid covers the extreme Ritz values
    step = float(dn.grid[1] - dn.grid[0])
    assert float(jnp.sum(dn.density)) * step == pytest.approx(1.0, abs=2e-3)
    assert float(dn.sigma) == pytest.approx(float(jnp.max(dn.nodes) - jnp.min(dn.nodes)) / 20)
    # extreme Ritz values lie inside the true spectrum and the top one has converged
    assert evals[0] - 1e-9 <= float(jnp.min(dn.nodes)) and float(jnp.max(dn.nodes)) <= evals[-1] + 1e-9
    assert float(jnp.max(dn.nodes)) == pytest.approx(evals[-1], rel=1e-6)
    tp, tp_se = sp.positive_trace(dn)
    assert abs(tp - evals[evals > 0].sum()) < 4 * tp_se


@pytest.mark.slow
def test_lambda_min_and_max(x64, problem):
    model, w, x, y, evals = problem
    assert evals[0] < 0  # this model has negative curvature to find
    ext = sp.extreme_eigenvalues(model, w, x, y, key=jax.random.key(0), tol=1e-8, max_matvecs=120)
    assert bool(ext.bottom.converged) and bool(ext.top.converged)
    assert ext.bottom.eigenvalues.shape == (1,)
    assert ext.lambda_min == pytest.approx(evals[0], rel=1e-4)
    assert ext.lambda_max == pytest.approx(evals[-1], rel=1e-4)
    assert ext.min_over_max == pytest.approx(evals[0] / evals[-1], rel=1e-3)


def _known(evals, seed=0):
    n = len(evals)
    U, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return jnp.asarray((U * evals) @ U.T)


def test_choose_d_known_spectra(x64):
    # 4 outliers then a bulk: tr(H_+) = 16 + 0.96 = 16.96; shares 0.47, 0.71, 0.83, 0.94, 0.944, ...
    evals = np.concatenate([[8.0, 4.0, 2.0, 2.0], np.full(96, 0.01), -0.05 * np.ones(20)])
    top = np.sort(evals)[::-1][:10]
    c = sp.choose_d(top, positive_trace_value=float(evals[evals > 0].sum()), share=0.885)
    assert c.d == 4 and c.d_eigengap == 4
    np.testing.assert_allclose(c.captured[:4], np.array([8, 12, 14, 16]) / 16.96)
    assert sp.choose_d(top, positive_trace_value=16.96, share=0.5).d == 2
    assert sp.choose_d(top, positive_trace_value=16.96, share=0.99).d is None  # not reached by the top 10
    # the same answer with tr(H_+) estimated by SLQ on the matrix (the stochastic path). The outliers
    # dominate its variance (relative SE ~ sqrt(2 sum lambda^2) / tr / sqrt(probes)): at 4096 probes the
    # shares 0.83 / 0.94 sit about 6 standard errors from the target 0.885
    A = _known(evals)
    run = jax.jit(lambda A, key: stochastic.slq(lambda v: A @ v, 120, jnp.float64, key=key, num_probes=4096, lanczos_steps=30, chunk_size=512))
    nodes, weights = run(A, jax.random.key(0))
    grid, rho, sigma = stochastic.smooth_density(nodes, weights)
    dn = sp.SpectralDensity(nodes, weights, grid, rho, sigma, 120, 4096 * 30)
    tp, se = sp.positive_trace(dn)
    assert abs(tp - 16.96) < 4 * se and se < 0.015 * 16.96
    assert sp.choose_d(top, dn, share=0.885).d == 4
    # a flat spectrum has no gap to speak of except at its end: top-3 equal, then smaller
    flat = sp.choose_d([3.0, 3.0, 3.0, 1.0, 0.9], positive_trace_value=12.0, share=0.7)
    assert flat.d_eigengap == 3 and flat.d == 3


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, w, x, y: sp.hessian_trace(m, w, x, y, num_probes=4, key=jax.random.key(0)), "num_probes"),
        (lambda m, w, x, y: sp.hessian_trace(m, w, x, y, num_probes=10, key=jax.random.key(0), method="xtrace"), "method"),
        (lambda m, w, x, y: sp.spectral_density(m, w, x, y, num_probes=0, lanczos_steps=5, key=jax.random.key(0)), "num_probes"),
        (lambda m, w, x, y: sp.spectral_density(m, w, x, y, num_probes=2, lanczos_steps=10**6, key=jax.random.key(0)), "lanczos_steps"),
        (lambda m, w, x, y: sp.spectral_density(m, w, x, y, num_probes=2, lanczos_steps=5, key=jax.random.key(0), sigma=-1.0), "sigma"),
        (lambda m, w, x, y: sp.hessian_trace(m, w, x, y, num_probes=9, key=jax.random.key(0), chunk_size=0), "chunk_size"),
        (lambda m, w, x, y: sp.choose_d([1.0, 0.5], positive_trace_value=2.0, share=1.5), "share"),
        (lambda m, w, x, y: sp.choose_d([1.0, 0.5]), "exactly one"),
        (lambda m, w, x, y: sp.choose_d([1.0, jnp.nan], positive_trace_value=2.0), "finite"),
        (lambda m, w, x, y: sp.choose_d([-1.0], positive_trace_value=-2.0), "positive part"),
        (lambda m, w, x, y: sp.bottom_eigenpairs(m, w, x, y, 1, key=jax.random.key(0), which="largest"), "which"),
        (lambda m, w, x, y: sp.hessian_trace(m, w, x, y, num_probes=9), "key="),
        (lambda m, w, x, y: sp.spectral_density(m, w, x, y, num_probes=2, lanczos_steps=5), "key="),
        (lambda m, w, x, y: sp.extreme_eigenvalues(m, w, x, y), "key="),
        (lambda m, w, x, y: sp.bottom_eigenpairs(m, w, x, y, 1), "key="),
        (lambda m, w, x, y: sp.hessian_trace(m, w.at[0].set(jnp.nan), x, y, num_probes=9, key=jax.random.key(0)), "w contains non-finite"),
    ],
)
def test_bad_input_raises_config_error(mlp, call, match):
    model, w, x, y, _ = mlp
    with pytest.raises((jl.ConfigError, TypeError), match=match):
        call(model, w, x, y)


def test_non_finite_hessian_raises(mlp):
    # finite weights so large that the products overflow: the estimators report it instead of returning NaN
    model, w, x, y, _ = mlp
    bad = w * 1e200
    with pytest.raises(jl.NumericalError, match="NaN"):
        sp.hessian_trace(model, bad, x, y, num_probes=9, key=jax.random.key(0))
    with pytest.raises(jl.NumericalError, match="non-finite"):
        sp.spectral_density(model, bad, x, y, num_probes=2, lanczos_steps=5, key=jax.random.key(0))
