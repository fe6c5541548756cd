"""Execute experiments/colab.ipynb headless on tiny settings so it never rots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB = Path(__file__).resolve().parents[1] / "experiments" / "colab.ipynb"


def test_colab_notebook_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXLAND_NB_PARAMS", json.dumps(dict(n_samples=512, hidden=[32], epochs=1, d=3, num_draws=8)))
    nb = nbformat.read(NB, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, "every plot cell should show its figure inline"
