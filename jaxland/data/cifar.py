"""CIFAR-10/100 python tarballs, read without trusting them.

The official format is a gzip tarball of Python pickles, each a dict with
``b"data"`` (an ``(n, 3072)`` uint8 array, channel-major 32x32 images) and
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100), lists of ints.
A pickle can name any importable callable and have it called, so a crafted
batch would run code when loaded with :func:`pickle.load`. Here each batch
goes through :class:`RestrictedUnpickler`, which resolves only the globals
that numpy array reconstruction and builtin containers need and refuses
anything else with a :class:`DataError`; nothing is extracted to disk.

The tarball's MD5 is compared with the published one; a different file gives
a warning (a re-packed tarball with only arrays and lists still loads).
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["CIFAR_TARBALLS", "CIFAR_MD5", "RestrictedUnpickler", "read_cifar"]

CIFAR_TARBALLS = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
#: MD5 of the official tarballs, as published on https://www.cs.toronto.edu/~kriz/cifar.html
CIFAR_MD5 = {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a", "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}
_SPLIT_SIZES = {"train": 50000, "test": 10000}
_CLASSES = {"cifar10": 10, "cifar100": 100}
# the largest official member (cifar-100-python/train) is 155 MB
_MAX_MEMBER_BYTES = 256 << 20


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The numpy callables a pickled array or scalar names, under their numpy 1.x and 2.x module paths."""
    reconstruct = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct
    scalar = np.int64(0).__reduce__()[0]  # multiarray.scalar
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (protocol 5)
    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        out[(f"{core}.multiarray", "scalar")] = scalar
        out[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return out


def _latin1_encode(text, encoding):
    """What Python 3 writes for ``bytes`` at pickle protocol < 3: ``_codecs.encode(text, "latin1")``; no other codec."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode is admitted only as ('<str>', 'latin1'), got encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    **_numpy_globals(),
    **{("builtins", c.__name__): c for c in (dict, list, tuple, set, frozenset, bytes, bytearray)},
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only numpy arrays, numpy scalars and builtin containers.

    ``find_class`` resolves the globals of :data:`_ALLOWED` (numpy's
    ``_reconstruct``/``scalar``/``_frombuffer``, ``ndarray``, ``dtype``;
    ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``bytes``,
    ``bytearray``; ``_codecs.encode`` for latin-1 only, which is how Python 3
    writes ``bytes`` at protocol 2) and raises :class:`DataError` naming ``source`` and the
    refused global for anything else, before it is imported or called.
    """

    def __init__(self, file, *, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # Python 2's name, as in the official (Python 2) batches
            module = "builtins"
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            pass
        raise DataError(
            f"{self.source}: refused to load the global {module + '.' + name!r}: an official CIFAR batch holds only "
            "numpy arrays, lists and dicts, so this file was crafted or modified and may run code; "
            "do not use it, download the official tarball again"
        )


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_md5(tarball: Path) -> None:
    want = CIFAR_MD5.get(tarball.name)
    got = _md5(tarball)
    if want is not None and got != want:
        warnings.warn(
            f"{tarball}: MD5 {got} differs from the published {want} of the official {tarball.name}; "
            "it is read with a restricted unpickler (arrays and lists only), but check where it came from",
            UserWarning,
            stacklevel=4,
        )


def _load_batch(tf: tarfile.TarFile, tarball: Path, member: str) -> dict:
    info = tf.getmember(member)
    if not info.isfile():
        raise DataError(f"{tarball}: member {member} is not a file")
    if info.size > _MAX_MEMBER_BYTES:
        raise DataError(f"{tarball}: member {member} declares {info.size:,} bytes, more than any official CIFAR batch; not an official tarball")
    fh = tf.extractfile(info)
    source = f"{tarball} ({member})"
    try:
        d = RestrictedUnpickler(fh, source=source, encoding="bytes").load()
    except (DataError, tarfile.TarError, EOFError, OSError, zlib.error):
        raise
    except Exception as e:  # noqa: BLE001  (a malformed pickle raises many types; all mean the same)
        raise DataError(f"{source}: not a valid CIFAR batch pickle ({type(e).__name__}: {e}); download the tarball again") from None
    if not isinstance(d, dict):
        raise DataError(f"{source}: holds a {type(d).__name__}, expected the dict of an official CIFAR batch")
    return d


def _arrays(d: dict, source: str, label_key: bytes, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = d.get(b"data"), d.get(label_key)
    if data is None or labels is None:
        missing = b"data" if data is None else label_key
        raise DataError(f"{source}: missing field {missing!r}; expected the official {CIFAR_TARBALLS[name]}")
    # the shape is checked before any copy: an array declared by the pickle may be larger than the file
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] > _SPLIT_SIZES[split]:
        shown = data.shape if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{source}: image array is {shown}, expected (n, 3072) uint8 with n <= {_SPLIT_SIZES[split]}")
    if not isinstance(labels, (list, tuple, np.ndarray)) or len(labels) != data.shape[0]:
        raise DataError(f"{source}: {data.shape[0]} images but labels of type {type(labels).__name__} and length "
                        f"{len(labels) if hasattr(labels, '__len__') else '?'}; expected one label per image")
    try:
        x = np.asarray(data, dtype=np.uint8)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise DataError(f"{source}: images or labels are not integers ({e})") from None
    if y.size and (y.min() < 0 or y.max() >= _CLASSES[name]):
        raise DataError(f"{source}: labels range over [{y.min()}, {y.max()}], expected 0..{_CLASSES[name] - 1}")
    return x, y


def read_cifar(tarball: str | Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, 32, 32, 3) uint8, labels (n,))`` of ``split`` from an official CIFAR tarball.

    Raises :class:`DataError` for a pickle that names anything but numpy
    arrays and builtin containers, a member larger than any official batch,
    missing members or fields, wrong shapes or label ranges, and a corrupt
    archive; warns when the tarball's MD5 is not the published one.
    """
    tarball = Path(tarball)
    if name == "cifar10":
        members = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] if split == "train" else ["cifar-10-batches-py/test_batch"]
        label_key = b"labels"
    else:
        members = [f"cifar-100-python/{split}"]
        label_key = b"fine_labels"
    xs, ys = [], []
    try:
        _check_md5(tarball)
        with tarfile.open(tarball, "r:gz") as tf:
            for m in members:
                x, y = _arrays(_load_batch(tf, tarball, m), f"{tarball} ({m})", label_key, name, split)
                xs.append(x)
                ys.append(y)
    except KeyError as e:
        raise DataError(f"{tarball}: missing member {e}; expected the official {CIFAR_TARBALLS[name]}") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{tarball}: corrupt or truncated CIFAR tarball ({e}); download it again") from e
    x = np.concatenate(xs)
    if x.shape[0] > _SPLIT_SIZES[split]:
        raise DataError(f"{tarball}: {x.shape[0]} images in {split}, more than the {_SPLIT_SIZES[split]} of the official {CIFAR_TARBALLS[name]}")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.concatenate(ys)
