"""Files from others: crafted dataset files, results folders and settings must not run code, exhaust memory,
inject into the report or the terminal, or leak files. Each test builds its crafted file itself."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import jaxland as jl
from jaxland.data import cifar as cifar_mod
from jaxland.data.idx import read_idx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # experiments/ lives beside jaxland/, not inside it
from experiments import _report  # noqa: E402
from experiments import __main__ as main_job  # noqa: E402
from experiments._cli import print_summary, terminal_safe  # noqa: E402


# ----------------------------------------------------------------- CIFAR pickles


class _WritesMarker:
    """Unpickling this calls ``fn(*args)``, which would create the marker file."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _cifar10_tarball(path: Path, batches: dict[str, object], *, protocol: int = 2) -> Path:
    """A tarball in the official cifar-10-python layout holding ``batches`` (member name -> pickled object)."""
    with tarfile.open(path, "w:gz") as tf:
        for name, obj in batches.items():
            blob = pickle.dumps(obj, protocol=protocol)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    return path


def _batch(rng, n):
    return {b"batch_label": b"training batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, n)], b"filenames": [b"img_%d.png" % i for i in range(n)]}


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec"])
def test_crafted_cifar_pickle_runs_no_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = (_WritesMarker(os.system, (f"touch {marker}",)) if payload == "os.system"
            else _WritesMarker(exec, (f"open({str(marker)!r}, 'w').write('x')",)))
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": _batch(rng, 4) for i in range(1, 6)}
    batches["data_batch_3"] = {b"data": evil, b"labels": [0, 1, 2, 3]}
    tb = _cifar10_tarball(tmp_path / "cifar-10-python.tar.gz", batches)
    with pytest.warns(UserWarning, match="MD5"), pytest.raises(jl.DataError) as e:
        jl.load_dataset("cifar10", data_dir=tmp_path, use_tfds=False)
    assert not marker.exists()
    refused = {"os.system": f"{os.system.__module__}.system", "builtins.exec": "builtins.exec"}[payload]
    assert str(tb) in str(e.value) and "data_batch_3" in str(e.value) and refused in str(e.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_repacked_cifar_with_safe_content_loads_with_md5_warning(tmp_path, protocol):
    rng = np.random.default_rng(1)
    batches = {f"data_batch_{i}": _batch(rng, 3) for i in range(1, 6)}
    batches["test_batch"] = _batch(rng, 2)
    batches["test_batch"][b"labels"] = list(np.asarray(batches["test_batch"][b"labels"], np.int64))  # numpy scalars
    tb = _cifar10_tarball(tmp_path / "cifar-10-python.tar.gz", batches, protocol=protocol)
    with pytest.warns(UserWarning, match=r"cifar-10-python\.tar\.gz: MD5 .* differs from the published c58f30108f718f92721af3b95e74349a"):
        ds = jl.load_dataset("cifar10", data_dir=tmp_path, normalize="none", flatten=False, use_tfds=False)
    want = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    # official layout: 1024 red, then green, then blue values per image, each row-major 32x32
    np.testing.assert_array_equal(ds.x[..., 1], want[:, 1024:2048].reshape(-1, 32, 32))
    np.testing.assert_array_equal(ds.y, sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), []))
    # the same file registered as the official one loads without the warning
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(cifar_mod.CIFAR_MD5, tb.name, hashlib.md5(tb.read_bytes()).hexdigest())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            test = jl.load_dataset("cifar10", split="test", data_dir=tmp_path, normalize="none", use_tfds=False)
    assert test.x.shape == (2, 3072) and test.y.tolist() == [int(v) for v in batches["test_batch"][b"labels"]]


def test_cifar_batch_of_the_wrong_shape_is_refused_before_any_copy(tmp_path):
    batches = {f"data_batch_{i}": {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]} for i in range(1, 6)}
    batches["data_batch_1"] = {b"data": np.zeros((2, 3072), np.uint8), b"labels": list(range(5))}
    _cifar10_tarball(tmp_path / "cifar-10-python.tar.gz", batches)
    with pytest.warns(UserWarning), pytest.raises(jl.DataError, match="2 images but labels"):
        jl.load_dataset("cifar10", data_dir=tmp_path, use_tfds=False)
    # a few bytes of pickle that have numpy allocate 184 MB (np.ndarray is admitted: array pickles name it)
    batches["data_batch_1"] = {b"data": _WritesMarker(np.ndarray, ((60000, 3072), np.dtype(np.uint8))), b"labels": [0] * 60000}
    _cifar10_tarball(tmp_path / "cifar-10-python.tar.gz", batches)
    with pytest.warns(UserWarning), pytest.raises(jl.DataError, match=r"expected \(n, 3072\) uint8 with n <= 50000"):
        jl.load_dataset("cifar10", data_dir=tmp_path, use_tfds=False)


# ------------------------------------------------------------------- IDX bombs


def _gzip_bomb(path: Path, shape: tuple[int, ...], zeros_mib: int) -> Path:
    """An IDX header declaring ``shape``, then ``zeros_mib`` MiB of zeros: a few KiB of gzip per 16 MiB."""
    header = struct.pack(">I", 0x0800 + len(shape)) + struct.pack(">" + "I" * len(shape), *shape)
    chunk = gzip.compress(bytes(16 << 20), compresslevel=9)  # one member; concatenated members are one stream
    with open(path, "wb") as fh:
        fh.write(gzip.compress(header))
        for _ in range(zeros_mib // 16):
            fh.write(chunk)
    return path


# Imports only jaxland.errors and jaxland.data.idx (numpy, no jax), so the process's peak RSS is the read's.
# It runs as a grandchild: a child's ru_maxrss starts at its parent's peak (Linux carries the high-water
# mark across fork/vfork and exec), and the small middle process keeps pytest's out of the measurement.
_MEASURE = """
import os, resource, sys, types
root = sys.argv[1]
for name in ("jaxland", "jaxland.data"):
    m = types.ModuleType(name)
    m.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = m
from jaxland.data.idx import read_idx
from jaxland.errors import DataError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    read_idx(sys.argv[2], expected_dims=3, max_shape=(60000, 28, 28) if sys.argv[3] == "split" else None)
    print("LOADED")
except DataError as e:
    print("DATAERROR", str(e).replace(chr(10), " "))
print("RSS_MIB", before // 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.parametrize("case", ["declares_gigabytes", "trailing_gigabytes", "beyond_split"])
def test_idx_decompression_bomb_is_refused_in_bounded_memory(tmp_path, case):
    shape, zeros, bound = {
        "declares_gigabytes": ((4_000_000, 28, 28), 4096, "none"),  # 3.1 GB declared, 4 GiB of zeros in ~4 MB
        "trailing_gigabytes": ((60000, 28, 28), 2048, "split"),  # the right header, then 2 GiB of zeros too many
        "beyond_split": ((70000, 28, 28), 1024, "split"),  # under the byte cap but not an MNIST file
    }[case]
    bomb = _gzip_bomb(tmp_path / "train-images-idx3-ubyte.gz", shape, zeros)
    assert bomb.stat().st_size < 8 << 20
    relay = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    cmd = [sys.executable, "-c", relay, sys.executable, "-c", _MEASURE, str(REPO), str(bomb), bound]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert "LOADED" not in out and str(bomb) in out["DATAERROR"]
    assert {"declares_gigabytes": "more than the limit", "trailing_gigabytes": "trailing bytes",
            "beyond_split": "beyond the largest"}[case] in out["DATAERROR"]
    before, peak = map(int, out["RSS_MIB"].split())
    assert peak < 200, f"peak RSS {peak} MiB (at start {before} MiB)"


def test_idx_shape_overflowing_int64_is_a_data_error(tmp_path):
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(struct.pack(">I", 0x0803) + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1) + b"\0" * 64)
    with pytest.raises(jl.DataError, match="more than the limit"):
        read_idx(p)
    p.write_bytes(struct.pack(">I", 0x08FF) + struct.pack(">" + "I" * 255, *[2**32 - 1] * 255))
    with pytest.raises(jl.DataError, match="more than the limit"):
        read_idx(p)


# ------------------------------------------------------------------------ report

_PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "\" onmouseover=\"alert(3)", "' onfocus='alert(4)' autofocus='",
             "javascript:alert(5)"]
_EVIL = "".join(_PAYLOADS)
_PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + bytes(range(64))


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def _evil_record(figures):
    return {"experiment": _EVIL, "title": _EVIL, "paper_ref": _EVIL, "mode": _EVIL, "key": _EVIL, "config_hash": _EVIL,
            "config": {_EVIL: _EVIL, "n": 3}, "data_sources": {_EVIL: _EVIL},
            "metadata": {"versions": {_EVIL: _EVIL}, "device_kind": _EVIL, "backend": _EVIL},
            "timings": {"total_s": _EVIL}, "resumed_parts": [_EVIL, _EVIL],
            "summary": {_EVIL: _EVIL, "nested": {_EVIL: _EVIL}, "rows": [{_EVIL: _EVIL, "k": 1.5}]},
            "claims": [{"claim": _EVIL, "held": _EVIL, "detail": _EVIL}, {"claim": _EVIL, "held": True, "detail": _EVIL}],
            "notes": [_EVIL], "figures": figures}


def test_report_escapes_every_value_from_results(tmp_path):
    name = "exp" + "".join(p.replace("/", "") for p in _PAYLOADS)  # a folder name cannot hold '/'
    folder = tmp_path / name
    folder.mkdir()
    (folder / "fig.png").write_bytes(_PNG)
    (folder / "results.json").write_text(json.dumps(_evil_record(["fig", _EVIL])))
    page = _parse(_report.write_report(tmp_path).read_text())
    assert "script" not in page.tags
    assert not [a for a in page.attrs if a[1].startswith("on") or a[1] == "autofocus"], [a for a in page.attrs if a[1].startswith("on")]
    imgs = [v for t, k, v in page.attrs if t == "img" and k == "src"]
    assert imgs == ["data:image/png;base64," + base64.b64encode(_PNG).decode()]
    assert all(v.startswith(("./", "#")) for t, k, v in page.attrs if k == "href")
    text = "".join(page.text)
    # the payloads were written, as text: title x2, paper_ref, mode, key, config key and value, data source key and
    # value, device kind, backend, wall time x2, resumed parts x2, summary, nested and row key and value (6),
    # 2 claims x (claim, detail) x (overview, section), note, figure stem
    assert text.count(_EVIL) == 31
    assert text.count(name) >= 3


def test_report_embeds_only_figures_inside_the_experiment_folder(tmp_path, monkeypatch):
    secret = b"\x89PNG\r\n\x1a\n" + b"SECRET-PIXELS" * 8
    outside = tmp_path / "other" / "run"
    outside.mkdir(parents=True)
    (outside / "figure.png").write_bytes(secret)
    out = tmp_path / "out"
    (out / "exp").mkdir(parents=True)
    (out / "exp" / "fig.png").write_bytes(_PNG)
    (out / "exp" / "link.png").symlink_to(outside / "figure.png")
    (out / "exp" / "big.png").write_bytes(_PNG + bytes(4096))
    (out / "exp" / "fake.png").write_bytes(b"GIF89a not a png")
    (out / "exp" / "dir.png").mkdir()
    os.mkfifo(out / "exp" / "pipe.png")  # opening it for reading would block
    (out / "escape").symlink_to(outside, target_is_directory=True)
    stems = ["../../other/run/figure", str(outside / "figure"), "link", "fig", "big", "fake", "dir", "pipe", "..", ""]
    rec = {"experiment": "exp", "title": "t", "config": {}, "timings": {"total_s": 1.0}, "figures": stems}
    (out / "exp" / "results.json").write_text(json.dumps(rec))
    (out / "escape" / "results.json").write_text(json.dumps({**rec, "figures": ["figure"]}))
    monkeypatch.setattr(_report, "MAX_FIGURE_BYTES", len(_PNG) + 100)
    page = _report.write_report(out).read_text()
    parsed = _parse(page)
    imgs = [v for t, k, v in parsed.attrs if t == "img" and k == "src"]
    assert imgs == ["data:image/png;base64," + base64.b64encode(_PNG).decode()]  # fig only
    assert base64.b64encode(secret).decode()[:40] not in page
    text = "".join(parsed.text)
    for why in ("not a plain file name", "resolves outside the experiment's folder", "larger than", "not a PNG file",
                "not a regular file", "lies outside the report's folder"):
        assert why in text, why


# ---------------------------------------------------------------------- terminal

_CONTROL_PAYLOAD = "ok\x1b]0;owned title\x07\x1b[2J\r\x9b31m\u202eevil\x00\x7f"


def _no_controls(s: str) -> bool:
    return not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in s)


def test_printed_results_carry_no_control_characters(capsys):
    rec = {"experiment": "exp" + _CONTROL_PAYLOAD, "title": _CONTROL_PAYLOAD,
           "summary": {"k" + _CONTROL_PAYLOAD: _CONTROL_PAYLOAD, "rows": [_CONTROL_PAYLOAD]},
           "claims": [{"claim": _CONTROL_PAYLOAD, "held": True, "detail": _CONTROL_PAYLOAD}]}
    print_summary(rec)
    out = capsys.readouterr().out
    assert _no_controls(out) and out.count("\n") == 3
    assert out.count("ok\\x1b]0;owned title\\x07\\x1b[2J\\x0d\\x9b31m\\u202eevil\\x00\\x7f") == 6
    line = main_job._one_line(jl.DataError("bad file " + _CONTROL_PAYLOAD + "\nsecond line"))
    assert _no_controls(line) and "\n" not in line and "second line" in line
    assert terminal_safe("plain text, unicode é ü ∆ kept") == "plain text, unicode é ü ∆ kept"


# ---------------------------------------------------------------------- notebook


def _install_cell() -> str:
    nb = json.loads((REPO / "experiments" / "colab.ipynb").read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "JAXLAND_REPO" in "".join(c["source"]))
    return "".join(cell["source"])


@pytest.mark.parametrize("value,ok", [
    ("git+https://github.com/someone/jaxland.git", True), ("LOCAL", True), ("-r requirements.txt", False),
    ("--index-url=https://evil.example/simple", False), ("https://evil.example/jaxland.tar.gz", False),
    ("git+https://x/y.git --index-url https://evil.example", False), ("/no/such/clone", False),
])
def test_notebook_install_cell_passes_only_a_url_or_a_local_path(tmp_path, monkeypatch, value, ok):
    import importlib.util

    value = str(tmp_path) if value == "LOCAL" else value
    calls = []
    monkeypatch.setenv("JAXLAND_REPO", value)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(args))
    if not ok:
        with pytest.raises(ValueError, match="JAXLAND_REPO"):
            exec(_install_cell(), {})
        assert calls == []
        return
    exec(_install_cell(), {})
    assert len(calls) == 1 and calls[0][-2:] == ["--", value] and calls[0][1:4] == ["-m", "pip", "install"]


# ---------------------------------------------------------------- what SECURITY.md promises


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.html").symlink_to(victim)
    jl.io.atomic_write_text(tmp_path / "out" / "report.html", "new")
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "out" / "report.html").is_symlink() and (tmp_path / "out" / "report.html").read_text() == "new"


def test_no_unsafe_loaders_in_the_sources():
    bad = []
    for folder in ("jaxland", "experiments", "benchmarks"):
        for f in (REPO / folder).rglob("*.py"):
            src = f.read_text()
            for needle in ("allow_pickle=True", "extractall(", "pickle.load(", "pickle.loads(", "torch.load(", "yaml.load("):
                if needle in src:
                    bad.append(f"{f.relative_to(REPO)}: {needle}")
    assert not bad, bad
    with pytest.raises(jl.DataError, match="refused to load the global 'builtins.getattr'"):
        cifar_mod.RestrictedUnpickler(io.BytesIO(b"cbuiltins\ngetattr\n."), source="x").load()
