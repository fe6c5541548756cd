"""Curvature operators (Hessian, GGN, empirical Fisher) against dense references built independently.

References: ``jax.hessian`` of the mean loss on the sliced data; the GGN from
``jax.jacobian`` of the outputs and ``jax.hessian`` of each sample's loss in
output space; the Fisher from ``jax.jacobian`` of the per-sample losses;
spectra from ``jnp.linalg.eigh`` of those matrices. Float64 throughout.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxland as jl
from jaxland import curvature as cv
from jaxland.curvature import eigen as curvature_eigen
from jaxland.curvature import operators, spectrum

N, K = 48, 29
# one setting per estimator, shared by the tests, so each program compiles once per kind
EIG = dict(tol=1e-10)
TRACE = dict(num_probes=30)
DENSITY = dict(num_probes=24, lanczos_steps=16)


def _logcosh(outputs, y):
    """A loss callable of the protocol that is neither of the named ones (convex in the outputs)."""
    return jnp.sum(jnp.log(jnp.cosh(outputs - y)), axis=-1)


# the per-sample losses, written out here rather than taken from jaxland
LOSS = {"cross_entropy": optax.softmax_cross_entropy_with_integer_labels,
        "mse": lambda o, t: jnp.mean((o - t) ** 2, axis=-1), _logcosh: _logcosh}


@pytest.fixture(scope="module")
def problem():
    """A tanh MLP 5-7-4-3 (89 parameters) in float64, N samples, and labels for cross-entropy."""
    with jax.enable_x64(True):
        model = jl.MLPConfig((5, 7, 4, 3), activation="tanh")
        w = model.init(jax.random.key(0)).astype(jnp.float64) * 1.5
        x = jax.random.normal(jax.random.key(1), (N, 5), jnp.float64)
        y = jnp.arange(N) % 3
        yield model, w, x, y


@functools.partial(jax.jit, static_argnums=(0, 4))
def _references(model, w, x, y, k):
    """(H, G, F) of L_k at w, each built without the code under test (jitted: op by op, jacfwd takes seconds)."""
    xs, ys = x[:k], y[:k]
    loss = LOSS[model.loss]
    H = jax.hessian(lambda w_: jnp.mean(loss(model.apply(w_, xs), ys)))(w)
    J = jax.jacobian(lambda w_: model.apply(w_, xs))(w)  # (k, C, D)
    out = model.apply(w, xs)
    Hout = jax.vmap(jax.hessian(lambda o, t: loss(o[None], t[None])[0]))(out, ys)  # (k, C, C)
    G = jnp.einsum("ncd,nce,nef->df", J, Hout, J) / k
    g = jax.jacobian(lambda w_: loss(model.apply(w_, xs), ys))(w)  # (k, D): per-sample gradients
    F = g.T @ g / k
    return {"hessian": H, "ggn": G, "fisher": F}


@pytest.mark.parametrize("k", [None, K])
def test_each_operator_equals_its_dense_reference(x64, problem, k):
    model, w, x, y = problem
    refs = _references(model, w, x, y, N if k is None else k)
    v = jax.random.normal(jax.random.key(2), w.shape, jnp.float64)
    V = jax.random.normal(jax.random.key(3), (4, w.size), jnp.float64)
    for kind in cv.KINDS:
        op = cv.curvature_operator(model, w, x, y, kind=kind, k=k)
        A = np.asarray(refs[kind])
        scale = np.abs(A).max()
        np.testing.assert_allclose(op.dense(), A, rtol=0, atol=1e-12 * scale, err_msg=kind)
        np.testing.assert_allclose(op @ v, A @ v, rtol=0, atol=1e-12 * scale * np.abs(v).sum(), err_msg=kind)
        np.testing.assert_allclose(op.matmat(V), V @ A, rtol=0, atol=1e-11 * scale * np.abs(V).sum(), err_msg=kind)
        np.testing.assert_allclose(op.matmat(V, chunk_size=3), V @ A, rtol=0, atol=1e-11 * scale * np.abs(V).sum(), err_msg=kind)
        np.testing.assert_allclose(op @ V.T, A @ V.T, rtol=0, atol=1e-11 * scale * np.abs(V).sum(), err_msg=kind)
        assert op.shape == (w.size, w.size) and op.dim == w.size and op.dtype == jnp.float64 and op.kind == kind
    # the three differ on this model (tanh: H has output curvature terms; F is not G): the comparisons can fail
    assert np.abs(refs["hessian"] - refs["ggn"]).max() > 1e-3 * np.abs(refs["ggn"]).max()
    assert np.abs(refs["fisher"] - refs["ggn"]).max() > 1e-3 * np.abs(refs["ggn"]).max()


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", _logcosh], ids=["cross_entropy", "mse", "callable"])
def test_ggn_is_jacobian_sandwich_and_psd_for_every_loss(x64, problem, loss):
    model, w, x, _ = problem
    model = jl.MLPConfig(model.sizes, activation="tanh", loss=loss)
    y = jnp.arange(N) % 3 if loss == "cross_entropy" else jax.random.normal(jax.random.key(4), (N, 3), jnp.float64)
    refs = _references(model, w, x, y, K)
    G = np.asarray(cv.ggn_operator(model, w, x, y, k=K).dense())
    np.testing.assert_allclose(G, refs["ggn"], rtol=0, atol=1e-12 * np.abs(refs["ggn"]).max())
    evals = np.linalg.eigvalsh(G)
    assert evals.min() >= -1e-10 * evals.max()
    assert np.linalg.eigvalsh(np.asarray(refs["hessian"])).min() < -1e-3 * evals.max()  # H is not PSD here
    F = np.asarray(cv.fisher_operator(model, w, x, y, k=K).dense())
    assert np.linalg.eigvalsh(F).min() >= -1e-10 * np.abs(F).max()


def test_ggn_equals_hessian_for_a_linear_model_with_mse(x64):
    params = {"W": jax.random.normal(jax.random.key(0), (6, 2), jnp.float64), "b": jnp.zeros(2, jnp.float64)}
    model = jl.as_model(lambda p, x: x @ p["W"] + p["b"], params=params, loss="mse", name="linear")
    w = model.initial_params
    x = jax.random.normal(jax.random.key(1), (20, 6), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (20, 2), jnp.float64)
    H = jax.hessian(lambda w_: jnp.mean(model.per_sample_losses(w_, x[:13], y[:13])))(w)
    G = cv.ggn_operator(model, w, x, y, k=13).dense()
    np.testing.assert_allclose(G, H, rtol=0, atol=1e-13 * np.abs(H).max())
    np.testing.assert_allclose(cv.hessian_operator(model, w, x, y, k=13).dense(), H, rtol=0, atol=1e-13 * np.abs(H).max())


def test_estimators_on_ggn_and_fisher_agree_with_eigh(x64, problem):
    model, w, x, y = problem
    refs = _references(model, w, x, y, K)
    for kind in ("ggn", "fisher"):
        op = cv.curvature_operator(model, w, x, y, kind=kind, k=K)
        evals, evecs = np.linalg.eigh(np.asarray(refs[kind]))
        top = cv.eigenpairs(op, 4, key=jax.random.key(0), **EIG)
        assert bool(top.converged)
        np.testing.assert_allclose(top.eigenvalues, evals[::-1][:4], rtol=1e-9)
        overlap = np.abs(np.sum(np.asarray(top.eigenvectors) * evecs[:, ::-1][:, :4].T, axis=1))
        np.testing.assert_allclose(overlap, 1.0, atol=1e-7)
        # trace: Hutch++ within 4 standard errors (the rank of these is above the sketch); density moments likewise
        tr = cv.trace(op, key=jax.random.key(2), **TRACE)
        assert 0 < float(tr.stderr) < 0.2 * evals.sum()
        assert abs(float(tr.trace) - evals.sum()) < 4 * float(tr.stderr)
        dn = cv.density(op, key=jax.random.key(3), **DENSITY)
        for p in (1, 2):
            est, se = cv.density_moments(dn, p)
            assert 0 < se and abs(est - np.mean(evals**p)) < 4 * se, (kind, p, est, np.mean(evals**p), se)
        assert float(jnp.max(dn.nodes)) == pytest.approx(evals[-1], rel=1e-6)
    # both ends of a PSD operator with a null space (rank <= K < D): lambda_min ~ 0
    ext = cv.extremes(op, key=jax.random.key(1), tol=1e-8, max_matvecs=op.dim - 1)
    assert ext.lambda_max == pytest.approx(evals[-1], rel=1e-8)
    assert abs(ext.lambda_min - evals[0]) < 1e-9 * evals[-1]
    assert ext.kind == "fisher" and ext.info.num_matvecs == int(ext.top.num_matvecs) + int(ext.bottom.num_matvecs)
    # the Fisher of k samples has rank <= k: a Hutch++ sketch of more than k vectors captures it whole (no variance)
    op = cv.fisher_operator(model, w, x, y, k=8)
    exact = np.trace(np.asarray(_references(model, w, x, y, 8)["fisher"]))
    tr = cv.trace(op, key=jax.random.key(4), **TRACE)
    assert float(tr.trace) == pytest.approx(exact, rel=1e-10) and float(tr.stderr) < 1e-10 * exact


def test_weights_data_and_k_are_inputs_so_nothing_recompiles(x64, problem):
    model, w, x, y = problem
    v = jax.random.normal(jax.random.key(5), w.shape, jnp.float64)
    for kind in cv.KINDS:
        op = cv.curvature_operator(model, w, x, y, kind=kind, k=10)
        op @ v, op.matmat(v[None])
        solves = kind == "ggn"  # the estimators' programs take the operator the same way for every kind
        if solves:
            cv.eigenpairs(op, 4, key=jax.random.key(0), **EIG)
            cv.trace(op, key=jax.random.key(0), **TRACE)
        # the dataset is an input of the compiled program, not a constant folded into it
        closed = jax.make_jaxpr(operators._matvec)(op, v)
        consts = closed.consts + [c for e in closed.eqns if "jaxpr" in e.params for c in e.params["jaxpr"].consts]
        assert all(np.size(c) < x.size for c in consts)
        sizes = [f._cache_size() for f in (operators._matvec, operators._matmat, curvature_eigen._eig_jit, spectrum._trace_jit)]
        other = cv.curvature_operator(model, w * 1.01, x + 0.1, y, kind=kind, k=37)
        got = other @ v
        other.matmat(v[None])
        if solves:
            cv.eigenpairs(other, 4, key=jax.random.key(1), **EIG)
            cv.trace(other, key=jax.random.key(1), **TRACE)
        assert [f._cache_size() for f in (operators._matvec, operators._matmat, curvature_eigen._eig_jit,
                                          spectrum._trace_jit)] == sizes, kind
        ref = _references(model, w * 1.01, x + 0.1, y, 37)[kind] @ v
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    # an operator crosses a user's jit as an argument, and gives the same numbers there
    op = cv.ggn_operator(model, w, x, y, k=10)
    np.testing.assert_allclose(jax.jit(lambda o, u: o @ u)(op, v), op @ v, rtol=1e-13)


def test_hvp_takes_the_vector_after_the_data(x64, problem):
    model, w, x, y = problem
    v = jax.random.normal(jax.random.key(6), w.shape, jnp.float64)
    H = _references(model, w, x, y, 11)["hessian"]
    np.testing.assert_allclose(jl.hvp(model, w, x, y, v, k=11), H @ v, rtol=0, atol=1e-12 * np.abs(H @ v).max())
    np.testing.assert_allclose(cv.hvp_batch(model, w, x, y, jnp.stack([v, -v]), k=11), jnp.stack([H @ v, -H @ v]),
                               rtol=0, atol=1e-12 * np.abs(H @ v).max())
    with pytest.raises(jl.ConfigError, match="the vector comes after the data"):
        jl.hvp(model, w, v, x, y)
    with pytest.raises(TypeError):
        jl.hvp(model, w, x, y, v, 11)  # k is keyword-only


def test_bad_input_is_a_config_error(x64, problem):
    model, w, x, y = problem
    op = cv.hessian_operator(model, w, x, y)
    cases = [
        (lambda: cv.hessian_operator(model, w, x, y, k=0), r"k=0 must be in \[1, 48\]"),
        (lambda: cv.ggn_operator(model, w, x, y, k=N + 1), r"k=49 must be in \[1, 48\]"),
        (lambda: cv.fisher_operator(model, w, x, y, k=2.5), "k must be an integer"),
        (lambda: cv.curvature_operator(model, w, x, y, kind="kfac"), "kind must be one of"),
        (lambda: cv.fisher_operator(model, w[:-1], x, y), "w must be a flat parameter vector"),
        (lambda: op @ w[:-1], r"v must have shape \(89,\)"),
        (lambda: op @ w.astype(jnp.float32), "dtype"),
        (lambda: op.matmat(w), r"V must have shape \(m, 89\)"),
        (lambda: op @ jnp.ones((88, 2)), "v.T"),
        (lambda: cv.eigenpairs(op, 2), r"pass key=jax.random.key\(0\)"),
        (lambda: cv.trace(op, num_probes=9), r"pass key=jax.random.key\(0\)"),
        (lambda: cv.density(op, num_probes=2, lanczos_steps=5), r"pass key=jax.random.key\(0\)"),
        (lambda: cv.extremes(op), r"pass key=jax.random.key\(0\)"),
        (lambda: jl.hessian_eigenpairs(model, w, x, y, 2), r"pass key=jax.random.key\(0\)"),
        (lambda: jl.hessian_eigenpairs_batch(model, w[None], x, y, 2), r"pass key=jax.random.key\(0\)"),
        (lambda: cv.eigenpairs(lambda v: v, 2, key=jax.random.key(0)), "must be a curvature operator"),
        (lambda: cv.trace(op, num_probes=9, key=jax.random.key(0), chunk_size=0), "chunk_size"),
        (lambda: cv.hessian_operator(jl.MLPConfig((784, 16, 10)), jnp.zeros(12730), jnp.zeros((2, 784)),
                                     jnp.zeros(2, jnp.int32)).dense(), "dense"),
    ]
    for call, match in cases:
        with pytest.raises(jl.ConfigError, match=match):
            call()


def test_ggn_refuses_a_model_whose_loss_of_outputs_is_unknown(x64, problem):
    model, w, x, y = problem

    class OwnLosses(jl.MLPConfig):
        def per_sample_losses(self, w, x, y):
            return super().per_sample_losses(w, x, y) ** 2

    other = OwnLosses(model.sizes, activation="tanh")
    with pytest.raises(jl.ConfigError, match="defines its own per_sample_losses"):
        cv.ggn_operator(other, w, x, y)
    # the Hessian and the Fisher need only per_sample_losses
    g = jax.jit(jax.jacobian(lambda w_: other.per_sample_losses(w_, x, y)))(w)
    np.testing.assert_allclose(cv.fisher_operator(other, w, x, y).dense(), g.T @ g / N, rtol=0, atol=1e-12 * np.abs(g.T @ g / N).max())


def test_old_keyword_spellings_still_work(x64, problem):
    model, w, x, y = problem
    key = jax.random.key(0)
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        a = jl.hessian_trace(model, w, x, y, key=key, batch_size=3, **TRACE)
    np.testing.assert_allclose(a.trace, jl.hessian_trace(model, w, x, y, key=key, chunk_size=3, **TRACE).trace, rtol=1e-12)
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        jl.spectral_density(model, w, x, y, key=key, batch_size=2, **DENSITY)
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        r = jl.hessian_eigenpairs_batch(model, jnp.stack([w, 0.9 * w]), x, y, 2, key=key, batch_size=1, **EIG)
    evals = np.linalg.eigvalsh(np.asarray(_references(model, w, x, y, N)["hessian"]))
    np.testing.assert_allclose(r.eigenvalues[0], evals[::-1][:2], rtol=1e-9)


def test_every_result_carries_info(x64, problem):
    model, w, x, y = problem
    op = cv.ggn_operator(model, w, x, y, k=K)
    eig = cv.eigenpairs(op, 4, key=jax.random.key(0), **EIG)
    assert eig.info == (4, op.dim, int(eig.num_matvecs), bool(eig.converged), float(jnp.max(eig.relative_residuals)))
    batch = jl.hessian_eigenpairs_batch(model, jnp.stack([w, 0.9 * w]), x, y, 2, key=jax.random.key(0), **EIG)
    assert batch.info.d == 2 and batch.info.num_matvecs.shape == (2,) and batch.info.converged.all()
    tr = cv.trace(op, key=jax.random.key(1), **TRACE)
    assert tr.info == ("hutch++", "ggn", 30, 10, 10) and tr.info.num_probes == tr.samples.shape[0]
    dn = cv.density(op, key=jax.random.key(2), num_points=50, **DENSITY)
    assert dn.info == ("ggn", op.dim, 24, 16, 24 * 16, float(dn.sigma), 50)
    ch = cv.choose_d(eig.eigenvalues, dn, share=0.5)
    assert ch.info.target == 0.5 and ch.info.num_eigenvalues == 4 and ch.info.positive_trace == ch.positive_trace
