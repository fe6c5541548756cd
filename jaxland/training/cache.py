"""Trained-weight cache keyed by everything that determines w*.

Experiments that share a trained network (same data, model, training
settings and key) train it once; a rerun loads it instead of retraining. The
key holds the model's ``spec`` (architecture and hyper-parameters, for any
model of the protocol), a fingerprint of the data, the training settings and
the JAX version. A corrupt or partial entry is detected on load, removed and
retrained; entries are written atomically, so processes filling the same entry
at once each leave a complete file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import jax
import numpy as np

from ..models.base import Model
from .loop import TrainResult, load_params, save_params, train
from ..validate import check_data, check_output_dir, check_seed

__all__ = ["default_cache_dir", "cached_train", "cache_path"]


def default_cache_dir() -> Path:
    """``$JAXLAND_CACHE_DIR``, else ``~/.cache/jaxland``."""
    return Path(os.environ.get("JAXLAND_CACHE_DIR", Path.home() / ".cache" / "jaxland"))


def _data_fingerprint(x, y) -> str:
    x = np.ascontiguousarray(np.asarray(x))
    fp = hashlib.sha256(x.tobytes()[:: max(1, x.size // 65536)])
    fp.update(np.asarray(y).tobytes())
    return fp.hexdigest()[:16]


def cache_path(model: Model, x, y, *, seed: int, data_tag: str, epochs: int = 10, batch_size: int = 64,
               lr: float = 1e-3, cache_dir: str | Path | None = None) -> tuple[Path, dict]:
    """Where :func:`cached_train` keeps these weights, and the spec that keys them."""
    spec = {
        "model": model.spec,
        "data": data_tag,
        "n": int(x.shape[0]),
        "fingerprint": _data_fingerprint(x, y),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "jax": jax.__version__,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return Path(cache_dir or default_cache_dir()) / f"w_{digest}.npz", spec


def cached_train(
    model: Model,
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
    """:func:`jaxland.training.loop` with ``key = jax.random.key(seed)``, cached on disk.

    ``data_tag`` names the data (e.g. ``"mnist_10k/train/9984/standard"``); a
    fingerprint of ``x`` and ``y`` is added to the cache key so a different
    array never returns stale weights.
    """
    seed = check_seed(seed)
    check_data(model, x, y, min_samples=1)
    path, spec = cache_path(model, x, y, seed=seed, data_tag=data_tag, epochs=epochs, batch_size=batch_size, lr=lr, cache_dir=cache_dir)
    if path.exists():
        try:
            _, w, meta = load_params(path, model)
            return TrainResult(w, np.asarray(meta["loss_history"]), meta["train_accuracy"])
        except Exception as e:  # noqa: BLE001  (a truncated or foreign file: heal by retraining)
            warnings.warn(f"weight cache entry {path} is unreadable ({type(e).__name__}: {e}); removing it and retraining", RuntimeWarning, stacklevel=2)
            path.unlink(missing_ok=True)
    check_output_dir(path.parent, "cache_dir")  # before training, not after it
    res = train(model, x, y, key=jax.random.key(seed), epochs=epochs, batch_size=batch_size, lr=lr, progress=progress)
    save_params(path, model, res.params, spec=spec, loss_history=res.loss_history.tolist(), train_accuracy=res.train_accuracy)
    return res
