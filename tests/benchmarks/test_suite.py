"""Smoke test of ``python -m benchmarks.suite``: one tiny run, the JSON's structure and the sanity of its figures."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxland as jl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ lives beside jaxland/, not inside it
from benchmarks import suite  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The CLI at --size tiny without torch, writing to its default file name under a temporary results folder."""
    out = tmp_path_factory.mktemp("suite")
    mp = pytest.MonkeyPatch()
    mp.setattr(suite, "RESULTS", out)
    mp.setenv("JAXLAND_CACHE_DIR", str(out / "cache"))
    try:
        returned = suite.main(["--size", "tiny", "--no-torch"])
    finally:
        mp.undo()
    path = out / f"suite-{jax.default_backend()}-tiny.json"
    return json.loads(path.read_text()), returned


@pytest.mark.slow
def test_structure(tiny_run):
    p, returned = tiny_run
    assert p["size"] == "tiny" and p["benchmark"] == f"suite-{jax.default_backend()}-tiny"
    assert p["device"]["backend"] == jax.default_backend() and p["device"]["count"] == jax.device_count()
    assert p["device"]["device_kind"] == jax.devices()[0].device_kind
    assert {"jax", "numpy", "python"} <= set(p["versions"]) and p["versions"]["jax"] == jax.__version__
    assert len(p["load_average"]["start"]) == 3 and p["load_average"]["cpus"] >= 1
    assert {"hvp", "eigenpairs", "delta", "ratios", "torch", "meta"} <= set(p)
    assert p["torch"] == {"skipped": "disabled (--no-torch)"} and "torch_delta" not in p
    assert "hvp_torch_over_jaxland" not in p["ratios"]
    assert p["config"]["n"] == suite.SIZES["tiny"].n and p["problem"]["num_params"] == jl.MLPConfig((784, 32, 32, 10)).num_params
    assert returned["hvp"]["hvp_s"] == p["hvp"]["hvp_s"]
    text = suite.table(returned)
    assert "Delta_k bf16" in text and "skipped" in text


@pytest.mark.slow
def test_figures_are_sane(tiny_run):
    p, _ = tiny_run
    h, e, d = p["hvp"], p["eigenpairs"], p["delta"]
    for t in (h["hvp_s"], h["loss_grad"]["median_s"], h["hvp"]["first_call_s"], e["wall_s"], e["time"]["first_call_s"]):
        assert np.isfinite(t) and t > 0
    assert e["num_hvps"] >= e["d"] == 10 and e["verified_max_relres"] < 1e-2
    vals = np.asarray(e["eigenvalues"])
    assert vals.shape == (10,) and np.all(np.diff(vals) <= 0) and vals[0] > 0
    cfg = p["config"]
    assert d["draws"] == cfg["draws"] and d["num_k"] == cfg["n"] // cfg["batch_size"] - 1
    for name in ("float32", "bf16"):
        r = d[name]
        assert r["median_s"] > 0 and r["first_call_s"] > 0 and len(r["times_s"]) == cfg["repeats"]
        assert r["ceiling_gflops"] > 0 and r["kernel_gflops"] > 0
    # same draws and weights: bf16 matmuls move the curve by a small fraction of one Monte Carlo standard error
    assert 0 <= d["bf16_vs_float32"]["max_abs_diff_over_se"] < 2
    assert 0 < d["bf16_vs_float32"]["max_rel_diff"] < 0.1


def test_bad_size_and_missing_torch(monkeypatch):
    with pytest.raises(jl.ConfigError, match="size must be one of"):
        suite.run_suite("huge", write=False)
    assert suite.load_torch(False) == (None, None, "disabled (--no-torch)")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    torch, dev, why = suite.load_torch(True)
    assert torch is None and dev is None and why.startswith("torch not importable")
