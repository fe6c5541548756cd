"""Trained-weight cache keyed by everything that determines w*.

Experiments that share a trained network (same data, model, training
settings and key) train it once; a rerun loads it instead of retraining.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import numpy as np

from .model import MLPConfig
from .train import TrainResult, load_params, save_params, train

__all__ = ["default_cache_dir", "cached_train"]


def default_cache_dir() -> Path:
    """``$JAXLAND_CACHE_DIR``, else ``~/.cache/jaxland``."""
    return Path(os.environ.get("JAXLAND_CACHE_DIR", Path.home() / ".cache" / "jaxland"))


def cached_train(
    model: MLPConfig,
    x,
    y,
    *,
    seed: int,
    data_tag: str,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """:func:`jaxland.train` with ``key = jax.random.key(seed)``, cached on disk.

    ``data_tag`` names the data (e.g. ``"mnist_10k/train/9984/standard"``); a
    fingerprint of ``x`` and ``y`` is added to the cache key so a different
    array never returns stale weights.
    """
    fp = hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()[:: max(1, x.size // 65536)])
    fp.update(np.asarray(y).tobytes())
    spec = {
        "model": [list(model.sizes), model.activation, model.use_bias],
        "data": data_tag,
        "n": int(x.shape[0]),
        "fingerprint": fp.hexdigest()[:16],
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "jax": jax.__version__,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir or default_cache_dir()) / f"w_{digest}.npz"
    if path.exists():
        _, w, meta = load_params(path)
        return TrainResult(w, np.asarray(meta["loss_history"]), float(meta["train_accuracy"]))
    res = train(model, x, y, key=jax.random.key(seed), epochs=epochs, batch_size=batch_size, lr=lr, progress=progress)
    save_params(path, model, res.params, spec=spec, loss_history=res.loss_history.tolist(), train_accuracy=res.train_accuracy)
    return res
