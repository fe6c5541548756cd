"""What identifies a model across processes: a content hash of its computation and its starting weights.

The weight cache may return stored weights only for the model that produced
them. A model's ``spec`` names its architecture, but two lambdas, two NNX
instances with different initial weights, or a forward pass edited from relu to
tanh can share a spec. :func:`model_fingerprint` hashes instead what training
computes:

* the jaxpr of ``model.per_sample_losses`` (forward pass and loss) and of
  ``model.apply`` on abstract inputs of the data's per-sample shapes, with the
  values of the arrays they close over (BatchNorm statistics, captured
  constants);
* the starting weights: the values of ``model.initial_params`` when the model
  has them, else the jaxpr of ``model.init`` on an abstract key (the
  initialiser; its weights are then a function of the training key, which the
  cache keys separately);
* the model's type and ``spec``.

A jaxpr is printed without source locations and with object addresses removed,
so the same model gives the same fingerprint in another process. Where a
jaxpr cannot be made, the Python objects are hashed instead
(:func:`code_fingerprint`: bytecode, constants, closure values, defaults, array
values); a model that neither identifies is refused unless it was given an
explicit ``spec``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import types

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError

__all__ = ["model_fingerprint", "code_fingerprint", "array_digest", "callable_key"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{8,}")


def array_digest(*trees) -> str:
    """sha256 of the shapes, dtypes and bytes of every array leaf (typed PRNG keys by their key data)."""
    h = hashlib.sha256()
    _feed_arrays(h, trees)
    return h.hexdigest()


def callable_key(fn):
    """A hashable in-process identity of a callable: a ``functools.partial`` by its function and arguments, else the object.

    Models hold it in their equality key, so a rebuilt ``partial`` factory
    gives an equal model (sharing compiled programs) while two lambdas never do.
    """
    if isinstance(fn, functools.partial):
        key = ("partial", callable_key(fn.func), fn.args, tuple(sorted(fn.keywords.items())))
        try:
            hash(key)
            return key
        except TypeError:
            return fn
    return fn


def _feed_arrays(h, trees) -> None:
    for leaf in jax.tree.leaves(trees):
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            h.update(str(jax.random.key_impl(leaf)).encode())
            leaf = jax.random.key_data(leaf)
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())


def _jaxpr(h, fn, *args) -> None:
    closed = jax.make_jaxpr(fn)(*args)
    h.update(_ADDRESS.sub("", str(closed)).encode())
    _feed_arrays(h, closed.consts)


class _Unidentifiable(Exception):
    pass


def code_fingerprint(obj) -> str:
    """sha256 of a Python object by content: functions by bytecode, constants, names, defaults and closure values.

    Partials by their function and arguments, classes by their methods,
    arrays by value, containers element-wise, other objects by their type and
    attributes. Raises ``ValueError`` for an object whose only description
    is its address.
    """
    h = hashlib.sha256()
    try:
        _feed_code(h, obj, set(), 0)
    except _Unidentifiable as e:
        raise ValueError(str(e)) from None
    return h.hexdigest()


def _feed_code(h, o, seen: set, depth: int) -> None:
    if depth > 40:
        raise _Unidentifiable(f"{type(o).__name__} nested too deeply")
    h.update(f"<{type(o).__module__}.{type(o).__qualname__}>".encode())
    if o is None or isinstance(o, (bool, int, float, complex, str, bytes, np.generic)):
        h.update(repr(o).encode())
        return
    if isinstance(o, (np.ndarray, jax.Array)):
        _feed_arrays(h, o)
        return
    if id(o) in seen:
        h.update(b"<cycle>")
        return
    seen = seen | {id(o)}
    rec = functools.partial(_feed_code, h, seen=seen, depth=depth + 1)
    if isinstance(o, (list, tuple, set, frozenset)):
        items = sorted(o, key=repr) if isinstance(o, (set, frozenset)) else o
        for v in items:
            rec(v)
    elif isinstance(o, dict):
        for k, v in sorted(o.items(), key=lambda kv: repr(kv[0])):
            rec(k)
            rec(v)
    elif isinstance(o, types.CodeType):
        h.update(o.co_code)
        rec(o.co_names)
        rec(o.co_consts)
    elif isinstance(o, types.FunctionType):
        h.update(o.__qualname__.encode())
        rec(o.__code__)
        rec(o.__defaults__)
        rec(o.__kwdefaults__)
        rec(tuple(c.cell_contents for c in (o.__closure__ or ())))
    elif isinstance(o, types.MethodType):
        rec(o.__func__)
        rec(o.__self__)
    elif isinstance(o, functools.partial):
        rec(o.func)
        rec(o.args)
        rec(o.keywords)
    elif isinstance(o, type):
        h.update(o.__qualname__.encode())
        rec({k: v for k, v in vars(o).items() if isinstance(v, (types.FunctionType, staticmethod, classmethod, property))})
    elif isinstance(o, (staticmethod, classmethod)):
        rec(o.__func__)
    elif isinstance(o, property):
        rec((o.fget, o.fset))
    elif isinstance(o, types.ModuleType):
        h.update(o.__name__.encode())
    elif isinstance(o, (types.BuiltinFunctionType, np.ufunc)) or type(o).__name__ == "PjitFunction":
        h.update(f"{getattr(o, '__module__', '')}.{getattr(o, '__qualname__', getattr(o, '__name__', ''))}".encode())
        if type(o).__name__ == "PjitFunction":
            rec(getattr(o, "__wrapped__", None))
    elif hasattr(o, "__dict__") and not isinstance(o, type):
        rec(type(o))
        rec(vars(o))
    else:
        text = repr(o)
        if _ADDRESS.search(text):
            raise _Unidentifiable(f"a {type(o).__name__} is described only by its address ({text[:80]})")
        h.update(text.encode())


def model_fingerprint(model, x_shape, x_dtype, y_shape, y_dtype) -> str:
    """sha256 of what determines the weights ``model`` trains to, besides data, settings and key.

    ``x_shape``, ``y_shape``: per-sample shapes of the inputs and targets (the
    jaxprs are traced on a batch of 2). Raises :class:`ConfigError` for a model
    that can be identified neither by its jaxprs nor by its code and has no
    explicit ``spec``.
    """
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    spec = getattr(model, "spec", None)
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    initial = getattr(model, "initial_params", None)
    if initial is not None:
        h.update(b"initial")
        _feed_arrays(h, initial)
        w_dtype = jnp.asarray(initial).dtype
    else:
        try:
            w_dtype = jax.eval_shape(model.init, jax.random.key(0)).dtype
        except Exception:  # noqa: BLE001  (a model that cannot initialise itself starts from init=, keyed separately)
            w_dtype = jnp.dtype(x_dtype) if jnp.issubdtype(x_dtype, jnp.floating) else jnp.float32
    w = jax.ShapeDtypeStruct((int(model.num_params),), w_dtype)
    xs = jax.ShapeDtypeStruct((2, *x_shape), x_dtype)
    ys = jax.ShapeDtypeStruct((2, *y_shape), y_dtype)
    try:
        _jaxpr(h, model.per_sample_losses, w, xs, ys)
        if callable(getattr(model, "apply", None)):
            _jaxpr(h, model.apply, w, xs)
        if initial is None and callable(getattr(model, "init", None)):
            try:
                _jaxpr(h, model.init, jax.random.key(0))
            except ConfigError:
                h.update(b"no init")  # training needs init= then, which the cache keys
        return h.hexdigest()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (any tracing failure: identify the model by its code instead)
        traced = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    try:
        h.update(b"code")
        h.update(code_fingerprint(model).encode())
        return h.hexdigest()
    except ValueError as e:
        reason = str(e)
    if getattr(model, "explicit_spec", False):
        return h.hexdigest()  # the user's spec (hashed above) names everything that determines the function
    name = getattr(model, "name", type(model).__name__)
    raise ConfigError(
        f"cannot identify the model {name} for the weight cache: its jaxpr cannot be made ({traced}) and its code "
        f"cannot be hashed ({reason}); give it a spec that names everything that determines its function and initial "
        "weights (jl.as_model(..., spec={...}), or a spec attribute with explicit_spec = True), or train it with jl.train"
    )
