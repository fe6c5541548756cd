"""Scalars, keys, options, arrays and results: the checks every other check is built from."""

from __future__ import annotations

import math
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, NumericalError


def _concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _eager(fn):
    # concrete arrays closed over by a caller's jit are still checked: evaluate now, do not stage into the trace
    with jax.ensure_compile_time_eval():
        return fn()


def _all_finite(a) -> bool:
    """One reduction on the array's device; only a bool comes back to the host."""
    return _eager(lambda: bool(jnp.all(jnp.isfinite(a))))


def warn(message: str, category=RuntimeWarning) -> None:
    """``warnings.warn`` pointing at the first caller outside jaxland (the user's line)."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # the jaxland package
    level, frame = 2, sys._getframe(1)  # level 2: the caller of warn()
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)


def as_array(name: str, value, *, allow_none: bool = False):
    """``value`` as a JAX array: lists, tuples, numpy arrays and scalars are converted, JAX arrays (and
    tracers) pass unchanged; ``None`` (unless ``allow_none``), ragged lists, strings and objects are refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, jax.Array):
        return value
    if value is None:
        raise ConfigError(f"{name} is None; pass an array")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.VisibleDeprecationWarning)
            a = np.asarray(value)
    except (TypeError, ValueError, OverflowError, np.exceptions.VisibleDeprecationWarning) as e:
        raise ConfigError(
            f"{name} cannot be read as an array ({type(value).__name__}: {str(e).splitlines()[0][:120]}); "
            "pass a rectangular array of numbers (jnp.asarray)"
        ) from None
    if a.dtype.kind not in "biuf":
        raise ConfigError(f"{name} must hold real numbers, got {type(value).__name__} of dtype {a.dtype}; pass a numeric array")
    try:
        return jnp.asarray(a)
    except (TypeError, ValueError, OverflowError) as e:  # e.g. int64 values outside int32 without x64
        raise ConfigError(f"{name} cannot be converted to a JAX array ({e}); pass values that fit {a.dtype}") from None


_REQUIRED = object()


def positive_int(name: str, value, default=_REQUIRED, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; bools and non-integral numbers are refused.

    ``None`` gives ``default`` when one is passed (an optional setting), else it is refused.
    """
    if value is None:
        if default is _REQUIRED:
            raise ConfigError(f"{name} must be {'a positive integer' if minimum == 1 else f'an integer >= {minimum}'}, got None")
        return default
    try:
        ok = not isinstance(value, (bool, np.bool_)) and np.ndim(value) == 0 and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be {'a positive integer' if minimum == 1 else f'an integer >= {minimum}'}, got {value!r}")
    return int(value)


def check_sigma(sigma) -> float:
    return check_real("sigma (theta ~ N(0, sigma^2 I))", sigma)


def finite_result(name: str, value, *, where: str = "", cause: str = "", allow: bool = False, raw_hint: bool = True):
    """Raise :class:`NumericalError` if ``value`` (an array or a tree) has non-finite entries.

    ``where`` describes the index axis (e.g. ``"k"``) to name the first bad
    position; ``allow=True`` returns the value unchecked; ``raw_hint``: the
    message points to ``allow_nonfinite=True`` (for functions that have it).
    """
    if allow:
        return value
    for path, leaf in jax.tree_util.tree_leaves_with_path(value):
        if not _concrete(leaf) or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) or _all_finite(leaf):
            continue  # the common case costs one reduction on the device; only a bad leaf comes to the host
        ok = np.isfinite(np.asarray(leaf))
        if not ok.all():
            first = [int(i) for i in np.argwhere(~ok)[0]]
            at = f" first at {where}{first[0] if len(first) == 1 else tuple(first)}" if first else ""
            part = f" (part {jax.tree_util.keystr(path)})" if path else ""
            raise NumericalError(
                f"{name}{part} is non-finite ({int((~ok).sum())} entries){at}"
                + (f"; likely cause: {cause}" if cause else "")
                + ("; pass allow_nonfinite=True to get the raw values" if raw_hint else "")
            )
    return value


def check_key(key, name: str = "key"):
    """``key`` must be one PRNG key: ``jax.random.key(seed)`` (or a legacy ``jax.random.PRNGKey``).

    None is refused: every function that draws random numbers takes its key explicitly.
    """
    if key is None:
        raise ConfigError(f"{name} must be given (random numbers are drawn here): pass {name}=jax.random.key(0); "
                          "the same key gives the same result")
    dt = getattr(key, "dtype", None)
    if dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key):
        if tuple(key.shape) != ():
            raise ConfigError(f"{name} must be a single PRNG key, got a batch of shape {tuple(key.shape)}; pass {name}[0]")
        return key
    if dt is not None and dt == jnp.uint32 and tuple(key.shape) in ((2,), (4,)):  # raw legacy key data
        return key
    shown = repr(key) if not hasattr(key, "shape") else f"{dt} array of shape {tuple(key.shape)}"
    raise ConfigError(f"{name} must be a PRNG key such as jax.random.key(0), got {type(key).__name__} {shown[:60]}")


def check_seed(seed, name: str = "seed") -> int:
    """An integer seed in ``[0, 2^63)`` (what ``jax.random.key`` takes)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ConfigError(f"{name} must be an integer in [0, 2^63), got {seed!r}")
    return int(seed)


def check_real(name: str, value, *, positive: bool = True) -> float:
    """``value`` as a finite float (``> 0`` when ``positive``); the error names ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or (positive and v <= 0):
        raise ConfigError(f"{name} must be a {'positive ' if positive else ''}finite number, got {value!r}")
    return v


def check_loop(loop, name: str = "loop") -> str:
    """Where an iterative estimator's loop runs: one of :data:`jaxland.linalg.loops.LOOPS`."""
    from ..linalg.loops import LOOPS  # imported late: linalg imports this package

    if not isinstance(loop, str) or loop not in LOOPS:
        raise ConfigError(f"{name} must be one of {LOOPS} (where the solver's loop runs: 'auto' picks the host loop for "
                          f"convolutions on a CPU), got {loop!r}")
    return loop


def check_fast_kernel(fast_kernel):
    """The Monte Carlo ``fast_kernel=`` option: True (automatic), False (generic) or ``"first_layer"``."""
    if isinstance(fast_kernel, str):
        if fast_kernel != "first_layer":
            raise ConfigError(f"fast_kernel must be True (automatic), False (the generic kernel) or 'first_layer', "
                              f"got {fast_kernel!r}")
        return fast_kernel
    return bool(fast_kernel)
