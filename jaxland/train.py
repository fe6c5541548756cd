"""Training with optax: one jitted ``lax.scan`` program per epoch, deterministic for a key."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from .errors import ConfigError, TrainingError
from .io import atomic_write_bytes
from .model import MLPConfig, accuracy, mean_loss

__all__ = ["TrainResult", "train", "train_epoch", "save_params", "load_params"]


class TrainResult(NamedTuple):
    """``params``: trained flat vector w*; ``loss_history``: (epochs, steps) batch losses;
    ``train_accuracy``: on the training data after the last epoch."""

    params: jax.Array
    loss_history: np.ndarray
    train_accuracy: float


@functools.partial(jax.jit, static_argnames=("model", "batch_size"), donate_argnames=("w", "opt_state"))
def train_epoch(model: MLPConfig, w, opt_state, x, y, perm, lr, *, batch_size: int):
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
    model: MLPConfig,
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
    """Train ``model`` with Adam on (x, y); cross-entropy, drop-last batches.

    ``key`` seeds both the initialisation (unless ``init`` is given) and the
    per-epoch shuffles, so the same key and settings give the same weights.
    Raises :class:`TrainingError` if the loss becomes non-finite.
    """
    n = int(x.shape[0])
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ConfigError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if batch_size > n:
        raise ConfigError(f"batch_size={batch_size} exceeds the {n} training samples")
    if x.shape[1] != model.sizes[0]:
        raise ConfigError(f"inputs have {x.shape[1]} features but the model expects {model.sizes[0]}")
    k_init, k_shuffle = jax.random.split(key)
    w = model.init(k_init) if init is None else jnp.array(init, copy=True)
    opt_state = optax.adam(lr).init(w)
    x, y = jnp.asarray(x), jnp.asarray(y)
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
        history.append(losses)
        bar.set_postfix(loss=f"{losses.mean():.4f}")
    acc = float(accuracy(model, w, x, y))
    return TrainResult(w, np.stack(history), acc)


def save_params(path: str | Path, model: MLPConfig, w, **metadata) -> Path:
    """Write ``w`` and the model config (plus JSON-able metadata) to an ``.npz``, atomically."""
    import io

    buf = io.BytesIO()
    meta = {"model": {"sizes": list(model.sizes), "activation": model.activation, "use_bias": model.use_bias}, **metadata}
    np.savez(buf, params=np.asarray(w), meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return atomic_write_bytes(path, buf.getvalue())


def load_params(path: str | Path) -> tuple[MLPConfig, jax.Array, dict]:
    """Inverse of :func:`save_params`: ``(model, w, metadata)``."""
    with np.load(path) as f:
        w = jnp.asarray(f["params"])
        meta = json.loads(bytes(f["meta"]).decode())
    m = meta.pop("model")
    model = MLPConfig(tuple(m["sizes"]), m["activation"], m["use_bias"])
    if w.shape != (model.num_params,):
        raise ConfigError(f"{path}: parameter vector has shape {w.shape}, expected ({model.num_params},) for {model}")
    return model, w, meta
