"""Every number jaxland returns is the number asked for; bad input is a clear jaxland error.

One test per finding of the adversarial passes, each against an independent
computation (numpy, a dense ``jax.hessian``, a fresh estimate on the data
actually used, a hand-built mean over permutations) or asserting a
:class:`jaxland.ConfigError` whose message names the argument.
"""

import socket
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxland as jl
from jaxland.errors import ConfigError


def _mlp(widths=(6, 5, 3), n=48, dtype=jnp.float64, seed=0):
    model = jl.MLPConfig(widths)
    w = model.init(jax.random.key(seed)).astype(dtype)
    x = jax.random.normal(jax.random.key(seed + 1), (n, widths[0]), dtype)
    y = jnp.arange(n, dtype=jnp.int32) % widths[-1]
    return model, w, x, y


def _np_losses(model, w, x, y):
    """Per-sample softmax cross-entropy in numpy from the model's outputs."""
    out = np.asarray(model.apply(w, x), np.float64)
    out = out - out.max(1, keepdims=True)
    logp = out - np.log(np.exp(out).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), np.asarray(y)]


def _np_theta_free(losses, perms, b):
    """mean over orderings of (L_{k+1} - L_k)^2, prefix means written out as in the definition."""
    out = []
    for p in perms:
        g = losses[p][: len(losses) // b * b].reshape(-1, b).mean(1)
        big_l = np.array([g[:k].mean() for k in range(1, len(g) + 1)])
        out.append((big_l[1:] - big_l[:-1]) ** 2)
    return np.mean(out, 0)


# ----------------------------------------------------------------------------- silently wrong numbers


def test_delta_split_takes_orderings_and_samples_per_k_from_the_result(x64):
    model, w, x, y = _mlp()
    sub = jl.Subspace(w, jl.random_directions(model, w, 2, key=jax.random.key(2)))
    # sigma -> 0: Delta_k is the theta-free term alone, averaged over the same orderings
    mc = jl.delta_monte_carlo(model, sub, x, y, sigma=1e-7, num_draws=16, key=jax.random.key(3), samples_per_k=4,
                              orderings=7)
    split = jl.delta_split(mc, model, w, x, y)
    want = _np_theta_free(_np_losses(model, w, x, y), np.asarray(mc.info.orderings), 4)
    np.testing.assert_allclose(split.theta_free, want, rtol=1e-9)
    np.testing.assert_allclose(split.theta_free_fraction, 1.0, atol=1e-4)
    assert np.all(np.abs(split.rest) <= 4 * split.rest_stderr + 1e-12 * split.delta)
    assert split.info["num_orderings"] == 7 and split.info["samples_per_k"] == 4
    # the caller's samples_per_k must agree with the result's
    with pytest.raises(ConfigError, match=r"samples_per_k=3 contradicts .*samples_per_k=4"):
        jl.delta_split(mc, model, w, x, y, samples_per_k=3)
    # orderings that were averaged over but not recorded cannot be rebuilt
    lost = mc._replace(info=mc.info._replace(orderings=None))
    with pytest.raises(ConfigError, match="7 random orderings that it does not record"):
        jl.delta_split(lost, model, w, x, y)
    with pytest.raises(ConfigError, match="N=48 samples but x has 40"):
        jl.delta_split(mc, model, w, x[:40], y[:40])


def test_forecast_refuses_zeros_and_warns_on_a_poor_fit():
    k = np.arange(1, 101, dtype=float)
    true = k**-2.0
    se = 0.05 * true
    d = true + se * np.random.default_rng(0).standard_normal(k.size)
    clean = jl.forecast_sufficient_k((k, d), 1e-5, stderr=se)
    assert clean.lower <= jl.sample_size.power_law_k(0.0, 2.0, 1e-5) <= clean.upper  # truth 317
    zeros = d.copy()
    zeros[-10:] = 0.0
    for kw in ({"stderr": se}, {}):
        with pytest.raises(ConfigError, match=r"10 value\(s\) exactly 0 \(first at k=91\)"):
            jl.forecast_sufficient_k((k, zeros), 1e-5, **kw)
    bent = true * np.where(k > 60, 3.0, 1.0)  # a step in the tail: no power law explains it within 5%
    with pytest.warns(RuntimeWarning, match="fits the tail .* poorly: reduced chi-square"):
        jl.forecast_sufficient_k((k, bent), 1e-5, stderr=se)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jl.forecast_sufficient_k((k, d), 1e-5, stderr=se)  # a good fit does not warn


def test_accuracy_checks_its_labels():
    model, w, x, y = _mlp(dtype=jnp.float32)
    want = np.mean(np.argmax(np.asarray(model.apply(w, x)), 1) == np.asarray(y))
    assert float(jl.accuracy(model, w, x, y)) == pytest.approx(want)
    assert float(jl.accuracy(model, w, np.asarray(x), np.asarray(y).tolist())) == pytest.approx(want)
    for bad, msg in [(y[:, None], r"labels y of shape \(48,\)"), (y + 0.5, r"labels y of shape \(48,\)"),
                     (jax.nn.one_hot(y, 3), "one-hot"), (y + 3, r"labels y must lie in \[0, 3\)"),
                     (y[:10], r"labels y of shape \(48,\)")]:
        with pytest.raises(ConfigError, match=msg):
            jl.accuracy(model, w, x, bad)


def test_mean_loss_checks_a_concrete_k_and_clamps_a_traced_one(x64):
    model, w, x, y = _mlp(n=10)
    losses = _np_losses(model, w, x, y)
    for k in (15, 2.5, 0, -3, True, np.float64(3.0), jnp.ones(2, int)):
        with pytest.raises(ConfigError, match=r"^k"):
            jl.mean_loss(model, w, x, y, k)
    assert float(jl.mean_loss(model, w, x, y, 4)) == pytest.approx(losses[:4].mean(), rel=1e-12)
    traced = jax.jit(lambda k: jl.mean_loss(model, w, x, y, k))
    assert float(traced(15)) == pytest.approx(losses.mean(), rel=1e-12)  # k > N: all N samples, not N/k of them
    assert float(traced(-3)) == pytest.approx(losses[0], rel=1e-12)  # k < 1: the first sample
    v = jax.random.normal(jax.random.key(5), w.shape, w.dtype)
    mean_of = lambda m: (lambda w_: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(model.apply(w_, x[:m]), y[:m])))
    full, first = (jax.jit(jax.hessian(mean_of(m)))(w) @ v for m in (10, 1))
    hvp = jax.jit(lambda k: jl.hvp(model, w, x=x, y=y, v=v, k=k))
    np.testing.assert_allclose(hvp(15), full, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hvp(0), first, rtol=1e-9, atol=1e-12)
    value, grad = jax.jit(lambda k: jl.loss_and_grad(model, w, x, y, k=k))(99)
    assert float(value) == pytest.approx(losses.mean(), rel=1e-12)
    np.testing.assert_allclose(grad, jax.grad(mean_of(10))(w), rtol=1e-9, atol=1e-12)
    with pytest.raises(ConfigError, match=r"k=11 must be in \[1, 10\]"):
        jl.hvp(model, w, x=x, y=y, v=v, k=11)


def test_a_samples_per_k_that_does_not_divide_n_is_recorded_and_warned(x64):
    model, w, x, y = _mlp(n=119)
    sub = jl.Subspace(w, jl.random_directions(model, w, 2, key=jax.random.key(2)))
    kw = dict(sigma=0.5, num_draws=8, key=jax.random.key(3), samples_per_k=20)
    with pytest.warns(RuntimeWarning, match=r"samples_per_k=20 does not divide the 119 samples.*last 19") as rec:
        res = jl.delta_monte_carlo(model, sub, x, y, **kw)
    assert rec[0].filename == __file__  # points at the caller's line
    assert (res.info.num_samples, res.info.samples_used, res.info.samples_dropped) == (119, 100, 19)
    fresh = jl.delta_monte_carlo(model, sub, x[:100], y[:100], **kw)  # the samples actually used
    np.testing.assert_allclose(res.delta, fresh.delta, rtol=1e-12)
    curv = jl.subspace_curvature(model, sub, x, y)
    with pytest.warns(RuntimeWarning, match="last 19"):
        th = jl.theory_delta(curv, sigma=0.5, samples_per_k=20)
    assert (th.info.samples_used, th.info.samples_dropped) == (100, 19)
    ref = jl.theory_delta(jl.subspace_curvature(model, sub, x[:100], y[:100]), sigma=0.5, samples_per_k=20)
    np.testing.assert_allclose(th.second_order, ref.second_order, rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jl.delta_monte_carlo(model, sub, x[:100], y[:100], **kw)  # a divisor does not warn


def test_zero_directions_are_refused():
    # every parameter is 1-D: filter normalisation zeroes them all
    model = jl.as_model(lambda p, x: x * p["scale"] + p["shift"], params={"scale": jnp.ones(3), "shift": jnp.zeros(3)},
                        loss="mse")
    w = model.initial_params
    with pytest.raises(ConfigError, match="filter_normalize=False"):
        jl.random_directions(model, w, 2, key=jax.random.key(0))
    dirs = jl.random_directions(model, w, 2, key=jax.random.key(0), filter_normalize=False)
    assert bool(jnp.all(jnp.any(dirs != 0, axis=1)))
    x, y = jax.random.normal(jax.random.key(1), (8, 3)), jax.random.normal(jax.random.key(2), (8, 3))
    zero = jl.Subspace(w, dirs.at[1].set(0.0))
    with pytest.raises(ConfigError, match=r"subspace.directions row\(s\) \[1\] are all zero"):
        jl.delta_monte_carlo(model, zero, x, y, sigma=1.0, num_draws=4, key=jax.random.key(3))
    with pytest.raises(ConfigError, match="all zero"):
        jl.loss_surface(model, zero, x, y, k=[1])


@pytest.mark.parametrize("vr", ["none", "antithetic", "cv", "sobol", "cv+antithetic"])
def test_equal_draws_give_zero_variance_not_nan(x64, vr):
    model, w, x, y = _mlp(n=32)
    sub = jl.Subspace(w, jnp.full((2, w.size), 1e-3, w.dtype))
    theta_free = _np_theta_free(_np_losses(model, w, x, y), [np.arange(32)], 1)
    res = jl.delta_monte_carlo(model, sub, x, y, sigma=1e-30, num_draws=32, key=jax.random.key(0), variance_reduction=vr)
    se = np.asarray(res.stderr)
    assert np.all(np.isfinite(se)) and np.all(se >= 0) and np.all(se <= 1e-12 * np.asarray(res.delta) + 1e-300)
    np.testing.assert_allclose(res.delta, theta_free, rtol=1e-9)
    assert np.isfinite(res.info.effective_draws)


def test_initialize_distributed_second_call_is_a_no_op_and_bad_arguments_are_config_errors():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    code = f"""
        import jax, jaxland as jl
        for _ in range(3):
            jl.initialize_distributed(coordinator_address="localhost:{port}", num_processes=1, process_id=0)
        print(jax.distributed.is_initialized(), jax.process_count())
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "1"]
    for kw, msg in [({"num_processes": "two"}, "num_processes"), ({"process_id": 3, "num_processes": 2}, "process_id=3"),
                    ({"coordinator_address": "nohost"}, "coordinator_address"), ({"local_device_ids": ["a"]}, "local_device_ids"),
                    ({"cordinator_address": "h:1"}, "unknown argument")]:
        with pytest.raises(ConfigError, match=msg):
            jl.initialize_distributed(**kw)


# ----------------------------------------------------------------------------- raw tracebacks


def test_as_model_names_a_non_array_leaf():
    with pytest.raises(ConfigError, match=r"params\['name'\] is a str"):
        jl.as_model(lambda p, x: x @ p["w"], params={"w": jnp.zeros((4, 2)), "name": "layer"})
    with pytest.raises(ConfigError, match=r"params\['n'\] has dtype int32"):
        jl.as_model(lambda p, x: x @ p["w"], params={"w": jnp.zeros((4, 2)), "n": jnp.arange(3)})


def test_array_likes_are_converted_or_refused():
    model, w, x, y = _mlp(dtype=jnp.float32)
    want = _np_losses(model, w, x, y)
    np.testing.assert_allclose(jl.per_sample_losses(model, np.asarray(w), x.tolist(), y.tolist()), want, rtol=1e-5)
    assert float(jl.mean_loss(model, w.tolist(), np.asarray(x), tuple(np.asarray(y)))) == pytest.approx(want.mean(), rel=1e-5)
    with pytest.raises(ConfigError, match="x cannot be read as an array"):
        jl.mean_loss(model, w, [[1.0, 2.0], [3.0]], y)
    with pytest.raises(ConfigError, match="y must hold real numbers"):
        jl.mean_loss(model, w, x, ["a"] * 48)
    with pytest.raises(ConfigError, match="must be an array"):
        jl.hvp(model, w, x=x.tolist(), y=y, v=w)


def test_monte_carlo_beyond_memory_is_refused(monkeypatch):
    model, w, x, y = _mlp(dtype=jnp.float32)
    sub = jl.Subspace(w, jl.random_directions(model, w, 3, key=jax.random.key(2)))
    with pytest.raises(ConfigError, match=r"1000000000000 draws.*24 TB.*lower num_draws"):
        jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=10**12, key=jax.random.key(0), samples_per_k=16)
    monkeypatch.setattr(jl.memory, "available_bytes", lambda device=None: 8 * 10**9)
    with pytest.raises(ConfigError, match=r"needs about 24 GB .* but 8 GB is available"):
        jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=10**9, key=jax.random.key(0), samples_per_k=16)


def test_every_key_is_checked():
    model, w, x, y = _mlp(dtype=jnp.float32)
    sub = jl.Subspace(w, jl.random_directions(model, w, 2, key=jax.random.key(2)))
    calls = [
        lambda: jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=4, key=3),
        lambda: jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=4, key=jax.random.split(jax.random.key(0))),
        lambda: jl.landscape.draw_thetas(3, 4, 2, 1.0),
        lambda: jl.random_directions(model, w, 2, key=3),
        lambda: jl.loss_differences(model, w, x, y, orderings=2, key="0"),
        lambda: jl.delta_from_losses(jnp.ones((4, 48)), orderings=2, key=3.0),
        lambda: jl.train(model, x, y, key=3, epochs=1, progress=False),
        lambda: jl.hessian_eigenpairs(model, w, x, y, 2, key=3),
    ]
    for call in calls:
        with pytest.raises(ConfigError, match="key must be"):
            call()


def test_mse_targets_must_have_the_outputs_shape(x64):
    model = jl.MLPConfig((6, 5, 10), loss="mse")
    w = model.init(jax.random.key(0)).astype(jnp.float64)
    x = jax.random.normal(jax.random.key(1), (8, 6), jnp.float64)
    with pytest.raises(ConfigError, match=r"per-sample shape \(2, 5\) but the model outputs \(10,\)"):
        jl.mean_loss(model, w, x, jnp.zeros((8, 2, 5)))
    with pytest.raises(ConfigError, match="per-sample shape"):
        jl.train(model, x.astype(jnp.float32), jnp.zeros((8, 2, 5), jnp.float32), key=jax.random.key(0), epochs=1,
                 batch_size=4, init=w.astype(jnp.float32), progress=False)
    t = jax.random.normal(jax.random.key(2), (8, 10), jnp.float64)
    want = np.mean((np.asarray(model.apply(w, x)) - np.asarray(t)) ** 2)
    assert float(jl.mean_loss(model, w, x, t)) == pytest.approx(want, rel=1e-12)
    one = jl.MLPConfig((6, 5, 1), loss="mse")  # one output: targets (n,) or (n, 1)
    w1 = one.init(jax.random.key(0)).astype(jnp.float64)
    t1 = jnp.arange(8.0)
    want1 = np.mean((np.asarray(one.apply(w1, x))[:, 0] - np.arange(8.0)) ** 2)
    assert float(jl.mean_loss(one, w1, x, t1)) == pytest.approx(want1, rel=1e-12)
    assert float(jl.mean_loss(one, w1, x, t1[:, None])) == pytest.approx(want1, rel=1e-12)
