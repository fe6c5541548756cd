"""Language models: the sequence loss, chunked (memory-bounded) products, the 2026 estimators, text data, the twin."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.data import Vocabulary, load_text
from jaxland.errors import ConfigError, DataError, DataNotFoundError
from jaxland.landscape.probing import QuadraticCoefficients, curvature_probe, gaussian_moment, quadratic_monte_carlo
from jaxland.models import SequenceModel, mask_targets, sequence_cross_entropy
from jaxland.validate import unit


def _reference_losses(logits, targets, mask=None):
    """Hand-written: per sequence, mean over counted positions of logsumexp(z) - z[target]."""
    logits, targets = np.asarray(logits, np.float64), np.asarray(targets)
    out = []
    for i in range(targets.shape[0]):
        tot, cnt = 0.0, 0
        for t in range(targets.shape[1]):
            if targets[i, t] < 0 or (mask is not None and not mask[i, t]):
                continue
            z = logits[i, t]
            tot += math.log(sum(math.exp(v - z.max()) for v in z)) + z.max() - z[targets[i, t]]
            cnt += 1
        out.append(tot / cnt)
    return np.asarray(out)


def test_sequence_loss_matches_hand_written_reference_with_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5, 7)) * 3
    targets = rng.integers(0, 7, size=(4, 5))
    targets[1, 3:] = -1  # padding at the end
    targets[2, 0] = -1  # and at the start
    mask = rng.random((4, 5)) > 0.3
    mask[:, 0] = True
    got = np.asarray(sequence_cross_entropy(jnp.asarray(logits), jnp.asarray(targets)))
    np.testing.assert_allclose(got, _reference_losses(logits, targets), rtol=1e-5)
    masked = np.asarray(sequence_cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask)))
    np.testing.assert_allclose(masked, _reference_losses(logits, targets, mask), rtol=1e-5)
    via_targets = sequence_cross_entropy(jnp.asarray(logits), mask_targets(jnp.asarray(targets), jnp.asarray(mask)))
    np.testing.assert_allclose(np.asarray(via_targets), masked, rtol=1e-6)
    assert "sequence_cross_entropy" in jl.models.LOSSES


def _tiny(chunk_size=None, **kw):
    kw = {"vocab_size": 7, "context": 6, "width": 8, "depth": 1, "heads": 2, **kw}
    return jl.build_model("gpt", chunk_size=chunk_size, **kw)


def _tokens(n, t=6, v=7, seed=1):
    x = jax.random.randint(jax.random.key(seed), (n, t), 0, v)
    y = jnp.roll(x, -1, axis=1).at[:, -1].set(jax.random.randint(jax.random.key(seed + 1), (n,), 0, v))
    return x, y.at[0, -2:].set(-1)  # one padded sequence


@pytest.mark.slow
def test_chunked_products_equal_unchunked_and_dense_hessian(x64):
    whole = _tiny(chunk_size=1000, width=4, heads=1)
    chunked = SequenceModel(whole.inner, chunk_size=3)  # 10 sequences: chunks of 3, 3, 3, 1 (padded)
    w = whole.init(jax.random.key(0)).astype(jnp.float64)
    x, y = _tokens(10)
    v = jax.random.normal(jax.random.key(3), w.shape, jnp.float64)
    np.testing.assert_allclose(chunked.per_sample_losses(w, x, y), whole.per_sample_losses(w, x, y), rtol=1e-12)
    dense = jax.hessian(lambda u: jnp.mean(whole.inner.per_sample_losses(u, x, y)))(w)  # (304, 304), no chunking
    np.testing.assert_allclose(jl.hvp(chunked, w, v=v, x=x, y=y), dense @ v, rtol=1e-9, atol=1e-12)
    sub = jl.Subspace(w, jax.random.normal(jax.random.key(4), (2, w.shape[0]), jnp.float64) * 0.1)
    cc, cw = jl.subspace_curvature(chunked, sub, x, y), jl.subspace_curvature(whole, sub, x, y)
    for a, b in zip(cc, cw):  # forward over forward through the chunks
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_chunked_hvp_memory_does_not_grow_with_sequences():
    model = _tiny(chunk_size=4, vocab_size=256, context=32)
    w = jax.ShapeDtypeStruct((model.num_params,), jnp.float32)

    def temp(m, n):
        x = jax.ShapeDtypeStruct((n, 32), jnp.int32)
        fn = jax.jit(lambda w_, v, x_, y_: jax.jvp(jax.grad(lambda u: jl.mean_loss(m, u, x_, y_)), (w_,), (v,))[1])
        return fn.lower(w, w, x, x).compile().memory_analysis().temp_size_in_bytes

    assert temp(model, 64) <= 1.05 * temp(model, 16)  # chunked: O(chunk x T x V)
    whole = SequenceModel(model.inner, chunk_size=1 << 20)
    assert temp(whole, 64) > 2.5 * temp(whole, 16)  # unchunked: O(N x T x V), the reference the bound is against


def test_gaussian_moment_matches_long_quadratic_monte_carlo():
    rng = np.random.default_rng(0)
    k, d, sigma = 6, 3, 0.7
    a = rng.normal(size=k) * 0.3
    c = rng.normal(size=(k, d))
    b = rng.normal(size=(k, d, d))
    coef = QuadraticCoefficients(*(jnp.asarray(v, jnp.float32) for v in (a, c, 0.5 * (b + b.transpose(0, 2, 1)))))
    exact = np.asarray(gaussian_moment(coef, sigma=sigma))
    mc = quadratic_monte_carlo(coef, sigma=sigma, num_draws=200_000, key=jax.random.key(0))
    z = np.abs(exact - np.asarray(mc.delta)) / np.asarray(mc.stderr)
    assert np.all(z < 4), z
    assert np.all(np.asarray(mc.stderr) < 0.02 * exact)  # the test has power: 4 SE is under 8% of the value


def test_probe_on_a_quadratic_loss_direct_equals_surrogate(x64):
    # a linear model with squared error: every l_i is exactly quadratic in w, so the direct increment IS the surrogate;
    # 1,024 draws: the mean of a quartic in Gaussian draws is skewed, and at 64 one k of 39 sat 4.1 SE off the moment
    model = jl.MLPConfig((3, 2), loss="mse")
    w = model.init(jax.random.key(0)).astype(jnp.float64)
    x = jax.random.normal(jax.random.key(1), (40, 3), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (40, 2), jnp.float64)
    p = curvature_probe(model, w, x, y, d=3, sigma=0.5, num_draws=1024, key=jax.random.key(3), full_space=False,
                        random_control=False, eig_tol=1e-8)
    np.testing.assert_allclose(p.direct.delta, p.quadratic.delta, rtol=1e-8)
    np.testing.assert_allclose(p.direct.stderr, p.quadratic.stderr, rtol=1e-6)
    assert np.all(np.abs(np.asarray(p.moment) - np.asarray(p.direct.delta)) < 4 * np.asarray(p.direct.stderr))
    assert set(p.timings) == {"eigenvectors", "direct_mc", "coefficients", "quadratic_mc", "gaussian_moment"}
    dense = jax.hessian(lambda u: jnp.mean(model.per_sample_losses(u, x, y)))(w)
    np.testing.assert_allclose(p.eigenvalues, np.linalg.eigvalsh(np.asarray(dense))[::-1][:3], rtol=1e-6)


def test_probe_controls_and_units_on_a_gpt():
    from jaxland.landscape.probing import orthonormal_directions

    model = _tiny()
    w = model.init(jax.random.key(0))
    x, y = _tokens(12)
    u = orthonormal_directions(model.num_params, 2, key=jax.random.key(6))  # given: no eigensolve here
    p = curvature_probe(model, w, x, y, d=2, sigma=1e-3, num_draws=4, key=jax.random.key(5), eigenvectors=u)
    assert p.unit == p.direct.unit == p.full_space.unit == "sequences"
    assert unit(None, model) == "sequences" and unit(4, model) == "batches"
    assert p.full_space.delta.shape == p.random.delta.shape == p.direct.delta.shape == (11,)
    share, se = p.theta_free_share("random")
    assert np.all(np.abs(share - 1) < 0.05)  # at sigma 1e-3 the theta-free term is all of Delta
    assert "eigenvectors" not in p.timings and {"direct_mc", "coefficients", "full_space_mc", "random_mc"} <= set(p.timings)
    # a second sigma reuses the sigma-free phases
    q = curvature_probe(model, w, x, y, d=2, sigma=1e-2, num_draws=4, key=jax.random.key(5), eigenvectors=u,
                        coefficients=p.coefficients, full_space=False, random_control=False)
    assert "coefficients" not in q.timings and q.full_space is None
    np.testing.assert_allclose(q.theta_free, p.theta_free)
    with pytest.raises(ConfigError, match=r"K-1 = 5 values of k and D = 2 directions, got \(11, 2\)"):
        curvature_probe(model, w, x[:6], y[:6], d=2, sigma=1e-2, num_draws=4, key=jax.random.key(5), eigenvectors=u,
                        coefficients=p.coefficients)


def test_check_data_knows_vocabularies():
    model = _tiny()
    w = model.init(jax.random.key(0))
    x, y = _tokens(4)
    with pytest.raises(ConfigError, match="integer token ids"):
        jl.hvp(model, w, v=w, x=x.astype(jnp.float32), y=y)
    with pytest.raises(ConfigError, match=r"targets y must lie in \[0, 7\)"):
        jl.loss_and_grad(model, w, x, y.at[1, 1].set(7))
    with pytest.raises(ConfigError, match=r"token ids x must lie in \[0, 7\)"):
        jl.loss_and_grad(model, w, x.at[0, 0].set(9), y)
    with pytest.raises(ConfigError, match="no target"):
        jl.loss_and_grad(model, w, x, y.at[2].set(-1))
    with pytest.raises(ConfigError, match="per-sequence shape"):
        jl.loss_and_grad(model, w, x, y[:, :3])
    with pytest.raises(ConfigError, match="exceed the model's context"):
        jl.loss_and_grad(model, w, jnp.zeros((2, 9), jnp.int32), jnp.zeros((2, 9), jnp.int32))
    with pytest.raises(ConfigError, match="divisible"):
        jl.build_model("gpt", width=10, heads=4)
    jl.loss_and_grad(model, w, x, y)  # valid, with padding


def test_twin_hvp_matches_jaxland_on_shared_weights():
    torch = pytest.importorskip("torch")
    from benchmarks import torch_gpt

    for tie in (True, False):
        model = _tiny(tie_weights=tie)
        w = model.init(jax.random.key(0))
        x, y = _tokens(5)
        net = torch_gpt.TorchGPT(model, w)
        xt, yt = torch.tensor(np.asarray(x)).long(), torch.tensor(np.asarray(y)).long()
        np.testing.assert_allclose(torch_gpt.sequence_losses(net, xt, yt).detach().numpy(), model.per_sample_losses(w, x, y), rtol=1e-5)
        v = jax.random.normal(jax.random.key(2), w.shape)
        hj = np.asarray(jl.hvp(model, w, v=v, x=x, y=y))
        ht = torch_gpt.hvp(net, xt, yt, torch.tensor(np.asarray(v))).numpy()
        assert np.linalg.norm(hj - ht) < 1e-5 * np.linalg.norm(hj)


def test_text_windows_and_tokenizer_round_trip(tmp_path):
    data = load_text(context=16, limit=5)
    assert data.x.shape == data.y.shape == (5, 16) and data.x.dtype == np.int32
    np.testing.assert_array_equal(data.x[:, 1:], data.y[:, :-1])  # next-token targets
    np.testing.assert_array_equal(data.y[:-1, -1], data.x[1:, 0])  # non-overlapping windows, in text order
    assert data.vocab.decode(data.x[0]) + data.vocab.decode(data.x[1]) == data.vocab.decode(data.x[:2])
    assert data.vocab.decode(data.x[0]).startswith("First Citizen")
    assert data.vocab.size == load_text(context=16).vocab.size == 61  # the vocabulary does not depend on limit
    text = "to be, or not to be: that is the question.\n"
    vocab = Vocabulary.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text
    with pytest.raises(DataError, match="outside the vocabulary"):
        vocab.encode("TO BE")
    f = tmp_path / "t.txt"
    f.write_text(text)
    own = load_text(f, context=8)
    assert own.x.shape == ((len(text) - 1) // 8, 8) and own.vocab == vocab and own.info["unit"] == "sequences"
    shuffled = load_text(f, context=8, key=jax.random.key(0))
    assert sorted(map(tuple, shuffled.x)) == sorted(map(tuple, own.x))
    with pytest.raises(DataError, match="no window"):
        load_text(f, context=100)
    with pytest.raises(DataNotFoundError):
        load_text(tmp_path / "missing.txt", context=8)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match="not valid utf-8"):
        load_text(tmp_path / "bad.txt", context=2)


@pytest.mark.slow
def test_every_estimate_runs_on_a_gpt_with_k_in_sequences():
    """A language model goes through the whole pipeline: eigenpairs, trace, density, Delta_k, theory, K, surfaces."""
    model = _tiny()
    w = model.init(jax.random.key(0))
    x, y = _tokens(16)
    key = jax.random.key(7)
    eig = jl.hessian_eigenpairs(model, w, x, y, d=2, key=key, tol=1e-2)
    assert eig.eigenvalues.shape == (2,) and np.all(np.isfinite(eig.eigenvalues))
    # the eigenvectors are eigenvectors: |H u - lambda u| small against |lambda|
    hu = jl.hvp(model, w, x, y, eig.eigenvectors[0])
    assert float(jnp.linalg.norm(hu - eig.eigenvalues[0] * eig.eigenvectors[0])) < 0.1 * abs(float(eig.eigenvalues[0]))
    tr = jl.hessian_trace(model, w, x, y, num_probes=6, key=key)
    assert np.isfinite(tr.trace) and tr.stderr > 0
    dens = jl.spectral_density(model, w, x, y, num_probes=2, lanczos_steps=6, key=key)
    assert np.all(np.isfinite(dens.density))
    sub = jl.Subspace(w, eig.eigenvectors)
    mc = jl.delta_monte_carlo(model, sub, x, y, sigma=1e-2, num_draws=8, key=key)
    assert mc.info.unit == "sequences" and mc.delta.shape == (15,) and np.all(mc.stderr > 0)
    curv = jl.subspace_curvature(model, sub, x, y)
    th = jl.theory_delta(curv, sigma=1e-2)
    assert th.second_order.shape == (15,) and np.all(np.isfinite(th.second_order))
    assert np.all(np.abs(np.asarray(th.second_order) - np.asarray(mc.delta)) < 4 * np.asarray(mc.stderr) + 1e-3 * np.asarray(mc.delta))
    k = jl.sufficient_k(mc, tol=float(np.max(mc.delta)) * 2)
    assert k >= 1
    surf = jl.loss_surface(model, sub, x, y, k=[4, 8], grid=3)
    assert surf.loss.shape == (2, 3, 3) and np.all(np.isfinite(surf.loss)) and np.all(np.isfinite(surf.diff_sq))


def test_automatic_chunk_bounds_the_activations_not_only_the_logits(monkeypatch):
    from jaxland import memory
    from jaxland.models import sequence

    model = _tiny(context=32)  # 7-token vocabulary: the logits alone would never ask for a chunk
    x, y = _tokens(64, t=32)
    w = model.init(jax.random.key(0))
    per_seq = memory.per_sample_bytes(model.inner, x, y, program="hvp")
    assert per_seq > 0
    monkeypatch.setattr(sequence, "ACTIVATION_BUDGET", 4 * per_seq)
    assert model._chunk(w, x, y) == 4

    def temp(n):
        ws = jax.ShapeDtypeStruct(w.shape, w.dtype)
        xs = jax.ShapeDtypeStruct((n, 32), x.dtype)
        fn = jax.jit(lambda w_, v, x_, y_: jax.jvp(jax.grad(lambda u: jl.mean_loss(model, u, x_, y_)), (w_,), (v,))[1])
        return fn.lower(ws, ws, xs, xs).compile().memory_analysis().temp_size_in_bytes

    assert temp(64) <= 1.05 * temp(16)  # chunks of 4: the same temporaries for 16 and 64 sequences
    v = jax.random.normal(jax.random.key(1), w.shape)
    whole = SequenceModel(model.inner, chunk_size=1 << 20)
    np.testing.assert_allclose(jl.hvp(model, w, x, y, v), jl.hvp(whole, w, x, y, v), rtol=2e-4, atol=1e-6)
