import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxland as jl

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free every compiled program after a test module once the process holds over 20,000 memory mappings.

    Over the whole suite (thousands of programs, hundreds of them from the
    fuzz tests) the compiled programs' mappings would pass Linux's limit of
    65,530 per process, and the next compilation would die with a
    segmentation fault inside LLVM (:func:`jaxland.memory.release_compiled_programs`).
    Below the threshold modules still share compiled programs.
    """
    yield
    jl.memory.release_compiled_programs()


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


@dataclasses.dataclass(frozen=True)
class Quadratic:
    """``l_i(w) = c_i + g_i.w + w^T G_i w / 2``, with (c_i, g_i, G_i) packed in the row x_i: second order is exact."""

    dim: int

    @property
    def num_params(self):
        return self.dim

    def per_sample_losses(self, w, x, y):
        D = self.dim
        c, g, G = x[:, 0], x[:, 1 : D + 1], x[:, D + 1 :].reshape(-1, D, D)
        return c + g @ w + 0.5 * jnp.einsum("i,nij,j->n", w, G, w)


@pytest.fixture
def quadratic_problem(x64):
    """Factory of exactly quadratic losses in float64: ``make(key, n, D, zero_order=True) -> (model, x, y)``.

    Per sample ``c_i ~ N(0, 0.3^2)``, ``g_i ~ N(0, 0.5^2 I)`` (both zero when
    ``zero_order=False``) and a symmetric indefinite ``G_i``, packed in ``x``
    for :class:`Quadratic`.
    """

    def make(key, n: int, D: int, *, zero_order: bool = True):
        kc, kg, kh = jax.random.split(key, 3)
        c = jax.random.normal(kc, (n, 1), jnp.float64) * 0.3
        g = jax.random.normal(kg, (n, D), jnp.float64) * 0.5
        a = jax.random.normal(kh, (n, D, D), jnp.float64)
        G = (a + jnp.swapaxes(a, 1, 2)) / 2  # indefinite: signs matter
        if not zero_order:
            c, g = 0 * c, 0 * g
        return Quadratic(D), jnp.concatenate([c, g, G.reshape(n, -1)], axis=1), jnp.zeros(n, jnp.int32)

    return make


TINY_MLP_SETUP = """
import jax, jax.numpy as jnp, numpy as np, jaxland as jl
jax.config.update("jax_enable_x64", True)
model = jl.MLPConfig((5, 6, 4, 3))
w = model.init(jax.random.key(0)).astype(jnp.float64)
x = jax.random.normal(jax.random.key(1), (23, 5), jnp.float64)
y = jnp.arange(23) % 3
sub = jl.Subspace(w, jax.random.normal(jax.random.key(2), (3, w.size), jnp.float64) * 0.3)
"""


@pytest.fixture
def tiny_mlp_script():
    """``script(body)``: source that builds the ``mlp`` fixture's float64 problem (model, w, x, y, sub), then runs ``body``.

    For :func:`run_with_devices`, whose fresh interpreter cannot take fixtures.
    """
    return lambda body: TINY_MLP_SETUP + textwrap.dedent(body)


@pytest.fixture
def mlp32():
    """A float32 MLP 20-16-16-4 on n random samples with a 3-D random subspace and ``draws`` draws at sigma 1:
    ``make(n, draws) -> (model, w, x, y, subspace, thetas)`` (the fast-kernel and precision checks)."""

    def make(n, draws):
        model = jl.MLPConfig((20, 16, 16, 4))
        w = model.init(jax.random.key(0))
        x = jax.random.normal(jax.random.key(1), (n, 20))
        y = jnp.arange(n) % 4
        sub = jl.Subspace(w, jl.random_directions(model, w, 3, key=jax.random.key(2)))
        return model, w, x, y, sub, jl.draw_thetas(jax.random.key(3), draws, 3, 1.0)

    return make


class TinyCNN(nnx.Module):
    """conv 3x3 (2 channels) -> relu -> mean pool -> dense: a convolution in the loss, D = 29."""

    def __init__(self, *, rngs):
        self.conv = nnx.Conv(1, 2, (3, 3), rngs=rngs)
        self.head = nnx.Linear(2, 3, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.conv(x)).mean((1, 2)))


@pytest.fixture(scope="module")
def cnn():
    """(model, w, x, y, H): a tiny CNN in float64 on 9 images, with its dense Hessian (the host-loop and
    first-layer checks: ``loop="auto"`` picks the host loop for it on a CPU)."""
    with jax.enable_x64(True):
        model = jl.as_model(TinyCNN, name="tiny-cnn")
        w = model.init(jax.random.key(0)).astype(jnp.float64)
        x = jax.random.normal(jax.random.key(1), (9, 5, 5, 1), jnp.float64)
        y = jnp.arange(9) % 3
        H = jax.jit(jax.hessian(lambda w_: jl.mean_loss(model, w_, x, y)))(w)
        yield model, w, x, y, np.asarray(H)


def _linen_style(p, x):
    """A pure function with a parameter pytree (Linen's apply): normalised input, conv, dense."""
    h = jax.lax.conv_general_dilated((x - 0.5) / 2.0, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.tanh(h + p["b"]).mean((1, 2)) @ p["w"]


FIRST_LAYER_NETS = {
    "lenet5": lambda: jl.build_model("lenet5", (12, 12, 1), 3),
    "resnet": lambda: jl.build_model("resnet", (4, 4, 1), 3, depth=8, width=1),
    "vit": lambda: jl.build_model("vit", (4, 4, 1), 3, patch_size=2, dim=4, depth=1, heads=2, mlp_dim=4),
    "pure": lambda: jl.as_model(_linen_style, params={"k": jnp.full((3, 3, 1, 2), 0.3), "b": jnp.ones(2) * 0.1,
                                                     "w": jnp.ones((2, 3)) * 0.2}, input_shape=(4, 4, 1)),
}


@pytest.fixture(params=sorted(FIRST_LAYER_NETS))
def first_layer_net(request, x64):
    """``make(n) -> (model, w, x, y)`` in float64 for each small network whose first layer (a convolution) splits
    off: LeNet-5, a ResNet, a ViT (patch embedding) and a pure function with a parameter pytree."""

    def make(n=12):
        model = FIRST_LAYER_NETS[request.param]()
        w = (model.init(jax.random.key(0)) if request.param != "pure" else model.initial_params).astype(jnp.float64)
        x = jax.random.normal(jax.random.key(1), (n, *model.input_shape), jnp.float64)
        return model, w, x, jnp.arange(n) % 3

    return make
