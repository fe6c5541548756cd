import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.curvature import eigen as curvature_eigen
from jaxland.linalg import eigen

ITERATIVE = ("lanczos", "block", "lobpcg", "power")
KEY = jax.random.key(0)


def matmul(v, A):
    return A @ v


def known_spectrum(n=120, seed=0):
    """Symmetric matrix with a negative eigenvalue of the largest magnitude and a cluster at the top."""
    rng = np.random.default_rng(seed)
    top = np.array([10.0, 9.9, 9.8, 7.0, 6.5])  # 1% cluster, then a gap
    rest = np.concatenate([[-12.0], rng.uniform(-11.0, 5.0, n - 6)])
    evals = np.concatenate([top, rest])
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (U * evals) @ U.T
    order = np.argsort(-evals)
    return jnp.asarray(0.5 * (A + A.T)), evals[order], U[:, order].T


def assert_pairs(res, evals, vecs, d, rtol=1e-6):
    np.testing.assert_allclose(res.eigenvalues, evals[:d], rtol=rtol)
    overlap = np.abs(np.sum(np.asarray(res.eigenvectors) * vecs[:d], axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=rtol)
    assert bool(res.converged)
    assert np.all(np.asarray(res.relative_residuals) < 1e-6)


@pytest.mark.parametrize("method", ITERATIVE + ("dense",))
def test_known_spectrum_each_method(x64, method):
    A, evals, vecs = known_spectrum()
    d = 5
    kw = {"max_matvecs": {"power": 200_000, "lobpcg": None}.get(method, 120)}
    res = jl.top_eigenpairs(matmul, A.shape[0], d, key=KEY, method=method, tol=1e-9, operands=(A,), block_size=5, **kw)
    assert res.eigenvalues.dtype == jnp.float64
    assert_pairs(res, evals, vecs, d)
    # the largest-magnitude eigenvalue is -12: "top" is algebraic, signs are kept
    assert float(res.eigenvalues[0]) == pytest.approx(10.0, rel=1e-9)
    # residuals are real: recompute them
    r = np.linalg.norm(np.asarray(res.eigenvectors) @ np.asarray(A) - np.asarray(res.eigenvalues)[:, None] * np.asarray(res.eigenvectors), axis=1)
    np.testing.assert_allclose(res.residuals, r, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("method", ("lanczos", "block", "dense"))
def test_repeated_eigenvalues_and_invariant_subspaces(x64, method):
    # exact multiplicities: a single Krylov sequence sees each eigenvalue once; the
    # solver must restart inside the complement when the space becomes invariant
    n = 60
    evals = np.concatenate([[5.0, 5.0, 4.0, 4.0, 3.0], np.zeros(n - 5)])
    U, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(n, n)))
    A = jnp.asarray((U * evals) @ U.T)
    res = jl.top_eigenpairs(matmul, n, 4, key=KEY, method=method, tol=1e-9, operands=(A,), block_size=2)
    np.testing.assert_allclose(res.eigenvalues, [5.0, 5.0, 4.0, 4.0], rtol=1e-8)
    V = np.asarray(res.eigenvectors)
    np.testing.assert_allclose(V @ V.T, np.eye(4), atol=1e-8)  # distinct vectors, not one vector twice
    assert bool(res.converged)


def test_default_settings_reach_1e3_in_float32():
    # Hessian-like: decaying outliers on top of a bulk near zero
    rng = np.random.default_rng(2)
    evals = np.concatenate([20.0 * 0.8 ** np.arange(10), rng.uniform(-0.5, 1.0, 290)])
    U, _ = np.linalg.qr(rng.normal(size=(300, 300)))
    A = jnp.asarray((U * evals) @ U.T, jnp.float32)
    evals = np.sort(evals)[::-1]
    res = jl.top_eigenpairs(matmul, 300, 10, key=KEY, operands=(A,))
    assert res.eigenvalues.dtype == jnp.float32
    assert bool(res.converged)
    assert float(jnp.max(res.relative_residuals)) <= 1e-3
    assert int(res.num_matvecs) < 120
    np.testing.assert_allclose(res.eigenvalues, evals[:10], rtol=1e-3)


@pytest.fixture(scope="module")
def small_trained():
    with jax.enable_x64(True):
        model = jl.MLPConfig((6, 8, 3), activation="tanh")
        x = jax.random.normal(jax.random.key(1), (96, 6), jnp.float64)
        y = (jnp.argmax(x[:, :3], axis=1) + (x[:, 3] > 1.0)) % 3
        w = jl.train(model, x, y, key=jax.random.key(0), epochs=20, batch_size=32, lr=1e-2, progress=False).params
        w = w.astype(jnp.float64)
        H = np.asarray(jl.dense_hessian(model, w, x, y))
        yield model, w, x, y, H


@pytest.mark.parametrize("method", ITERATIVE)
def test_hessian_of_trained_mlp_agrees_with_dense(x64, small_trained, method):
    model, w, x, y, H = small_trained
    d = 6
    ref = jl.hessian_eigenpairs(model, w, x, y, d, key=KEY, method="dense", tol=1e-9)
    evals, U = np.linalg.eigh(H)
    np.testing.assert_allclose(ref.eigenvalues, evals[::-1][:d], rtol=1e-9)
    assert bool(ref.converged) and int(ref.num_matvecs) == w.size
    kw = {"max_matvecs": 200_000} if method == "power" else {"block_size": 6}
    res = jl.hessian_eigenpairs(model, w, x, y, d, key=KEY, method=method, tol=1e-9, **kw)
    assert_pairs(res, np.asarray(ref.eigenvalues), np.asarray(ref.eigenvectors), d)


def test_prefix_hessian_and_no_recompile(x64, small_trained):
    model, w, x, y, _ = small_trained
    res = jl.hessian_eigenpairs(model, w, x, y, 3, key=KEY, k=40, tol=1e-9)
    H40 = np.asarray(jl.dense_hessian(model, w, x[:40], y[:40]))
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(H40)[::-1][:3], rtol=1e-8)
    size = curvature_eigen._eig_jit._cache_size()
    jl.hessian_eigenpairs(model, w + 1e-3, x, y, 3, key=KEY, k=50, tol=1e-9)  # new weights and k: same program
    assert curvature_eigen._eig_jit._cache_size() == size


def test_batch_over_trained_networks_matches_single(x64, small_trained):
    model, w, x, y, _ = small_trained
    ws = jnp.stack([w, w * 1.01, w * 0.98])
    for bs in (1, 3):
        out = jl.hessian_eigenpairs_batch(model, ws, x, y, 4, key=KEY, tol=1e-9, chunk_size=bs)
        assert out.eigenvalues.shape == (3, 4) and out.eigenvectors.shape == (3, 4, w.size)
        assert bool(out.converged.all())
        for i in range(3):
            Hi = np.asarray(jl.dense_hessian(model, ws[i], x, y))
            np.testing.assert_allclose(out.eigenvalues[i], np.linalg.eigvalsh(Hi)[::-1][:4], rtol=1e-8)


def test_pure_solver_jits_and_vmaps(x64):
    mats = jnp.stack([known_spectrum(n=50, seed=s)[0] for s in range(3)])
    solve = jl.lanczos(3, tol=1e-10)
    v0 = jax.random.normal(jax.random.key(0), (50,), jnp.float64)
    one = lambda A: solve(lambda v: A @ v, v0)
    batched = jax.jit(jax.vmap(one))(mats)
    for i in range(3):
        single = jax.jit(one)(mats[i])
        np.testing.assert_allclose(batched.eigenvalues[i], single.eigenvalues, rtol=1e-10)
        np.testing.assert_allclose(batched.eigenvalues[i], np.linalg.eigvalsh(mats[i])[::-1][:3], rtol=1e-9)


def test_same_key_same_result_and_key_matters(x64):
    A, evals, _ = known_spectrum()  # same static settings as above: reuses the compiled program
    kw = dict(method="lanczos", tol=1e-9, operands=(A,), max_matvecs=120, block_size=5)
    r1 = jl.top_eigenpairs(matmul, 120, 5, key=jax.random.key(3), **kw)
    r2 = jl.top_eigenpairs(matmul, 120, 5, key=jax.random.key(3), **kw)
    r3 = jl.top_eigenpairs(matmul, 120, 5, key=jax.random.key(4), **kw)
    np.testing.assert_array_equal(r1.eigenvectors, r2.eigenvectors)
    np.testing.assert_allclose(r3.eigenvalues, evals[:5], rtol=1e-8)
    # converged runs agree whatever the key; a short Krylov space shows that the start vector (the key) is used
    short = dict(kw, max_matvecs=10)
    e3, e4 = (np.asarray(jl.top_eigenpairs(matmul, 120, 5, key=jax.random.key(s), **short).eigenvalues) for s in (3, 4))
    assert np.max(np.abs(e3 - e4)) > 1e-4 * abs(evals[0]), (e3, e4)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"d": 0}, "positive integer"),
        ({"d": -2}, "positive integer"),
        ({"d": 40}, "must be < dim"),
        ({"d": 50}, "must be < dim"),
        ({"method": "arnoldi"}, "unknown eigensolver"),
        ({"tol": 0.0}, "tol"),
        ({"tol": float("nan")}, "tol"),
        ({"max_matvecs": 2}, "too small"),
        ({"method": "lobpcg", "block_size": 3, "max_matvecs": 14}, "too small"),
        ({"method": "lobpcg", "block_size": 10}, "5 \\* block_size < dim"),
        ({"method": "lobpcg", "block_size": 1}, "block_size >= d"),
    ],
)
def test_bad_input_raises_config_error(kw, match):
    A = jnp.eye(40)
    args = {"d": 3, **kw}
    with pytest.raises(jl.ConfigError, match=match):
        jl.top_eigenpairs(matmul, 40, args.pop("d"), key=KEY, operands=(A,), **args)


def test_dense_refuses_large_dim_and_bad_matvec_shape():
    with pytest.raises(jl.ConfigError, match="dense"):
        jl.top_eigenpairs(lambda v: v, 10_000, 2, key=KEY, method="dense")
    with pytest.raises(jl.ConfigError, match="must return"):
        jl.top_eigenpairs(lambda v: v[:5], 10, 2, key=KEY)


@pytest.mark.parametrize("method", METHODS := eigen.METHODS)
def test_non_finite_matvec_raises(method):
    bad = lambda v: jnp.where(jnp.arange(v.shape[0]) == 3, jnp.nan, 2.0 * v)
    with pytest.raises(jl.NumericalError, match="non-finite"):
        jl.top_eigenpairs(bad, 40, 2, key=KEY, method=method, block_size=2)


@pytest.mark.parametrize("method", ITERATIVE)
def test_no_convergence_is_reported_not_hidden(x64, method):
    A, evals, _ = known_spectrum(n=120)
    budget = {"power": 60, "lobpcg": 25, "block": 10}.get(method, 8)
    res = jl.top_eigenpairs(matmul, 120, 5, key=KEY, method=method, tol=1e-9, max_matvecs=budget, operands=(A,), block_size=5)
    assert not bool(res.converged)
    assert np.all(np.isfinite(np.asarray(res.residuals)))
    assert float(jnp.max(res.relative_residuals)) > 1e-9
    assert int(res.num_matvecs) <= budget + 5 * (method == "lobpcg")
    with pytest.raises(jl.NumericalError, match="did not converge"):
        jl.top_eigenpairs(matmul, 120, 5, key=KEY, method=method, tol=1e-9, max_matvecs=budget, operands=(A,),
                          block_size=5, require_convergence=True)


def test_float64_basis_reaches_1e6_where_float32_cannot():
    # the module fixture above keeps x64 on while this module runs; this test is about x64 off
    with jax.enable_x64(False):
        _float64_basis_reaches_1e6_where_float32_cannot()


def _float64_basis_reaches_1e6_where_float32_cannot():
    # float32 operator (the HVP's precision); a float32 basis stalls near 3e-5, a float64 one reaches 1e-6
    rng = np.random.default_rng(2)
    n = 1500
    evals = np.concatenate([20.0 * 0.8 ** np.arange(10), rng.uniform(-0.5, 1.0, n - 10)])
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A64 = (U * evals) @ U.T
    A = jnp.asarray(A64, jnp.float32)
    true_relres = {}
    for basis in ("float32", "float64"):
        res = jl.top_eigenpairs(matmul, n, 10, key=KEY, operands=(A,), tol=1e-6, basis_dtype=basis, max_matvecs=150)
        assert res.eigenvalues.dtype == jnp.float32 and res.eigenvectors.dtype == jnp.float32  # the operator's dtype
        V, lam = np.asarray(res.eigenvectors, np.float64), np.asarray(res.eigenvalues, np.float64)
        true_relres[basis] = np.max(np.linalg.norm(V @ A64 - lam[:, None] * V, axis=1) / np.abs(lam))
        if basis == "float64":
            assert bool(res.converged)
            np.testing.assert_allclose(lam, np.sort(evals)[::-1][:10], rtol=1e-6)
    assert true_relres["float64"] < 1e-6 < 1e-5 < true_relres["float32"]
    assert not jax.config.jax_enable_x64  # the solver's x64 switch does not leak


def test_float64_basis_rejected_for_other_methods():
    with pytest.raises(jl.ConfigError, match="basis_dtype"):
        jl.top_eigenpairs(matmul, 40, 2, key=KEY, operands=(jnp.eye(40),), method="power", basis_dtype="float64")
    with pytest.raises(jl.ConfigError, match="basis_dtype"):
        jl.top_eigenpairs(matmul, 40, 2, key=KEY, operands=(jnp.eye(40),), basis_dtype="int8")


@pytest.mark.parametrize("method", ("lanczos", "block", "dense"))
def test_smallest_eigenpairs(x64, method):
    A, evals, vecs = known_spectrum()
    res = jl.top_eigenpairs(matmul, 120, 3, key=KEY, method=method, which="smallest", tol=1e-9, operands=(A,), block_size=3,
                            max_matvecs=120)
    np.testing.assert_allclose(res.eigenvalues, np.sort(evals)[:3], rtol=1e-8)  # ascending: lambda_min first
    assert float(res.eigenvalues[0]) == pytest.approx(-12.0)
    r = np.linalg.norm(np.asarray(res.eigenvectors) @ np.asarray(A) - np.asarray(res.eigenvalues)[:, None] * np.asarray(res.eigenvectors), axis=1)
    np.testing.assert_allclose(res.residuals, r, rtol=1e-3, atol=1e-12)
    assert bool(res.converged)
    with pytest.raises(jl.ConfigError, match="which"):
        jl.top_eigenpairs(matmul, 120, 3, key=KEY, which="middle", operands=(A,))


def test_float64_hvp_reaches_exact_hessian_where_float32_hvp_cannot(small_trained):
    # float32 weights and data; the reference is the exact Hessian at those same (rounded) weights
    model, w, x, y, _ = small_trained
    w32, x32 = w.astype(jnp.float32), x.astype(jnp.float32)
    with jax.enable_x64(True):
        H = np.asarray(jl.dense_hessian(model, w32.astype(jnp.float64), x32.astype(jnp.float64), y))
    relres = {}
    for hd in ("float32", "float64"):
        res = jl.hessian_eigenpairs(model, w32, x32, y, 4, key=KEY, tol=1e-10 if hd == "float64" else 1e-6, hvp_dtype=hd,
                                    basis_dtype="float64", max_matvecs=w.size - 1)
        assert res.eigenvalues.dtype == jnp.dtype(hd)
        V, lam = np.asarray(res.eigenvectors, np.float64), np.asarray(res.eigenvalues, np.float64)
        relres[hd] = np.max(np.linalg.norm(V @ H - lam[:, None] * V, axis=1) / np.abs(lam))
    assert relres["float64"] < 1e-9 < relres["float32"]
    batch = jl.hessian_eigenpairs_batch(model, w32[None], x32, y, 4, key=KEY, tol=1e-10, hvp_dtype="float64",
                                        max_matvecs=w.size - 1)
    np.testing.assert_allclose(batch.eigenvalues[0], res.eigenvalues, rtol=1e-9)
    with pytest.raises(jl.ConfigError, match="hvp_dtype"):
        jl.hessian_eigenpairs(model, w32, x32, y, 2, key=KEY, hvp_dtype="float16")
    with pytest.raises(jl.ConfigError, match="unknown options"):
        jl.hessian_eigenpairs_batch(model, w32[None], x32, y, 2, key=KEY, tol_=1e-3)


def test_missing_key_is_a_config_error():
    with pytest.raises(jl.ConfigError, match=r"pass key=jax.random.key\(0\)"):
        jl.top_eigenpairs(matmul, 40, 2, operands=(jnp.eye(40),))
