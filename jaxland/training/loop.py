"""Training with optax: one jitted ``lax.scan`` program per epoch, deterministic for a key."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError, DataNotFoundError, TrainingError
from ..io import atomic_write_bytes
from ..models.mlp import MLPConfig
from ..models.base import Model
from ..models.functions import accuracy, mean_loss, spec_json
from .. import memory
from ..validate import as_array, check_data, check_key, check_params, check_real, positive_int

__all__ = ["TrainResult", "train", "train_epoch", "save_params", "load_params", "params_bytes", "DIVERGENCE_FACTOR"]

# An epoch whose mean loss exceeds this multiple of the first step's loss has diverged.
DIVERGENCE_FACTOR = 10.0


class TrainResult(NamedTuple):
    """``params``: trained flat vector w*; ``loss_history``: (epochs, steps) batch losses;
    ``train_accuracy``: on the training data after the last epoch (None for non-classification losses)."""

    params: jax.Array
    loss_history: np.ndarray
    train_accuracy: float | None


@functools.partial(jax.jit, static_argnames=("model", "batch_size"), donate_argnames=("w", "opt_state"))
def train_epoch(model: Model, w, opt_state, x, y, perm, lr, *, batch_size: int):
    """One epoch of Adam over the batches ``perm`` defines (a ``lax.scan``; no Python loop).

    ``lr`` is a traced scalar, so changing it does not recompile.
    """
    opt = optax.adam(lr)
    steps = perm.shape[0] // batch_size
    idx = perm[: steps * batch_size].reshape(steps, batch_size)

    def step(carry, batch_idx):
        w, opt_state = carry
        loss, grad = jax.value_and_grad(mean_loss, argnums=1)(model, w, x[batch_idx], y[batch_idx])
        updates, opt_state = opt.update(grad, opt_state, w)
        return (optax.apply_updates(w, updates), opt_state), loss

    (w, opt_state), losses = jax.lax.scan(step, (w, opt_state), idx)
    return w, opt_state, losses


def train(
    model: Model,
    x,
    y,
    *,
    key: jax.Array,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    init: jax.Array | None = None,
    shuffle: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` with Adam on (x, y) (the model's loss, drop-last batches).

    ``key`` seeds both the initialisation and the per-epoch shuffles, so the
    same key and settings give the same weights. The start is ``init`` if
    given, else the weights of the module instance the model was built from
    (``model.initial_params``, :func:`jaxland.as_model`), else
    ``model.init(key)``. Modules train in inference mode (BatchNorm with its
    stored statistics, no Dropout), the same function every estimate sees.
    Raises :class:`TrainingError` naming the epoch if the loss becomes
    non-finite or an epoch's mean loss exceeds :data:`DIVERGENCE_FACTOR` times
    the first step's loss.
    """
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    lr = check_real("lr", lr)
    check_key(key)
    x, y = as_array("x", x), as_array("y", y)
    n = check_data(model, x, y, min_samples=1)
    if batch_size > n:
        raise ConfigError(f"batch_size={batch_size} exceeds the {n} training samples")
    # before any parameter exists: a model that cannot train here is refused, not killed half-way
    memory.require(f"train({getattr(model, 'name', type(model).__name__)}, D={model.num_params}, batch_size={batch_size})",
                   memory.train_parts(model, x, y, batch_size=batch_size,
                                      dtype=jnp.float32 if init is None else jnp.result_type(init)),
                   fix="train a smaller model or use a smaller batch_size")
    k_init, k_shuffle = jax.random.split(key)
    if init is None:
        init = getattr(model, "initial_params", None)
    w = model.init(k_init) if init is None else jnp.array(check_params(model, jnp.asarray(init), "init"), copy=True)
    opt_state = optax.adam(lr).init(w)
    lr_arr = jnp.asarray(lr, jnp.float32)
    history = []
    bar = tqdm(range(epochs), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        perm = jax.random.permutation(jax.random.fold_in(k_shuffle, epoch), n) if shuffle else jnp.arange(n)
        w, opt_state, losses = train_epoch(model, w, opt_state, x, y, perm, lr_arr, batch_size=batch_size)
        losses = np.asarray(losses)
        if not np.all(np.isfinite(losses)):
            raise TrainingError(
                f"training loss became non-finite in epoch {epoch + 1} (step {int(np.argmin(np.isfinite(losses)))}); "
                f"lower the learning rate (lr={lr}) or check the inputs for NaN/inf"
            )
        start = float(history[0][0]) if history else float(losses[0])
        if losses.mean() > DIVERGENCE_FACTOR * max(start, 1e-12):
            raise TrainingError(
                f"training diverged in epoch {epoch + 1}: mean loss {losses.mean():.4g} is more than "
                f"{DIVERGENCE_FACTOR:g}x the first step's {start:.4g}; lower the learning rate (lr={lr})"
            )
        history.append(losses)
        bar.set_postfix(loss=f"{losses.mean():.4f}")
    acc = float(accuracy(model, w, x, y)) if getattr(model, "classification", False) else None
    return TrainResult(w, np.stack(history), acc)


def params_bytes(model: Model, w, **metadata) -> bytes:
    """The ``.npz`` bytes :func:`save_params` writes: ``params`` (w as an array) and ``meta`` (JSON: ``model.spec`` and ``metadata``)."""
    buf = io.BytesIO()
    meta = {"model": model.spec, **metadata}
    np.savez(buf, params=np.asarray(w), meta=np.frombuffer(json.dumps(meta, default=str).encode(), np.uint8))
    return buf.getvalue()


def save_params(path: str | Path, model: Model, w, **metadata) -> Path:
    """Write ``w`` and ``model.spec`` (plus JSON-able metadata) to an ``.npz``, atomically."""
    if Path(path).is_dir():
        raise ConfigError(f"path {path} is a folder; give a file name such as {Path(path) / 'weights.npz'}")
    return atomic_write_bytes(path, params_bytes(model, w, **metadata))


def load_params(path: str | Path, model: Model | None = None) -> tuple[Model, jax.Array, dict]:
    """Inverse of :func:`save_params`: ``(model, w, metadata)``.

    ``model``: the model the weights belong to (checked against the saved
    spec); may be omitted for MLPs, which are rebuilt from the spec. A file
    that is not a weight file, or whose weights are not all finite, is a
    :class:`DataError`.
    """
    if Path(path).is_dir():
        raise ConfigError(f"{path} is a folder, not a weight file; give the path of a file written by save_params")
    if not Path(path).is_file():
        raise DataNotFoundError(f"no weight file at {path}")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:  # our handle: closed even when np.load fails on a bad zip
            w = np.asarray(f["params"])
            meta = json.loads(bytes(f["meta"]).decode())
        saved = meta.pop("model")
    except Exception as e:  # noqa: BLE001  (zip, pickle, key and JSON errors all mean the same: not a valid file)
        raise DataError(f"{path} is not a readable jaxland weight file ({type(e).__name__}: {e}); delete it and retrain or save again") from None
    if w.dtype.kind in "biuOSUMm":
        raise DataError(f"{path}: the weights have dtype {w.dtype}, not floating point; delete it and retrain or save again")
    bad = int(w.size - np.count_nonzero(np.isfinite(w))) if w.dtype.kind == "f" else 0
    if bad:
        raise DataError(f"{path} holds {bad} non-finite weight(s) (NaN/inf), not a trained network; delete it and retrain or save again")
    w = jnp.asarray(w)
    if model is None:
        if saved.get("architecture") != "mlp" or saved.get("loss", "cross_entropy") not in ("cross_entropy", "mse"):
            raise ConfigError(f"{path} holds weights of {saved.get('architecture')!r}; pass model= to load them")
        model = MLPConfig(tuple(saved["sizes"]), saved["activation"], saved["use_bias"], saved.get("loss", "cross_entropy"))
    elif json.loads(spec_json(model)) != json.loads(json.dumps(saved, sort_keys=True, default=str)):
        raise ConfigError(f"{path} holds weights of {saved}, not of {model.spec}")
    if w.shape != (model.num_params,):
        raise ConfigError(f"{path}: parameter vector has shape {w.shape}, expected ({model.num_params},) for {model}")
    return model, w, meta
