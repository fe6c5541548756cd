"""Smoke tests of the experiments: every experiment's quick path on tiny settings, the report, bad arguments.

One in-process main-job run on tiny settings covers all nine experiments
(outputs exist, are non-empty, finite, and carry the config; the report lists
every experiment); the rest check resuming, the per-experiment command line
and that wrong arguments fail cleanly without leaving files behind.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import EXPERIMENTS, get_spec
from experiments import __main__ as main_job
from experiments._cli import resolve_config
from experiments._runner import run_experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # module scope: the function-scoped cache isolation does not reach here
        mp.setenv("JAXLAND_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        out = tmp_path_factory.mktemp("main")
        rc = main_job.main(["--tiny", "--out", str(out), "--no-progress"])
        yield rc, out


# What the TINY presets set, written out here (not derived from the code that writes the records).
TINY_SETTINGS = {
    "spectrum": {"n_samples": 512, "epochs": 1, "hidden": [32], "num_models": 2, "top": 4},
    "hessian_delta": {"n_samples": 512, "epochs": 1, "hidden": [32], "num_draws": 4, "d": 3},
    "theory_vs_empirical": {"num_draws": 4, "d": 3, "window": 3},
}


def test_main_job_runs_every_experiment(tiny_run):
    rc, out = tiny_run
    assert rc == 0
    for name in EXPERIMENTS:
        d = out / name
        rec = json.loads((d / "results.json").read_text())
        assert rec["experiment"] == name
        for field, value in TINY_SETTINGS.get(name, {}).items():
            assert rec["config"][field] == value, (name, field)
        assert rec["mode"] == "tiny" and rec["key"] == f"jax.random.key({rec['config']['seed']})"
        assert rec["metadata"]["versions"]["jax"]
        assert rec["timings"]["total_s"] > 0
        assert rec["claims"], name
        for c in rec["claims"]:
            assert c["held"] in (True, False, None) and c["claim"] and c["detail"], (name, c)
        assert not [n for n in rec["notes"] if n.startswith("non-finite")], rec["notes"]
        assert rec["figures"], name
        for stem in rec["figures"]:
            for ext in ("png", "pdf"):
                f = d / f"{stem}.{ext}"
                assert f.stat().st_size > 1000, f
        with np.load(d / "results.npz") as z:
            assert z.files
            for k in z.files:
                a = z[k]
                assert a.size > 0, (name, k)
                if a.dtype.kind == "f":
                    assert np.all(np.isfinite(a)), (name, k)
        assert not list(d.glob("**/*.tmp")), "temporary files left behind"


def test_report_states_what_the_records_say(tiny_run):
    _, out = tiny_run
    page = (out / "report.html").read_text()
    records = {n: json.loads((out / n / "results.json").read_text()) for n in EXPERIMENTS}
    for name in EXPERIMENTS:
        assert f"id='{name}'" in page
    assert page.count("data:image/png;base64,") >= len(EXPERIMENTS)
    verdict = {True: '<span class="held">HELD</span>', False: '<span class="not">NOT HELD</span>', None: '<span class="na">not checkable</span>'}
    for name, rec in records.items():
        for c in rec["claims"]:  # each claim appears in the summary table with the record's verdict
            row = f"<td>{html.escape(c['claim'])}</td><td>{verdict[c['held']]}</td>"
            assert row in page, (name, c["claim"])
    held = sum(c["held"] is True for r in records.values() for c in r["claims"])
    assert page.count('<span class="held">HELD</span>') >= 2 * held  # summary table and experiment section


def test_records_agree_with_their_arrays(tiny_run):
    _, out = tiny_run
    rec = json.loads((out / "hessian_delta" / "results.json").read_text())
    with np.load(out / "hessian_delta" / "results.npz") as z:
        k, delta = z["k"], z["delta"]
    s = rec["summary"]
    assert k.tolist() == list(range(1, 512 // 64)) and np.all(delta > 0)
    np.testing.assert_allclose(s["delta_first"], delta[0], rtol=1e-6)
    np.testing.assert_allclose(s["delta_k2_last"], delta[-1] * k[-1] ** 2, rtol=1e-6)
    np.testing.assert_allclose(s["mean_delta_hessian"], delta.mean(), rtol=1e-6)
    spec = json.loads((out / "spectrum" / "results.json").read_text())
    with np.load(out / "spectrum" / "results.npz") as z:
        ev = z["eigenvalues"]
    assert ev.shape == (2, 4) and np.all(np.diff(ev, axis=1) <= 0)  # two models, top-4, descending
    np.testing.assert_allclose(spec["summary"]["mean_eigenvalues"], ev.mean(0), rtol=1e-6)


def test_rerun_resumes(tiny_run, tmp_path):
    _, out = tiny_run
    spec = get_spec("random_surface")
    cfg = resolve_config(spec, {}, tiny=True)
    rec = run_experiment(spec, cfg, out / "random_surface", progress=False)
    assert rec.get("skipped") is True
    # a finished part is reused when only the final outputs are missing
    (out / "random_surface" / "results.json").unlink()
    rec = run_experiment(spec, cfg, out / "random_surface", progress=False)
    assert "surface" in rec["resumed_parts"]


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_experiment_cli_quick_path(tmp_path):
    out = tmp_path / "o"
    r = _cli("experiments.hessian_delta", "--tiny", "--out", str(out), "--num_draws", "3", "--no-progress")
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "results.json").read_text())
    assert rec["config"]["num_draws"] == 3 and rec["mode"] == "tiny"
    assert "Delta_k * k^2" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("experiments", "--only", "nonsense"), "unknown experiment"),
        (("experiments.spectrum", "--dataset", "imagenet"), "unknown dataset"),
        (("experiments.random_delta", "--sigmas", "1,-1"), "sigma must be > 0"),
        (("experiments.hessian_delta", "--num_draws", "1"), "num_draws must be an integer >= 2"),
        (("experiments.loss_difference", "--datasets", "cifar10", "--tiny"), "no requested dataset is available"),
        (("experiments.theory_vs_empirical", "--window", "4"), "odd"),
    ],
)
def test_bad_arguments_fail_cleanly(tmp_path, args, message):
    out = tmp_path / "never"
    r = _cli(*args, "--out", str(out))
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists(), "nothing may be left in --out after a bad argument"


def test_bad_type_is_an_argparse_error(tmp_path):
    r = _cli("experiments.spectrum", "--num_models", "many", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "invalid" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("given, stored", [("batch", "batches"), ("batches", "batches"), ("sample", "samples"), ("samples", "samples")])
def test_k_unit_singular_spelling_is_stored_as_the_plural(given, stored):
    from experiments._config import BaseConfig

    cfg = BaseConfig(k_unit=given)
    assert cfg.k_unit == stored
    assert cfg.samples_per_k == (cfg.batch_size if stored == "batches" else None)
