"""Writing results to disk, and what a result depends on.

Every file jaxland writes goes through :func:`atomic_write_bytes`: the bytes go
to a temporary file beside the target, which is then renamed over it, so a
reader sees the old file or the new one, never part of one. The new file's mode
is ``0o666`` minus the process umask (what ``open`` would give) unless ``mode``
is given; it is set on the temporary file's descriptor. The umask is read, never
set: setting it (``os.umask``) changes the mode of files that other threads
create meanwhile. It is read from ``/proc/self/status`` on each write where that
exists (Linux), else once at import.

An OS error while writing (a full disk, no permission, a read-only file system)
is re-raised as the same ``OSError`` type with the path and a fix in its
message; a target that is a folder is a :class:`~jaxland.ConfigError`.

:func:`write_json` writes strict JSON (RFC 8259): see its docstring for how
non-finite numbers, NamedTuples and arrays are written; :func:`read_json` reads
it back. :func:`run_metadata` and :func:`platform_info` record what a number
depends on besides the config: package versions, backend, device and CPU.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np
import optax

from ._version import __version__
from .errors import ConfigError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "read_json",
    "to_json",
    "write_npz",
    "run_metadata",
    "platform_info",
    "versions",
]


# ----------------------------------------------------------------------------- atomic writes


def _umask_at_import() -> int:
    mask = os.umask(0o022)  # the one write of the umask: at import, before any jaxland file is written
    os.umask(mask)
    return mask


def _proc_umask() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


_IMPORT_UMASK = _proc_umask()
if _IMPORT_UMASK is None:
    _IMPORT_UMASK = _umask_at_import()


def _umask() -> int:
    """The process umask, read without changing it."""
    mask = _proc_umask()
    return _IMPORT_UMASK if mask is None else mask


_FIXES = {
    errno.ENOSPC: "free space on that disk or choose another output folder",
    errno.EDQUOT: "free space within your disk quota or choose another output folder",
    errno.EACCES: "choose a folder you can write to, or change its permissions",
    errno.EPERM: "choose a folder you can write to, or change its permissions",
    errno.EROFS: "the file system is read-only: choose another output folder",
}


def _write_error(e: OSError, path: Path) -> OSError:
    """``e`` as the same OSError type, its message naming ``path`` and a fix."""
    fix = _FIXES.get(e.errno, "check the path or choose another output folder")
    return OSError(e.errno, f"{e.strerror or e} while writing {path}; {fix}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: some systems cannot open or sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename: never a half-written file, even after a crash.

    ``mode``: the file's permission bits (default ``0o666`` minus the umask).
    Creates missing parent folders. Raises :class:`~jaxland.ConfigError` if
    ``path`` is a folder, and an ``OSError`` naming the path and a fix if the
    disk is full or not writable.
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise ConfigError(f"path must be a file path (str or os.PathLike), got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a folder; give a file path, or remove or rename the folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if e.errno is None:
            raise
        raise _write_error(e, path) from None
    try:
        try:
            bits = (0o666 & ~_umask()) if mode is None else mode
            if hasattr(os, "fchmod"):
                os.fchmod(fd, bits)
            else:
                os.chmod(tmp, bits)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)  # the bytes reach the disk before the rename makes them the file
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise _write_error(e, path) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, mode: int | None = None) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode(), mode=mode)


def write_npz(path: str | os.PathLike, **arrays) -> Path:
    """``np.savez_compressed`` of ``arrays``, written atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- strict JSON

NONFINITE = "nonfinite"


def _pointer(path: str, key) -> str:
    return f"{path}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _plain(o: Any, path: str, nonfinite: dict) -> Any:
    """``o`` as JSON types; non-finite floats become None and are recorded in ``nonfinite`` by pointer."""
    if o is None or isinstance(o, str):
        return o
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        v = float(o)
        if math.isfinite(v):
            return v
        nonfinite[path] = "NaN" if math.isnan(v) else "Infinity" if v > 0 else "-Infinity"
        return None
    if isinstance(o, tuple) and hasattr(o, "_fields"):  # a NamedTuple: an object with its field names
        return {f: _plain(getattr(o, f), _pointer(path, f), nonfinite) for f in o._fields}
    if isinstance(o, dict):
        return {(k if isinstance(k, str) else str(_plain(k, "", {}))): _plain(v, _pointer(path, k), nonfinite) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v, _pointer(path, i), nonfinite) for i, v in enumerate(o)]
    if isinstance(o, (set, frozenset)):
        return _plain(sorted(o, key=repr), path, nonfinite)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {f.name: _plain(getattr(o, f.name), _pointer(path, f.name), nonfinite) for f in dataclasses.fields(o)}
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if isinstance(o, (complex, np.complexfloating)):
        return {"real": _plain(o.real, _pointer(path, "real"), nonfinite), "imag": _plain(o.imag, _pointer(path, "imag"), nonfinite)}
    if isinstance(o, jax.Array) and jax.dtypes.issubdtype(o.dtype, jax.dtypes.prng_key):
        o = jax.random.key_data(o)
    if isinstance(o, np.ndarray) or hasattr(o, "__array__"):
        a = np.asarray(o)
        return _plain(a.item() if a.ndim == 0 else a.tolist(), path, nonfinite)
    return str(o)


def to_json(obj: Any) -> str:
    """``obj`` as strict JSON text (see :func:`write_json`)."""
    nonfinite: dict[str, str] = {}
    plain = _plain(obj, "", nonfinite)
    if nonfinite:
        if not isinstance(plain, dict):
            plain = {"value": plain}
            nonfinite = {"/value" + p: v for p, v in nonfinite.items()}
        if NONFINITE in plain:
            raise ConfigError(f"write_json: the object has a top-level key {NONFINITE!r}, which records its non-finite numbers; rename that key")
        plain[NONFINITE] = nonfinite
    return json.dumps(plain, indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (RFC 8259), atomically.

    * NaN and infinities, which JSON cannot hold, are written as ``null``;
      each is listed in a top-level object ``"nonfinite"`` that maps its JSON
      Pointer (RFC 6901, e.g. ``"/summary/delta_first"``) to ``"NaN"``,
      ``"Infinity"`` or ``"-Infinity"``. A top-level value that is not an
      object is then wrapped as ``{"value": ..., "nonfinite": ...}``.
      :func:`read_json` restores the numbers.
    * NamedTuples (jaxland results) and dataclasses become objects with their
      field names; numpy and JAX arrays become (nested) lists, their scalars
      numbers; paths become strings; PRNG keys their key data.
    * Anything else is written as its ``str``.
    """
    return atomic_write_text(path, to_json(obj))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file strictly; the numbers that :func:`write_json` listed under ``"nonfinite"`` are restored.

    Raises ``ValueError`` on invalid JSON (including bare ``NaN``), ``OSError``
    if the file cannot be read.
    """
    obj = json.loads(Path(path).read_text(), parse_constant=_reject_constant)
    marks = obj.get(NONFINITE) if isinstance(obj, dict) else None
    if isinstance(marks, dict):
        for pointer, value in marks.items():
            _set_pointer(obj, pointer, float(value.replace("Infinity", "inf")) if isinstance(value, str) else math.nan)
    return obj


def _set_pointer(obj, pointer: str, value) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
    if not parts:
        return
    try:
        for p in parts[:-1]:
            obj = obj[int(p)] if isinstance(obj, list) else obj[p]
        last = parts[-1]
        if isinstance(obj, list):
            obj[int(last)] = value
        elif isinstance(obj, dict) and last in obj:
            obj[last] = value
    except (KeyError, IndexError, ValueError, TypeError):
        pass  # a pointer that does not fit the document: leave the null


# ----------------------------------------------------------------------------- what a result depends on

_SIMD = re.compile(r"^(sse|ssse|avx|fma|f16c|amx|bf16|vnni|asimd|neon|sve|fp16|fphp|asimdhp)")


@functools.cache
def _cpu() -> tuple[str, str]:
    """(CPU model, its SIMD features): the instruction sets XLA's CPU code generator chooses from."""
    model, features = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if not model and k in ("model name", "cpu model", "Processor", "Hardware"):
                model = v.strip()
            elif not features and k in ("flags", "Features"):
                features = " ".join(sorted(f for f in v.split() if _SIMD.match(f)))
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown", features


def platform_info() -> dict:
    """``backend``, ``device_kind``, ``cpu`` (model) and ``cpu_features`` (SIMD): what float rounding depends on.

    The same program and key can give different trained weights on machines
    whose kernels round differently (another GPU, a CPU with other vector
    instructions).
    """
    cpu, features = _cpu()
    return {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "cpu": cpu, "cpu_features": features}


def versions() -> dict:
    """Versions of jaxland and of the packages its numbers depend on."""
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib = getattr(jax, "__version__", "unknown")
    # the source's own version: an editable install's metadata keeps the version it was installed at
    return {"jaxland": __version__, "jax": jax.__version__, "jaxlib": jaxlib, "flax": flax.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def run_metadata() -> dict:
    """Package versions, backend, device, CPU and float settings: what a reader needs to reproduce a number."""
    return {
        "versions": versions(),
        **platform_info(),
        "devices": [str(d) for d in jax.devices()],
        "x64": bool(jax.config.jax_enable_x64),
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
