"""No silently wrong number: bad inputs across the public API and the CLI, the self-healing weight cache,
concurrent cache fills, and a kill -9 in the middle of an experiment followed by a resuming rerun.

Each row of the table is one bad input: the call must raise the named jaxland error, and the message
must name the offending argument (or, for a finite-result guard, the estimate that came out non-finite).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland.errors import ConfigError, DataError, DataNotFoundError, NumericalError, TrainingError

REPO = Path(__file__).resolve().parents[1]

# a tiny float32 problem: 5 inputs, 3 classes, 24 samples, a 2-D random subspace
MODEL = jl.MLPConfig((5, 6, 3))
D = MODEL.num_params
W = MODEL.init(jax.random.key(0))
X = jax.random.normal(jax.random.key(1), (24, 5))
Y = jnp.arange(24) % 3
SUB = jl.Subspace(W, jax.random.normal(jax.random.key(2), (2, D)) * 0.3)
KEY = jax.random.key(3)
NAN_W = W.at[0].set(jnp.nan)


def _mc(sub=SUB, x=X, y=Y, **kw):
    kw = {"sigma": 1.0, "num_draws": 8, "key": KEY, **kw}
    return jl.delta_monte_carlo(MODEL, sub, x, y, **kw)


def _curv():
    return jl.subspace_curvature(MODEL, SUB, X, Y)


def _garbage(tmp, name="bad.npz"):
    p = tmp / name
    p.write_bytes(b"not a zip file")
    return p


def _train(**kw):
    kw = {"key": KEY, "epochs": 1, "batch_size": 8, "progress": False, **kw}
    return jl.train(MODEL, X, Y, **kw)


def _cached(tmp, **kw):
    kw = {"key": KEY, "data_tag": "t", "epochs": 1, "batch_size": 8, "progress": False, "cache_dir": tmp, **kw}
    return jl.cached_train(MODEL, X, Y, **kw)


# (id, call(tmp_path), error type, text the message must contain)
CASES = [
    # the table
    ("mc labels >= classes", lambda t: _mc(y=Y.at[3].set(5)), ConfigError, "labels y"),
    ("mc one NaN pixel", lambda t: _mc(x=X.at[0, 0].set(jnp.nan)), ConfigError, "x contains 1 non-finite"),
    ("hvp k=0", lambda t: jl.hvp(MODEL, W, X, Y, W, k=0), ConfigError, "k=0"),
    ("hvp k>N", lambda t: jl.hvp(MODEL, W, X, Y, W, k=25), ConfigError, "k=25"),
    ("sufficient_k NaN curve", lambda t: jl.sufficient_k([1.0, np.nan, 0.0], 0.5), ConfigError, "delta has 1 non-finite"),
    ("x with too few features", lambda t: _mc(x=X[:, :4]), ConfigError, "x (4 features) does not fit"),
    ("train lr=1e4 diverges", lambda t: _train(lr=1e4, epochs=3), TrainingError, "lr"),
    # curvature and eigenpairs
    ("hvp v NaN", lambda t: jl.hvp(MODEL, W, X, Y, W.at[1].set(jnp.nan)), ConfigError, "v contains"),
    ("hvp v int", lambda t: jl.hvp(MODEL, W, X, Y, jnp.ones(D, jnp.int32)), ConfigError, "v must be floating"),
    ("hvp w int", lambda t: jl.hvp(MODEL, jnp.ones(D, jnp.int32), X, Y, W), ConfigError, "w must be floating"),
    ("hvp w NaN", lambda t: jl.hvp(MODEL, NAN_W, X, Y, W), ConfigError, "w contains"),
    ("hvp y float labels", lambda t: jl.hvp(MODEL, W, X, Y.astype(jnp.float32), W), ConfigError, "labels"),
    ("hvp y too short", lambda t: jl.hvp(MODEL, W, X, Y[:-1], W), ConfigError, "y has shape"),
    ("hvp model None", lambda t: jl.hvp(None, W, X, Y, W), ConfigError, "model must be"),
    ("hvp_batch 1-D vs", lambda t: jl.hvp_batch(MODEL, W, X, Y, W), ConfigError, "vs must have shape"),
    ("dense_hessian k=2.5", lambda t: jl.dense_hessian(MODEL, W, X, Y, k=2.5), ConfigError, "k must be an integer"),
    ("eigenpairs key int", lambda t: jl.hessian_eigenpairs(MODEL, W, X, Y, 2, key=3), ConfigError, "key must be"),
    ("eigenpairs d=0", lambda t: jl.hessian_eigenpairs(MODEL, W, X, Y, 0, key=KEY), ConfigError, "d (number of eigenpairs)"),
    ("top_eigenpairs dim str", lambda t: jl.top_eigenpairs(lambda v: v, "a", 2, key=KEY), ConfigError, "dim"),
    # subspaces and Monte Carlo
    ("random_directions d>D", lambda t: jl.random_directions(MODEL, W, D + 1, key=KEY), ConfigError, "subspace dimension d"),
    ("random_directions key None", lambda t: jl.random_directions(MODEL, W, 2, key=None), ConfigError, "key must be"),
    ("normalize_filters short rows", lambda t: jl.normalize_filters(MODEL, W, SUB.directions[:, :-1]), ConfigError, "directions must have shape"),
    ("subspace directions NaN", lambda t: _mc(sub=SUB._replace(directions=SUB.directions.at[0, 0].set(jnp.nan))), ConfigError, "subspace.directions"),
    ("subspace centre of another model", lambda t: _mc(sub=jl.Subspace(W[:-1], SUB.directions)), ConfigError, "subspace has center"),
    ("mc sigma=0", lambda t: _mc(sigma=0.0), ConfigError, "sigma"),
    ("mc num_draws=1", lambda t: _mc(num_draws=1), ConfigError, "num_draws"),
    ("mc batch_size leaves 1 batch", lambda t: _mc(samples_per_k=13), ConfigError, "samples_per_k=13"),
    ("mc sigma=1e30 overflows", lambda t: _mc(sigma=1e30), NumericalError, "Delta_k"),
    # theory, surfaces, stopping, forecast
    ("curvature of long directions", lambda t: jl.subspace_curvature(MODEL, SUB._replace(directions=SUB.directions * 1e30), X, Y), NumericalError, "subspace_curvature"),
    ("theory_delta mismatched curv", lambda t: jl.theory_delta(_curv()._replace(g=_curv().g[:-1]), sigma=1.0), ConfigError, "curv shapes"),
    ("theory_delta NaN curv", lambda t: jl.theory_delta(_curv()._replace(c=_curv().c.at[0].set(jnp.nan)), sigma=1.0), ConfigError, "curv.c"),
    ("theory_delta sigma=1e30", lambda t: jl.theory_delta(_curv(), sigma=1e30), NumericalError, "theory_delta"),
    ("loss_surface extent str", lambda t: jl.loss_surface(MODEL, SUB, X, Y, k=[1], extent="a"), ConfigError, "extent"),
    ("loss_surface extent 1e30", lambda t: jl.loss_surface(MODEL, SUB, X, Y, k=[1], grid=3, extent=1e30), NumericalError, "loss_surface"),
    ("loss_surface k=0", lambda t: jl.loss_surface(MODEL, SUB, X, Y, k=[0]), ConfigError, "every k"),
    ("loss_differences w NaN", lambda t: jl.loss_differences(MODEL, NAN_W, X, Y), ConfigError, "w contains"),
    ("moving_mean even window", lambda t: jl.moving_mean([1.0, 2.0, 3.0], 2), ConfigError, "window"),
    ("sufficient_k text", lambda t: jl.sufficient_k("abc", 0.5), ConfigError, "delta must be"),
    ("power_law_k tol<0", lambda t: jl.power_law_k(0.0, 1.0, -1.0), ConfigError, "tol"),
    ("forecast NaN curve", lambda t: jl.forecast_sufficient_k(np.array([1.0, np.nan, 0.3, 0.2, 0.1, 0.05]), 0.01), ConfigError, "non-finite"),
    # spectrum
    ("hessian_trace label range", lambda t: jl.hessian_trace(MODEL, W, X, Y.at[0].set(5), num_probes=9, key=KEY), ConfigError, "labels y"),
    ("hessian_trace k=0", lambda t: jl.hessian_trace(MODEL, W, X, Y, num_probes=9, key=KEY, k=0), ConfigError, "k=0"),
    ("spectral_density sigma<0", lambda t: jl.spectral_density(MODEL, W, X, Y, num_probes=2, lanczos_steps=5, key=KEY, sigma=-1.0), ConfigError, "sigma (broadening width)"),
    ("smooth_density NaN nodes", lambda t: jl.smooth_density(jnp.array([[jnp.nan, 1.0]]), jnp.array([[0.5, 0.5]])), ConfigError, "nodes"),
    # training, the cache, files, data
    ("train epochs=2.5", lambda t: _train(epochs=2.5), ConfigError, "epochs"),
    ("train lr text", lambda t: _train(lr="fast"), ConfigError, "lr"),
    ("train key int", lambda t: _train(key=0), ConfigError, "key must be"),
    ("cached_train seed 1.5", lambda t: _cached(t, seed=1.5), ConfigError, "seed"),
    ("cached_train cache_dir is a file", lambda t: _cached(_garbage(t)), ConfigError, "cache_dir"),
    ("load_params corrupt file", lambda t: jl.load_params(_garbage(t), MODEL), DataError, "weight file"),
    ("load_params missing file", lambda t: jl.load_params(t / "none.npz", MODEL), DataNotFoundError, "none.npz"),
    ("save_params into a folder", lambda t: jl.save_params(t, MODEL, W), ConfigError, "is a folder"),
    ("load_dataset unknown name", lambda t: jl.load_dataset("imagenet"), DataError, "unknown dataset"),
    ("load_dataset data_dir is a file", lambda t: jl.load_dataset("mnist", limit=8, data_dir=_garbage(t)), DataError, "data_dir"),
    ("load_dataset key int", lambda t: jl.load_dataset("mnist_10k", limit=8, key=0), ConfigError, "key must be"),
]


@pytest.mark.parametrize("call, error, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_a_named_error(tmp_path, call, error, text):
    with pytest.raises(error) as info:
        call(tmp_path)
    assert text in str(info.value), str(info.value)


def test_finite_guards_can_be_opted_out_of():
    th = jl.theory_delta(_curv(), sigma=1e30, allow_nonfinite=True)
    assert not np.all(np.isfinite(np.asarray(th.second_order)))
    surf = jl.loss_surface(MODEL, SUB, X, Y, k=[1], grid=3, extent=1e30, allow_nonfinite=True)
    assert not np.all(np.isfinite(np.asarray(surf.loss)))
    mc = _mc(sigma=1e30, allow_nonfinite=True)
    assert not np.all(np.isfinite(np.asarray(mc.delta)))


def test_value_checks_are_skipped_under_jit_and_agree():
    # inside a caller's jit the arrays are tracers: only shape checks run, and the numbers are the same
    v = jax.random.normal(jax.random.key(4), (D,))
    eager = jl.hvp(MODEL, W, X, Y, v, k=5)
    jitted = jax.jit(lambda w, v, k: jl.hvp(MODEL, w, X, Y, v, k=k))(W, v, 5)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="vs must have shape"):
        jax.jit(lambda w: jl.hvp_batch(MODEL, w, X, Y, w))(W)


# ------------------------------------------------------------------------------------------------ CLI


def _cli_spec():
    from experiments import get_spec

    return get_spec("random_surface")


def _run_cli(argv):
    from experiments._cli import cli

    return cli(_cli_spec(), [*argv, "--no-progress"])


def _run_main(argv):
    from experiments.__main__ import main

    return main([*argv, "--no-progress"])


def _corrupt_mnist(tmp):
    d = tmp / "corrupt"
    d.mkdir()
    for f in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (d / f).write_bytes(b"garbage")
    return d


def _a_file(tmp):
    p = tmp / "a_file"
    p.write_text("x")
    return p


CLI_CASES = [
    ("--out is a file", lambda t: _run_cli(["--tiny", "--out", str(_a_file(t))]), "--out"),
    ("--out below a file", lambda t: _run_cli(["--tiny", "--out", str(_a_file(t) / "sub")]), "--out"),
    ("--out not writable", lambda t: _run_cli(["--tiny", "--out", "/proc/jaxland-out"]), "--out"),
    ("unknown dataset", lambda t: _run_cli(["--dataset", "imagenet", "--out", str(t / "o")]), "unknown dataset"),
    ("unknown architecture", lambda t: _run_cli(["--arch", "transformer9", "--out", str(t / "o")]), "arch"),
    ("unreadable data files", lambda t: _run_cli(["--tiny", "--dataset", "mnist", "--data_dir", str(_corrupt_mnist(t)), "--out", str(t / "o")]), "train-images-idx3-ubyte.gz"),
    ("negative lr", lambda t: _run_cli(["--lr", "-1", "--out", str(t / "o")]), "lr"),
    ("seed out of range", lambda t: _run_cli(["--tiny", "--seed", str(2**70), "--out", str(t / "o")]), "seed"),
    ("main: --out is a file", lambda t: _run_main(["--tiny", "--out", str(_a_file(t))]), "--out"),
    ("main: unknown experiment", lambda t: _run_main(["--only", "nonsense", "--out", str(t / "o")]), "unknown experiment"),
    ("main: missing --data_dir", lambda t: _run_main(["--data_dir", str(t / "nowhere"), "--out", str(t / "o")]), "--data_dir"),
    ("main: unreadable data files", lambda t: _run_main(["--tiny", "--only", "random_surface", "--data_dir", str(_corrupt_mnist(t)), "--out", str(t / "o")]), "train-images-idx3-ubyte.gz"),
]


@pytest.mark.parametrize("name, call, text", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_user_error_is_one_line_and_exit_2(tmp_path, capsys, name, call, text):
    rc = call(tmp_path)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err and lines and lines[-1].startswith("error: ") and text in lines[-1], err
    errors = [ln for ln in lines if not ln.startswith("=== [")]  # the main job announces each experiment
    assert len(errors) == 1, err
    assert not (tmp_path / "o").exists(), "nothing may be written after a user error"


def test_cli_internal_error_keeps_its_traceback(tmp_path):
    from experiments._cli import cli

    def boom(cfg, ctx):
        raise RuntimeError("an internal bug")

    with pytest.raises(RuntimeError, match="an internal bug"):
        cli(_cli_spec()._replace(run=boom), ["--tiny", "--out", str(tmp_path / "o"), "--no-progress"])


def test_cli_wrong_flag_type_is_argparse_exit_2(tmp_path):
    with pytest.raises(SystemExit) as info:
        _run_cli(["--lr", "fast", "--out", str(tmp_path / "o")])
    assert info.value.code == 2


def test_cli_subprocess_out_is_a_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.random_surface", "--tiny", "--out", str(_a_file(tmp_path))],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().startswith("error: --out") and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ------------------------------------------------------------------------------------------ the cache


def test_corrupt_cache_entry_is_removed_and_retrained(tmp_path):
    first = _cached(tmp_path)
    (path,) = tmp_path.glob("w_*.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a partial file
    with pytest.raises(DataError):
        jl.load_params(path, MODEL)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = _cached(tmp_path)
    np.testing.assert_array_equal(np.asarray(again.params), np.asarray(first.params))  # same key: same w*
    _, w, _ = jl.load_params(path, MODEL)  # valid again
    np.testing.assert_array_equal(np.asarray(w), np.asarray(first.params))


_FILL = """
import sys, time, pathlib, hashlib
import jax, jax.numpy as jnp, numpy as np, jaxland as jl
cache, me = pathlib.Path(sys.argv[1]), sys.argv[2]
model = jl.MLPConfig((5, 6, 3))
x = jax.random.normal(jax.random.key(1), (24, 5)); y = jnp.arange(24) % 3
jl.train(model, x, y, key=jax.random.key(9), epochs=1, batch_size=8, progress=False)  # compile before the barrier
(cache / f"ready-{me}").touch()
while not (cache / "go").exists():
    time.sleep(0.005)
res = jl.cached_train(model, x, y, key=jax.random.key(0), data_tag="t", epochs=2, batch_size=8, progress=False, cache_dir=cache)
print(hashlib.sha256(np.asarray(res.params).tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_two_processes_fill_one_cache_entry(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _FILL, str(cache), str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for i in range(2)]
    deadline = time.time() + 240
    while not all((cache / f"ready-{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.02)
    (cache / "go").touch()  # both start training and writing the same entry now
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]
    entries = list(cache.glob("w_*.npz"))
    assert len(entries) == 1 and not list(cache.glob(".*.tmp"))
    _, w, _ = jl.load_params(entries[0], MODEL)
    assert w.shape == (D,) and np.all(np.isfinite(np.asarray(w)))


# ------------------------------------------------------------------------------------ kill -9 and resume


@pytest.mark.slow
def test_kill_9_mid_experiment_then_rerun_equals_uninterrupted(tmp_path):
    from experiments._cli import resolve_config
    from experiments._runner import run_experiment

    out = tmp_path / "killed"  # tiny preset: one part per (d, sigma) setting
    cmd = [sys.executable, "-m", "experiments.random_delta", "--tiny", "--out", str(out), "--no-progress"]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not list((out / "parts").glob("*.npz")):  # parts are renamed into place: existing means complete
        assert p.poll() is None and time.time() < deadline, p.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p.stderr.close()
    done = {f.name for f in (out / "parts").glob("*.npz")}
    assert not (out / "results.json").exists(), "the kill must land mid-run"

    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((out / "results.json").read_text())
    assert len(rec["resumed_parts"]) == len(done) >= 1  # what finished before the kill is reused, not recomputed
    assert len(done) < len(list((out / "parts").glob("*.npz"))), "some parts must be left for the rerun"

    spec = _spec("random_delta")
    cfg = resolve_config(spec, {}, tiny=True)
    ref = run_experiment(spec, cfg, tmp_path / "straight", progress=False)
    assert ref["config_hash"] == rec["config_hash"]
    with np.load(out / "results.npz") as a, np.load(tmp_path / "straight" / "results.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _spec(name):
    from experiments import get_spec

    return get_spec(name)
