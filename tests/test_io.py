"""Writing to disk: file modes without touching the umask, strict JSON, OS errors that name the path and a fix.

References are independent of jaxland: the umask as a shell reports it, Python's
own strict JSON parser, values written out by hand, /proc/cpuinfo read here.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
import jaxland.io as jio
from jaxland.errors import ConfigError


def _shell_umask() -> int:
    return int(subprocess.run(["sh", "-c", "umask"], capture_output=True, text=True, check=True).stdout.strip(), 8)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_writes_leave_the_umask_alone_while_a_thread_creates_files(tmp_path, monkeypatch):
    umask = _shell_umask()  # what a child process inherits: the process umask, read by the shell
    calls = []
    real_umask = os.umask
    monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real_umask(m))
    other, ours = tmp_path / "other", tmp_path / "ours"
    other.mkdir()
    stop = threading.Event()

    def create():
        i = 0
        while not stop.is_set():
            with open(other / f"f{i}", "w"):
                pass
            i += 1

    t = threading.Thread(target=create)
    t.start()
    try:
        for i in range(300):
            jl.io.atomic_write_text(ours / f"r{i}.txt", "x")
    finally:
        stop.set()
        t.join()
    assert calls == [], "atomic_write_text set the process umask"
    expected = 0o666 & ~umask
    created = list(other.iterdir())
    assert created and all(_mode(p) == expected for p in created), sorted({oct(_mode(p)) for p in created})
    assert all(_mode(p) == expected for p in ours.iterdir())
    assert not list(ours.glob(".*.tmp"))


def test_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", None))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    jio.atomic_write_bytes(tmp_path / "f.bin", b"abc")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]
    assert (tmp_path / "f.bin").read_bytes() == b"abc"


def test_explicit_mode_is_set_on_the_file(tmp_path):
    p = jio.atomic_write_bytes(tmp_path / "secret.bin", b"abc", mode=0o600)
    assert _mode(p) == 0o600 and p.read_bytes() == b"abc"


def _strict(text: str):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def test_write_json_is_strict_json_with_field_names_and_marked_nonfinite_numbers(tmp_path):
    fields = jl.KForecast._fields
    values = {f: i + 0.5 for i, f in enumerate(fields)}
    values.update(k=np.array([3.0, np.inf]), alpha=np.float32(np.nan), num_fit=np.int64(7), unit="batches", far=np.bool_(True), k_fit=(2, 9))
    forecast = jl.KForecast(**values)
    obj = {
        "forecast": forecast,
        "summary": {"delta_first": float("nan"), "delta/last": -math.inf, "n": np.int32(4), "x": np.float64(0.25)},
        "curve": jnp.asarray([1.0, 2.0, 3.0]),
        "path": Path("/a/b"),
    }
    path = jl.write_json(tmp_path / "r.json", obj)
    doc = _strict(path.read_text())
    # a NamedTuple is an object with its field names, in order
    assert list(doc["forecast"]) == list(fields)
    assert doc["forecast"]["k"] == [3.0, None] and doc["forecast"]["alpha"] is None
    assert doc["forecast"]["num_fit"] == 7 and doc["forecast"]["far"] is True and doc["forecast"]["k_fit"] == [2, 9]
    assert doc["forecast"]["unit"] == "batches" and doc["forecast"]["level"] == values["level"]
    assert doc["summary"] == {"delta_first": None, "delta/last": None, "n": 4, "x": 0.25}
    assert doc["curve"] == [1.0, 2.0, 3.0] and doc["path"] == "/a/b"
    # each null that was a number is listed by its JSON Pointer (RFC 6901: "/" in a key is "~1")
    assert doc["nonfinite"] == {
        "/forecast/k/1": "Infinity",
        "/forecast/alpha": "NaN",
        "/summary/delta_first": "NaN",
        "/summary/delta~1last": "-Infinity",
    }
    back = jio.read_json(path)
    assert back["forecast"]["k"][1] == math.inf and math.isnan(back["forecast"]["alpha"])
    assert math.isnan(back["summary"]["delta_first"]) and back["summary"]["delta/last"] == -math.inf


def test_write_json_of_finite_data_has_no_nonfinite_key_and_wraps_a_bare_list(tmp_path):
    assert _strict(jl.write_json(tmp_path / "a.json", {"a": 1.5}).read_text()) == {"a": 1.5}
    doc = _strict(jl.write_json(tmp_path / "b.json", [1.0, float("nan")]).read_text())
    assert doc == {"value": [1.0, None], "nonfinite": {"/value/1": "NaN"}}


def test_read_json_rejects_bare_nan(tmp_path):
    (tmp_path / "x.json").write_text('{"a": NaN}')
    with pytest.raises(ValueError, match="NaN"):
        jio.read_json(tmp_path / "x.json")


def test_a_full_disk_names_the_path_and_a_fix(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(jio.os, "write", full)
    with pytest.raises(OSError) as info:
        jl.write_json(target, {"a": 1})
    e = info.value
    assert e.errno == errno.ENOSPC
    assert str(target) in str(e) and "free space" in str(e) and "No space left on device" in str(e)
    assert target.read_text() == "old"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left


def test_permission_denied_names_the_path_and_a_fix(tmp_path, monkeypatch):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError) as info:
        jio.atomic_write_text(tmp_path / "out" / "r.txt", "x")
    assert str(tmp_path / "out" / "r.txt") in str(info.value) and "choose a folder you can write to" in str(info.value)


def test_a_target_that_is_a_folder_is_a_clear_error(tmp_path):
    (tmp_path / "report.html").mkdir()
    with pytest.raises(ConfigError, match="report.html: it is a folder"):
        jio.atomic_write_text(tmp_path / "report.html", "x")


def test_run_metadata_records_versions_backend_device_and_cpu():
    meta = jl.run_metadata()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if names:
            assert meta["cpu"] == names[0]
    assert meta["backend"] == jax.default_backend() and meta["device_kind"] == jax.devices()[0].device_kind
    import flax
    import jaxlib
    import optax

    assert meta["versions"]["jax"] == jax.__version__ and meta["versions"]["jaxlib"] == jaxlib.__version__
    assert meta["versions"]["flax"] == flax.__version__ and meta["versions"]["optax"] == optax.__version__
    assert meta["versions"]["jaxland"] == jl.__version__ and meta["x64"] is bool(jax.config.jax_enable_x64)
