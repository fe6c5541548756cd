"""The data, parameters, subspaces, vectors and curvature a model's functions take."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from .values import _all_finite, _concrete, _eager, as_array


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
        if is_sequence_model(model) and out is not None and tuple(y_shape) != tuple(out[1:-1]):
            raise ConfigError(f"targets y have per-sequence shape {tuple(y_shape)} but the model's logits are "
                              f"{tuple(out[1:])} (positions, vocabulary): give one target per position, -1 for padding") from None
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
    ``[0, classes)`` for cross-entropy, targets of the output's shape for MSE,
    and for a language model (``"sequence_cross_entropy"``) integer token ids
    ``x`` (n, T) in ``[0, V)`` and next-token targets (n, T) in ``[0, V)`` or
    ``-1`` (padding), at least one counted target per sequence.
    Values (concrete arrays only): every input finite; labels in range.
    """
    check_model(model)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ConfigError(f"x must be an array (n, ...), got {type(x).__name__}; convert with jnp.asarray(x)")
    if x.ndim < 1:
        raise ConfigError(f"x must have a leading sample axis (n, ...), got a scalar of shape {x.shape}")
    n = int(x.shape[0])
    if n < min_samples:
        raise ConfigError(f"x has {n} samples; need at least {min_samples}" + (" (to compare L_k and L_(k+1))" if min_samples > 1 else ""))
    if y is None or not hasattr(y, "shape"):
        raise ConfigError(f"y must be an array with one entry per sample, got {type(y).__name__}")
    if y.ndim < 1 or int(y.shape[0]) != n:
        raise ConfigError(f"x has {n} samples but y has shape {tuple(y.shape)}; give one label/target per sample")
    sequences = is_sequence_model(model)
    if sequences and not jnp.issubdtype(x.dtype, jnp.integer):
        raise ConfigError(f"a language model's inputs x must be integer token ids (n, T), got {x.dtype}; "
                          "load them with jaxland.data.load_text or convert with x.astype(jnp.int32)")
    if not sequences and not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigError(f"x must be floating point, got {x.dtype}; convert with x.astype(jnp.float32)")
    if getattr(model, "classification", False) and (y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer)):
        raise ConfigError(
            f"cross-entropy needs integer class labels y of shape (n,), got {y.dtype} {tuple(y.shape)}; "
            "for regression targets build the model with loss='mse'"
        )
    if sequences and not jnp.issubdtype(y.dtype, jnp.integer):
        raise ConfigError(f"sequence_cross_entropy needs integer next-token targets (n, T) (-1 = padding), got {y.dtype} "
                          f"{tuple(y.shape)}")
    out, loss_shape = _shapes(model, tuple(x.shape[1:]), jnp.dtype(x.dtype), tuple(y.shape[1:]), jnp.dtype(y.dtype))
    if loss_shape != (2,):
        raise ConfigError(
            f"the loss must return one value per sample: on 2 samples it returned shape {loss_shape}; "
            "a custom loss(outputs, y) must not average over the batch"
        )
    if getattr(model, "loss", None) == "mse" and out is not None and not mse_shapes_match(out[1:], y.shape[1:]):
        raise ConfigError(
            f"mse targets y have per-sample shape {tuple(y.shape[1:])} but the model outputs {tuple(out[1:])}: "
            "give targets of the output's shape (or shape (n,) for one output)"
        )
    if values and _concrete(x) and _concrete(y):
        if not sequences and not _all_finite(x):
            bad = _eager(lambda: int(jnp.sum(~jnp.isfinite(x))))
            raise ConfigError(f"x contains {bad} non-finite value(s) (NaN/inf); clean or drop those samples first")
        if getattr(model, "classification", False) and out is not None:
            _label_range(y, int(out[-1]))
        elif sequences and out is not None:
            _check_tokens(model, x, y, int(out[-1]))
        elif jnp.issubdtype(y.dtype, jnp.floating) and not _all_finite(y):
            raise ConfigError("targets y contain non-finite values (NaN/inf)")
    return n


def is_sequence_model(model) -> bool:
    """Whether ``model``'s samples are sequences: its loss is ``"sequence_cross_entropy"`` (inputs are token ids)."""
    return getattr(model, "loss", None) == "sequence_cross_entropy"


def _check_tokens(model, x, y, vocab: int) -> None:
    """Token ids ``x`` in [0, V); targets ``y`` in [0, V) or -1 (padding), at least one counted per sequence."""
    v_in = int(getattr(model, "vocab_size", None) or vocab)
    lo, hi = _eager(lambda: int(jnp.min(x))), _eager(lambda: int(jnp.max(x)))
    if lo < 0 or hi >= v_in:
        raise ConfigError(f"token ids x must lie in [0, {v_in}) for the model's vocabulary of {v_in}, got min {lo}, max {hi}; "
                          "encode the text with the vocabulary the model was built for")
    lo, hi = _eager(lambda: int(jnp.min(y))), _eager(lambda: int(jnp.max(y)))
    if lo < -1 or hi >= vocab:
        raise ConfigError(f"targets y must lie in [0, {vocab}) (the vocabulary) or be -1 (padding), got min {lo}, max {hi}")
    empty = _eager(lambda: int(jnp.sum(jnp.all(y.reshape(y.shape[0], -1) < 0, axis=1))))
    if empty:
        first = _eager(lambda: int(jnp.argmax(jnp.all(y.reshape(y.shape[0], -1) < 0, axis=1))))
        raise ConfigError(f"{empty} sequence(s) have no target (every position -1), first at index {first}: their loss "
                          "is undefined; drop them")


def mse_shapes_match(out_shape, y_shape) -> bool:
    """Per-sample MSE targets must have the output's shape; ``()`` (y of shape (n,)) matches one output."""
    out_shape, y_shape = tuple(out_shape), tuple(y_shape)
    return y_shape == out_shape or (y_shape == () and int(np.prod(out_shape)) == 1)


def _label_range(y, classes: int) -> None:
    lo, hi = _eager(lambda: int(jnp.min(y))), _eager(lambda: int(jnp.max(y)))
    if lo < 0 or hi >= classes:
        raise ConfigError(
            f"labels y must lie in [0, {classes}) for the model's {classes} outputs, got min {lo}, max {hi}; "
            "remap the labels or build the model with more outputs"
        )


def check_labels(model, x, y) -> int:
    """Inputs ``x`` (n, ...) and integer class labels ``y`` (n,) in ``[0, classes)`` of ``model``'s outputs; returns n.

    What :func:`jaxland.accuracy` needs, whatever the model's loss: labels of
    shape (n, 1) would broadcast against the (n,) predictions, and one-hot,
    float or out-of-range labels would silently match nothing.
    """
    check_model(model)
    if not hasattr(x, "shape") or not hasattr(x, "dtype") or x.ndim < 1 or int(x.shape[0]) < 1:
        raise ConfigError(f"x must be a non-empty array (n, ...), got {getattr(x, 'shape', type(x).__name__)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ConfigError(f"x must be floating point, got {x.dtype}; convert with x.astype(jnp.float32)")
    n = int(x.shape[0])
    if not hasattr(y, "shape") or y.ndim != 1 or int(y.shape[0]) != n or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ConfigError(
            f"accuracy needs integer class labels y of shape ({n},), got {getattr(y, 'dtype', type(y).__name__)} "
            f"{tuple(getattr(y, 'shape', ()))}; convert one-hot labels with y.argmax(-1)"
        )
    if not callable(getattr(model, "output_shape", None)):
        raise ConfigError(f"accuracy needs a model with outputs (model.apply), got {type(model).__name__}")
    try:
        out = model.output_shape((2, *x.shape[1:]), x.dtype)
    except ConfigError as e:
        raise ConfigError(f"x does not fit the model: {e}") from None
    if len(out) != 2:
        raise ConfigError(f"accuracy needs one output vector per sample (n, classes), the model gives {tuple(out)}")
    if _concrete(x) and not _all_finite(x):
        raise ConfigError("x contains non-finite values (NaN/inf); clean or drop those samples first")
    if _concrete(y):
        _label_range(y, int(out[-1]))
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
        raise ConfigError(f"subspace must be a jaxland.Subspace(center, directions), got {type(subspace).__name__}")
    p = subspace.directions
    if not hasattr(p, "ndim") or not hasattr(subspace.center, "shape"):
        raise ConfigError(
            f"subspace.center and subspace.directions must be arrays, got {type(subspace.center).__name__} and "
            f"{type(p).__name__}; build it as jaxland.Subspace(jnp.asarray(w), jnp.asarray(P))"
        )
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
    if not jnp.issubdtype(p.dtype, jnp.floating):
        raise ConfigError(f"subspace.directions must be floating point, got {p.dtype}")
    if values and _concrete(p):
        if not _all_finite(p):
            raise ConfigError("subspace.directions contain non-finite values (NaN/inf)")
        zero = _eager(lambda: np.flatnonzero(~np.asarray(jnp.any(p != 0, axis=1))))
        if zero.size:
            raise ConfigError(
                f"subspace.directions row(s) {zero.tolist()} are all zero: the subspace has fewer than d={p.shape[0]} "
                "dimensions and the estimates along it would be silently flat; drop those rows or choose other directions"
            )
    return int(p.shape[0])


def check_model(model):
    """``model`` must follow the model protocol (``num_params``, ``per_sample_losses``)."""
    if not (hasattr(model, "num_params") and callable(getattr(model, "per_sample_losses", None))):
        raise ConfigError(
            f"model must be a jaxland model (num_params and per_sample_losses(w, x, y)), got {type(model).__name__}; "
            "wrap a Flax NNX module or a pure function with jaxland.as_model, or use jaxland.MLPConfig"
        )
    return model


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
    from ..models.base import Model, _loss_fn  # models import nothing from here; imported late all the same

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
    from ..curvature.operators import CurvatureOperator

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
    c, g, G = (as_array(f"curv.{f}", getattr(curv, f)) for f in ("c", "g", "G"))
    for f, a in (("c", c), ("g", g), ("G", G)):
        if jnp.dtype(a.dtype) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
            raise ConfigError(f"curv.{f} must be float32 or float64, got {a.dtype}; recompute it with jaxland.subspace_curvature")
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


def check_quadratic_coefficients(coef) -> tuple[int, int]:
    """Second-order increments ``a`` (K,), ``c`` (K, D), ``B`` (K, D, D); returns (K, D).

    Shapes only: the closed forms that take them check the values inside
    their own compiled call (one host round trip instead of two), and raise on
    a non-finite coefficient there.
    """
    if not all(hasattr(coef, f) for f in ("a", "c", "B")):
        raise ConfigError(f"coef must be QuadraticCoefficients (a, c, B) from jaxland.landscape.quadratic_coefficients, "
                          f"got {type(coef).__name__}")
    a, c, b = (tuple(np.shape(v)) for v in (coef.a, coef.c, coef.B))
    if len(a) != 1 or len(c) != 2 or c[0] != a[0] or b != (a[0], c[1], c[1]):
        raise ConfigError(f"coef must hold a (K,), c (K, D), B (K, D, D); got shapes {a}, {c}, {b}")
    return int(a[0]), int(c[1])
