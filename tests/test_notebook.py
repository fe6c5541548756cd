"""Execute experiments/colab.ipynb headless on tiny settings so it never rots."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB = Path(__file__).resolve().parents[1] / "experiments" / "colab.ipynb"


@pytest.mark.slow
def test_colab_notebook_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXLAND_NB_PARAMS", json.dumps(dict(n_samples=512, hidden=[32], epochs=1, d=3, num_draws=8)))
    nb = nbformat.read(NB, as_version=4)
    # a test-only last cell prints what the notebook computed, to check against the library called here
    nb.cells.append(nbformat.v4.new_code_cell(
        'print("JAXLAND_VALUES " + json.dumps({"acc": float(res.train_accuracy), "eig": np.asarray(eig.eigenvalues).tolist(), '
        '"delta": np.asarray(mc.delta).tolist(), "stderr": np.asarray(mc.stderr).tolist(), "theory": np.asarray(th.second_order).tolist()}))'
    ))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "every plot cell should show its figure inline"

    printed = [o["text"] for o in outputs if o.get("output_type") == "stream" and "JAXLAND_VALUES" in o.get("text", "")]
    assert printed, "the check cell printed nothing"
    got = json.loads(printed[0].split("JAXLAND_VALUES ", 1)[1])

    # the same calls in this process, from the same parameters (the weights come from the same cache entry)
    ds = jl.load_dataset("mnist_10k", limit=512)
    x, y = jnp.asarray(ds.x), jnp.asarray(ds.y)
    model = jl.MLPConfig((784, 32, 10))
    res = jl.cached_train(model, ds.x, ds.y, key=jax.random.key(0), data_tag="mnist_10k/512", epochs=1, batch_size=64, progress=False)
    eig = jl.hessian_eigenpairs(model, res.params, x, y, 3, key=jax.random.key(0))
    sub = jl.Subspace(res.params, eig.eigenvectors)
    mc = jl.delta_monte_carlo(model, sub, x, y, sigma=1.0, num_draws=8, key=jax.random.key(1), samples_per_k=64)
    th = jl.theory_delta(jl.subspace_curvature(model, sub, x, y), sigma=1.0, samples_per_k=64)
    assert got["acc"] == pytest.approx(float(res.train_accuracy))
    np.testing.assert_allclose(got["eig"], eig.eigenvalues, rtol=1e-4)
    np.testing.assert_allclose(got["delta"], mc.delta, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(got["theory"], th.second_order, rtol=1e-4, atol=1e-9)
    assert len(got["delta"]) == 512 // 64 - 1 and np.all(np.isfinite(got["stderr"])) and np.all(np.asarray(got["stderr"]) > 0)
    # and the eigenvalues are eigenvalues of this Hessian: H v = lambda v to the solver's tolerance
    for lam, v in zip(eig.eigenvalues, eig.eigenvectors):
        hv = jl.hvp(model, res.params, x, y, v)
        assert float(jnp.linalg.norm(hv - lam * v)) < 1e-2 * abs(float(eig.eigenvalues[0]))
