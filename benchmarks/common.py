"""Shared set-up for the benchmarks: the reference problem, timing, JSON output.

The reference problem is the paper's: MLP 784-256-256-10 trained (Adam 1e-3,
batch 64, 10 epochs, seed 0) on the first 9,984 MNIST training images,
normalised with mean 0.1307 / std 0.3081. Real MNIST comes from
``$JAXLAND_DATA_DIR`` (or ``../shared/data`` beside the clone when present),
else the embedded subset, which holds the same 9,984 images. The folder used
is printed on stderr and recorded (``data_dir``, ``data_dir_from``) with the
results, so a number can be traced to the files it was computed on.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

import jaxland as jl

RESULTS = Path(__file__).resolve().parent / "results"
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_dir() -> tuple[str | None, str]:
    """``(folder, how it was found)`` of the real MNIST files the benchmarks read; ``None``: the embedded subset.

    ``$JAXLAND_DATA_DIR`` first (empty means unset), then ``../shared/data``
    beside the clone. Prints the choice on stderr.
    """
    env = os.environ.get("JAXLAND_DATA_DIR")
    if env:
        folder, how = str(Path(env).expanduser()), "$JAXLAND_DATA_DIR"
    elif _SHARED.exists():
        folder, how = str(_SHARED), "../shared/data beside the clone"
    else:
        folder, how = None, "no data folder: the embedded mnist_10k"
    print(f"data: {folder or 'embedded mnist_10k'} ({how})", file=sys.stderr, flush=True)
    return folder, how


def reference_problem(n: int = 9984, seed: int = 0, epochs: int = 10):
    """(model, w*, x, y, info) for the paper's reference setup; weights cached on disk.

    ``info`` records the data source, the folder it was read from and how that folder was found.
    """
    folder, how = data_dir()
    ds = jl.load_dataset("mnist", limit=n, data_dir=folder) if folder else jl.load_dataset("mnist_10k", limit=n)
    model = jl.reference_mlp()
    res = jl.cached_train(model, ds.x, ds.y, key=jax.random.key(seed), data_tag=f"mnist/train/{n}/standard", epochs=epochs)
    info = {"data_source": ds.source, "data_dir": folder, "data_dir_from": how, "train_accuracy": res.train_accuracy}
    return model, res.params, jax.numpy.asarray(ds.x), jax.numpy.asarray(ds.y), info


def block(x):
    return jax.block_until_ready(x)


def timeit(fn, *, repeats: int = 5, warmup: int = 1) -> dict:
    """Median/min wall time of ``fn()`` (which must block on its result) over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median_s": float(np.median(ts)), "min_s": float(np.min(ts)), "repeats": repeats}


def write_result(name: str, payload: dict, out: str | Path | None = None) -> Path:
    """Write ``payload`` plus run metadata to ``benchmarks/results/NAME.json`` (atomically)."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    payload = {"benchmark": name, **payload, "meta": jl.run_metadata()}
    jl.write_json(path, payload)
    print(f"wrote {path}")
    return path
