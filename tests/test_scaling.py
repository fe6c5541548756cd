"""Scale-out of the estimators: sharded == single device, streamed == one pass, bf16 matmuls.

The multi-device checks run in a subprocess with 8 forced host devices
(``XLA_FLAGS`` must be set before jax starts).
"""

import dataclasses
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.errors import ConfigError



def test_stream_plan():
    p = jl.stream_plan(1024, 60_000, memory_budget=1 << 30)
    assert p.passes * p.pass_draws >= 1024 and p.pass_draws * p.bytes_per_draw <= 1 << 30
    assert p.passes == 2 and p.pass_draws == 512  # 60k x 1024 does not fit 1 GiB in one pass
    assert jl.stream_plan(1024, 9984).passes == 1  # the reference problem does
    assert jl.stream_plan(1024, 60_000, sample_block=512).passes == 1  # data order: O(T x block)
    assert jl.stream_plan(10**6, 60_000, sample_block=512).passes == 16  # 65,536 draws of 16 KiB per GiB
    p8 = jl.stream_plan(1000, 100, devices=8, memory_budget=3200 * 10)
    assert (p8.devices, p8.passes, p8.pass_draws) == (8, 13, 10)  # 125 draws per device, 10 per pass
    with pytest.raises(ConfigError, match="memory_budget"):
        jl.stream_plan(10, 10, memory_budget=0)


@pytest.mark.slow
def test_streamed_delta_equals_one_pass(mlp):
    model, w, x, y, sub = mlp
    th = jl.draw_thetas(jax.random.key(1), 13, 3, 0.7, jnp.float64)
    perms = np.stack([np.random.default_rng(5 + r).permutation(x.shape[0]) for r in range(3)])
    for kw in (dict(), dict(samples_per_k=4), dict(orderings=perms)):
        ref = jl.delta_from_losses(jl.per_sample_loss_matrix(model, sub, th, x, y), **kw)
        # one pass; 1 draw per pass; 4 draws per pass (3 padded); sample blocks of 5 (4 with batches of 4)
        for budget, block in ((None, None), (1, None), (8 * 23 * 8 * 4, None), (None, 5), (1, 5), (None, 8)):
            got = jl.delta_monte_carlo(model, sub, x, y, sigma=0.7, thetas=th, memory_budget=budget, sample_block=block, **kw)
            np.testing.assert_allclose(got.delta, ref.delta, rtol=1e-12)
            np.testing.assert_allclose(got.stderr, ref.stderr, rtol=1e-10)
            assert got.info.num_draws == 13 and got.info.subspace_dim == 3
    assert jl.stream_plan(13, 23, memory_budget=8 * 23 * 8 * 4, itemsize=8).pass_draws == 4


def test_streamed_delta_float32_large_offsets(mlp32):
    # float32, many passes: the pairwise merge keeps the standard error accurate
    model, w, x, y, sub, th = mlp32(300, 64)
    one = jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=10)
    many = jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, thetas=th, samples_per_k=10, memory_budget=300 * 32 * 5)
    np.testing.assert_allclose(many.delta, one.delta, rtol=2e-5)
    np.testing.assert_allclose(many.stderr, one.stderr, rtol=2e-4)


def test_bf16_matmuls_close_to_float32(mlp32):
    model, w, x, y, sub, th = mlp32(200, 8)
    ref = jl.per_sample_loss_matrix(model, sub, th, x, y)
    for fast in (True, False):
        got = jl.per_sample_loss_matrix(model, sub, th, x, y, matmul_dtype="bf16", fast_kernel=fast)
        assert got.dtype == jnp.float32
        err = np.abs(np.asarray(got) - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max()
        assert 0 < err < 3e-2, err  # bf16 has 8 significant bits; the result is not the float32 one
    same = jl.per_sample_loss_matrix(model, sub, th, x, y, matmul_dtype=jnp.float32)
    np.testing.assert_array_equal(same, ref)
    with pytest.raises(ConfigError, match="matmul_dtype"):
        jl.per_sample_loss_matrix(model, sub, th, x, y, matmul_dtype="int8")


def test_bf16_needs_a_low_precision_forward(x64):
    @dataclasses.dataclass(frozen=True)
    class Linear:
        num_params: int = 3

        def per_sample_losses(self, w, x, y):
            return x @ w

    x = jnp.ones((4, 3))
    sub = jl.Subspace(jnp.zeros(3), jnp.eye(3)[:2])
    with pytest.raises(ConfigError, match="as_model"):
        jl.per_sample_loss_matrix(Linear(), sub, jnp.ones((2, 2)), x, jnp.zeros(4), matmul_dtype="bf16")
    with pytest.raises(ConfigError, match="mesh"):
        jl.per_sample_loss_matrix(Linear(), sub, jnp.ones((2, 2)), x, jnp.zeros(4), mesh="all")


@pytest.mark.slow
def test_sharded_estimates_match_single_device(run_with_devices, tiny_mlp_script):
    out = run_with_devices(tiny_mlp_script(
        """
        assert len(jax.devices()) == 8
        th = jl.draw_thetas(jax.random.key(1), 13, 3, 0.7, jnp.float64)
        tol = dict(rtol=1e-11, atol=1e-14)

        one = jl.per_sample_loss_matrix(model, sub, th, x, y, mesh=1, chunk_size=3, sample_block=5)
        for mesh in (None, 8, jl.device_mesh(3)):  # None: every visible device
            got = jl.per_sample_loss_matrix(model, sub, th, x, y, mesh=mesh, chunk_size=3, sample_block=5)
            np.testing.assert_allclose(got, one, **tol)
        assert len(jl.per_sample_loss_matrix(model, sub, th, x, y).sharding.device_set) == 8

        perms = np.stack([np.random.default_rng(5 + r).permutation(x.shape[0]) for r in range(3)])
        for kw in (dict(), dict(samples_per_k=4, orderings=perms)):
            ref = jl.delta_monte_carlo(model, sub, x, y, sigma=0.7, thetas=th, mesh=1, **kw)
            for mesh, budget in ((8, None), (8, 1), (3, 8 * 23 * 8 * 2)):  # 2 draws/device, 1 draw/pass, 2 draws/pass
                got = jl.delta_monte_carlo(model, sub, x, y, sigma=0.7, thetas=th, mesh=mesh, memory_budget=budget, **kw)
                np.testing.assert_allclose(got.delta, ref.delta, **tol)
                np.testing.assert_allclose(got.stderr, ref.stderr, rtol=1e-9)

        c1 = jl.subspace_curvature(model, sub, x, y, mesh=1)
        for mesh, chunk in ((8, None), (8, 2), (3, 5)):
            c8 = jl.subspace_curvature(model, sub, x, y, mesh=mesh, sample_block=chunk)
            for a, b in zip(c8, c1):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b, **tol)

        sub2 = jl.Subspace(w, sub.directions[:2])
        s1 = jl.loss_surface(model, sub2, x, y, k=[1, 3], grid=3, samples_per_k=5, mesh=1)
        s8 = jl.loss_surface(model, sub2, x, y, k=[1, 3], grid=3, samples_per_k=5, mesh=8)
        np.testing.assert_allclose(s8.loss, s1.loss, **tol)
        np.testing.assert_allclose(s8.diff_sq, s1.diff_sq, rtol=1e-9, atol=1e-16)

        # sharded_hvp over vectors: one compiled program, not a retrace per call
        from jaxland.curvature import products as curvature
        vs = jax.random.normal(jax.random.key(3), (5, w.size), jnp.float64)
        ref = jl.hvp_batch(model, w, x, y, vs, k=13)
        np.testing.assert_allclose(jl.sharded_hvp(model, w, x, y, vs, k=13, mesh=jl.device_mesh(8), over="vectors"), ref, rtol=1e-12)
        size = curvature._vector_parallel._cache_size()
        np.testing.assert_allclose(jl.sharded_hvp(model, w, x, y, 2 * vs, k=13, mesh=jl.device_mesh(8), over="vectors"), 2 * ref, rtol=1e-12)
        assert curvature._vector_parallel._cache_size() == size
        print("OK")
        """
    ))
    assert "OK" in out


MULTI_PROCESS = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
import jax.numpy as jnp, numpy as np, jaxland as jl

jl.initialize_distributed(coordinator_address=sys.argv[2], num_processes=2, process_id=int(sys.argv[1]))
assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
model = jl.MLPConfig((5, 6, 4, 3))
w = model.init(jax.random.key(0))
x = jax.random.normal(jax.random.key(1), (23, 5))
y = jnp.arange(23) % 3
sub = jl.Subspace(w, jax.random.normal(jax.random.key(2), (3, w.size)) * 0.3)
th = jl.draw_thetas(jax.random.key(1), 13, 3, 0.7)
local = jl.device_mesh(jax.local_devices()[:1])  # this process alone: the reference
tol = dict(rtol=2e-5, atol=1e-6)
for kw in (dict(), dict(orderings=np.stack([np.random.default_rng(4 + r).permutation(x.shape[0]) for r in range(2)]), samples_per_k=4)):
    r, r1 = (jl.delta_monte_carlo(model, sub, x, y, sigma=0.7, thetas=th, mesh=m, **kw) for m in (None, local))
    np.testing.assert_allclose(np.asarray(r.delta), np.asarray(r1.delta), **tol)
    np.testing.assert_allclose(np.asarray(r.stderr), np.asarray(r1.stderr), rtol=1e-4)
l, l1 = (jl.per_sample_loss_matrix(model, sub, th, x, y, mesh=m) for m in (None, local))
np.testing.assert_allclose(np.asarray(l), np.asarray(l1), **tol)
c, c1 = (jl.subspace_curvature(model, sub, x, y, sample_block=2, mesh=m) for m in (None, local))
for a, b in zip(c, c1):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tol)
vs = jax.random.normal(jax.random.key(3), (5, w.size))
ref = jl.hvp_batch(model, w, x, y, vs, k=13)
for over in ("data", "vectors"):
    np.testing.assert_allclose(np.asarray(jl.sharded_hvp(model, w, x, y, vs, k=13, mesh=jl.device_mesh(), over=over)), ref, rtol=1e-4, atol=1e-6)
print("OK", jax.process_index(), jl.is_main_process())
"""


@pytest.mark.slow
def test_multi_process_results_on_every_process(tmp_path):
    # two processes x two CPU devices under jax.distributed.initialize (gloo collectives)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "mp.py"
    script.write_text(MULTI_PROCESS)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(i), f"127.0.0.1:{port}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
        outs.append(out)
    assert "OK 0 True" in outs[0] and "OK 1 False" in outs[1]
