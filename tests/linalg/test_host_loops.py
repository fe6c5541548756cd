"""Host-driven solver loops (:mod:`jaxland.linalg.loops`): the same numbers as the compiled loops.

References are independent of the code under test: ``jnp.linalg.eigh`` of the
dense Hessian (``jax.hessian``), JAX's own ``lobpcg_standard`` and matfree's
Lanczos tridiagonalisation. Host and compiled loops must agree to float
rounding. A tiny CNN (the ``cnn`` fixture), float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.sparse.linalg import lobpcg_standard
from matfree import decomp

import jaxland as jl
from jaxland import curvature as cv
from jaxland.errors import ConfigError
from jaxland.linalg import loops, stochastic
from jaxland.linalg.solvers import lobpcg


def _op(cnn):
    model, w, x, y, _ = cnn
    return jl.hessian_operator(model, w, x, y)


def _same_pairs(a, b, rtol=1e-8):
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=rtol, atol=1e-12)
    overlap = np.abs(np.sum(np.asarray(a.eigenvectors) * np.asarray(b.eigenvectors), axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
    assert int(a.num_matvecs) == int(b.num_matvecs) and bool(a.converged) == bool(b.converged)


def test_auto_loop_is_host_for_a_convolution_on_cpu_and_compiled_otherwise(x64, cnn, mlp):
    assert cv.operators.loop_mode(_op(cnn), "auto") == ("host" if jax.default_backend() == "cpu" else "compiled")
    model, w, x, y, _ = mlp
    assert cv.operators.loop_mode(jl.hessian_operator(model, w, x, y), "auto") == "compiled"
    assert cv.operators.loop_mode(_op(cnn), "compiled") == "compiled"
    with pytest.raises(ConfigError, match="loop must be one of"):
        cv.eigenpairs(_op(cnn), 2, key=jax.random.key(0), loop="python")


@pytest.mark.parametrize("method,which", [("lanczos", "largest"), ("lanczos", "smallest"), ("block", "largest"),
                                          ("block", "smallest"), ("power", "largest"), ("lobpcg", "largest"),
                                          ("dense", "largest")])
def test_host_and_compiled_loops_agree_and_find_the_dense_spectrum(x64, cnn, method, which):
    op, H = _op(cnn), cnn[-1]
    kw = dict(key=jax.random.key(3), method=method, which=which, tol=1e-6, block_size=2, max_matvecs=200)
    if method == "power":
        kw.update(max_matvecs=4000, tol=1e-5)
    if method == "lobpcg":
        kw.update(block_size=3)
    host, comp = (cv.eigenpairs(op, 2, loop=loop, **kw) for loop in ("host", "compiled"))
    _same_pairs(host, comp)
    ev = np.linalg.eigvalsh(0.5 * (H + H.T))
    ref = ev[::-1][:2] if which == "largest" else ev[:2]
    np.testing.assert_allclose(host.eigenvalues, ref, rtol=1e-4, atol=1e-8)


def test_host_loop_compiles_its_step_once(x64, cnn):
    model, w, x, y, _ = cnn
    cv.eigenpairs(_op(cnn), 2, key=jax.random.key(0), loop="host", max_matvecs=20)
    size = loops._host_step._cache_size()
    cv.eigenpairs(jl.hessian_operator(model, w * 1.1, x, y, k=5), 2, key=jax.random.key(1), loop="host", max_matvecs=20)
    assert loops._host_step._cache_size() == size


def test_batch_of_networks_host_and_compiled_agree(x64, cnn):
    model, w, x, y, _ = cnn
    ws = jnp.stack([w, w * 0.9])
    host, comp = (jl.hessian_eigenpairs_batch(model, ws, x, y, 2, key=jax.random.key(2), tol=1e-8, loop=loop)
                  for loop in ("host", "compiled"))
    np.testing.assert_allclose(host.eigenvalues, comp.eigenvalues, rtol=1e-8)
    assert host.eigenvalues.shape == (2, 2)


def test_our_lobpcg_is_jaxs_on_a_known_spectrum(x64):
    n = 60
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (n, n), jnp.float64))
    A = (q * jnp.linspace(-1.0, 10.0, n)) @ q.T
    X = jax.random.normal(jax.random.key(1), (n, 4), jnp.float64)
    theta, U, iters = lobpcg_standard(A, X, m=40, tol=1e-10 / (20 * n))
    ours = jax.jit(lambda V: lobpcg(3, tol=1e-10, max_iters=40)(lambda R: R @ A, V))(X.T)
    np.testing.assert_allclose(ours.eigenvalues, theta[:3], rtol=1e-10)
    overlap = np.abs(np.sum(np.asarray(ours.eigenvectors) * np.asarray(U.T[:3]), axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-8)
    assert int(ours.num_matvecs) == 4 * (4 * int(iters) + 1)  # b to start, 4 b per iteration


def test_host_slq_is_matfrees_lanczos(x64):
    n = 40
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (n, n), jnp.float64))
    A = (q * jnp.linspace(-2.0, 5.0, n)) @ q.T
    g = jnp.sign(jax.random.normal(jax.random.key(1), (3, n), jnp.float64))
    nodes, weights = loops.run_host(stochastic.TridiagSteps(12), _matvec_of, A, g, batched=True)
    for i in range(3):
        _, T, *_ = decomp.tridiag_sym(12, reortho="full", materialize=True, custom_vjp=False)(lambda v: A @ v, g[i])
        theta, U = jnp.linalg.eigh(T)
        np.testing.assert_allclose(nodes[i], theta, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(weights[i], U[0] ** 2, rtol=1e-8, atol=1e-12)


def _matvec_of(A):
    """``A -> (v -> A v)``: the product the host loop rebuilds from its operand."""
    return lambda v: A @ v


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_host_and_compiled_trace_agree(x64, cnn, method):
    op, H = _op(cnn), cnn[-1]
    host, comp = (cv.trace(op, num_probes=12, key=jax.random.key(4), method=method, loop=loop, chunk_size=5)
                  for loop in ("host", "compiled"))
    np.testing.assert_allclose(host.trace, comp.trace, rtol=1e-10)
    np.testing.assert_allclose(host.samples, comp.samples, rtol=1e-9, atol=1e-12)
    assert abs(float(host.trace) - np.trace(H)) < 4 * float(host.stderr) + 1e-9


def test_host_and_compiled_density_agree(x64, cnn):
    op = _op(cnn)
    host, comp = (cv.density(op, num_probes=3, lanczos_steps=10, key=jax.random.key(5), loop=loop, chunk_size=2)
                  for loop in ("host", "compiled"))
    np.testing.assert_allclose(host.nodes, comp.nodes, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(host.weights, comp.weights, rtol=1e-6, atol=1e-10)


def test_host_chunked_products_equal_the_dense_hessian(x64, cnn):
    op, H = _op(cnn), cnn[-1]
    V = jax.random.normal(jax.random.key(6), (5, op.dim), jnp.float64)
    ref = V @ H.T
    np.testing.assert_allclose(op.matmat(V, chunk_size=2, loop="host"), ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cv.sharded_matmat(op, V, chunk_size=2, loop="host"), ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(op.dense(chunk_size=4, loop="host"), H, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_sharded_vectors_over_two_devices_host_equals_compiled(run_with_devices):
    out = run_with_devices("""
        import jax, jax.numpy as jnp, numpy as np, jaxland as jl
        from flax import nnx
        class Net(nnx.Module):
            def __init__(self, *, rngs):
                self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs); self.head = nnx.Linear(2, 3, rngs=rngs)
            def __call__(self, x):
                return self.head(nnx.relu(self.conv(x)).mean((1, 2)))
        model = jl.as_model(Net)
        w = model.init(jax.random.key(0)); x = jax.random.normal(jax.random.key(1), (6, 5, 5, 1)); y = jnp.arange(6) % 3
        op = jl.hessian_operator(model, w, x, y)
        V = jax.random.normal(jax.random.key(2), (7, op.dim))
        a, b = (jl.curvature.sharded_matmat(op, V, mesh=2, over="vectors", chunk_size=1, loop=l) for l in ("host", "compiled"))
        print(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))), float(jnp.max(jnp.abs(a - op.matmat(V))) / jnp.max(jnp.abs(b))))
    """, n=2)
    assert all(float(v) < 1e-5 for v in out.split())


def test_top_eigenpairs_of_a_plain_function_in_a_host_loop(x64):
    n = 50
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (n, n), jnp.float64))
    A = (q * jnp.linspace(0.0, 3.0, n)) @ q.T
    mv = lambda v, A: A @ v
    host = jl.top_eigenpairs(mv, n, 3, key=jax.random.key(1), operands=(A,), tol=1e-9, loop="host")
    comp = jl.top_eigenpairs(mv, n, 3, key=jax.random.key(1), operands=(A,), tol=1e-9, loop="compiled")
    _same_pairs(host, comp)
    np.testing.assert_allclose(host.eigenvalues, np.linspace(0.0, 3.0, n)[::-1][:3], rtol=1e-8)
