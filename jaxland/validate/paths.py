"""Paths the user names: output folders, data folders, and what jaxland trusts on disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


from ..errors import ConfigError, DataError, DataNotFoundError


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
