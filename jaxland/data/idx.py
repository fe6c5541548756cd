"""IDX files (MNIST, Fashion-MNIST): a bounded reader for files that may come from anyone.

An IDX file is a 4-byte magic ``0x0000 TT NN`` (``TT = 0x08``: unsigned
bytes; ``NN``: the number of dimensions), ``NN`` big-endian uint32 sizes, then
``prod(sizes)`` bytes in row-major order. The file may be gzip-compressed.

The header is read and checked before any payload: the declared size is
computed with Python integers (no int64 overflow), bounded by ``max_bytes``
and by ``max_shape`` (the known size of a split), and then exactly that many
bytes are decompressed, plus one to detect trailing data. A small compressed
file that declares, or holds, gigabytes (a decompression bomb) is refused
with at most the declared size in memory.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["read_idx", "MAX_IDX_BYTES"]

#: Largest payload :func:`read_idx` accepts by default: 1 GiB (MNIST's training images are 47 MB).
MAX_IDX_BYTES = 1 << 30

_GZIP_MAGIC = b"\x1f\x8b"


def _read_exact(fh, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end of the stream."""
    parts, got = [], 0
    while got < n:
        b = fh.read(n - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)


def _readinto_exact(fh, buf: memoryview) -> int:
    """Fill ``buf`` from ``fh``; returns the number of bytes read (short only at end of stream)."""
    got = 0
    while got < len(buf):
        n = fh.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def read_idx(
    path: str | os.PathLike,
    *,
    expected_dims: int | None = None,
    max_shape: tuple[int, ...] | None = None,
    max_bytes: int = MAX_IDX_BYTES,
) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or raw) into a uint8 array of the declared shape.

    Args:
      path: the file.
      expected_dims: the number of dimensions the file must declare (3 for
        images, 1 for labels).
      max_shape: per-dimension upper bounds of the declared shape (e.g.
        ``(60000, 28, 28)`` for MNIST training images); checked before any
        payload is read.
      max_bytes: upper bound on the declared payload size, in bytes.

    Raises :class:`DataError` naming the file and the defect for a bad magic
    number, an unexpected number of dimensions, a declared shape beyond
    ``max_shape`` or ``max_bytes``, a truncated payload, trailing bytes or a
    broken gzip stream. At most ``prod(shape) + 1`` payload bytes are read.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            fh = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            with fh:
                return _parse(path, fh, expected_dims, max_shape, max_bytes)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot decompress ({e}); the file is corrupt or truncated, download it again") from e


def _parse(path: Path, fh, expected_dims, max_shape, max_bytes) -> np.ndarray:
    head = _read_exact(fh, 4)
    if len(head) < 4:
        raise DataError(f"{path}: file too short ({len(head)} bytes) to hold an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", head)
    if zero != 0 or dtype_code != 0x08:
        magic = struct.unpack(">I", head)[0]
        raise DataError(
            f"{path}: bad IDX magic number {magic} (0x{magic:08x}); expected 2049 (labels) or 2051 (images) "
            "for unsigned-byte IDX data: this is not an MNIST-format file"
        )
    if expected_dims is not None and ndim != expected_dims:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_dims} (images/labels swapped?)")
    sizes = _read_exact(fh, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, sizes)
    if max_shape is not None and (len(max_shape) != ndim or any(s > m for s, m in zip(shape, max_shape))):
        raise DataError(f"{path}: header declares shape {shape}, beyond the largest this dataset has, {tuple(max_shape)}; not a file of this dataset")
    count = 1
    for s in shape:  # Python ints: a crafted shape cannot overflow
        count *= s
    if count > max_bytes:
        raise DataError(
            f"{path}: header declares shape {shape} = {count:,} bytes, more than the limit of {max_bytes:,} bytes; "
            "a corrupt or hostile file (pass max_bytes= to read_idx to allow a larger genuine file)"
        )
    out = np.empty(count, dtype=np.uint8)
    got = _readinto_exact(fh, memoryview(out))
    if got < count:
        raise DataError(
            f"{path}: short read: header declares shape {shape} ({count} bytes) but only {got} bytes follow; "
            "the file is truncated"
        )
    if fh.read(1):
        raise DataError(f"{path}: unexpected trailing bytes after the {count} bytes of shape {shape}; wrong count in header")
    return out.reshape(shape)
