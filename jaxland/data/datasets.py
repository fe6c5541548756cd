"""Datasets: local IDX / CIFAR files, tensorflow-datasets, and an embedded MNIST subset.

``load_dataset`` resolves a dataset from, in order:

1. an explicit ``data_dir`` (or the ``JAXLAND_DATA_DIR`` environment variable)
   holding the original files: the four IDX ``.gz`` files of MNIST /
   Fashion-MNIST (directly in the folder or in a ``mnist/`` / ``fashion-mnist/``
   sub-folder), or the CIFAR python tarballs ``cifar-10-python.tar.gz`` /
   ``cifar-100-python.tar.gz``;
2. tensorflow-datasets, when installed and able to load without waiting on a
   download that cannot happen (a download is attempted only when the
   source host is reachable);
3. the embedded default: the first 10,000 MNIST training images, shipped
   inside the package (``mnist_10k``), used for ``mnist`` too when the request
   fits inside it and no folder was named.

A folder named by ``data_dir`` or ``$JAXLAND_DATA_DIR`` must exist (an empty
value means none was named; ``~`` is expanded). Files are read as untrusted
input: IDX headers are checked before any payload is decompressed, and CIFAR
pickles may name only numpy arrays and builtin containers (see
:mod:`jaxland.data.idx`, :mod:`jaxland.data.cifar`).

The sample order is the file order unless a ``key`` is given, in which case
the samples are permuted by ``jax.random.permutation(key, n)``. The papers use
the first N samples by index, so ``key=None`` is the reference setting.
"""

from __future__ import annotations

import os
import socket
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from ..errors import ConfigError, DataError, DataNotFoundError
from ..validate import check_data_dir, check_key
from .cifar import CIFAR_TARBALLS, read_cifar
from .idx import read_idx

__all__ = ["Dataset", "DATASETS", "NORMALIZATIONS", "load_dataset", "read_idx", "normalize_images"]

# name -> (folder names to look for, normalisation constants (mean, std) per channel)
_IDX_FOLDERS = {
    "mnist": ("mnist", "MNIST"),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
}
_MEAN_STD = {
    "mnist": ((0.1307,), (0.3081,)),
    "mnist_10k": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist", "cifar10": "cifar10", "cifar100": "cifar100"}
_SPLIT_SIZES = {
    "mnist": {"train": 60000, "test": 10000},
    "fashion_mnist": {"train": 60000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
    "cifar100": {"train": 50000, "test": 10000},
    "mnist_10k": {"train": 10000},
}
DATASETS = tuple(_SPLIT_SIZES)
NORMALIZATIONS = ("standard", "symmetric", "unit", "none")
EMBEDDED_SIZE = 10000
_EMBEDDED = ("mnist-10k-train-images-idx3-ubyte.gz", "mnist-10k-train-labels-idx1-ubyte.gz")


class Dataset(NamedTuple):
    """Images and labels, plus where they came from.

    ``x``: float32, shape ``(n, features)`` when flattened, else channels-last
    images ``(n, h, w, c)`` (c = 1 for grey). ``y``: int32, shape ``(n,)``.
    ``source``: a short description of the file or service that provided it.
    """

    x: np.ndarray
    y: np.ndarray
    name: str
    source: str

    @property
    def num_classes(self) -> int:
        return 100 if self.name == "cifar100" else 10


# ------------------------------------------------------------------ IDX files


def _read_idx_pair(images: Path, labels: Path, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(images, expected_dims=3, max_shape=(max_n, 28, 28))
    y = read_idx(labels, expected_dims=1, max_shape=(max_n,))
    if x.shape[1:] != (28, 28):
        raise DataError(f"{images} holds images of {x.shape[1]}x{x.shape[2]} pixels, expected 28x28")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{images} holds {x.shape[0]} images but {labels} holds {y.shape[0]} labels: wrong count")
    if y.size and y.max() > 9:
        raise DataError(f"{labels}: label {int(y.max())} out of range 0..9")
    return x, y


def _idx_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    for ext in (".gz", ""):
        img = folder / f"{prefix}-images-idx3-ubyte{ext}"
        lab = folder / f"{prefix}-labels-idx1-ubyte{ext}"
        if img.exists() and lab.exists():
            return img, lab
    return None


# -------------------------------------------------------------------------- tfds


def _tfds_source_reachable(timeout: float = 3.0) -> bool:
    """True when the host tfds downloads from answers; avoids tfds' ~200 s of retries offline."""
    try:
        with socket.create_connection(("storage.googleapis.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_tfds(name: str, split: str, limit: int | None, errors: list[str]):
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415
    except ImportError:
        errors.append("tensorflow-datasets: not installed (pip install 'jaxland[tfds]')")
        return None
    tsplit = split if limit is None else f"{split}[:{limit}]"
    try:
        ds = tfds.as_numpy(tfds.load(_TFDS_NAMES[name], split=tsplit, batch_size=-1, download=False))
    except Exception as e:  # noqa: BLE001  (tfds raises many types; not prepared locally)
        if not _tfds_source_reachable():
            errors.append(f"tensorflow-datasets: {name} is not prepared locally and its download host is unreachable (offline?)")
            return None
        try:
            ds = tfds.as_numpy(tfds.load(_TFDS_NAMES[name], split=tsplit, batch_size=-1, download=True))
        except Exception as e2:  # noqa: BLE001
            errors.append(f"tensorflow-datasets: failed to download/prepare {name}: {type(e2).__name__}: {e2} (first: {e})")
            return None
    x = np.asarray(ds["image"], dtype=np.uint8)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    return x, np.asarray(ds["label"]), f"tensorflow-datasets:{_TFDS_NAMES[name]}/{tsplit}"


# --------------------------------------------------------------------- embedded


def _load_embedded() -> tuple[np.ndarray, np.ndarray]:
    root = resources.files("jaxland.data") / "embedded"
    with resources.as_file(root / _EMBEDDED[0]) as img, resources.as_file(root / _EMBEDDED[1]) as lab:
        return _read_idx_pair(Path(img), Path(lab), EMBEDDED_SIZE)


# ------------------------------------------------------------------ normalising


def normalize_images(x: np.ndarray, name: str, normalize: str) -> np.ndarray:
    """uint8 pixels -> float32 using one of :data:`NORMALIZATIONS`.

    ``standard``: (p/255 - mean) / std with the dataset's usual constants
    (MNIST 0.1307/0.3081, as in the paper); ``symmetric``: p/127.5 - 1 in
    [-1, 1] (companion paper); ``unit``: p/255 in [0, 1]; ``none``: raw 0..255.
    ``x`` holds grey images ``(n, h, w)`` or ``(n, features)``, or colour
    images channels-last ``(n, h, w, 3)``; ``name`` is one of :data:`DATASETS`.
    """
    canon = str(name).lower().replace("-", "_")
    if canon not in _MEAN_STD:
        raise ConfigError(f"normalize_images: unknown dataset {name!r} (its mean and std are not known); valid names are: {', '.join(DATASETS)}")
    if normalize not in NORMALIZATIONS:
        raise DataError(f"unknown normalize={normalize!r}; choose one of {NORMALIZATIONS}")
    try:
        x = np.asarray(x)
    except (TypeError, ValueError):
        raise ConfigError(f"normalize_images: x must be an array of pixel values, got {type(x).__name__}") from None
    if x.dtype.kind not in "biuf" or (x.size and not (np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 255)):
        raise ConfigError(f"normalize_images: x must hold pixel values in [0, 255] (uint8 images), got {x.dtype} values; "
                          "pass the raw images, not already-normalised ones")
    if normalize == "standard" and len(_MEAN_STD[canon][0]) == 3 and (x.ndim != 4 or x.shape[-1] != 3):
        raise ConfigError(f"normalize_images: {canon} images must be channels-last (n, h, w, 3) for per-channel constants, got shape {x.shape}")
    x = x.astype(np.float32)
    if normalize == "standard":
        mean, std = (np.asarray(v, np.float32) for v in _MEAN_STD[canon])
        if len(mean) == 1:  # grey
            mean, std = mean[0], std[0]
        return (x / 255.0 - mean) / std
    if normalize == "symmetric":
        return x / 127.5 - 1.0
    if normalize == "unit":
        return x / 255.0
    return x


# ----------------------------------------------------------------- load_dataset


def _candidate_dirs(name: str, data_dir: Path) -> list[Path]:
    return [data_dir] + [data_dir / sub for sub in _IDX_FOLDERS.get(name, ())]


def load_dataset(
    name: str,
    *,
    split: str = "train",
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    normalize: str = "standard",
    flatten: bool = True,
    key: jax.Array | None = None,
    use_tfds: bool = True,
) -> Dataset:
    """Load a dataset as float32 images and int32 labels.

    Args:
      name: one of :data:`DATASETS` (``mnist``, ``fashion_mnist``, ``cifar10``,
        ``cifar100``, ``mnist_10k``). Dashes are accepted for underscores.
      split: ``"train"`` or ``"test"``.
      limit: keep the first ``limit`` samples (after the optional permutation).
      data_dir: folder with the original files; defaults to ``$JAXLAND_DATA_DIR``
        (``None`` or ``""``: none). A named folder that does not exist raises
        :class:`DataNotFoundError`; ``mnist_10k`` ignores it.
      normalize: one of :data:`NORMALIZATIONS` (see :func:`normalize_images`).
      flatten: return ``(n, features)`` instead of channels-last images
        ``(n, h, w, c)`` (what convolutional and attention models take).
      key: if given, permute the samples with ``jax.random.permutation(key, n)``
        before ``limit`` is applied; ``None`` keeps the file order.
      use_tfds: allow tensorflow-datasets as a source.

    Returns:
      A :class:`Dataset` ``(x, y, name, source)``.
    """
    canon = str(name).lower().replace("-", "_")
    if canon not in _SPLIT_SIZES:
        raise DataError(f"unknown dataset {name!r}; valid names are: {', '.join(DATASETS)}")
    if split not in _SPLIT_SIZES[canon]:
        raise DataError(f"dataset {canon!r} has no split {split!r}; valid splits: {', '.join(_SPLIT_SIZES[canon])}")
    if normalize not in NORMALIZATIONS:
        raise DataError(f"unknown normalize={normalize!r}; choose one of {NORMALIZATIONS}")
    if key is not None:
        check_key(key)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer, float)) or int(limit) != limit or limit < 1:
            raise DataError(f"limit must be a positive integer or None, got {limit!r}")
        limit = int(limit)
        if limit > _SPLIT_SIZES[canon][split]:
            raise DataError(f"limit={limit} exceeds the {_SPLIT_SIZES[canon][split]} samples of {canon}/{split}")

    looked: list[str] = []
    got = None
    if canon == "mnist_10k":
        got = (*_load_embedded(), "embedded:mnist_10k (first 10,000 MNIST train images)")
    else:
        d = check_data_dir(data_dir, "data_dir")
        if d is None:
            d = check_data_dir(os.environ.get("JAXLAND_DATA_DIR"), "$JAXLAND_DATA_DIR")
        if d is not None:
            max_n = _SPLIT_SIZES[canon][split]
            if canon in CIFAR_TARBALLS:
                for cand in _candidate_dirs(canon, d) + [d / "cifar"]:
                    tb = cand / CIFAR_TARBALLS[canon]
                    if tb.exists():
                        got = (*read_cifar(tb, canon, split), str(tb))
                        break
                    looked.append(str(tb))
            else:
                for cand in _candidate_dirs(canon, d):
                    files = _idx_files(cand, split)
                    if files:
                        got = (*_read_idx_pair(*files, max_n), str(files[0]))
                        break
                    looked.append(f"{cand}/{'train' if split == 'train' else 't10k'}-*-idx*-ubyte[.gz]")
        else:
            looked.append("data_dir: none given and JAXLAND_DATA_DIR unset")
        if got is None and use_tfds:
            got = _load_tfds(canon, split, limit if key is None else None, looked)
        # the embedded subset stands in only when no folder was named: a named folder without the files is an error
        if got is None and d is None and canon == "mnist" and split == "train" and limit is not None and limit <= EMBEDDED_SIZE and key is None:
            got = (*_load_embedded(), "embedded:mnist_10k (first 10,000 MNIST train images)")
    if got is None:
        where = "\n  - ".join(looked)
        hint = (
            "pass data_dir=... (or set JAXLAND_DATA_DIR) to a folder with the original files "
            + ("(cifar-10-python.tar.gz / cifar-100-python.tar.gz)" if canon in CIFAR_TARBALLS else "(train-images-idx3-ubyte.gz etc.)")
            + ", install tensorflow-datasets where it can download, or use the embedded 'mnist_10k' (first 10,000 MNIST train images)"
        )
        raise DataNotFoundError(f"no source could provide {canon}/{split}; looked at:\n  - {where}\nTo fix: {hint}")
    x, y, source = got
    n = x.shape[0]
    if key is not None:
        perm = np.asarray(jax.random.permutation(key, n))
        x, y = x[perm], y[perm]
    if limit is not None:
        if limit > n:
            raise DataError(f"limit={limit} exceeds the {n} samples available from {source}")
        x, y = x[:limit], y[:limit]
    x = normalize_images(x, canon, normalize)
    if flatten:
        x = x.reshape(x.shape[0], -1)
    elif x.ndim == 3:  # grey images get their channel axis: (n, h, w, 1), channels last
        x = x[..., None]
    return Dataset(np.ascontiguousarray(x), y.astype(np.int32), canon, source)
