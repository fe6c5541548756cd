"""The weight cache returns stored weights only for exactly the run that made them, and only from a trusted entry.

Each finding is checked against an independent computation: a fresh
``jl.train`` with the same arguments (what the cache must return), a second
Python process (the key must not depend on the process), hashlib and
/proc/cpuinfo read here.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxland as jl
from jaxland.errors import ConfigError, DataError
from jaxland.training import cache as cache_mod
from jaxland.training.cache import cache_path
from jaxland.training.loop import params_bytes

REPO = Path(__file__).resolve().parents[2]
KEY = jax.random.key(0)
TRAIN = dict(data_tag="t", epochs=1, batch_size=16, progress=False)


def _data(n=64, d=4, classes=3, seed=1):
    x = jax.random.normal(jax.random.key(seed), (n, d))
    return x, (jnp.arange(n) % classes).astype(jnp.int32)


def _fresh(model, x, y, key=KEY, **kw):
    """What the cache must return: a training run of its own, outside the cache."""
    kw = {k: v for k, v in {**TRAIN, **kw}.items() if k != "data_tag"}
    return jl.train(model, x, y, key=key, **kw)


def _cached(model, x, y, cache, key=KEY, **kw):
    return jl.cached_train(model, x, y, key=key, cache_dir=cache, **{**TRAIN, **kw})


def _path(model, x, y, cache, key=KEY, **kw):
    return cache_path(model, x, y, key=key, cache_dir=cache, **{k: v for k, v in {**TRAIN, **kw}.items() if k != "progress"})


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# ------------------------------------------------------------------------------------ the data


def test_every_byte_of_the_data_is_in_the_key(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((1000, 784), dtype=np.float32)  # 1,000 MNIST-sized images
    y = rng.integers(0, 10, 1000).astype(np.int32)
    model = jl.MLPConfig((784, 8, 10))
    base, spec = _path(model, x, y, tmp_path)
    x_bytes = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode() + x_bytes.tobytes()).hexdigest()
    assert spec["data"]["x"]["sha256"] == h  # all of x, by a hash computed here
    assert _path(model, x.copy(), y.copy(), tmp_path)[0] == base  # the same bytes: the same entry
    two = x.copy()
    two[17, 300] += 0.5
    two[900, 5] = 0.0
    moved = x.copy()
    moved[:500] = np.nextafter(moved[:500], np.float32(2))  # 500 images, one ulp each
    labels = y.copy()
    labels[999] = (labels[999] + 1) % 10
    others = {_path(model, a, b, tmp_path)[0] for a, b in ((two, y), (moved, y), (x, labels), (x.astype(np.float64), y))}
    assert len(others) == 4 and base not in others


def test_changed_data_never_returns_the_old_weights(tmp_path):
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    first = _cached(model, x, y, tmp_path)
    x2 = x.at[5, 2].add(0.25).at[40, 0].add(-0.25)  # two values changed
    got = _cached(model, x2, y, tmp_path)
    np.testing.assert_array_equal(got.params, _fresh(model, x2, y).params)
    assert not np.array_equal(got.params, first.params)


# ------------------------------------------------------------------------------------ the model


def _net_class(act):
    class Net(nnx.Module):  # the same class name and layers for every act: only the forward pass differs
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 8, rngs=rngs)
            self.l2 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(act(self.l1(x)))

    return Net


def test_models_with_other_computations_or_initial_weights_are_other_models(tmp_path):
    x, y = _data()
    p = {"w": jnp.full((4, 3), 0.1)}
    lin = jl.as_model(lambda p, x: x @ p["w"], params=p)
    cube = jl.as_model(lambda p, x: (x @ p["w"]) ** 3, params=p)
    Relu, Tanh = _net_class(nnx.relu), _net_class(jnp.tanh)
    n1, n2 = jl.as_model(Relu(nnx.Rngs(1))), jl.as_model(Relu(nnx.Rngs(2)))
    tanh = jl.as_model(Tanh(nnx.Rngs(1)))
    mse_a = jl.as_model(Relu(nnx.Rngs(1)), loss=lambda out, y: jnp.mean((out - 1.0) ** 2, axis=-1))
    mse_b = jl.as_model(Relu(nnx.Rngs(1)), loss=lambda out, y: jnp.mean(jnp.abs(out - 1.0), axis=-1))
    pairs = {"lambdas": (lin, cube), "initial weights": (n1, n2), "forward pass": (n1, tanh), "loss lambdas": (mse_a, mse_b)}
    for what, (a, b) in pairs.items():
        assert a.spec == b.spec or what == "initial weights", what  # the spec alone cannot tell them apart
        assert a != b, what
        assert _path(a, x, y, tmp_path)[0] != _path(b, x, y, tmp_path)[0], what
    # the same model built twice is the same model: one entry, shared compiled programs
    assert jl.as_model(n1) is n1
    twin = jl.as_model(Relu(nnx.Rngs(1)))
    assert twin == n1 and hash(twin) == hash(n1) and _path(twin, x, y, tmp_path)[0] == _path(n1, x, y, tmp_path)[0]
    # and the cache hands each model its own weights
    for m in (n1, n2, tanh, lin, cube):
        np.testing.assert_array_equal(_cached(m, x, y, tmp_path).params, _fresh(m, x, y).params)


def test_mlp_config_is_identified_by_its_config(tmp_path):
    x, y = _data()
    a, b = jl.MLPConfig((4, 8, 3)), jl.MLPConfig((4, 8, 3))
    assert a == b and _path(a, x, y, tmp_path)[0] == _path(b, x, y, tmp_path)[0]
    others = [jl.MLPConfig((4, 8, 3), "tanh"), jl.MLPConfig((4, 8, 3), use_bias=False), jl.MLPConfig((4, 9, 3)),
              jl.MLPConfig((4, 8, 3), loss=lambda o, y: jnp.sum(o, -1)), jl.MLPConfig((4, 8, 3), loss=lambda o, y: jnp.max(o, -1))]
    paths = {_path(m, x, y, tmp_path)[0] for m in others}
    assert len(paths) == len(others) and _path(a, x, y, tmp_path)[0] not in paths


class _Opaque:
    """A protocol model jaxland cannot identify: it runs numpy on w (no jaxpr) and holds an object known only by address."""

    num_params = 15
    loss = "cross_entropy"
    classification = True

    def __init__(self):
        self.handle = object()

    def per_sample_losses(self, w, x, y):
        return jnp.asarray(np.zeros(len(np.asarray(w)))[: x.shape[0]])

    def apply(self, w, x):
        return x @ np.asarray(w)[:12].reshape(4, 3)


def test_a_model_that_cannot_be_identified_is_refused(tmp_path):
    x, y = _data()
    with pytest.raises(ConfigError, match="cannot identify the model.*spec"):
        _path(_Opaque(), x, y, tmp_path)


_SRC = """
import jax, jax.numpy as jnp, numpy as np, jaxland as jl
from flax import nnx
from jaxland.training.cache import cache_path

class Net(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(4, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.l2 = nnx.Linear(8, 3, rngs=rngs)
    def __call__(self, x):
        return self.l2(nnx.relu(self.bn(self.l1(x))))

x = jax.random.normal(jax.random.key(1), (64, 4)); y = (jnp.arange(64) % 3).astype(jnp.int32)
models = {
    "mlp": jl.MLPConfig((4, 8, 3)),
    "nnx": jl.as_model(Net(nnx.Rngs(3))),
    "factory": jl.as_model(lambda rngs: Net(rngs)),
    "lambda": jl.as_model(lambda p, x: jnp.tanh(x @ p["w"]) + p["b"], params={"w": jnp.ones((4, 3)) / 4, "b": jnp.zeros(3)}),
}
PATHS = {k: cache_path(m, x, y, key=jax.random.key(5), data_tag="t", epochs=2, batch_size=16, cache_dir="/c")[0].name
         for k, m in models.items()}
"""


def test_the_key_is_the_same_in_another_process():
    ns: dict = {}
    exec(compile(_SRC, "<models>", "exec"), ns)
    r = subprocess.run([sys.executable, "-c", _SRC + "\nimport json; print(json.dumps(PATHS))"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == ns["PATHS"]
    assert len(set(ns["PATHS"].values())) == 4


# ------------------------------------------------------------------------------------ key, settings, machine


def test_seed_is_the_deprecated_spelling_of_key(tmp_path):
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    with pytest.warns(DeprecationWarning, match=r"key=jax.random.key\(3\)"):
        old = jl.cached_train(model, x, y, seed=3, cache_dir=tmp_path, **TRAIN)
    np.testing.assert_array_equal(old.params, _fresh(model, x, y, key=jax.random.key(3)).params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = _cached(model, x, y, tmp_path, key=jax.random.key(3))  # the same entry, no warning
    np.testing.assert_array_equal(new.params, old.params)
    assert len(list(tmp_path.glob("w_*.npz"))) == 1
    assert _path(model, x, y, tmp_path, key=jax.random.PRNGKey(3))[0] == _path(model, x, y, tmp_path, key=jax.random.key(3))[0]
    with pytest.raises(ConfigError, match="key= only"):
        jl.cached_train(model, x, y, key=KEY, seed=3, cache_dir=tmp_path, **TRAIN)


def test_every_training_argument_is_in_the_key(tmp_path):
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    base = _path(model, x, y, tmp_path)[0]
    variants = [dict(key=jax.random.key(1)), dict(epochs=2), dict(batch_size=8), dict(lr=2e-3), dict(shuffle=False),
                dict(init=model.init(jax.random.key(7)))]
    paths = {_path(model, x, y, tmp_path, **v)[0] for v in variants}
    assert len(paths) == len(variants) and base not in paths
    init = model.init(jax.random.key(7))
    np.testing.assert_array_equal(_cached(model, x, y, tmp_path, init=init, shuffle=False).params,
                                  _fresh(model, x, y, init=init, shuffle=False).params)


def test_versions_and_the_machine_are_in_the_key(tmp_path, monkeypatch):
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    base, spec = _path(model, x, y, tmp_path)
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []
    if names:
        assert spec["platform"]["cpu"] == names[0]
    assert spec["platform"]["backend"] == jax.default_backend() and spec["platform"]["device_kind"] == jax.devices()[0].device_kind
    import flax
    import jaxlib
    import optax

    assert spec["versions"] == {"jaxland": jl.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                                "flax": flax.__version__, "optax": optax.__version__}
    real_platform, real_versions = cache_mod.platform_info, cache_mod.versions
    monkeypatch.setattr(cache_mod, "platform_info", lambda: {**real_platform(), "cpu": "another CPU"})
    other_cpu = _path(model, x, y, tmp_path)[0]
    monkeypatch.setattr(cache_mod, "platform_info", real_platform)
    monkeypatch.setattr(cache_mod, "versions", lambda: {**real_versions(), "jaxlib": "0.0.1"})
    other_jaxlib = _path(model, x, y, tmp_path)[0]
    assert len({base, other_cpu, other_jaxlib}) == 3


# ------------------------------------------------------------------------------------ what is read back


def _plant(path: Path, model, w, spec, *, accuracy=0.999, epochs=1, steps=4):
    path.write_bytes(params_bytes(model, w, cache_key=spec, loss_history=[[0.1] * steps] * epochs, train_accuracy=accuracy))


def test_an_entry_with_nonfinite_weights_is_discarded_and_retrained(tmp_path):
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    path, spec = _path(model, x, y, tmp_path)
    _cached(model, x, y, tmp_path)
    _plant(path, model, np.full(model.num_params, np.nan, np.float32), spec)
    with pytest.raises(DataError, match="non-finite"):
        jl.load_params(path, model)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        got = _cached(model, x, y, tmp_path)
    fresh = _fresh(model, x, y)
    np.testing.assert_array_equal(got.params, fresh.params)
    np.testing.assert_array_equal(jl.load_params(path, model)[1], fresh.params)  # the entry is sound again


def test_an_entry_planted_in_a_folder_others_can_write_is_not_used(tmp_path):
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # like a cache folder under /tmp
    path, spec = _path(model, x, y, shared)
    _plant(path, model, np.zeros(model.num_params, np.float32), spec)
    planted = path.read_bytes()
    with pytest.warns(RuntimeWarning, match="writable by its group and every user"):
        got = _cached(model, x, y, shared)
    fresh = _fresh(model, x, y)
    np.testing.assert_array_equal(got.params, fresh.params)
    assert got.train_accuracy == fresh.train_accuracy != 0.999
    assert path.read_bytes() == planted  # left alone; the weights went to a private folder
    (private,) = [p for p in shared.iterdir() if p.is_dir()]
    assert _mode(private) == 0o700 and private.stat().st_uid == os.getuid()
    (entry,) = private.glob("w_*.npz")
    assert entry.name == path.name and _mode(entry) == 0o600
    with pytest.warns(RuntimeWarning, match="writable by"):
        again = _cached(model, x, y, shared)  # the private entry is found again
    np.testing.assert_array_equal(again.params, fresh.params)


def test_an_entry_owned_by_another_user_is_not_used(tmp_path):
    if os.getuid() != 0:
        pytest.skip("giving a file to another user (os.chown) needs root; the group/world-writable case is tested above")
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    path, spec = _path(model, x, y, tmp_path)
    _plant(path, model, np.zeros(model.num_params, np.float32), spec)
    os.chown(path, 4242, 4242)
    with pytest.warns(RuntimeWarning, match="belongs to user id 4242"):
        got = _cached(model, x, y, tmp_path)
    np.testing.assert_array_equal(got.params, _fresh(model, x, y).params)
    assert path.stat().st_uid == os.getuid()  # replaced by the user's own entry


def test_new_cache_folders_are_private_and_the_environment_variable_is_read_as_a_path(tmp_path, monkeypatch):
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    _cached(model, x, y, tmp_path / "a" / "cache")
    assert _mode(tmp_path / "a" / "cache") == 0o700
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JAXLAND_CACHE_DIR", "")
    assert cache_mod.default_cache_dir() == tmp_path / "home" / ".cache" / "jaxland"  # empty means unset
    monkeypatch.setenv("JAXLAND_CACHE_DIR", "~/wcache")
    assert cache_mod.default_cache_dir() == tmp_path / "home" / "wcache"
    jl.cached_train(model, x, y, key=KEY, **TRAIN)
    assert len(list((tmp_path / "home" / "wcache").glob("w_*.npz"))) == 1 and not list(Path.cwd().glob("w_*.npz"))


def test_an_entry_path_that_is_a_folder_is_a_clear_error(tmp_path):
    model = jl.MLPConfig((4, 8, 3))
    x, y = _data()
    path, _ = _path(model, x, y, tmp_path)
    path.mkdir()
    with pytest.raises(ConfigError, match=f"{path.name} is a folder; remove it"):
        _cached(model, x, y, tmp_path)
