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

REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_language_model_record_counts_sequences_and_has_table_2(tiny_run):
    _, out = tiny_run
    d = out / "language_model"
    rec = json.loads((d / "results.json").read_text())
    assert rec["summary"]["unit"] == "sequences"
    assert [r["phase"] for r in rec["summary"]["rows"]][:5] == ["eigenvectors", "direct_mc", "coefficients", "quadratic_mc", "gaussian_moment"]
    assert len(rec["claims"]) == 4 and set(rec["figures"]) == {"delta_vs_k", "delta_excess"}
    assert "K" in rec["summary"]["K_forecast"] or rec["summary"]["K_forecast"]["refused"]
    with np.load(d / "results.npz") as z:
        n = rec["config"]["n_sequences"]
        assert z["direct"].shape == z["moment"].shape == z["full"].shape == z["random"].shape == (n - 1,)


@pytest.mark.slow
def test_forecast_record_scores_every_method_on_the_measured_k(tiny_run):
    _, out = tiny_run
    rec = json.loads((out / "forecast" / "results.json").read_text())
    s = rec["summary"]
    assert set(s["stats"]) == {"dataset_size", "single", "learning_curve", "control"}
    for method, st in s["stats"].items():
        rows = [r for r in s["rows"] if r["method"] == method and r["measured"] is not None and r["covered"] is not None]
        # coverage recomputed from the rows' own numbers, not from the flag the experiment wrote
        hit = sum(r["lower"] <= r["measured"] <= (r["upper"] if r["upper"] is not None else float("inf")) for r in rows)
        assert (st["covered"], st["cases"]) == (hit, len(rows)), method
        assert all(r["ratio"] == round(r["k"] / r["measured"], 3) for r in rows if r["k"] is not None)
    assert len(rec["claims"]) == 6 and "dataset_size_mnist" in rec["figures"]
    assert s["n_star"] and all(r["lower"] is None or r["lower"] <= r["n_star"] for r in s["n_star"] if r["n_star"] is not None)
    assert s["cost"][0]["sample_gradients"]["pilots"] > 0


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def _in_process(args, capsys):
    """``python -m <module> <args>`` run in this process: (exit code, stderr)."""
    from experiments import get_spec
    from experiments.__main__ import main
    from experiments._cli import cli

    module, *argv = args
    try:
        code = main(argv) if module == "experiments" else cli(get_spec(module.split(".", 1)[1]), argv)
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (("experiments", "--only", "nonsense"), "unknown experiment"),
        (("experiments.spectrum", "--dataset", "imagenet"), "unknown dataset"),
        (("experiments.random_delta", "--sigmas", "1,-1"), "sigma must be > 0"),
        (("experiments.hessian_delta", "--num_draws", "1"), "num_draws must be an integer >= 2"),
        (("experiments.loss_difference", "--datasets", "cifar10", "--tiny"), "no requested dataset is available"),
        (("experiments.theory_vs_empirical", "--window", "4"), "odd"),
        (("experiments.spectrum", "--num_models", "many"), "invalid"),
    ],
)
def test_bad_arguments_fail_cleanly(tmp_path, capsys, args, message):
    """A user error: exit code 2, one line naming the problem, nothing left in --out (in process; the
    subprocess path is covered by tests/test_validation.py::test_cli_subprocess_out_is_a_file)."""
    out = tmp_path / "never"
    code, err = _in_process((*args, "--out", str(out), "--no-progress"), capsys)
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists(), "nothing may be left in --out after a bad argument"


@pytest.mark.parametrize("given, stored", [("batch", "batches"), ("batches", "batches"), ("sample", "samples"), ("samples", "samples")])
def test_k_unit_singular_spelling_is_stored_as_the_plural(given, stored):
    from experiments._config import BaseConfig

    cfg = BaseConfig(k_unit=given)
    assert cfg.k_unit == stored
    assert cfg.samples_per_k == (cfg.batch_size if stored == "batches" else None)


# ------------------------------------------------------------------ what a rerun trusts, and where it writes


def _arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_a_rerun_verifies_the_arrays_before_calling_a_run_up_to_date(tmp_path, capsys):
    from experiments._report import load_results

    spec = get_spec("random_surface")
    cfg = resolve_config(spec, {}, tiny=True)
    top = tmp_path / "main"
    assert main_job.main(["--tiny", "--only", "random_surface", "--out", str(top), "--no-progress"]) == 0
    out = top / "random_surface"
    assert (top / ".jaxland").is_file() and (out / ".jaxland").is_file()
    first = json.loads((out / "results.json").read_text())
    ref = _arrays(out / "results.npz")  # the uninterrupted run's numbers
    assert first["array_shapes"] == {k: list(v.shape) for k, v in ref.items()}
    meta = first["metadata"]
    assert first["config"]["n_samples"] == 512 and first["key"] == f"jax.random.key({cfg.seed})"
    assert {"backend", "device_kind", "cpu", "cpu_features", "x64"} <= set(meta) and meta["versions"]["jaxlib"]

    def damage_npz():
        (out / "results.npz").write_bytes((out / "results.npz").read_bytes()[:300])

    def damage_part():
        damage_npz()
        for p in (out / "parts").glob("*.npz"):
            p.write_bytes(p.read_bytes()[:200])

    cases = {
        "results.npz is missing": lambda: (out / "results.npz").unlink(),
        "results.npz is unreadable": damage_npz,
        "parts/surface.npz is unreadable": damage_part,
        "results.npz does not hold the arrays": lambda: np.savez(out / "results.npz", other=np.zeros(3)),
        "results.json is not a jaxland record": lambda: (out / "results.json").write_text("[1, 2]"),
    }
    for why, damage in cases.items():
        damage()
        capsys.readouterr()
        rec = run_experiment(spec, cfg, out, progress=True)
        assert why in capsys.readouterr().err, why
        assert "skipped" not in rec, why
        got = _arrays(out / "results.npz")
        assert got.keys() == ref.keys(), why
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{why}: {k}")
    assert "surface" not in run_experiment(spec, cfg, out, progress=False, force=True)["resumed_parts"]
    assert run_experiment(spec, cfg, out, progress=False).get("skipped") is True
    # a record that is a JSON string: the report skips it and the main job recomputes it
    (out / "results.json").write_text('"done"')
    assert load_results(top) == {"random_surface": None}
    assert main_job.main(["--tiny", "--only", "random_surface", "--out", str(top), "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["experiment"] == "random_surface"


def test_out_must_be_named_and_be_a_folder_jaxland_wrote(tmp_path, capsys):
    from experiments._cli import cli
    from experiments._runner import check_out

    spec = get_spec("random_surface")
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("text")
    link = tmp_path / "link"
    link.symlink_to(mine)
    for out, message in (("", "--out is empty"), (str(mine), "not written by jaxland"), (str(link), "not written by jaxland")):
        assert cli(spec, ["--tiny", "--out", out, "--no-progress"]) == 2, out
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
        assert main_job.main(["--tiny", "--out", out, "--no-progress"]) == 2, out
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["chapter1.tex"]  # nothing written into the user's folder
    assert check_out(mine, force=True) == mine  # --force writes into it
    legacy = tmp_path / "legacy"  # written by a jaxland that had no marker: still resumable
    legacy.mkdir()
    (legacy / "results.json").write_text(json.dumps({"experiment": "random_surface", "config_hash": "0"}))
    assert check_out(legacy) == legacy


def test_a_usage_error_is_one_line(capsys):
    from experiments._cli import cli

    for run in (lambda: cli(get_spec("spectrum"), ["--num_models", "many"]), lambda: main_job.main(["--bogus"]),
                lambda: cli(get_spec("spectrum"), ["--num_models", "\x1b]0;title\x07\n2"])):
        with pytest.raises(SystemExit) as e:
            run()
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and err.endswith("; see --help\n"), err
        assert err[:-1].isprintable(), err  # the user's argument is quoted with its control characters escaped


def _python(code: str):
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_ctrl_c_inside_a_callback_or_at_shutdown_exits_quietly_with_130():
    from experiments._signals import INTERRUPTED

    swallowed = (  # Python prints a KeyboardInterrupt met in a gc callback ("Exception ignored") and carries on
        "import gc\nfrom experiments import _signals\n_signals.running()\n"
        "gc.callbacks.append(lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))\ngc.collect()\nprint('carried on')\n"
    )
    at_exit = (  # SIGINT while the interpreter shuts down, after the run
        "import atexit, os, signal\nfrom experiments import _signals\n_signals.running()\nprint('ran', flush=True)\n"
        "_signals.quiet()\natexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))\n"
    )
    for code, stdout in ((swallowed, ""), (at_exit, "ran\n")):
        r = _python(code)
        assert r.returncode == 130 and r.stderr == INTERRUPTED + "\n" and r.stdout == stdout, (r.returncode, r.stderr, r.stdout)


def test_ctrl_c_during_the_imports_or_the_run_exits_quietly_with_130(tmp_path):
    import os
    import signal
    import time

    from experiments._signals import INTERRUPTED

    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc to see when the program has reached its imports")
    env = {**os.environ, "JAXLAND_CACHE_DIR": str(tmp_path / "cache")}
    for when in ("imports", "run"):
        out = tmp_path / when
        p = subprocess.Popen([sys.executable, "-m", "experiments.random_surface", "--tiny", "--out", str(out)], cwd=REPO,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        if when == "imports":  # jaxlib's library is mapped: the package is imported and jax is being imported
            while "jaxlib" not in Path(f"/proc/{p.pid}/maps").read_text():
                assert p.poll() is None and time.time() < deadline
                time.sleep(0.01)
            err = ""
        else:  # the experiment's first part has started
            err = ""
            while "surface ..." not in err:
                line = p.stderr.readline()
                assert line and time.time() < deadline, err
                err += line
        p.send_signal(signal.SIGINT)
        rest_out, rest_err = p.communicate(timeout=120)
        err += rest_err
        assert p.returncode == 130, (when, p.returncode, err[-2000:])
        assert err.endswith(INTERRUPTED + "\n") and err.count(INTERRUPTED) == 1, (when, err[-2000:])
        assert "Traceback" not in err and "Exception ignored" not in err, (when, err[-2000:])
        assert not out.exists(), "a folder the run created and wrote nothing into is removed"
