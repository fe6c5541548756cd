"""The README's notebook snippet runs (on shrunken sizes), so the documented calls never rot."""

import re

import pytest

import numpy as np
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(title, shrink):
    text = README.read_text()
    section = text[text.index(title):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    small = code
    for a, b in shrink:
        small = small.replace(a, b)
    assert small != code
    ns = {}
    exec(compile(small, "README.md", "exec"), ns)
    return ns


@pytest.mark.slow
def test_readme_snippet_runs():
    ns = _snippet("## Use from a notebook", [("limit=9984", "limit=256"), ("num_draws=1024", "num_draws=8"), ('"mnist_10k/9984"', '"mnist_10k/256"')])
    mc, th = ns["mc"], ns["th"]
    assert mc.delta.shape == th.second_order.shape == (3,)
    assert ns["eig"].converged


@pytest.mark.slow
def test_readme_bring_your_own_model_runs():
    ns = _snippet("## Bring your own model", [("limit=2048", "limit=256"), ("epochs=3", "epochs=1"), ("num_draws=256", "num_draws=8"), ("2048/images", "256/images")])
    mc, th = ns["mc"], ns["th"]
    assert mc.info.kernel == "generic" and mc.delta.shape == th.second_order.shape == (3,)
    assert np.all(np.isfinite(mc.delta)) and np.all(mc.stderr > 0)
    assert ns["eig"].eigenvalues.shape == (10,)


@pytest.mark.slow
def test_readme_forecast_runs():
    ns = _snippet("## How much more data?", [("limit=4096", "limit=1024"), ("epochs=5", "epochs=1"), ("num_draws=64", "num_draws=16"), ("pilot/4096", "pilot/1024")])
    f = ns["f"]
    assert len(f.tol) == 2 and np.all(np.isfinite(f.k_scatter)) and f.k_scatter[1] >= f.k_scatter[0]
    assert np.all(np.asarray(f.lower_scatter) <= np.asarray(f.k_scatter)) and np.all(np.asarray(f.k_scatter) <= np.asarray(f.upper_scatter))


@pytest.mark.slow
def test_readme_dataset_size_runs():
    ns = _snippet("### From pilots at several sizes", [("limit=8192", "limit=1024"), ("(1024, 2048, 4096, 8192)", "(256, 512, 1024)"),
                                                        ("jl.reference_mlp()", "jl.MLPConfig((784, 16, 10))"), ("range(2)", "range(1)"),
                                                        ("epochs=5).params", "epochs=2).params"), ("y, 10, key", "y, 2, key"),
                                                        ("num_draws=64", "num_draws=8"), ("samples_per_k=64", "samples_per_k=16")])
    f = ns["f"]
    assert f.info["pilot_sizes"] == [256, 512, 1024] and f.unit == "batches" and f.samples_per_k == 16
    assert np.all(np.asarray(f.lower) <= np.asarray(f.n_star)) and np.all(np.asarray(f.n_star) <= np.asarray(f.upper))
    assert f.cost is not None and f.cost.pilots > 0 and "N* =" in f.summary()
    assert len(ns["fig"].axes) == 3


@pytest.mark.slow
def test_readme_spectrum_runs():
    ns = _snippet("## The whole Hessian spectrum", [("limit=9984", "limit=256"), ('"mnist_10k/9984"', '"mnist_10k/256"'), ("num_probes=60", "num_probes=12"),
                                                    ("lanczos_steps=60", "lanczos_steps=8"), ("y, 32, key", "y, 12, key")])
    tr, ch = ns["tr"], ns["ch"]
    assert np.isfinite(tr.trace) and tr.stderr > 0 and len(ch.eigenvalues) == 12 and ch.d_eigengap >= 1


@pytest.mark.slow
def test_readme_language_model_runs():
    ns = _snippet("## Language models", [("limit=256", "limit=32"), ("width=64, depth=2", "width=16, depth=1"), ("epochs=4", "epochs=1"),
                                         ("num_draws=128", "num_draws=8"), ("256x64", "32x64")])
    probe = ns["probe"]
    assert probe.unit == "sequences" and probe.direct.delta.shape == (31,) and np.all(np.isfinite(probe.moment))
    assert {"eigenvectors", "direct_mc", "coefficients", "quadratic_mc", "gaussian_moment"} <= set(probe.timings)


def test_layout_lists_every_subpackage_and_module():
    text = README.read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```"):block.index("```", block.index("```") + 3)]
    pkg = README.parent / "jaxland"
    subpackages = sorted(p.name for p in pkg.iterdir() if (p / "__init__.py").exists())
    listed = sorted(line.split()[0].rstrip("/") for line in block.splitlines()[2:] if line.startswith("  ") and line.split()[0].endswith("/"))
    assert listed == subpackages
    for module in ("sharding.py", "memory.py", "io.py", "errors.py"):
        assert module in block
