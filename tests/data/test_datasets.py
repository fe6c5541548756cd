import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxland as jl
from jaxland.data.datasets import read_idx

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _write_idx(path, arr, magic=None, extra=b"", cut=0):
    arr = np.asarray(arr, np.uint8)
    magic = magic if magic is not None else 0x0800 + arr.ndim
    raw = struct.pack(">I", magic) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes() + extra
    if cut:
        raw = raw[:-cut]
    with gzip.open(path, "wb") as f:
        f.write(raw)
    return path


def _fake_mnist(folder, n=20, prefix="train", **kw):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), **kw)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return folder


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(jl.DataError, match="valid names are: mnist, fashion_mnist, cifar10, cifar100, mnist_10k"):
        jl.load_dataset("imagenet")


def test_unknown_split_and_normalize_and_limit():
    with pytest.raises(jl.DataError, match="no split 'test'"):
        jl.load_dataset("mnist_10k", split="test")
    with pytest.raises(jl.DataError, match="normalize"):
        jl.load_dataset("mnist_10k", normalize="zscore")
    with pytest.raises(jl.DataError, match="exceeds"):
        jl.load_dataset("mnist_10k", limit=10001)
    with pytest.raises(jl.DataError, match="positive integer"):
        jl.load_dataset("mnist_10k", limit=0)


def test_missing_files_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXLAND_DATA_DIR", raising=False)
    with pytest.raises(jl.DataNotFoundError) as e:
        jl.load_dataset("fashion_mnist", data_dir=tmp_path, use_tfds=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "fashion-mnist" in msg and "JAXLAND_DATA_DIR" in msg and "mnist_10k" in msg
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        jl.load_dataset("cifar10", data_dir=tmp_path, use_tfds=False)


def test_mnist_beyond_embedded_without_source_is_an_error_not_a_silent_subset(monkeypatch):
    monkeypatch.delenv("JAXLAND_DATA_DIR", raising=False)
    with pytest.raises(jl.DataNotFoundError):
        jl.load_dataset("mnist", use_tfds=False)  # all 60,000 asked, only 10,000 embedded
    ds = jl.load_dataset("mnist", limit=100, use_tfds=False)
    assert ds.source.startswith("embedded") and ds.x.shape == (100, 784)


def test_bad_magic(tmp_path):
    _fake_mnist(tmp_path, magic=0x0803 + 0x01000000)
    with pytest.raises(jl.DataError, match="bad IDX magic number") as e:
        jl.load_dataset("mnist", data_dir=tmp_path, use_tfds=False)
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_short_read(tmp_path):
    _fake_mnist(tmp_path, cut=100)
    with pytest.raises(jl.DataError, match="short read.*truncated"):
        jl.load_dataset("mnist", data_dir=tmp_path, use_tfds=False)


def test_wrong_count_trailing_bytes(tmp_path):
    _fake_mnist(tmp_path, extra=b"\0" * 784)
    with pytest.raises(jl.DataError, match="trailing bytes"):
        jl.load_dataset("mnist", data_dir=tmp_path, use_tfds=False)


def test_image_label_count_mismatch(tmp_path):
    _fake_mnist(tmp_path, n=20)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19))
    with pytest.raises(jl.DataError, match="20 images but .* 19 labels"):
        jl.load_dataset("mnist", data_dir=tmp_path, use_tfds=False)


def test_truncated_gzip(tmp_path):
    p = _write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.random.default_rng(0).integers(0, 256, (50, 28, 28)))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(jl.DataError, match="corrupt or truncated"):
        read_idx(p)


def test_idx_roundtrip_and_subfolder(tmp_path):
    _fake_mnist(tmp_path / "fashion-mnist", n=30, prefix="t10k")
    ds = jl.load_dataset("fashion-mnist", split="test", data_dir=tmp_path, normalize="none", flatten=False, use_tfds=False)
    assert ds.x.shape == (30, 28, 28, 1) and ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    assert ds.x.max() <= 255 and ds.x.max() > 200


def _fake_cifar(tmp_path, which="cifar10", n=6):
    rng = np.random.default_rng(1)
    tb = tmp_path / ("cifar-10-python.tar.gz" if which == "cifar10" else "cifar-100-python.tar.gz")
    with tarfile.open(tb, "w:gz") as tf:
        names = [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)] + ["cifar-10-batches-py/test_batch"] if which == "cifar10" else ["cifar-100-python/train", "cifar-100-python/test"]
        for name in names:
            d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
            d[b"labels" if which == "cifar10" else b"fine_labels"] = list(rng.integers(0, 10 if which == "cifar10" else 100, n))
            blob = pickle.dumps(d)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return tb


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_tarball(tmp_path, which):
    _fake_cifar(tmp_path, which)
    with pytest.warns(UserWarning, match="MD5"):  # not the official file
        ds = jl.load_dataset(which, data_dir=tmp_path, normalize="symmetric", use_tfds=False)
    assert ds.x.shape == (30 if which == "cifar10" else 6, 3072)
    assert -1.0 <= ds.x.min() and ds.x.max() <= 1.0
    with pytest.warns(UserWarning, match="MD5"):
        img = jl.load_dataset(which, split="test", data_dir=tmp_path, flatten=False, use_tfds=False)
    assert img.x.shape[1:] == (32, 32, 3)


def test_corrupt_cifar(tmp_path):
    tb = _fake_cifar(tmp_path)
    tb.write_bytes(tb.read_bytes()[:300])
    with pytest.warns(UserWarning, match="MD5"), pytest.raises(jl.DataError, match="corrupt or truncated CIFAR"):
        jl.load_dataset("cifar10", data_dir=tmp_path, use_tfds=False)


def test_embedded_normalisations_and_order():
    ds = jl.load_dataset("mnist_10k")
    assert ds.x.shape == (10000, 784) and ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    assert np.bincount(ds.y).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    # (p/255 - 0.1307)/0.3081: background pixels map to -0.4242
    np.testing.assert_allclose(ds.x.min(), -0.1307 / 0.3081, rtol=1e-6)
    sym = jl.load_dataset("mnist_10k", normalize="symmetric", limit=50)
    assert sym.x.min() == -1.0 and sym.x.max() == 1.0
    np.testing.assert_array_equal(sym.y, ds.y[:50])
    p1 = jl.load_dataset("mnist_10k", key=jax.random.key(3), limit=100)
    p2 = jl.load_dataset("mnist_10k", key=jax.random.key(3), limit=100)
    np.testing.assert_array_equal(p1.x, p2.x)
    assert np.mean(p1.y != ds.y[:100]) > 0.5  # a real reshuffle, not a last-bit difference
    perm = np.asarray(jax.random.permutation(jax.random.key(3), 10000))
    np.testing.assert_array_equal(p1.y, ds.y[perm[:100]])


def test_real_mnist_files(shared_data):
    tr = jl.load_dataset("mnist", data_dir=shared_data, normalize="none", flatten=False, use_tfds=False)
    te = jl.load_dataset("mnist", split="test", data_dir=shared_data, normalize="none", use_tfds=False)
    where = f"MNIST read from {tr.source} (data folder {shared_data})"
    assert tr.x.shape == (60000, 28, 28, 1) and te.x.shape == (10000, 784), where
    assert np.bincount(tr.y).tolist() == MNIST_TRAIN_COUNTS, where
    assert np.bincount(te.y).tolist() == MNIST_TEST_COUNTS, where
    emb = jl.load_dataset("mnist_10k", normalize="none", flatten=False)
    np.testing.assert_array_equal(emb.x, tr.x[:10000], err_msg=f"embedded mnist_10k vs {where}")
    np.testing.assert_array_equal(emb.y, tr.y[:10000], err_msg=f"embedded mnist_10k vs {where}")


def test_real_fashion_mnist_files(shared_data):
    tr = jl.load_dataset("fashion_mnist", data_dir=shared_data, use_tfds=False)
    te = jl.load_dataset("fashion_mnist", split="test", data_dir=shared_data, use_tfds=False)
    where = f"Fashion-MNIST read from {tr.source} (data folder {shared_data})"
    assert tr.x.shape == (60000, 784) and te.x.shape == (10000, 784), where
    assert np.bincount(tr.y).tolist() == [6000] * 10, where
    assert np.bincount(te.y).tolist() == [1000] * 10, where
    assert abs(float(tr.x.mean())) < 0.01 and abs(float(tr.x.std()) - 1) < 0.01, where  # 0.2860/0.3530 constants


def test_env_var_data_dir(shared_data, monkeypatch):
    monkeypatch.setenv("JAXLAND_DATA_DIR", str(shared_data))
    ds = jl.load_dataset("mnist", limit=5, use_tfds=False)
    assert str(shared_data) in ds.source and ds.x.shape == (5, 784), f"JAXLAND_DATA_DIR={shared_data} gave {ds.source}"


# ------------------------------------------------------------- where the files come from


def test_data_dir_empty_means_unset_and_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXLAND_DATA_DIR", "")
    assert jl.load_dataset("mnist", limit=10, use_tfds=False).source.startswith("embedded")
    assert jl.load_dataset("mnist", limit=10, data_dir="", use_tfds=False).source.startswith("embedded")
    _fake_mnist(tmp_path / "home" / "data", n=12)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ds = jl.load_dataset("mnist", data_dir="~/data", use_tfds=False)
    assert ds.x.shape == (12, 784) and ds.source == str(tmp_path / "home" / "data" / "train-images-idx3-ubyte.gz")
    monkeypatch.setenv("JAXLAND_DATA_DIR", "~/data")
    assert jl.load_dataset("mnist", use_tfds=False).source == ds.source


def test_a_named_folder_that_does_not_exist_is_an_error_not_the_embedded_data(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXLAND_DATA_DIR", raising=False)
    with pytest.raises(jl.DataNotFoundError, match="data_dir='/nonexistent/xyz': no such folder"):
        jl.load_dataset("mnist", limit=10, data_dir="/nonexistent/xyz", use_tfds=False)
    monkeypatch.setenv("JAXLAND_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(jl.DataNotFoundError, match=r"\$JAXLAND_DATA_DIR=.*typo.*no such folder"):
        jl.load_dataset("mnist", limit=10, use_tfds=False)
    assert jl.load_dataset("mnist_10k", limit=3).x.shape == (3, 784)  # the embedded set needs no folder
    monkeypatch.delenv("JAXLAND_DATA_DIR")
    with pytest.raises(jl.DataNotFoundError, match="looked at"):  # a folder without the files: no silent fallback
        jl.load_dataset("mnist", limit=10, data_dir=tmp_path, use_tfds=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(jl.DataError, match="is a file"):
        jl.load_dataset("mnist", limit=10, data_dir=tmp_path / "file", use_tfds=False)


def test_idx_header_beyond_the_split_is_refused(tmp_path):
    _fake_mnist(tmp_path, n=3)
    with open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as fh:  # declares 60,001 labels, holds none
        fh.write(gzip.compress(struct.pack(">II", 0x0801, 60001)))
    with pytest.raises(jl.DataError, match=r"declares shape \(60001,\), beyond the largest this dataset has, \(60000,\)"):
        jl.load_dataset("mnist", data_dir=tmp_path, use_tfds=False)


def test_normalize_images_unknown_dataset_is_a_config_error():
    with pytest.raises(jl.ConfigError, match="unknown dataset 'svhn'.*mnist, fashion_mnist, cifar10, cifar100, mnist_10k"):
        jl.normalize_images(np.zeros((2, 784), np.uint8), "svhn", "standard")
    with pytest.raises(jl.ConfigError, match=r"channels-last \(n, h, w, 3\)"):
        jl.normalize_images(np.zeros((2, 3072), np.uint8), "cifar10", "standard")
    got = jl.normalize_images(np.full((1, 2, 2, 3), 255, np.uint8), "CIFAR10", "standard")
    np.testing.assert_allclose(got[0, 0, 0], (1 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2470, 0.2435, 0.2616]), rtol=1e-5)


def test_benchmarks_say_which_data_folder_they_read(tmp_path, monkeypatch, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks import common

    monkeypatch.setenv("JAXLAND_DATA_DIR", str(tmp_path))
    assert common.data_dir() == (str(tmp_path), "$JAXLAND_DATA_DIR")
    assert f"data: {tmp_path} ($JAXLAND_DATA_DIR)" in capsys.readouterr().err
    monkeypatch.setenv("JAXLAND_DATA_DIR", "")
    monkeypatch.setattr(common, "_SHARED", tmp_path / "absent")
    assert common.data_dir() == (None, "no data folder: the embedded mnist_10k")
    monkeypatch.setattr(common, "_SHARED", tmp_path)
    assert common.data_dir() == (str(tmp_path), "../shared/data beside the clone")
    assert f"data: {tmp_path} (../shared/data beside the clone)" in capsys.readouterr().err
