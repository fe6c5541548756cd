"""The ``architectures`` experiment: its TINY preset end to end, and the measures behind its d = 10 verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments import architectures as arch
from experiments._cli import resolve_config
from experiments._runner import run_experiment
from jaxland.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_record(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # module scope: the function-scoped cache isolation does not reach here
        mp.setenv("JAXLAND_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        cfg = resolve_config(arch.SPEC, {}, tiny=True)
        out = tmp_path_factory.mktemp("arch")
        rec = run_experiment(arch.SPEC, cfg, out, progress=False, mode="tiny")
        yield cfg, rec, out


@pytest.mark.slow
def test_tiny_record_has_verdict_and_k_table(tiny_record):
    cfg, rec, out = tiny_record
    d0, dmax = cfg.ds[0], cfg.ds[-1]
    s = rec["summary"]
    assert s["verdict"].startswith(f"d = {d0} ")
    rows = s["rows"]
    assert [(r["dataset"], r["arch"]) for r in rows] == [("mnist", a) for a in cfg.architectures]
    expected = {"dataset", "arch", "params", "train_accuracy", f"K_theory_exact_d{d0}", f"K_theory_paper_d{d0}", f"S_ratio_d{dmax}_d{d0}",
                "S_ratio_se", f"curvature_share_top{d0}_of_{dmax}", f"d{d0}_suffices"}
    expected |= {f"{m}_d{d}" for m in ("K", "S") for d in cfg.ds} | {f"S_d{d}_se" for d in cfg.ds}
    for r in rows:
        assert set(r) == expected, set(r) ^ expected
        for key, v in r.items():
            if isinstance(v, float):
                assert math.isfinite(v), (r["arch"], key, v)
        assert all(isinstance(r[f"K_d{d}"], int) and (r[f"K_d{d}"] == -1 or r[f"K_d{d}"] >= 1) for d in cfg.ds)
        assert 0 < r[f"curvature_share_top{d0}_of_{dmax}"] <= 1
        # the verdict of each row follows the stated criterion from the row's own numbers
        assert r[f"d{d0}_suffices"] == arch.d_suffices(r[f"K_d{d0}"], r[f"K_d{dmax}"], r[f"S_ratio_d{dmax}_d{d0}"])
    held = [c for c in rec["claims"] if c["claim"].startswith(f"d = {d0} Hessian directions suffice")]
    assert len(held) == 1 and held[0]["held"] == all(r[f"d{d0}_suffices"] for r in rows)
    assert not [n for n in rec["notes"] if n.startswith("non-finite")]
    assert set(rec["figures"]) == {"architectures_delta", "d_comparison"}
    assert all((out / f"{f}.png").stat().st_size > 0 for f in rec["figures"])
    with np.load(out / "results.npz") as f:
        for a in cfg.architectures:
            for d in cfg.ds:
                delta = f[f"mnist/{a}/d{d}/delta"]
                assert delta.shape == f["k"].shape and np.all(np.isfinite(delta)) and np.all(delta >= 0)


def test_tail_level_and_ratio_against_hand_values():
    k = np.arange(1, 7)
    s, se = arch.tail_level(k, [9.0, 9.0, 9.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.1, 0.2, 0.3])
    assert s == pytest.approx(2.0) and se == pytest.approx(0.2)
    r, rse = arch.ratio_se(2.0, 0.2, 3.0, 0.3)
    assert r == pytest.approx(1.5) and rse == pytest.approx(math.sqrt(0.3**2 + 1.5**2 * 0.2**2) / 2.0)
    assert arch.ratio_se(0.0, 0.1, 1.0, 0.1) == (math.inf, math.inf)
    assert arch.top_share([4.0, 3.0, 2.0, 1.0, -5.0], 2) == pytest.approx(0.7)  # negative curvature does not count


def test_d_suffices_criterion():
    assert arch.d_suffices(20, 25, 10.0)  # K moves by 25%: sufficient whatever the tail ratio
    assert not arch.d_suffices(20, 26, 1.0)
    assert arch.d_suffices(2, 3, 10.0)  # one batch is the resolution of k
    assert arch.d_suffices(-1, -1, 1.5) and not arch.d_suffices(-1, -1, 1.6)  # no K: the tail level decides
    assert arch.sufficient([0.5, 0.2, 0.01, 0.02, 0.001], np.arange(1, 6), 0.025) == 3
    assert arch.sufficient([0.5, 0.2, 0.1], np.arange(1, 4), 0.025) == -1


@pytest.mark.parametrize("bad", [dict(ds=(20, 10)), dict(architectures=("alexnet",)), dict(eig_samples=10**6), dict(datasets=("svhn",))])
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        resolve_config(arch.SPEC, bad, quick=True).validate()
