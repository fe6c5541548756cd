"""Atomic result writing and run metadata (versions, device)."""

from __future__ import annotations

import io
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import optax

from ._version import __version__

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_json", "write_npz", "run_metadata"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file beside ``path``, then rename: never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _jsonable(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray) or hasattr(o, "__array__"):
        return np.asarray(o).tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "_asdict"):
        return o._asdict()
    return str(o)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable, allow_nan=True) + "\n")


def write_npz(path: str | os.PathLike, **arrays) -> Path:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


def run_metadata() -> dict:
    """Package versions, backend and devices: what a reader needs to reproduce a number."""
    return {
        "versions": {
            "jaxland": _version(),
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }


def _version() -> str:
    # the source's own version: an editable install's metadata keeps the version it was installed at
    return __version__
