"""Does the level of Delta_k follow the dataset size N or the training length? A check for the dataset-size forecast.

The forecast experiment (``python -m experiments.forecast``) trains every
network for the same number of epochs, so a network on 60,000 images takes
60x the optimiser steps of one on 1,000, and a level that changes with N
may change with the steps instead. This trains networks of a few sizes
for the 60,000 network's number of steps (``epochs x 60,000 / N`` epochs)
with the experiment's own settings and measures each curve's level against
the 60,000 networks' curves (seed-averaged): the mean of
``log Delta_k^(N) - log Delta_k^(60,000)`` over ``k >= 10`` batches. The same
offsets for the 10-epoch networks come from the experiment's parts.

Run after the full forecast experiment (it reads its parts):
``python -m benchmarks.forecast_training_length --runs runs/forecast-full``
(a few minutes on 2 CPU cores; ``JAXLAND_DATA_DIR`` names the real MNIST files).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np

from experiments import forecast as F
from experiments._runner import Context

from .common import write_result

CASES = (("mnist", 5000), ("mnist", 10000), ("mnist", 20000), ("mnist", 40000), ("fashion_mnist", 20000), ("fashion_mnist", 40000))
BIG = 60000


def _offset(k, delta, big_k, big_delta, k_from: float = 10.0) -> float:
    m = len(k)
    assert np.array_equal(np.asarray(k), np.asarray(big_k)[:m])
    sel = np.asarray(k) >= k_from
    return float(np.mean(np.log(np.asarray(delta)[sel]) - np.log(np.asarray(big_delta)[:m][sel])))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/forecast-full", help="the full forecast experiment's output folder")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    parts = Path(args.runs) / "parts"
    cfg = F.Config(data_dir=os.environ.get("JAXLAND_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ctx = Context(F.SPEC, cfg, Path(args.runs) / "training_length", progress=True)
    rows = []
    for ds in dict.fromkeys(d for d, _ in CASES):
        big = [np.load(parts / f"{ds}-{BIG}-s{s}.npz") for s in range(cfg.big_seeds)]
        big_k, big_delta = big[0]["k"], np.exp(np.mean([np.log(b["delta"]) for b in big], 0))
        seeds = [_offset(b["k"], b["delta"], big_k, big_delta) for b in big]
        rcfg = dataclasses.replace(cfg, dataset=ds)
        x_test, y_test, _ = F._held_out(ctx, rcfg)
        for d, n in CASES:
            if d != ds:
                continue
            epochs = cfg.epochs * BIG // n
            net = F._network(ctx, dataclasses.replace(rcfg, n_samples=n, epochs=epochs), cfg.seed, x_test, y_test)
            ten = np.load(parts / f"{ds}-{n}-s{cfg.seed}.npz")
            rows.append({"dataset": ds, "n": n, "epochs": epochs, "steps": epochs * n // cfg.batch_size,
                         "offset_equal_steps": round(_offset(net["k"], net["delta"], big_k, big_delta), 3),
                         "offset_10_epochs": round(_offset(ten["k"], ten["delta"], big_k, big_delta), 3),
                         "train_loss_equal_steps": float(net["train_loss"]), "train_loss_10_epochs": float(ten["train_loss"]),
                         "top_eigenvalue_equal_steps": float(np.max(net["eigenvalues"])),
                         "top_eigenvalue_10_epochs": float(np.max(ten["eigenvalues"]))})
            print(rows[-1], flush=True)
        rows.append({"dataset": ds, "n": BIG, "epochs": cfg.epochs, "offset_each_seed": [round(s, 3) for s in seeds]})
    write_result("forecast_training_length", {
        "what": "mean over k >= 10 batches of log Delta_k^(N) - log Delta_k^(60,000) (60,000: seed-averaged); equal steps = "
                "the 60,000 network's optimiser steps (10 epochs x 60,000 / 64 = 9,375)", "config": dataclasses.asdict(cfg),
        "load_average": os.getloadavg(), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
