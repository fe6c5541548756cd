"""Property-based fuzzing of the public API with hypothesis.

For each public function, strategies draw every argument from a mix of valid
values, wrong types, wrong shapes, extreme magnitudes, NaN/inf, empty arrays,
wrong dtypes and array-likes (lists, numpy). Each call must either return
finite, well-typed results or raise a :class:`jaxland.JaxlandError` whose
message names one of the call's arguments; any other exception is a failure.

The problem is tiny (an MLP 4-3-2 on 8 samples), so each example costs
milliseconds after compilation. Runs are derandomised (the same examples every
time). ``JAXLAND_FUZZ_EXAMPLES=2000`` runs that many examples per function.
"""

from __future__ import annotations

import math
import os
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxland as jl
from jaxland.errors import JaxlandError

EXAMPLES = int(os.environ.get("JAXLAND_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))

MODEL = jl.MLPConfig((4, 3, 2))
MSE_MODEL = jl.MLPConfig((4, 3, 2), loss="mse")
N = 8
W = MODEL.init(jax.random.key(0))
X = jax.random.normal(jax.random.key(1), (N, 4))
Y = jnp.arange(N, dtype=jnp.int32) % 2
V = jax.random.normal(jax.random.key(2), W.shape)
P = jax.random.normal(jax.random.key(3), (2, W.size)) * 0.1
SUB = jl.Subspace(W, P)
KEY = jax.random.key(4)


# ----------------------------------------------------------------------------- strategies


def _set(a, index, value):
    a = np.array(a, dtype=np.result_type(np.asarray(a).dtype, np.float32))
    a.flat[index] = value
    return a


class _Opaque:
    """An object that is no array."""


TRANSFORMS = {
    "valid": lambda a: a,
    "numpy": lambda a: np.asarray(a),
    "list": lambda a: np.asarray(a).tolist(),
    "huge": lambda a: np.asarray(a) * 1e30 + (1e30 if np.asarray(a).dtype.kind in "iu" else 0),
    "overflow": lambda a: np.asarray(a, np.float32) * 3e38,
    "tiny": lambda a: np.asarray(a, np.float32) * 1e-38,
    "nan": lambda a: _set(a, 0, np.nan),
    "inf": lambda a: _set(a, -1, -np.inf),
    "empty": lambda a: np.asarray(a)[:0],
    "extra_axis": lambda a: np.asarray(a)[None],
    "flat": lambda a: np.asarray(a).ravel()[:3],
    "transposed": lambda a: np.asarray(a).T,
    "fewer_rows": lambda a: np.asarray(a)[:3],
    "int": lambda a: np.asarray(a).astype(np.int32),
    "bool": lambda a: np.asarray(a).astype(bool),
    "float16": lambda a: np.asarray(a).astype(np.float16),
    "float64": lambda a: np.asarray(a).astype(np.float64),
    "complex": lambda a: np.asarray(a).astype(np.complex64),
    "negative": lambda a: -np.abs(np.asarray(a)) - 1,
    "strings": lambda a: np.asarray(a).astype(str),
    "ragged": lambda a: [[1.0, 2.0], [3.0]],
    "none": lambda a: None,
    "scalar": lambda a: 3,
    "object": lambda a: _Opaque(),
}
_NAMES = list(TRANSFORMS)


# variants that keep a float array float32 (no new compiled program when they pass the checks)
_SAME_PROGRAM = [n for n in _NAMES if n not in ("float16", "complex", "tiny", "overflow")]


def arrays(valid, *, variants=None):
    """``valid`` (usually) or one of its wrong variants."""
    return st.sampled_from(["valid"] * 4 + (variants or _NAMES)).map(lambda name: TRANSFORMS[name](valid))


def cheap_arrays(valid):
    """:func:`arrays` for functions whose every new dtype compiles a large program (eigensolvers, Monte Carlo)."""
    return arrays(valid, variants=_SAME_PROGRAM)


BAD_SCALARS = [0, -1, 1.5, math.nan, math.inf, -math.inf, True, None, "3", 10**12, 1e300, [1, 2], _Opaque(), 2**70]


def scalars(*valid):
    return st.sampled_from(list(valid) * 3 + BAD_SCALARS)


KEYS = st.sampled_from([KEY, KEY, KEY, jax.random.PRNGKey(0), 3, None, "key", jax.random.split(KEY), np.zeros(2, np.float32),
                        _Opaque()])
MODELS = st.sampled_from([MODEL, MODEL, MODEL, MSE_MODEL, jl.MLPConfig((5, 3, 2)), jl.MLPConfig((4, 3, 7)), "mlp", None,
                          _Opaque()])
SUBSPACES = st.one_of(
    st.just(SUB),
    st.builds(jl.Subspace, cheap_arrays(W), cheap_arrays(P)),
    st.sampled_from(["subspace", None, (W, P), jl.Subspace(W, P[:1] * 0)]),
)


# ----------------------------------------------------------------------------- the property


# fields that may hold NaN or inf by contract
MAY_BE_NONFINITE = {
    "theta_free_fraction",  # NaN where Delta_k <= 0 (DeltaSplit)
    "gof_p",  # NaN without standard errors (KForecast)
    "upper", "upper_scatter", "k_scatter", "lower_scatter",  # a bootstrap refit that does not decay crosses at inf
    "effective_draws",  # inf when a method removes all variance
}


def _finite(value, path="result"):
    if value is None or isinstance(value, (str, bytes, bool, os.PathLike)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{path}[{k!r}]")
        return
    if hasattr(value, "_fields"):
        for f in value._fields:
            if f not in MAY_BE_NONFINITE:
                _finite(getattr(value, f), f"{path}.{f}")
        return
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _finite(v, f"{path}[{i}]")
        return
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        return
    if not isinstance(value, (jax.Array, np.ndarray, np.generic, int, float)):
        return  # models, functions: not numbers
    a = np.asarray(value)
    assert a.dtype.kind in "biuf", f"{path} has dtype {a.dtype}"
    assert a.dtype.kind != "f" or np.all(np.isfinite(a)), f"{path} is not finite: {a}"


def check(fn, names, **kwargs):
    """``fn(**kwargs)`` returns finite numbers or raises a JaxlandError naming one of ``names``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(**kwargs)
        except JaxlandError as e:
            msg = str(e)
            assert any(re.search(rf"(?<![A-Za-z_]){re.escape(n)}(?![A-Za-z_])", msg) for n in names), (
                f"{fn.__name__}: {type(e).__name__} names none of {names}: {msg}"
            )
            return None
    _finite(out)
    return out


# ----------------------------------------------------------------------------- one test per public function


@FUZZ
@given(model=MODELS, w=arrays(W), x=arrays(X), y=arrays(Y))
def test_mean_loss_per_sample_losses_and_accuracy(model, w, x, y):
    names = ["model", "w", "x", "y", "labels", "targets"]
    check(jl.mean_loss, names, model=model, w=w, x=x, y=y)
    check(jl.per_sample_losses, names, model=model, w=w, x=x, y=y)
    check(jl.accuracy, names, model=model, w=w, x=x, y=y)


@FUZZ
@given(w=arrays(W), x=arrays(X), y=arrays(Y), k=scalars(None, 3, N, np.int32(5)))
def test_mean_loss_prefix(w, x, y, k):
    check(jl.mean_loss, ["w", "x", "y", "k", "labels"], model=MODEL, w=w, x=x, y=y, k=k)


@FUZZ
@given(leaf=arrays(jnp.zeros((4, 2))), loss=st.sampled_from(["cross_entropy", "mse", "hinge", None, 3]),
       name=st.sampled_from([None, "net"]))
def test_as_model(leaf, loss, name):
    out = check(jl.as_model, ["params", "loss", "obj"], obj=lambda p, x: x @ p["w"], params={"w": leaf}, loss=loss, name=name)
    if out is not None:
        assert out.num_params == np.size(leaf)


@FUZZ
@given(w=arrays(W), v=arrays(V), x=arrays(X), y=arrays(Y), k=scalars(None, 4))
def test_hvp(w, v, x, y, k):
    check(jl.hvp, ["w", "v", "x", "y", "k", "labels"], model=MODEL, w=w, x=x, y=y, v=v, k=k)


@FUZZ
# no huge epoch counts: train would run them (correctly) for ever
@given(x=cheap_arrays(X), y=cheap_arrays(Y), key=KEYS, epochs=st.sampled_from([1, 1, 1, 2, 0, -1, 1.5, math.nan, True, None, "1"]),
       batch_size=scalars(4), lr=scalars(1e-3, 1e3))
def test_train(x, y, key, epochs, batch_size, lr):
    names = ["x", "y", "key", "epochs", "batch_size", "lr", "labels", "training", "learning rate"]
    check(jl.train, names, model=MODEL, x=x, y=y, key=key, epochs=epochs, batch_size=batch_size, lr=lr, progress=False)


@FUZZ
@given(w=cheap_arrays(W), x=cheap_arrays(X), y=cheap_arrays(Y), d=scalars(2), key=KEYS, method=st.sampled_from(["lanczos", "power", "dense", "x"]))
def test_hessian_eigenpairs(w, x, y, d, key, method):
    check(jl.hessian_eigenpairs, ["w", "x", "y", "d", "key", "method", "labels"], model=MODEL, w=w, x=x, y=y, d=d, key=key,
          method=method)


@FUZZ
@given(w=cheap_arrays(W), x=cheap_arrays(X), y=cheap_arrays(Y), num_probes=scalars(8), key=KEYS)
def test_hessian_trace(w, x, y, num_probes, key):
    check(jl.hessian_trace, ["w", "x", "y", "num_probes", "key", "labels"], model=MODEL, w=w, x=x, y=y,
          num_probes=num_probes, key=key)


@FUZZ
@given(sub=SUBSPACES, x=cheap_arrays(X), y=cheap_arrays(Y), sigma=scalars(0.5, 1e-30, 1e30), num_draws=scalars(4), key=KEYS,
       samples_per_k=scalars(None, 2, 3), vr=st.sampled_from(["none", "cv", "antithetic", "sobol", "bogus"]),
       orderings=st.sampled_from([None, None, 2, np.arange(N)[None], np.zeros((1, N), int), "x"]))
def test_delta_monte_carlo(sub, x, y, sigma, num_draws, key, samples_per_k, vr, orderings):
    names = ["subspace", "x", "y", "sigma", "num_draws", "key", "samples_per_k", "variance_reduction", "orderings",
             "labels", "thetas"]
    check(jl.delta_monte_carlo, names, model=MODEL, subspace=sub, x=x, y=y, sigma=sigma, num_draws=num_draws, key=key,
          samples_per_k=samples_per_k, variance_reduction=vr, orderings=orderings)


@FUZZ
@given(sub=SUBSPACES, x=cheap_arrays(X), y=cheap_arrays(Y), sample_block=scalars(None, 3))
def test_subspace_curvature(sub, x, y, sample_block):
    check(jl.subspace_curvature, ["subspace", "x", "y", "sample_block", "labels"], model=MODEL, subspace=sub, x=x, y=y,
          sample_block=sample_block)


CURV = jl.subspace_curvature(MODEL, SUB, X, Y)


@FUZZ
@given(c=arrays(CURV.c), g=arrays(CURV.g), G=arrays(CURV.G), sigma=scalars(0.5, 1e30), samples_per_k=scalars(None, 3))
def test_theory_delta(c, g, G, sigma, samples_per_k):
    check(jl.theory_delta, ["curv", "sigma", "samples_per_k"], curv=jl.SubspaceCurvature(c, g, G), sigma=sigma,
          samples_per_k=samples_per_k)


@FUZZ
@given(sub=SUBSPACES, x=cheap_arrays(X), y=cheap_arrays(Y), k=st.sampled_from([[1], [1, 5], [0], [N], [2.5], [], "1"]),
       grid=scalars(3), extent=scalars(1.0, 1e30))
def test_loss_surface(sub, x, y, k, grid, extent):
    check(jl.loss_surface, ["subspace", "x", "y", "k", "grid", "extent", "labels"], model=MODEL, subspace2d=sub, x=x, y=y,
          k=k, grid=grid, extent=extent)


@FUZZ
@given(w=arrays(W), d=scalars(2), key=KEYS, filter_normalize=st.booleans(), orthonormalize=st.booleans(),
       unit_norm=st.booleans())
def test_random_directions(w, d, key, filter_normalize, orthonormalize, unit_norm):
    check(jl.random_directions, ["w", "d", "key", "filter_normalize"], model=MODEL, w=w, d=d, key=key,
          filter_normalize=filter_normalize, orthonormalize=orthonormalize, unit_norm=unit_norm)


DELTA = jl.delta_monte_carlo(MODEL, SUB, X, Y, sigma=0.5, num_draws=8, key=KEY, samples_per_k=2, orderings=3)


@FUZZ
@given(w=arrays(W), x=arrays(X), y=arrays(Y), samples_per_k=st.sampled_from([2, 2, 3, None, 0, "2"]),
       result=st.sampled_from([DELTA, DELTA._replace(info=DELTA.info._replace(orderings=None)), "result", None]))
def test_delta_split(w, x, y, samples_per_k, result):
    check(jl.delta_split, ["result", "w", "x", "y", "samples_per_k", "labels"], result=result, model=MODEL, w=w, x=x, y=y,
          samples_per_k=samples_per_k)


CURVE = np.arange(1, 41, dtype=float) ** -2.0


@FUZZ
@given(delta=arrays(CURVE), tol=scalars(1e-3), smooth=st.sampled_from([None, None, 3, 2, 0, 99]))
def test_sufficient_k(delta, tol, smooth):
    check(jl.sufficient_k, ["delta", "tol", "smooth", "window", "k"], delta=delta, tol=tol, smooth=smooth)


@FUZZ
@given(delta=arrays(CURVE), stderr=st.one_of(st.none(), arrays(0.05 * CURVE)), tol=scalars(1e-5),
       level=scalars(0.9), tail=scalars(0.25))
def test_forecast_sufficient_k(delta, stderr, tol, level, tail):
    names = ["curve", "stderr", "tol", "level", "tail", "k", "values", "value", "standard errors", "min_points", "alpha"]
    check(jl.forecast_sufficient_k, names, curve=delta, tol=tol, stderr=stderr, level=level, tail=tail, num_bootstrap=100)


IMAGES = np.arange(2 * 784, dtype=np.uint8).reshape(2, 784)


@FUZZ
@given(x=arrays(IMAGES), name=st.sampled_from(["mnist", "cifar10", "svhn", 3, None]),
       normalize=st.sampled_from(["standard", "unit", "symmetric", "none", "z", None]))
def test_normalize_images(x, name, normalize):
    check(jl.normalize_images, ["x", "name", "normalize", "dataset", "images"], x=x, name=name, normalize=normalize)


@FUZZ
@given(value=st.one_of(arrays(CURVE), st.sampled_from([{"a": 1}, {1: 2}, {(1, 2): 3}, [math.nan], _Opaque(), b"bytes"])),
       name=st.sampled_from(["out.json", "sub/out.json", "", ".", None]))
def test_write_json(tmp_path_factory, value, name):
    base = tmp_path_factory.mktemp("fuzz")
    check(jl.write_json, ["path", "obj"], path=None if name is None else base / name, obj={"value": value})
