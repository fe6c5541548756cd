"""The host loop's stored linearisation (:mod:`jaxland.curvature.linearised`): the same products as the operator.

References are built independently of the code under test: ``jax.hessian`` for
``H_k``, per-sample gradients (``jax.jacrev``) for ``F_k``, output Jacobians and
output-space Hessians for ``G_k``; a tiny CNN in float64 on 9 images with a
prefix ``k = 7`` (so the mask matters). The host loop (which multiplies by the
stored linearisation) must agree with the compiled loop (which linearises inside
its own program) to float rounding, and the fallback (no residuals stored) too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland import curvature as cv
from jaxland.curvature import linearised
from jaxland.curvature.operators import linear_map
from jaxland.errors import ConfigError
from jaxland.linalg import loops
from jaxland.models.base import _loss_fn

K = 7


def _dense_reference(kind, model, w, x, y, k):
    """The (D, D) matrix of ``kind`` for the mean of the first ``k`` per-sample losses, from first principles."""
    x, y = x[:k], y[:k]
    if kind == "hessian":
        return jax.hessian(lambda w_: jnp.mean(model.per_sample_losses(w_, x, y)))(w)
    if kind == "fisher":
        G = jax.jacrev(lambda w_: model.per_sample_losses(w_, x, y))(w)  # (k, D) per-sample gradients
        return G.T @ G / k
    J = jax.jacrev(lambda w_: model.apply(w_, x))(w)  # (k, C, D)
    loss = _loss_fn(model.loss)
    Hout = jax.vmap(lambda o, t: jax.hessian(lambda o_: loss(o_[None], t[None])[0])(o))(model.apply(w, x), y)  # (k, C, C)
    return jnp.einsum("ncd,nce,nef->df", J, Hout, J) / k


@pytest.mark.parametrize("kind", ["hessian", "ggn", "fisher"])
def test_stored_linearisation_gives_the_dense_matrix(cnn, kind):
    model, w, x, y, _ = cnn
    with jax.enable_x64(True):
        op = cv.curvature_operator(model, w, x, y, kind=kind, k=K)
        A = np.asarray(_dense_reference(kind, model, w, x, y, K))
        res = linearised.linearise(op)
        rows = loops.host_rows(linearised._linearised, res, jnp.eye(op.dim, dtype=op.dtype), 4)
        np.testing.assert_allclose(np.asarray(rows), A, rtol=1e-9, atol=1e-11)  # A is symmetric: rows = columns
        # and the same numbers as the per-step product from the operator
        old = loops.host_rows(linear_map, op, jnp.eye(op.dim, dtype=op.dtype), 4)
        np.testing.assert_allclose(np.asarray(rows), np.asarray(old), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(op.dense(chunk_size=1, loop="host")), A, rtol=1e-9, atol=1e-11)
        assert linearised.host_rows_product(op, op.dim, 1)[0] is linearised._linearised


@pytest.mark.parametrize("kind", ["hessian", "ggn", "fisher"])
def test_host_solvers_on_the_linearisation_match_the_compiled_loop_and_eigh(cnn, kind):
    model, w, x, y, _ = cnn
    with jax.enable_x64(True):
        op = cv.curvature_operator(model, w, x, y, kind=kind, k=K)
        assert linearised.host_product(op)[0] is linearised._linearised  # the small model's residuals fit
        assert linearised.host_product(op, 2)[1] is op  # several vectors per step: the operator
        ev = np.linalg.eigvalsh(np.asarray(_dense_reference(kind, model, w, x, y, K)))
        kw = dict(key=jax.random.key(4), tol=1e-8, max_matvecs=29)
        host, comp = (cv.eigenpairs(op, 3, loop=loop, **kw) for loop in ("host", "compiled"))
        np.testing.assert_allclose(host.eigenvalues, comp.eigenvalues, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(host.eigenvalues, ev[::-1][:3], rtol=1e-7, atol=1e-10)
        assert int(host.num_matvecs) == int(comp.num_matvecs)
        blk = cv.eigenpairs(op, 2, method="lobpcg", block_size=3, loop="host", key=jax.random.key(5), tol=1e-7,
                            max_matvecs=400)
        np.testing.assert_allclose(blk.eigenvalues, ev[::-1][:2], rtol=1e-6, atol=1e-10)
        t_host, t_comp = (cv.trace(op, num_probes=12, key=jax.random.key(6), chunk_size=1, loop=loop)
                          for loop in ("host", "compiled"))
        np.testing.assert_allclose(float(t_host.trace), float(t_comp.trace), rtol=1e-10)
        d_host, d_comp = (cv.density(op, num_probes=3, lanczos_steps=6, key=jax.random.key(7), chunk_size=1, loop=loop)
                          for loop in ("host", "compiled"))
        np.testing.assert_allclose(d_host.nodes, d_comp.nodes, rtol=1e-8, atol=1e-11)
        np.testing.assert_allclose(d_host.weights, d_comp.weights, rtol=1e-8, atol=1e-11)


def test_over_budget_residuals_fall_back_to_the_operator_with_the_same_numbers(cnn, monkeypatch):
    model, w, x, y, _ = cnn
    with jax.enable_x64(True):
        op = jl.hessian_operator(model, w, x, y, k=K)
        assert linearised.residual_bytes(op) > 0
        make, operand, make_rows = linearised.host_product(op, residual_budget=0)
        assert make is linear_map and operand is op
        stored = cv.eigenpairs(op, 2, key=jax.random.key(1), tol=1e-8, loop="host")
        monkeypatch.setattr(linearised, "RESIDUAL_SHARE", 0.0)
        assert linearised.host_product(op)[1] is op
        fallback = cv.eigenpairs(op, 2, key=jax.random.key(1), tol=1e-8, loop="host")
        np.testing.assert_allclose(stored.eigenvalues, fallback.eigenvalues, rtol=1e-10)
        monkeypatch.setattr(linearised, "RESIDUAL_SHARE", 1.0)
        monkeypatch.setattr(linearised, "RESIDUAL_MAX_BYTES", linearised.residual_bytes(op) - 1)  # the absolute cap
        assert linearised.host_product(op)[1] is op
        # one chunk of rows: the linearisation would not pay, the operator is kept
        assert linearised.host_rows_product(op, 4, 4)[1] is op
        with pytest.raises(ConfigError, match="residual_budget"):
            linearised.host_product(op, residual_budget=-1)


def test_one_compiled_step_serves_every_solve(cnn):
    model, w, x, y, _ = cnn
    with jax.enable_x64(True):
        op = jl.hessian_operator(model, w, x, y)
        a, b = linearised.linearise(op), linearised.linearise(op.at_params(w + 0.1))
        # the static part (the linear program) is the one recorded when linearise was traced
        assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
        V = jnp.ones((2, op.dim), op.dtype)
        loops.host_rows(linearised._linearised, a, V, 1)
        size = loops._host_chunk._cache_size()
        loops.host_rows(linearised._linearised, b, V, 1)
        assert loops._host_chunk._cache_size() == size
