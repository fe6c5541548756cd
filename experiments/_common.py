"""Shared framework of the experiments: configs, command line, resumable parts, results.

An experiment module defines

* ``Config``: a frozen dataclass whose defaults are the paper's reference
  configuration (REFERENCE.md), with a ``validate()`` that raises
  :class:`jaxland.ConfigError` on impossible values;
* ``QUICK``: overrides for ``--quick`` (about a minute on a 2-core CPU; the
  main job uses them too); ``TINY``: overrides for CI smoke tests;
* ``run(cfg, ctx) -> Outcome``: the computation. Expensive pieces go through
  ``ctx.part(name, fn)``, which stores their arrays under ``OUT/parts/`` so that
  a rerun resumes instead of recomputing; figures go through ``ctx.figure``.

:func:`run_experiment` validates, runs, and writes ``results.npz`` and
``results.json`` (resolved config, versions/device, key, timings, summary,
claims) atomically. :func:`cli` turns the dataclass into ``--field value``
options plus ``--out``, ``--quick``, ``--seed``, ``--force``, ``--no-progress``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

import jaxland as jl
from jaxland.errors import ConfigError, DataError, JaxlandError

RESULTS_VERSION = 1


# --------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Settings every experiment shares: data, network, training, seed.

    Defaults are the paper's reference: MNIST train, first 9,984 images
    (156 batches of 64), standard normalisation; MLP 784-256-256-10, ReLU,
    with biases; Adam 1e-3, batch 64, 10 epochs; k counted in batches of 64.
    """

    seed: int = 0
    arch: str = "mlp"  # jaxland.MODEL_NAMES: mlp, lenet5, resnet, vit
    dataset: str = "mnist"
    data_dir: str | None = None
    n_samples: int = 9984
    normalize: str = "standard"
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    use_bias: bool = True
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    k_unit: str = "batch"  # "batch": L_k = mean of the first k batches of 64; "sample": of the first k samples

    def validate(self) -> None:
        _positive(self, "n_samples", "epochs", "batch_size")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        canon = str(self.dataset).lower().replace("-", "_")
        if canon not in jl.DATASETS:
            raise DataError(f"unknown dataset {self.dataset!r}; valid names are: {', '.join(jl.DATASETS)}")
        if self.normalize not in jl.NORMALIZATIONS:
            raise ConfigError(f"unknown normalize={self.normalize!r}; choose one of {jl.NORMALIZATIONS}")
        if self.activation not in jl.ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {sorted(jl.ACTIVATIONS)}")
        if self.arch not in jl.MODEL_NAMES:
            raise ConfigError(f"unknown arch {self.arch!r}; choose one of {', '.join(jl.MODEL_NAMES)}")
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden widths must be positive, got {self.hidden}")
        if self.batch_size > self.n_samples:
            raise ConfigError(f"batch_size={self.batch_size} exceeds n_samples={self.n_samples}")
        if self.k_unit not in ("batch", "sample"):
            raise ConfigError(f"k_unit must be 'batch' or 'sample', got {self.k_unit!r}")
        if self.k_unit == "batch" and self.n_samples // self.batch_size < 3:
            raise ConfigError(f"k_unit='batch' needs at least 3 batches; n_samples={self.n_samples} gives {self.n_samples // self.batch_size}")

    @property
    def kb(self) -> int | None:
        """Samples per unit of k: ``batch_size`` when k counts batches, else None (samples)."""
        return self.batch_size if self.k_unit == "batch" else None


def _positive(cfg, *names):
    for n in names:
        v = getattr(cfg, n)
        if int(v) != v or v < 1:
            raise ConfigError(f"{n} must be a positive integer, got {v!r}")


def config_dict(cfg) -> dict:
    return {f.name: (list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v) for f in dataclasses.fields(cfg)}


def config_hash(cfg, extra: Any = None) -> str:
    payload = json.dumps({"cfg": config_dict(cfg), "extra": extra, "v": RESULTS_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ------------------------------------------------------------------- outcomes


class Claim(NamedTuple):
    """One checkable statement of a paper and whether it held in this run (None: not checkable here)."""

    claim: str
    held: bool | None
    detail: str


class Outcome(NamedTuple):
    arrays: dict
    summary: dict
    claims: list
    notes: list = []


class Spec(NamedTuple):
    """What the framework needs to know about an experiment module."""

    name: str
    title: str
    paper_ref: str
    config: type
    run: Callable
    quick: dict
    tiny: dict


# --------------------------------------------------------------------- context


class Context:
    """Per-run services: output folder, resumable parts, figures, progress, timings."""

    def __init__(self, spec: Spec, cfg, out: Path, *, progress: bool = True, force: bool = False):
        self.spec, self.cfg, self.out = spec, cfg, Path(out)
        self.progress, self.force = progress, force
        self.hash = config_hash(cfg)
        self.timings: dict[str, float] = {}
        self.resumed: list[str] = []
        self.figures: list[str] = []
        self.data_sources: dict[str, str] = {}
        self.wrote = False

    # -- logging
    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[{self.spec.name}] {msg}", file=sys.stderr, flush=True)

    # -- resumable parts
    def part(self, name: str, fn: Callable[[], dict], *, key: Any = None) -> dict:
        """Arrays of a finished piece of work: loaded from ``parts/NAME.npz`` when it matches, else computed and stored.

        ``key`` adds anything beyond the config that determines the result.
        """
        h = config_hash(self.cfg, [name, key])
        path = self.out / "parts" / f"{_safe(name)}.npz"
        if path.exists() and not self.force:
            try:
                with np.load(path) as f:
                    if str(f["__hash__"]) == h:
                        arrays = {k: f[k] for k in f.files if not k.startswith("__")}
                        self.timings[name] = float(f["__seconds__"])
                        self.resumed.append(name)
                        self.log(f"{name}: resumed from {path.relative_to(self.out)}")
                        return {k: (v.item() if v.ndim == 0 else v) for k, v in arrays.items()}
            except Exception:  # noqa: BLE001  (a stale or foreign file: recompute)
                pass
        self.log(f"{name} ...")
        t = time.perf_counter()
        arrays = fn()
        dt = time.perf_counter() - t
        self.timings[name] = dt
        clean = {k: np.asarray(v) for k, v in arrays.items()}
        jl.write_npz(path, __hash__=np.asarray(h), __seconds__=np.asarray(dt), **clean)
        self.wrote = True
        self.log(f"{name}: {dt:.1f} s")
        return {k: (v.item() if v.ndim == 0 else v) for k, v in clean.items()}

    # -- figures
    def figure(self, fig, stem: str) -> None:
        from jaxland.plots import save_figure

        save_figure(fig, self.out / stem)
        self.wrote = True
        self.figures.append(stem)

    # -- data and training shared by the experiments
    def dataset(self, cfg=None, *, name: str | None = None, split: str = "train", limit: int | None = None):
        cfg = cfg or self.cfg
        name = name or cfg.dataset
        limit = limit or cfg.n_samples
        ds = jl.load_dataset(name, split=split, limit=limit, data_dir=cfg.data_dir, normalize=cfg.normalize, flatten=cfg.arch == "mlp")
        self.data_sources[f"{ds.name}/{split}"] = ds.source
        return ds

    def model(self, cfg=None, input_shape=(784,), out_dim: int = 10) -> jl.Model:
        """The configured architecture (``cfg.arch``) for inputs of ``input_shape`` (per sample)."""
        cfg = cfg or self.cfg
        if cfg.arch == "mlp":
            return jl.build_model("mlp", input_shape, out_dim, hidden=cfg.hidden, activation=cfg.activation, use_bias=cfg.use_bias)
        return jl.build_model(cfg.arch, input_shape, out_dim)

    def trained(self, model, ds, *, seed: int | None = None, cfg=None, epochs: int | None = None):
        """w* via :func:`jaxland.cached_train` (shared across experiments and reruns)."""
        cfg = cfg or self.cfg
        seed = cfg.seed if seed is None else seed
        tag = f"{ds.name}/{ds.source.split(':')[0]}/{ds.x.shape[0]}/{cfg.normalize}"
        t = time.perf_counter()
        res = jl.cached_train(
            model, ds.x, ds.y, seed=seed, data_tag=tag, epochs=epochs or cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, progress=self.progress
        )
        self.timings["train"] = self.timings.get("train", 0.0) + time.perf_counter() - t
        return res


    def reference(self, cfg=None, *, seed: int | None = None):
        """``(model, TrainResult, x, y)`` of the experiment's trained network on its data (cached)."""
        import jax.numpy as jnp

        cfg = cfg or self.cfg
        ds = self.dataset(cfg)
        model = self.model(cfg, input_shape=ds.x.shape[1:], out_dim=ds.num_classes)
        res = self.trained(model, ds, seed=seed, cfg=cfg)
        self.train_accuracy = float(res.train_accuracy)
        return model, res, jnp.asarray(ds.x), jnp.asarray(ds.y)

    def eigenpairs(self, name: str, model, w, x, y, d: int, *, seed_offset: int = 0, vectors: bool = True, **eig_kwargs) -> dict:
        """Top-``d`` Hessian eigenpairs of the full-data loss at ``w`` (a resumable part)."""

        def compute():
            import jax

            res = jl.hessian_eigenpairs(model, w, x, y, d, key=jax.random.fold_in(jax.random.key(self.cfg.seed), 1000 + seed_offset), **eig_kwargs)
            out = {
                "eigenvalues": np.asarray(res.eigenvalues),
                "residuals": np.asarray(res.residuals),
                "num_matvecs": int(res.num_matvecs),
                "converged": np.asarray(res.converged),
            }
            if vectors:
                out["eigenvectors"] = np.asarray(res.eigenvectors)
            return out

        return self.part(name, compute, key=[d, sorted(eig_kwargs.items())])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ----------------------------------------------------------------- running


def run_experiment(spec: Spec, cfg, out: str | os.PathLike, *, progress: bool = True, force: bool = False, mode: str = "custom") -> dict:
    """Validate ``cfg``, run ``spec.run`` and write ``results.{npz,json}`` into ``out``.

    If ``out/results.json`` already holds a finished run of the same config,
    nothing is recomputed (``force=True`` recomputes). Returns the JSON record.
    Bad arguments raise before ``out`` is created; if the run fails before
    writing anything, a folder it created is removed again.
    """
    cfg.validate()
    out = Path(out)
    record_path = out / "results.json"
    h = config_hash(cfg)
    if record_path.exists() and not force:
        try:
            rec = json.loads(record_path.read_text())
            if rec.get("config_hash") == h and all((out / f"{s}.png").exists() for s in rec.get("figures", [])):
                if progress:
                    print(f"[{spec.name}] up to date in {out} (use --force to recompute)", file=sys.stderr, flush=True)
                rec["skipped"] = True
                return rec
        except (OSError, ValueError):
            pass
    created = not out.exists()
    ctx = Context(spec, cfg, out, progress=progress, force=force)
    t0 = time.perf_counter()
    try:
        outcome = spec.run(cfg, ctx)
    except BaseException:
        if created and not ctx.wrote and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    total = time.perf_counter() - t0
    arrays = {k: np.asarray(v) for k, v in outcome.arrays.items()}
    bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    record = {
        "experiment": spec.name,
        "title": spec.title,
        "paper_ref": spec.paper_ref,
        "mode": mode,
        "config": config_dict(cfg),
        "config_hash": h,
        "seed": cfg.seed,
        "key": f"jax.random.key({cfg.seed})",
        "data_sources": ctx.data_sources,
        "metadata": jl.run_metadata(),
        "timings": {"total_s": total, **{f"{k}_s": v for k, v in ctx.timings.items()}},
        "resumed_parts": ctx.resumed,
        "summary": outcome.summary,
        "claims": [c._asdict() for c in outcome.claims],
        "notes": list(outcome.notes) + ([f"non-finite values in: {', '.join(bad)}"] if bad else []),
        "figures": ctx.figures,
        "arrays": sorted(arrays),
    }
    jl.write_npz(out / "results.npz", **arrays)
    jl.write_json(record_path, record)
    if progress:
        print(f"[{spec.name}] done in {total:.1f} s -> {out}", file=sys.stderr, flush=True)
    return record


# -------------------------------------------------------------- shared presets

# Quick mode of every experiment on the paper's reference network: the same
# data and training, so they share one cached w* (and the main job trains it once).
QUICK_REFERENCE = dict(n_samples=4096, epochs=5)
TINY_REFERENCE = dict(n_samples=512, epochs=1, hidden=(32,))


# --------------------------------------------------------------------- CLI


def _field_parser(tp) -> tuple[Callable[[str], Any], str]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        parse, meta = _field_parser(inner[0])
        return (lambda s: None if s.lower() in ("none", "") else parse(s)), meta
    if origin is tuple:
        elem = args[0]
        parse, meta = _field_parser(elem)
        return (lambda s: tuple(parse(p) for p in s.split(",") if p.strip() != "")), f"{meta},{meta},..."
    if tp is bool:

        def pb(s: str) -> bool:
            if s.lower() in ("1", "true", "yes", "y", "on"):
                return True
            if s.lower() in ("0", "false", "no", "n", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")

        return pb, "BOOL"
    if tp is int:
        return int, "INT"
    if tp is float:
        return float, "FLOAT"
    return str, "STR"


def build_parser(spec: Spec) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m experiments.{spec.name}",
        description=f"{spec.title} ({spec.paper_ref}). Defaults are the paper's reference configuration.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=f"runs/{spec.name}", help="output folder")
    p.add_argument("--quick", action="store_true", help=f"small settings, about a minute on a 2-core CPU: {spec.quick}")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="recompute even if finished results/parts exist")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    hints = typing.get_type_hints(spec.config)
    defaults = spec.config()
    for f in dataclasses.fields(spec.config):
        parse, meta = _field_parser(hints[f.name])
        opts = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        d = getattr(defaults, f.name)
        shown = ",".join(map(str, d)) if isinstance(d, tuple) else d
        p.add_argument(*opts, dest=f.name, type=parse, default=argparse.SUPPRESS, metavar=meta, help=f"(default: {shown})")
    return p


def resolve_config(spec: Spec, overrides: dict, *, quick: bool = False, tiny: bool = False):
    """Paper defaults, then the quick/tiny preset, then explicit overrides."""
    base = {}
    if quick or tiny:
        base.update(spec.quick)
    if tiny:
        base.update(spec.tiny)
    base.update(overrides)
    names = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(base) - names)
    if unknown:
        raise ConfigError(f"{spec.name}: unknown setting(s) {unknown}; valid: {sorted(names)}")
    return spec.config(**base)


def cli(spec: Spec, argv=None) -> int:
    """Run one experiment from the command line; returns the exit code.

    A user error (a bad flag value, unknown dataset or architecture, unreadable
    data, an ``--out`` that is a file or not writable, a full disk) prints one
    line on stderr and returns 2; anything else is a bug and keeps its traceback.
    """
    from jaxland.validate import check_output_dir, user_os_error

    parser = build_parser(spec)
    args = vars(parser.parse_args(argv))
    out, quick, tiny, force, progress = (args.pop(k) for k in ("out", "quick", "tiny", "force", "progress"))
    try:
        check_output_dir(out, "--out")
        cfg = resolve_config(spec, args, quick=quick, tiny=tiny)
        rec = run_experiment(spec, cfg, out, progress=progress, force=force, mode="tiny" if tiny else "quick" if quick else "custom")
    except JaxlandError as e:
        print("error: " + " ".join(line.strip() for line in str(e).splitlines()), file=sys.stderr)
        return 2
    except OSError as e:
        if not user_os_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished parts are kept and a rerun resumes", file=sys.stderr)
        return 130
    print_summary(rec)
    return 0


def print_summary(rec: dict) -> None:
    print(f"{rec['experiment']}: {rec['title']}")
    for k, v in rec.get("summary", {}).items():
        if not isinstance(v, (list, dict)):
            print(f"  {k}: {v}")
    for c in rec.get("claims", []):
        verdict = {True: "HELD", False: "NOT HELD", None: "n/a"}[c["held"]]
        print(f"  [{verdict}] {c['claim']}: {c['detail']}")


# ------------------------------------------------------------ small helpers


def k_axis(n_units: int) -> np.ndarray:
    """k = 1 .. n_units - 1 (Delta_k needs L_{k+1})."""
    return np.arange(1, n_units)


def prefix_losses(per_sample, kb: int | None):
    """``L_k`` for every k from per-sample losses (..., n): cumulative means over samples or over batches of ``kb``."""
    import jax.numpy as jnp

    if kb is not None:
        nb = per_sample.shape[-1] // kb
        per_sample = per_sample[..., : nb * kb].reshape(*per_sample.shape[:-1], nb, kb).mean(-1)
    c = jnp.cumsum(per_sample, axis=-1)
    return c / jnp.arange(1, per_sample.shape[-1] + 1)


def k2_growth(k, delta) -> tuple[float, float]:
    """``(ratio, slope)``: mean of ``Delta_k k^2`` over the last third of k / over the middle third,
    and the log-log slope of ``Delta_k`` over the last two thirds (NaN when too few k)."""
    k = np.asarray(k, dtype=np.float64)
    d = np.asarray(delta, dtype=np.float64)
    n = len(d)
    if n < 6:
        return float("nan"), float("nan")
    s = d * k**2
    mid, last = s[n // 3 : 2 * n // 3].mean(), s[2 * n // 3 :].mean()
    ratio = float(last / mid) if mid > 0 else float("inf")
    return ratio, _loglog_slope(k[n // 3 :], np.maximum(d[n // 3 :], 1e-300))


def bounded_k2(k, delta, what: str = "") -> Claim:
    """Claim check: ``Delta_k * k^2`` stays bounded (does not grow with k).

    Criterion: the mean of ``Delta_k k^2`` over the last third of k is at most
    twice its mean over the middle third (growth like k or faster fails).
    """
    text = "Delta_k * k^2 stays bounded" + (f" ({what})" if what else "")
    ratio, slope = k2_growth(k, delta)
    if not np.isfinite(ratio) and len(np.asarray(delta)) < 6:
        return Claim(text, None, f"too few k ({len(np.asarray(delta))}) to judge")
    return Claim(
        text,
        bool(ratio <= 2.0),
        f"mean of Delta_k k^2 over the last third of k / over the middle third = {ratio:.2f} (bounded if <= 2); "
        f"log-log slope of Delta_k over the last two thirds = {slope:.2f} (-2 = Delta_k ~ 1/k^2)",
    )


def _loglog_slope(k, v) -> float:
    k, v = np.asarray(k, np.float64), np.asarray(v, np.float64)
    ok = (k > 0) & (v > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(k[ok]), np.log(v[ok]), 1)[0])


def main_for(spec: Spec):
    def main(argv=None) -> int:
        return cli(spec, argv)

    return main
