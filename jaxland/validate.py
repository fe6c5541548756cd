"""One validation layer for every public entry point.

Each check raises :class:`~jaxland.ConfigError` naming the argument, the
problem and the fix, before any compiled program runs, so a bad input never
surfaces as a traceback from inside JAX or as a silently wrong number.
Checks of array *values* (finite inputs, label range) run once per call on the
host; they are skipped for traced arrays (inside a user's ``jit``), where the
finite-result guard on the output (:func:`finite_result`) still applies.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError, DataError, DataNotFoundError, NumericalError

__all__ = [
    "positive_int",
    "check_sigma",
    "check_data",
    "check_params",
    "check_subspace",
    "check_prefix",
    "num_groups",
    "unit",
    "finite_result",
    "check_model",
    "check_key",
    "check_seed",
    "check_real",
    "check_vectors",
    "check_output_loss",
    "check_operator",
    "check_curvature",
    "check_output_dir",
    "check_data_dir",
    "check_private",
    "check_loop",
    "check_fast_kernel",
]


def _concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _eager(fn):
    # concrete arrays closed over by a caller's jit are still checked: evaluate now, do not stage into the trace
    with jax.ensure_compile_time_eval():
        return fn()


def _all_finite(a) -> bool:
    """One reduction on the array's device; only a bool comes back to the host."""
    return _eager(lambda: bool(jnp.all(jnp.isfinite(a))))


def positive_int(name: str, value, default=None, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (``default`` when None)."""
    if value is None:
        return default
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_sigma(sigma) -> float:
    return check_real("sigma (theta ~ N(0, sigma^2 I))", sigma)


@functools.lru_cache(maxsize=256)
def _shapes(model, x_shape, x_dtype, y_shape, y_dtype):
    """(output shape or None, per-sample loss shape) for two samples, by abstract evaluation."""
    xs = jax.ShapeDtypeStruct((2, *x_shape), x_dtype)
    ys = jax.ShapeDtypeStruct((2, *y_shape), y_dtype)
    w = jax.ShapeDtypeStruct((int(model.num_params),), x_dtype if jnp.issubdtype(x_dtype, jnp.floating) else jnp.float32)
    try:
        out = model.output_shape((2, *x_shape), x_dtype) if hasattr(model, "output_shape") else None
    except ConfigError as e:
        got = f"{x_shape[0]} features" if len(x_shape) == 1 else f"per-sample shape {tuple(x_shape)}"
        raise ConfigError(f"x ({got}) does not fit the model: {e}") from None
    try:
        losses = jax.eval_shape(model.per_sample_losses, w, xs, ys)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (the model's or loss's own shape error)
        raise ConfigError(
            f"{getattr(model, 'name', type(model).__name__)} cannot evaluate its loss on inputs of per-sample shape "
            f"{tuple(x_shape)} with targets of per-sample shape {tuple(y_shape)} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    return out, tuple(losses.shape)


def check_data(model, x, y, *, min_samples: int = 2, values: bool = True) -> int:
    """Check ``x`` (n, ...) and ``y`` against ``model``; returns n.

    Shapes: ``x`` must be something the model accepts (the expected shape is
    named otherwise); ``y`` has one entry per sample: integer labels in
    ``[0, classes)`` for cross-entropy, targets of the output's shape for MSE.
    Values (concrete arrays only): every input finite; labels in range.
    """
    check_model(model)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ConfigError(f"x must be an array (n, ...), got {type(x).__name__}; convert with jnp.asarray(x)")
    if x.ndim < 1:
        raise ConfigError(f"x must have a leading sample axis (n, ...), got a scalar of shape {x.shape}")
    n = int(x.shape[0])
    if n < min_samples:
        raise ConfigError(f"need at least {min_samples} samples (to compare L_k and L_(k+1)), got {n}")
    if y is None or not hasattr(y, "shape"):
        raise ConfigError(f"y must be an array with one entry per sample, got {type(y).__name__}")
    if y.ndim < 1 or int(y.shape[0]) != n:
        raise ConfigError(f"x has {n} samples but y has shape {tuple(y.shape)}; give one label/target per sample")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigError(f"x must be floating point, got {x.dtype}; convert with x.astype(jnp.float32)")
    if getattr(model, "classification", False) and (y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer)):
        raise ConfigError(
            f"cross-entropy needs integer class labels of shape (n,), got {y.dtype} {tuple(y.shape)}; "
            "for regression targets build the model with loss='mse'"
        )
    out, loss_shape = _shapes(model, tuple(x.shape[1:]), jnp.dtype(x.dtype), tuple(y.shape[1:]), jnp.dtype(y.dtype))
    if loss_shape != (2,):
        raise ConfigError(
            f"the loss must return one value per sample: on 2 samples it returned shape {loss_shape}; "
            "a custom loss(outputs, y) must not average over the batch"
        )
    if getattr(model, "loss", None) == "mse" and out is not None and int(np.prod(y.shape[1:])) != int(np.prod(out[1:])):
        raise ConfigError(f"mse targets y have per-sample shape {tuple(y.shape[1:])} but the model outputs {out[1:]}")
    if values and _concrete(x) and _concrete(y):
        if not _all_finite(x):
            bad = _eager(lambda: int(jnp.sum(~jnp.isfinite(x))))
            raise ConfigError(f"x contains {bad} non-finite value(s) (NaN/inf); clean or drop those samples first")
        if getattr(model, "classification", False) and out is not None:
            lo, hi, classes = _eager(lambda: int(jnp.min(y))), _eager(lambda: int(jnp.max(y))), int(out[-1])
            if lo < 0 or hi >= classes:
                raise ConfigError(
                    f"labels y must lie in [0, {classes}) for the model's {classes} outputs, got min {lo}, max {hi}; "
                    "remap the labels or build the model with more outputs"
                )
        elif jnp.issubdtype(y.dtype, jnp.floating) and not _all_finite(y):
            raise ConfigError("targets y contain non-finite values (NaN/inf)")
    return n


def check_params(model, w, name: str = "w", *, values: bool = True):
    """``w`` must be a flat float vector of the model's length (and finite)."""
    dim = int(check_model(model).num_params)
    shape = tuple(getattr(w, "shape", ()))
    if shape != (dim,):
        raise ConfigError(
            f"{name} must be a flat parameter vector of shape ({dim},) for {getattr(model, 'name', model)}, got {shape}; "
            "flatten a parameter pytree with model.ravel(params)"
        )
    if not jnp.issubdtype(w.dtype, jnp.floating):
        raise ConfigError(f"{name} must be floating point, got {w.dtype}; convert with {name}.astype(jnp.float32)")
    if values and _concrete(w) and not _all_finite(w):
        raise ConfigError(f"{name} contains non-finite values (NaN/inf): training may have diverged")
    return w


def check_subspace(model, subspace, *, values: bool = True) -> int:
    """A :class:`~jaxland.Subspace` matching the model; returns d."""
    if not (hasattr(subspace, "center") and hasattr(subspace, "directions")):
        raise ConfigError(f"expected a jaxland.Subspace(center, directions), got {type(subspace).__name__}")
    p = subspace.directions
    if p.ndim != 2:
        raise ConfigError(f"subspace.directions must be (d, D), got shape {tuple(p.shape)}")
    dim = int(model.num_params)
    if subspace.center.shape != (dim,) or p.shape[1] != dim:
        raise ConfigError(
            f"subspace has center {tuple(subspace.center.shape)} and directions {tuple(p.shape)}, "
            f"but the model has D={dim} parameters"
        )
    if p.shape[0] < 1 or p.shape[0] > dim:
        raise ConfigError(f"subspace dimension d={p.shape[0]} must be in [1, D={dim}]")
    check_params(model, subspace.center, "subspace.center", values=values)
    if values and _concrete(p) and not _all_finite(p):
        raise ConfigError("subspace.directions contain non-finite values (NaN/inf)")
    return int(p.shape[0])


def num_groups(n: int, samples_per_k) -> int:
    """K: the number of samples, or of complete groups of ``samples_per_k`` samples; must be >= 2."""
    if samples_per_k is None:
        return n
    b = positive_int("samples_per_k", samples_per_k)
    k = n // b
    if k < 2:
        raise ConfigError(f"samples_per_k={samples_per_k} leaves {k} complete group(s) of {n} samples; need >= 2")
    return k


def unit(samples_per_k) -> str:
    """``"samples"`` or ``"batches"``: what k counts."""
    return "samples" if samples_per_k is None else "batches"


def check_prefix(k, n: int, name: str = "k"):
    """A prefix length ``1 <= k <= n`` (None: all n); traced values pass through unchecked."""
    if k is None or not _concrete(k):
        return k
    kk = np.asarray(k)
    if kk.ndim != 0 or not np.issubdtype(kk.dtype, np.integer):
        raise ConfigError(f"{name} must be an integer number of samples, got {k!r}")
    if not 1 <= int(kk) <= n:
        raise ConfigError(f"{name}={int(kk)} must be in [1, {n}] (the number of samples given); L_k needs k samples")
    return k


def finite_result(name: str, value, *, where: str = "", cause: str = "", allow: bool = False):
    """Raise :class:`NumericalError` if ``value`` (an array or a tree) has non-finite entries.

    ``where`` describes the index axis (e.g. ``"k"``) to name the first bad
    position; ``allow=True`` returns the value unchecked.
    """
    if allow:
        return value
    for path, leaf in jax.tree_util.tree_leaves_with_path(value):
        if not _concrete(leaf) or not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        ok = np.isfinite(np.asarray(leaf))
        if not ok.all():
            first = [int(i) for i in np.argwhere(~ok)[0]]
            at = f" first at {where}{first[0] if len(first) == 1 else tuple(first)}" if first else ""
            part = f" (part {jax.tree_util.keystr(path)})" if path else ""
            raise NumericalError(
                f"{name}{part} is non-finite ({int((~ok).sum())} entries){at}"
                + (f"; likely cause: {cause}" if cause else "")
                + "; pass allow_nonfinite=True to get the raw values"
            )
    return value


def check_model(model):
    """``model`` must follow the model protocol (``num_params``, ``per_sample_losses``)."""
    if not (hasattr(model, "num_params") and callable(getattr(model, "per_sample_losses", None))):
        raise ConfigError(
            f"model must be a jaxland model (num_params and per_sample_losses(w, x, y)), got {type(model).__name__}; "
            "wrap a Flax NNX module or a pure function with jaxland.as_model, or use jaxland.MLPConfig"
        )
    return model


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


def check_vectors(model, v, name: str = "v", *, ndim: int = 1, like=None, values: bool = True):
    """Tangent vector(s) ``v`` of shape (D,) (``ndim=1``) or (m, D) (``ndim=2``), finite, in ``like``'s dtype."""
    dim = int(check_model(model).num_params)
    shape = tuple(getattr(v, "shape", ()))
    want = f"({dim},)" if ndim == 1 else f"(m, {dim})"
    if not hasattr(v, "dtype") or len(shape) != ndim or shape[-1] != dim:
        raise ConfigError(f"{name} must have shape {want} (D = {dim} parameters), got {shape or type(v).__name__}")
    if not jnp.issubdtype(v.dtype, jnp.floating):
        raise ConfigError(f"{name} must be floating point, got {v.dtype}; convert with {name}.astype(w.dtype)")
    if like is not None and jnp.dtype(v.dtype) != jnp.dtype(like.dtype):
        raise ConfigError(f"{name} has dtype {v.dtype} but w has {like.dtype}; give both the same dtype")
    if values and _concrete(v) and not _all_finite(v):
        raise ConfigError(f"{name} contains non-finite values (NaN/inf)")
    return v


def check_output_loss(model):
    """The model's loss as a function of its outputs, ``loss(outputs, y) -> (n,)``; what a GGN needs.

    The model must expose ``apply(w, x)`` and ``loss`` (a name of
    :data:`jaxland.models.LOSSES` or a callable), and its per-sample losses must
    be ``loss(apply(w, x), y)`` (a model that overrides ``per_sample_losses``
    computes something else, so its Gauss-Newton matrix would not belong to its loss).
    """
    from .models.base import Model, _loss_fn  # models import nothing from here; imported late all the same

    check_model(model)
    name = getattr(model, "name", type(model).__name__)
    if not callable(getattr(model, "apply", None)) or getattr(model, "loss", None) is None:
        raise ConfigError(
            f"{name}: the Gauss-Newton matrix needs the model's outputs and its loss of them (model.apply(w, x) and "
            "model.loss); build the model with jaxland.as_model or jaxland.MLPConfig, or use the Hessian or the "
            "empirical Fisher, which need only per_sample_losses"
        )
    if not isinstance(model, Model) or type(model).per_sample_losses is not Model.per_sample_losses:
        raise ConfigError(
            f"{name} defines its own per_sample_losses, so its loss is not known to be model.loss(model.apply(w, x), y) "
            "and the Gauss-Newton matrix could belong to another loss; use the Hessian or the empirical Fisher"
        )
    return _loss_fn(model.loss)


def check_operator(op, name: str = "op"):
    """``op`` must be a :class:`~jaxland.curvature.CurvatureOperator` (from ``hessian_operator`` and its siblings)."""
    from .curvature.operators import CurvatureOperator

    if not isinstance(op, CurvatureOperator):
        raise ConfigError(
            f"{name} must be a curvature operator, got {type(op).__name__}; build one with "
            "jaxland.hessian_operator(model, w, x, y), ggn_operator or fisher_operator "
            "(for a plain function v -> A v use jaxland.top_eigenpairs)"
        )
    return op


def check_curvature(curv, *, values: bool = True) -> tuple[int, int]:
    """A :class:`~jaxland.SubspaceCurvature`: ``c`` (N,), ``g`` (N, d), ``G`` (N, d, d), finite; returns (N, d)."""
    if not all(hasattr(curv, f) for f in ("c", "g", "G")):
        raise ConfigError(f"curv must be a SubspaceCurvature from jaxland.subspace_curvature, got {type(curv).__name__}")
    c, g, G = (jnp.asarray(a) for a in (curv.c, curv.g, curv.G))
    if c.ndim != 1 or g.ndim != 2 or G.ndim != 3:
        raise ConfigError(f"curv must hold c (N,), g (N, d), G (N, d, d); got shapes {c.shape}, {g.shape}, {G.shape}")
    n, d = int(c.shape[0]), int(g.shape[1])
    if g.shape[0] != n or G.shape != (n, d, d):
        raise ConfigError(f"curv shapes disagree: c {c.shape}, g {g.shape}, G {G.shape}; expected (N,), (N, d), (N, d, d)")
    if values:
        for nm, a in (("c", c), ("g", g), ("G", G)):
            if _concrete(a) and not _all_finite(a):
                raise ConfigError(f"curv.{nm} contains non-finite values (NaN/inf): recompute subspace_curvature at a finite w*")
    return n, d


def check_output_dir(path, name: str = "--out") -> Path:
    """``path`` must be a folder that exists or can be created, and be writable; nothing is created.

    An empty path is refused (it would mean the current folder); ``~`` is expanded.
    """
    if path is None or not str(path).strip():
        raise ConfigError(f"{name} is empty; give a folder path (e.g. runs/out)")
    p = Path(path).expanduser()
    if p.is_symlink() and not p.exists():
        raise ConfigError(f"{name} {path}: a symbolic link to {os.readlink(p)}, which does not exist; give an existing folder or a new path")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{name} {path}: exists and is not a folder; give a folder path")
    anc = p.absolute()
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{name} {path}: {anc} is a file, so the folder cannot be created; give another path")
    try:  # a real write, since os.access says yes to root on read-only file systems
        fd, probe = tempfile.mkstemp(dir=anc, prefix=".jaxland-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{name} {path}: cannot write in {anc} ({e.strerror}); choose a writable folder") from None
    return p


def check_data_dir(path, name: str = "data_dir") -> Path | None:
    """A folder of dataset files named by the user, or ``None`` when none was named.

    ``None`` and ``""`` (an empty environment variable) mean none was named;
    ``~`` is expanded. A named path that does not exist is a
    :class:`~jaxland.DataNotFoundError` naming it, so a typo never falls back
    to other data; a path that is a file is a :class:`~jaxland.DataError`.
    """
    if path is None:
        return None
    try:
        raw = os.fspath(path)
    except TypeError:
        raise ConfigError(f"{name} must be a folder path (str or os.PathLike), got {type(path).__name__}") from None
    if raw in ("", b""):
        return None
    p = Path(os.fsdecode(raw)).expanduser()
    if not p.exists():
        raise DataNotFoundError(f"{name}={raw!r}: no such folder ({p}); give the folder that holds the dataset files, or unset it to use the defaults")
    if not p.is_dir():
        raise DataError(f"{name}={raw!r} is a file; give the folder that holds the dataset files")
    return p


def check_private(path, name: str) -> Path:
    """``path`` (a file or folder) must be owned by the current user and writable by no one else.

    What jaxland reads back and trusts (weight-cache entries) must come from a
    place only the user can write: a folder that others can write lets them
    plant or replace files. Group- or world-writable, or another owner, is a
    :class:`ConfigError` naming the owner and mode. Platforms without user ids
    (Windows) pass.
    """
    p = Path(path)
    if not hasattr(os, "getuid"):
        return p
    st = p.stat()
    kind = "folder" if p.is_dir() else "file"
    if st.st_uid != os.getuid():
        raise ConfigError(f"{name} {path}: the {kind} belongs to user id {st.st_uid}, not to you (user id {os.getuid()})")
    if st.st_mode & 0o022:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("every user", 0o002)) if st.st_mode & bit)
        raise ConfigError(f"{name} {path}: the {kind} is writable by {who} (mode {oct(st.st_mode & 0o777)}); "
                          f"make it private (chmod go-w {path}) or use another")
    return p


def check_loop(loop, name: str = "loop") -> str:
    """Where an iterative estimator's loop runs: one of :data:`jaxland.linalg.loops.LOOPS`."""
    from .linalg.loops import LOOPS  # imported late: linalg imports this module

    if loop not in LOOPS:
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
