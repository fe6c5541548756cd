import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import jaxland as jl

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def x64():
    """Run a test in float64 (exact references need it)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def shared_data():
    if not (SHARED_DATA / "mnist").exists():
        pytest.skip(f"real MNIST files not found at {SHARED_DATA} (../shared absent)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("JAXLAND_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "jaxland-cache"))


@pytest.fixture
def mlp(x64):
    """A tiny MLP in float64 with a 3-D random subspace: (model, w, x, y, subspace)."""
    model = jl.MLPConfig((5, 6, 4, 3))
    w = model.init(jax.random.key(0)).astype(jnp.float64)
    x = jax.random.normal(jax.random.key(1), (23, 5), jnp.float64)
    y = jnp.arange(23) % 3
    dirs = jax.random.normal(jax.random.key(2), (3, model.num_params), jnp.float64) * 0.3
    return model, w, x, y, jl.Subspace(w, dirs)


@pytest.fixture
def run_with_devices():
    """Run ``code`` in a fresh interpreter with ``n`` forced host devices; returns its stdout.

    XLA_FLAGS must be set before jax is imported, hence the subprocess.
    """

    def run(code: str, n: int = 8) -> str:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout

    return run
