"""Fast paths for every model: host-driven solver loops and the first layer once per direction.

References are independent of the code under test: ``jnp.linalg.eigh`` of the
dense Hessian (``jax.hessian``), JAX's own ``lobpcg_standard``, matfree's
Lanczos tridiagonalisation, the per-sample losses evaluated directly, and the
generic Monte Carlo kernel (a plain forward pass per draw). Host and compiled
loops must agree to float rounding. Tiny models, float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.experimental.sparse.linalg import lobpcg_standard
from matfree import decomp

import jaxland as jl
from jaxland import curvature as cv
from jaxland.errors import ConfigError
from jaxland.landscape import kernels
from jaxland.linalg import loops, stochastic
from jaxland.linalg.solvers import lobpcg
from jaxland.models.first_layer import split_first_layer


class TinyCNN(nnx.Module):
    """conv 3x3 (2 channels) -> relu -> mean pool -> dense: a convolution in the loss, D = 29."""

    def __init__(self, *, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
        self.head = nnx.Linear(2, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.conv(x)).mean((1, 2)))


@pytest.fixture(scope="module")
def cnn():
    """(model, w, x, y, H): the tiny CNN in float64 on 9 images, with its dense Hessian."""
    with jax.enable_x64(True):
        model = jl.as_model(TinyCNN, name="tiny-cnn")
        w = model.init(jax.random.key(0)).astype(jnp.float64)
        x = jax.random.normal(jax.random.key(1), (9, 5, 5, 1), jnp.float64)
        y = jnp.arange(9) % 3
        H = jax.jit(jax.hessian(lambda w_: jl.mean_loss(model, w_, x, y)))(w)
        yield model, w, x, y, np.asarray(H)


def _op(cnn):
    model, w, x, y, _ = cnn
    return jl.hessian_operator(model, w, x, y)


def _same_pairs(a, b, rtol=1e-8):
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=rtol, atol=1e-12)
    overlap = np.abs(np.sum(np.asarray(a.eigenvectors) * np.asarray(b.eigenvectors), axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
    assert int(a.num_matvecs) == int(b.num_matvecs) and bool(a.converged) == bool(b.converged)


# ----------------------------------------------------------------------------- host loops


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


# ----------------------------------------------------------------------------- the first layer once per direction


class Scaled(nnx.Module):
    """The input scaled elementwise by a weight before the first Dense: no linear first layer to split off."""

    def __init__(self, *, rngs):
        self.scale = nnx.Param(jnp.ones((4,)))
        self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.dense(x * self.scale[...])


class Tokens(nnx.Module):
    """An embedding of integer tokens, mean over positions, dense head."""

    def __init__(self, *, rngs):
        self.embed = nnx.Embed(11, 4, rngs=rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.tanh(self.embed(x)).mean(1))


def _linen_style(p, x):
    """A pure function with a parameter pytree (Linen's apply): normalised input, conv, dense."""
    h = jax.lax.conv_general_dilated((x - 0.5) / 2.0, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(h + p["b"]).mean((1, 2)) @ p["w"]


ARCHS = {
    "lenet5": lambda: jl.build_model("lenet5", (12, 12, 1), 3),
    "resnet": lambda: jl.build_model("resnet", (4, 4, 1), 3, depth=8, width=1),
    "vit": lambda: jl.build_model("vit", (4, 4, 1), 3, patch_size=2, dim=4, depth=1, heads=2, mlp_dim=4),
    "pure": lambda: jl.as_model(_linen_style, params={"k": jnp.full((3, 3, 1, 2), 0.3), "b": jnp.ones(2) * 0.1,
                                                     "w": jnp.ones((2, 3)) * 0.2}, input_shape=(4, 4, 1)),
}
PRIMITIVE = {"lenet5": "conv_general_dilated", "resnet": "conv_general_dilated", "vit": "conv_general_dilated",
             "pure": "conv_general_dilated"}


def _arch_problem(name, n=12):
    model = ARCHS[name]()
    w = (model.init(jax.random.key(0)) if name != "pure" else model.initial_params).astype(jnp.float64)
    x = jax.random.normal(jax.random.key(1), (n, *model.input_shape), jnp.float64)
    return model, w, x, jnp.arange(n) % 3


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_first_layer_splits_off_exactly_and_linearly(x64, name):
    model, w, x, y = _arch_problem(name)
    split = model.first_layer(w, x, y)
    assert split is not None and split.primitive == PRIMITIVE[name]
    # op by op: the same operations in the same order, so the same bits
    np.testing.assert_array_equal(split.rest(w, x, y, split.first(w, x, y)), model.per_sample_losses(w, x, y))
    p = jax.random.normal(jax.random.key(2), w.shape, jnp.float64)
    np.testing.assert_allclose(split.first(w + 3 * p, x, y), split.first(w, x, y) + 3 * split.first(p, x, y),
                               rtol=1e-12, atol=1e-12)


def test_first_layer_of_an_embedding_and_none_for_a_weight_on_the_input(x64):
    model = jl.as_model(Tokens)
    w = model.init(jax.random.key(0)).astype(jnp.float64)
    x, y = jax.random.randint(jax.random.key(1), (5, 6), 0, 11), jnp.arange(5) % 3
    split = model.first_layer(w, x, y)
    assert split.primitive == "gather" and split.shape == (5, 6, 4)
    np.testing.assert_array_equal(split.rest(w, x, y, split.first(w, x, y)), model.per_sample_losses(w, x, y))
    scaled = jl.as_model(Scaled)
    assert scaled.first_layer(scaled.init(jax.random.key(0)), jnp.ones((2, 4)), jnp.zeros(2, jnp.int32)) is None
    assert split_first_layer(lambda w_, x_, y_: jnp.sum(w_) + 0 * x_[:, 0], jnp.ones(3), jnp.ones((2, 1)), y[:2]) is None


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_first_layer_kernel_gives_the_generic_kernels_delta_curve(x64, name):
    model, w, x, y = _arch_problem(name, n=16)
    sub = jl.Subspace(w, jax.random.normal(jax.random.key(3), (3, model.num_params), jnp.float64) * 0.05)
    kw = dict(sigma=1.0, num_draws=6, key=jax.random.key(4), samples_per_k=4, sample_block=8)
    fast = jl.delta_monte_carlo(model, sub, x, y, fast_kernel="first_layer", **kw)
    plain = jl.delta_monte_carlo(model, sub, x, y, fast_kernel=False, **kw)
    assert fast.info.kernel == "first_layer" and plain.info.kernel == "generic"
    np.testing.assert_allclose(fast.delta, plain.delta, rtol=1e-10)
    np.testing.assert_allclose(fast.stderr, plain.stderr, rtol=1e-9)
    th = jl.draw_thetas(jax.random.key(5), 4, 3, 1.0, jnp.float64)
    direct = jax.vmap(lambda t: model.per_sample_losses(w + t @ sub.directions, x, y))(th)
    got = jl.per_sample_loss_matrix(model, sub, th, x, y, sample_block=8, fast_kernel="first_layer")
    np.testing.assert_allclose(got, direct, rtol=1e-10)


def test_first_layer_kernel_only_where_it_saves_arithmetic(x64, cnn):
    model, w, x, y, _ = cnn  # its first layer: a 3x3 convolution of one channel, 9 multiply-adds per output
    for d, kernel in ((8, "first_layer"), (9, "generic")):
        sub = jl.Subspace(w, jax.random.normal(jax.random.key(d), (d, model.num_params), jnp.float64) * 0.05)
        kw = dict(sigma=1.0, num_draws=4, key=jax.random.key(4), samples_per_k=3)
        assert jl.delta_monte_carlo(model, sub, x, y, **kw).info.kernel == kernel
    forced = jl.delta_monte_carlo(model, sub, x, y, fast_kernel="first_layer", **kw)
    plain = jl.delta_monte_carlo(model, sub, x, y, fast_kernel=False, **kw)
    assert forced.info.kernel == "first_layer"
    np.testing.assert_allclose(forced.delta, plain.delta, rtol=1e-10)
    with pytest.raises(ConfigError, match="fast_kernel"):
        jl.delta_monte_carlo(model, sub, x, y, fast_kernel="fast", **kw)
    split = model.first_layer(w, x, y)
    assert split.fan_in == 9 and split.share == pytest.approx(25 * 2 * 9 / (25 * 2 * 9 + 2 * 3))  # conv, then the head


def test_first_layer_rule_on_the_shipped_architectures(x64):
    """LeNet-5's 5x5 first convolution saves arithmetic at d = 10; a ViT's patch embedding and 3x3 stems do not."""
    want = {"lenet5": "first_layer", "vit": None, "resnet": None}
    for name, kernel in want.items():
        model = jl.build_model(name, (28, 28, 1), 10)
        w = jax.ShapeDtypeStruct((model.num_params,), jnp.float32)
        sub = jl.Subspace(w, jax.ShapeDtypeStruct((10, model.num_params), jnp.float32))
        x, y = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32)
        assert kernels.fast_kernel(model, sub, x, y) == kernel, name


def test_default_blocks_map_the_draws_of_a_conv_net_one_at_a_time(x64, cnn, mlp):
    model, w, x, y, _ = cnn
    sub = jl.Subspace(w, jnp.ones((2, model.num_params), jnp.float64))
    expect = (kernels.CONV_SAMPLE_BLOCK, kernels.CONV_DRAW_CHUNK) if jax.default_backend() == "cpu" else (512, 16)
    assert kernels.default_blocks(model, "first_layer", sub, x, y) == expect
    model, w, x, y, sub = mlp
    assert kernels.default_blocks(model, "model", sub, x, y) == (kernels.DEFAULT_SAMPLE_BLOCK, kernels.DEFAULT_DRAW_CHUNK)
