"""Trained-weight cache: keyed by everything that determines w*, verified before it is trusted.

:func:`cached_train` is :func:`~jaxland.training.loop.train` with the result
kept on disk, so experiments that share a trained network train it once. The
entry's name is the sha256 of its key (:func:`cache_path`), which holds

* every byte of ``x`` and ``y``, with their dtypes and shapes (and the
  readable ``data_tag``);
* the model's fingerprint (:func:`jaxland.models.identity.model_fingerprint`:
  the jaxprs of its forward pass and loss with the constants they hold, its
  initial weights or its initialiser) and its ``spec``;
* every argument of ``train`` that changes the result: the optimizer (Adam),
  ``epochs``, ``batch_size``, ``lr``, ``shuffle`` and ``init`` (by value);
* the PRNG key (implementation and key data);
* the versions of jaxland, jax, jaxlib, flax and optax, and the x64 flag;
* the platform: backend, device kind, CPU model and the CPU's SIMD features.
  Trained weights depend on the machine's float rounding (the reference
  network trained with one seed on two CPUs reached mean losses 0.01743 and
  0.01598), so weights trained on another machine are not what this machine
  computes: they are in the key, not only in the entry's metadata, and a
  cache shared between machines holds one entry per kind of machine.

An entry is returned only if it is trustworthy and sound: the cache folder and
the entry belong to the current user and no one else can write them (a folder
that others can write lets them plant an entry under a name computed from
public inputs); the file loads, its stored key equals the expected one, and
its weights and loss history are finite. Otherwise a warning says why, and the
network is trained again; an untrusted folder is replaced by a private
sub-folder (``private-uid<N>``, mode 0700). New cache folders are created with
mode 0700 and entries with 0600; entries are written atomically, so processes
filling the same entry at once each leave a complete file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import jax
import numpy as np

from ..errors import ConfigError, DataError, DataNotFoundError
from ..io import atomic_write_bytes, platform_info, versions
from ..models.base import Model
from ..models.identity import array_digest, model_fingerprint
from ..validate import check_data, check_key, check_output_dir, check_params, check_private, check_real, check_seed, positive_int
from .loop import TrainResult, load_params, params_bytes, train

__all__ = ["default_cache_dir", "cached_train", "cache_path"]

CACHE_FORMAT = 2


def default_cache_dir() -> Path:
    """``$JAXLAND_CACHE_DIR`` (``~`` expanded; empty means unset), else ``~/.cache/jaxland``."""
    env = os.environ.get("JAXLAND_CACHE_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxland"


def _resolve_key(fn: str, key, seed):
    """``key``, or ``jax.random.key(seed)`` for the deprecated ``seed=`` (with a DeprecationWarning)."""
    if seed is None:
        if key is None:
            raise ConfigError(f"{fn} needs key=, a PRNG key such as jax.random.key(0)")
        return check_key(key)
    if key is not None:
        raise ConfigError(f"{fn}: pass key= only (seed= is its old spelling)")
    seed = check_seed(seed)
    warnings.warn(f"{fn}(seed={seed}) is now {fn}(key=jax.random.key({seed}))", DeprecationWarning, stacklevel=3)
    return jax.random.key(seed)


def _data(a) -> dict:
    a = np.asarray(a)
    return {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": array_digest(a)}


def _key_data(key) -> dict:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return {"impl": str(jax.random.key_impl(key)), "data": np.asarray(jax.random.key_data(key)).tolist()}
    # a raw uint32 key (jax.random.PRNGKey): its bits under the default implementation
    return {"impl": str(jax.random.key_impl(jax.random.wrap_key_data(key))), "data": np.asarray(key).tolist()}


def cache_path(model: Model, x, y, *, key=None, data_tag: str, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
               init=None, shuffle: bool = True, cache_dir: str | Path | None = None, seed: int | None = None) -> tuple[Path, dict]:
    """Where :func:`cached_train` keeps these weights, and the key (a JSON-able dict) whose sha256 names the entry.

    The path is in ``cache_dir`` (default :func:`default_cache_dir`); if that
    folder is writable by others, :func:`cached_train` uses the same file name
    in its private sub-folder instead. ``seed=`` is the deprecated spelling of
    ``key=jax.random.key(seed)``.
    """
    key = _resolve_key("cache_path", key, seed)
    return _entry(model, x, y, key=key, data_tag=data_tag, epochs=epochs, batch_size=batch_size, lr=lr, init=init,
                  shuffle=shuffle, cache_dir=cache_dir)


def _entry(model, x, y, *, key, data_tag, epochs, batch_size, lr, init, shuffle, cache_dir) -> tuple[Path, dict]:
    x, y = np.asarray(x), np.asarray(y)
    spec = {
        "format": CACHE_FORMAT,
        "data": {"tag": data_tag, "x": _data(x), "y": _data(y)},
        "model": {"spec": getattr(model, "spec", None),
                  "fingerprint": model_fingerprint(model, x.shape[1:], x.dtype, y.shape[1:], y.dtype)},
        "train": {"optimizer": "adam", "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr),
                  "shuffle": bool(shuffle), "init": None if init is None else array_digest(np.asarray(init))},
        "key": _key_data(key),
        "versions": {k: v for k, v in versions().items() if k in ("jaxland", "jax", "jaxlib", "flax", "optax")},
        "x64": bool(jax.config.jax_enable_x64),
        "platform": platform_info(),
    }
    spec = json.loads(json.dumps(spec, sort_keys=True, default=str))  # the form it has when read back
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    folder = Path(cache_dir).expanduser() if cache_dir is not None and str(cache_dir).strip() else default_cache_dir()
    return folder / f"w_{digest}.npz", spec


def _private_folder(folder: Path) -> Path:
    """``folder`` (created with mode 0700) if only this user can write it, else a private sub-folder of it."""
    check_output_dir(folder, "cache_dir")
    if not folder.exists():
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cache_dir {folder}: cannot create it ({e.strerror}); set JAXLAND_CACHE_DIR to a writable folder") from None
    try:
        return check_private(folder, "weight cache folder")
    except ConfigError as e:
        reason = str(e)
    private = folder / f"private-uid{os.getuid()}"
    warnings.warn(f"{reason}. Entries there could have been planted by another user and are not used; "
                  f"training into the private folder {private} instead (set JAXLAND_CACHE_DIR to a folder only you "
                  "can write to silence this)", RuntimeWarning, stacklevel=3)
    try:
        os.makedirs(private, mode=0o700, exist_ok=True)
        return check_private(private, "private weight cache folder")
    except (OSError, ConfigError) as e:
        raise ConfigError(f"cannot make a private weight cache in {folder} ({getattr(e, 'strerror', None) or e}); "
                          "set JAXLAND_CACHE_DIR (or cache_dir=) to a folder only you can write to, e.g. ~/.cache/jaxland") from None


def _load(path: Path, model, spec: dict, steps: int) -> TrainResult | None:
    """The entry at ``path`` if it exists, is trusted and sound; else None (after a warning saying why)."""
    if path.is_dir():
        raise ConfigError(f"weight cache entry {path} is a folder; remove it or choose another cache_dir")
    if not os.path.lexists(path):
        return None
    try:
        check_private(path, "weight cache entry")
    except ConfigError as e:
        warnings.warn(f"{e}; it is not used: training again (the new entry replaces it)", RuntimeWarning, stacklevel=3)
        return None
    except OSError:
        pass  # a dangling link: load_params reports it below
    try:
        _, w, meta = load_params(path, model)
        if meta.get("cache_key") != spec:
            raise DataError("its stored key differs from the expected one")
        history = np.asarray(meta["loss_history"], dtype=np.float64)
        if history.shape != (spec["train"]["epochs"], steps) or not np.all(np.isfinite(history)):
            raise DataError(f"its loss history has shape {history.shape} or non-finite values, expected finite ({spec['train']['epochs']}, {steps})")
        acc = meta["train_accuracy"]
        if acc is not None and not (isinstance(acc, (int, float)) and 0.0 <= acc <= 1.0):
            raise DataError(f"its train_accuracy {acc!r} is not a fraction")
        return TrainResult(w, history, None if acc is None else float(acc))
    except (DataError, DataNotFoundError, ConfigError, KeyError, TypeError, ValueError) as e:
        warnings.warn(f"weight cache entry {path} is unreadable or invalid ({type(e).__name__}: {e}); removing it and training again",
                      RuntimeWarning, stacklevel=3)
        path.unlink(missing_ok=True)
        return None


def cached_train(
    model: Model,
    x,
    y,
    *,
    key=None,
    data_tag: str,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    init=None,
    shuffle: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    seed: int | None = None,
) -> TrainResult:
    """:func:`jaxland.train` (same arguments), cached on disk under a key of everything that determines w*.

    ``data_tag`` names the data (e.g. ``"mnist_10k/train/9984/standard"``) for
    a reader; the key holds every byte of ``x`` and ``y`` anyway. ``cache_dir``:
    default :func:`default_cache_dir`. ``seed=s`` is the deprecated spelling of
    ``key=jax.random.key(s)`` and gives the same weights. What is in the key,
    and when an entry is not trusted, is described in :mod:`jaxland.training.cache`.
    """
    key = _resolve_key("cached_train", key, seed)
    n = check_data(model, x, y, min_samples=1)
    epochs, batch_size = positive_int("epochs", epochs), positive_int("batch_size", batch_size)
    lr = check_real("lr", lr)
    if init is not None:
        check_params(model, init, "init")
    path, spec = _entry(model, x, y, key=key, data_tag=data_tag, epochs=epochs, batch_size=batch_size, lr=lr, init=init,
                        shuffle=shuffle, cache_dir=cache_dir)
    path = _private_folder(path.parent) / path.name  # before training, not after it
    steps = n // batch_size
    found = _load(path, model, spec, steps)
    if found is not None:
        return found
    res = train(model, x, y, key=key, epochs=epochs, batch_size=batch_size, lr=lr, init=init, shuffle=shuffle, progress=progress)
    meta = {"cache_key": spec, "loss_history": res.loss_history.tolist(), "train_accuracy": res.train_accuracy}
    atomic_write_bytes(path, params_bytes(model, res.params, **meta), mode=0o600)
    return res
