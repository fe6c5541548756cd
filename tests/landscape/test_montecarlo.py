import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.landscape.kernels import loss_matrix
from jaxland.errors import ConfigError


def _sub(D, d, key):
    center = jax.random.normal(jax.random.fold_in(key, 1), (D,), jnp.float64) * 0.1
    dirs = jax.random.normal(key, (d, D), jnp.float64) / np.sqrt(D)
    return jl.Subspace(center, dirs)


@pytest.mark.parametrize("d,sigma", [(1, 0.5), (3, 1.0), (5, 2.0)])
def test_monte_carlo_matches_exact_second_order_on_quadratic(quadratic_problem, d, sigma):
    D, n = 6, 6
    model, x, y = quadratic_problem(jax.random.key(d), n, D)
    sub = _sub(D, d, jax.random.key(10 + d))
    mc = jl.delta_monte_carlo(model, sub, x, y, sigma=sigma, num_draws=4000, key=jax.random.key(0))
    th = jl.theory_delta(jl.subspace_curvature(model, sub, x, y), sigma=sigma)
    np.testing.assert_array_equal(mc.k, th.k)
    z = np.abs(np.asarray(mc.delta) - np.asarray(th.second_order)) / np.asarray(mc.stderr)
    assert np.all(z < 4), z
    assert mc.info.subspace_dim == d and mc.info.num_draws == 4000 and mc.unit == "samples" and mc.info.kernel == "generic"
    np.testing.assert_allclose(mc.delta_k2, mc.delta * mc.k**2)


def test_subspace_curvature_is_exact_on_quadratic(quadratic_problem):
    D, n, d = 5, 7, 3
    model, x, y = quadratic_problem(jax.random.key(0), n, D)
    sub = _sub(D, d, jax.random.key(1))
    curv = jl.subspace_curvature(model, sub, x, y, sample_block=3)  # chunk does not divide n
    P, w = sub.directions, sub.center
    g, G = x[:, 1 : D + 1], x[:, D + 1 :].reshape(n, D, D)
    np.testing.assert_allclose(curv.c, model.per_sample_losses(w, x, y), rtol=1e-12)
    np.testing.assert_allclose(curv.g, (g + jnp.einsum("nij,j->ni", G, w)) @ P.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(curv.G, jnp.einsum("ai,nij,bj->nab", P, G, P), rtol=1e-10, atol=1e-12)


def test_sigma4_scaling_when_c_and_g_vanish(quadratic_problem):
    D, n, d = 6, 5, 3
    model, x, y = quadratic_problem(jax.random.key(3), n, D, zero_order=False)
    sub = jl.Subspace(jnp.zeros(D, jnp.float64), _sub(D, d, jax.random.key(4)).directions)
    res = {s: jl.delta_monte_carlo(model, sub, x, y, sigma=s, num_draws=3000, key=jax.random.key(5)) for s in (0.5, 1.0, 3.0)}
    for s in (0.5, 3.0):
        np.testing.assert_allclose(res[s].delta, res[1.0].delta * s**4, rtol=1e-9)
    curv = jl.subspace_curvature(model, sub, x, y)
    np.testing.assert_allclose(curv.c, 0, atol=1e-15)
    np.testing.assert_allclose(curv.g, 0, atol=1e-15)
    for s, r in res.items():
        th = jl.theory_delta(curv, sigma=s)
        np.testing.assert_allclose(th.second_order, th.curvature_only, rtol=1e-12)
        assert np.all(np.abs(r.delta - th.second_order) < 4 * r.stderr)


def test_paper_formula_equals_exact_for_diagonal_curvature(x64):
    # Diagonal G_i with a stable eigenvalue order (one negative): Theorem 1's
    # assumptions hold, so the paper formula (sigma^4 kept, signs kept) is exact.
    n, d = 8, 3
    base = jnp.array([6.0, 2.0, -3.0])
    diag = base + 0.3 * jax.random.normal(jax.random.key(0), (n, d), jnp.float64)
    curv = jl.SubspaceCurvature(jnp.zeros(n), jnp.zeros((n, d)), jax.vmap(jnp.diag)(diag))
    th = jl.theory_delta(curv, sigma=2.0)
    np.testing.assert_allclose(th.theorem1, th.second_order, rtol=1e-10)
    assert np.all(th.ritz_values[:, -1] < 0)  # signed, descending
    thb = jl.theory_delta(curv, sigma=2.0, samples_per_k=2)
    assert thb.k.tolist() == [1, 2, 3] and thb.unit == "batches"


def test_cumulative_identity_to_float_precision(x64):
    losses = jax.random.uniform(jax.random.key(0), (4, 200), jnp.float64) * 3
    big_l = jl.cumulative_means(losses)
    np.testing.assert_allclose(big_l[:, 9], losses[:, :10].mean(1), rtol=1e-14)
    inc = jl.loss_increments(losses)
    np.testing.assert_allclose(inc, np.diff(big_l, axis=1), rtol=0, atol=1e-14)
    np.testing.assert_allclose(inc, (losses[:, 1:] - big_l[:, :-1]) / np.arange(2, 201), rtol=1e-14)
    # batches of 8: L_k is the mean of the first 8k samples
    big_lb = jl.cumulative_means(losses, 8)
    assert big_lb.shape == (4, 25)
    np.testing.assert_allclose(big_lb[:, 4], losses[:, :40].mean(1), rtol=1e-14)
    np.testing.assert_allclose(jl.loss_increments(losses, 8), np.diff(big_lb, axis=1), atol=1e-14)


def test_cumulative_curvature_equals_hvp_projection(mlp):
    model, w, x, y, sub = mlp
    P = sub.directions
    cum = jl.cumulative_curvature(jl.subspace_curvature(model, sub, x, y, sample_block=5))
    for k in (1, 4, 11, 23):
        np.testing.assert_allclose(cum.hess[k - 1], P @ jl.hvp_batch(model, w, x[:k], y[:k], P).T, rtol=1e-9, atol=1e-12)
        loss, grad = jl.loss_and_grad(model, w, x[:k], y[:k])
        np.testing.assert_allclose(cum.grad[k - 1], P @ grad, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(cum.loss[k - 1], loss, rtol=1e-12)
    cumb = jl.cumulative_curvature(jl.subspace_curvature(model, sub, x, y), samples_per_k=4)
    assert cumb.hess.shape == (5, 3, 3)
    np.testing.assert_allclose(cumb.hess[2], P @ jl.hvp_batch(model, w, x[:12], y[:12], P).T, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("use_bias", [True, False])
def test_fast_first_layer_equals_plain_forward(mlp, use_bias):
    _, _, x, y, _ = mlp
    model = jl.MLPConfig((5, 6, 4, 3), use_bias=use_bias)
    w = model.init(jax.random.key(3)).astype(jnp.float64)
    sub = jl.Subspace(w, jax.random.normal(jax.random.key(4), (2, model.num_params), jnp.float64))
    thetas = jax.random.normal(jax.random.key(5), (7, 2), jnp.float64)
    ref = jax.vmap(lambda t: jl.per_sample_losses(model, sub.w(t), x, y))(thetas)
    fast = jl.per_sample_loss_matrix(model, sub, thetas, x, y, chunk_size=3, sample_block=5)
    plain = jl.per_sample_loss_matrix(model, sub, thetas, x, y, chunk_size=3, sample_block=5, fast_kernel=False)
    np.testing.assert_allclose(fast, ref, rtol=1e-12)
    np.testing.assert_allclose(plain, ref, rtol=1e-12)


def test_fast_path_float32_and_no_recompile(mlp32):
    model, w, x, y, sub, th = mlp32(100, 9)
    fast = jl.per_sample_loss_matrix(model, sub, th, x, y)
    plain = jl.per_sample_loss_matrix(model, sub, th, x, y, fast_kernel=False)
    np.testing.assert_allclose(fast, plain, rtol=2e-5, atol=1e-6)
    size = loss_matrix._cache_size()
    jl.per_sample_loss_matrix(model, sub, th * 2, x + 1, y)  # new values, same shapes
    assert loss_matrix._cache_size() == size


def test_same_key_same_numbers_and_orderings(mlp):
    model, w, x, y, sub = mlp
    kw = dict(sigma=0.5, num_draws=16, key=jax.random.key(7), samples_per_k=4)
    a = jl.delta_monte_carlo(model, sub, x, y, **kw)
    b = jl.delta_monte_carlo(model, sub, x, y, **kw)
    np.testing.assert_array_equal(a.delta, b.delta)
    assert a.k.tolist() == [1, 2, 3, 4] and a.unit == "batches" and a.info.kernel == "specialised"
    ident = jl.delta_monte_carlo(model, sub, x, y, orderings=np.arange(23)[None], **kw)
    np.testing.assert_allclose(ident.delta, a.delta, rtol=1e-12)
    r1 = jl.delta_monte_carlo(model, sub, x, y, orderings=5, **kw)
    r2 = jl.delta_monte_carlo(model, sub, x, y, orderings=5, **kw)
    np.testing.assert_array_equal(r1.delta, r2.delta)
    assert r1.info.num_orderings == 5 and not np.allclose(r1.delta, a.delta)
    # explicit orderings = the average over the permuted datasets
    perms = np.stack([np.random.default_rng(s).permutation(23) for s in range(3)])
    avg = np.mean([jl.delta_monte_carlo(model, sub, x[p], y[p], **kw).delta for p in perms], axis=0)
    np.testing.assert_allclose(jl.delta_monte_carlo(model, sub, x, y, orderings=perms, **kw).delta, avg, rtol=1e-10)


def test_loss_differences(mlp):
    model, w, x, y, _ = mlp
    l = jl.per_sample_losses(model, w, x, y)
    r = jl.loss_differences(model, w, x, y)
    np.testing.assert_allclose(r.diff, np.abs(np.diff(np.cumsum(l) / np.arange(1, 24))), rtol=1e-10)
    assert r.k.tolist() == list(range(1, 23)) and np.all(np.isnan(r.stderr))
    rb = jl.loss_differences(model, w, x, y, orderings=4, key=jax.random.key(0), samples_per_k=5)
    assert rb.diff.shape == (3,) and rb.num_orderings == 4 and np.all(rb.stderr > 0)
    with pytest.raises(ConfigError, match="key"):
        jl.loss_differences(model, w, x, y, orderings=4)


def test_loss_surface_tiny_case(mlp):
    model, w, x, y, sub = mlp
    sub2 = jl.Subspace(w, sub.directions[:2])
    s = jl.loss_surface(model, sub2, x, y, k=[1, 3], grid=3, extent=0.5, samples_per_k=5)
    assert s.loss.shape == s.diff_sq.shape == (2, 3, 3)
    np.testing.assert_allclose(s.alphas, [-0.5, 0, 0.5])
    i, j = 2, 0  # (alpha, beta) = (0.5, -0.5)
    wij = w + 0.5 * sub2.directions[0] - 0.5 * sub2.directions[1]
    for m, k in enumerate((1, 3)):
        lk = jl.mean_loss(model, wij, x[: 5 * k], y[: 5 * k])
        lk1 = jl.mean_loss(model, wij, x[: 5 * (k + 1)], y[: 5 * (k + 1)])
        np.testing.assert_allclose(s.loss[m, i, j], lk, rtol=1e-12)
        np.testing.assert_allclose(s.diff_sq[m, i, j], (lk1 - lk) ** 2, rtol=1e-9)
    np.testing.assert_allclose(s.loss[0, 1, 1], jl.mean_loss(model, w, x[:5], y[:5]), rtol=1e-12)
    with pytest.raises(ConfigError, match="k must be"):
        jl.loss_surface(model, sub2, x, y, k=[4], samples_per_k=5, grid=3)  # K = 4 batches: k <= 3
    with pytest.raises(ConfigError, match="2-D"):
        jl.loss_surface(model, sub, x, y, k=[1])


def test_sufficient_k():
    curve = np.array([5.0, 3.0, 0.5, 2.0, 0.4, 0.3, 0.2])
    assert jl.sufficient_k(curve, 1.0) == 5
    assert jl.sufficient_k(curve, 10.0) == 1
    assert jl.sufficient_k(curve, 1.0, k=np.arange(7) * 64 + 64) == 5 * 64
    assert jl.sufficient_k(curve, 0.35) == 6
    with pytest.warns(RuntimeWarning, match="never settles"):
        assert jl.sufficient_k(curve, 0.1) is None
    spike = np.array([4.0, 3.0, 0.1, 0.1, 1.5, 0.1, 0.1, 0.1, 0.1])
    assert jl.sufficient_k(spike, 1.0) == 6
    assert jl.sufficient_k(spike, 1.0, smooth=3) == 4  # k=3: (3+.1+.1)/3 > 1; later means < 1
    np.testing.assert_allclose(jl.moving_mean([1.0, 2.0, 6.0], 3), [4 / 3, 3.0, 14 / 3])  # edges replicated
    res = jl.DeltaResult(np.arange(1, 8), curve, curve, curve, curve, jl.DeltaInfo(1.0, 2, 1, None, 1, "samples", "generic"))
    assert jl.sufficient_k(res, 1.0) == 5


def test_bad_inputs(mlp):
    model, w, x, y, sub = mlp
    kw = dict(num_draws=8, key=jax.random.key(0))
    for sigma in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="sigma"):
            jl.delta_monte_carlo(model, sub, x, y, sigma=sigma, **kw)
    with pytest.raises(ConfigError, match="sigma"):
        jl.theory_delta(jl.SubspaceCurvature(jnp.zeros(3), jnp.zeros((3, 1)), jnp.zeros((3, 1, 1))), sigma=0.0)
    with pytest.raises(ConfigError, match="T"):
        jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=1, key=jax.random.key(0))
    with pytest.raises(ConfigError, match="samples_per_k"):
        jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, samples_per_k=12, **kw)
    with pytest.raises(ConfigError, match="D="):
        jl.delta_monte_carlo(model, jl.Subspace(w, jnp.zeros((2, 5))), x, y, sigma=1.0, **kw)
    with pytest.raises(ConfigError, match="thetas"):
        jl.per_sample_loss_matrix(model, sub, jnp.zeros((4, 2)), x, y)
    with pytest.raises(ConfigError, match="samples"):
        jl.delta_monte_carlo(model, sub, x, y[:5], sigma=1.0, **kw)
    with pytest.raises(ConfigError, match="permutation"):
        jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, orderings=np.zeros((1, 23), int), **kw)
    for tol in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="tol"):
            jl.sufficient_k(np.ones(5), tol)
    with pytest.raises(ConfigError, match="odd"):
        jl.sufficient_k(np.ones(5), 1.0, smooth=4)
    with pytest.raises(ConfigError, match="longer"):
        jl.sufficient_k(np.ones(5), 1.0, smooth=7)
    with pytest.raises(ConfigError, match=r"\[1, 22\]"):
        jl.theory_delta_eigensolver(model, w, x, y, k=[23], d=2, sigma=1.0, key=jax.random.key(0))


def test_explicit_thetas_match_loss_matrix_route(mlp):
    model, w, x, y, sub = mlp
    th = jl.draw_thetas(jax.random.key(1), 6, 3, 0.7, jnp.float64)
    a = jl.delta_monte_carlo(model, sub, x, y, sigma=0.7, thetas=th, samples_per_k=4)
    b = jl.delta_from_losses(jl.per_sample_loss_matrix(model, sub, th, x, y), samples_per_k=4)
    np.testing.assert_allclose(a.delta, b.delta, rtol=1e-12)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-12)
    with pytest.raises(ConfigError, match="key"):
        jl.delta_monte_carlo(model, sub, x, y, sigma=0.7, num_draws=6)
