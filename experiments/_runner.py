"""Running an experiment: claims and outcomes, the per-run context (resumable parts, figures), the record.

``run(cfg, ctx) -> Outcome`` is the computation. Expensive pieces go through
``ctx.part(name, fn)``, which stores their arrays under ``OUT/parts/`` so that a
rerun resumes instead of recomputing; a part may return a dict of arrays or a
jaxland result (NamedTuple), converted in one place (:func:`result_arrays`).
:func:`run_experiment` validates, runs, and writes ``results.npz`` and
``results.json`` (resolved config, versions, backend, device and CPU, key,
timings, summary, claims, and the name and shape of every array) atomically.

A folder jaxland writes holds a marker file, ``.jaxland``; an existing
non-empty folder without it (nor a record of an earlier run) is not written
into unless ``force`` (:func:`check_out`). A finished run is reused only after
its arrays are verified against its record (:func:`reusable`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

import jaxland as jl
from jaxland.errors import ConfigError
from jaxland.io import read_json
from jaxland.validate import check_output_dir

from ._config import config_dict, config_hash

MARKER = ".jaxland"

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
    def part(self, name: str, fn: Callable[[], Any], *, key: Any = None) -> dict:
        """Arrays of a finished piece of work: loaded from ``parts/NAME.npz`` when it matches, else computed and stored.

        ``fn()`` returns a dict of arrays or a jaxland result (:func:`result_arrays`);
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
            except Exception as e:  # noqa: BLE001  (a truncated or foreign file: recompute)
                self.log(f"{name}: {path.relative_to(self.out)} is unreadable ({type(e).__name__}); recomputing")
        self.log(f"{name} ...")
        t = time.perf_counter()
        arrays = fn()
        dt = time.perf_counter() - t
        self.timings[name] = dt
        clean = result_arrays(arrays)
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
        import jax

        cfg = cfg or self.cfg
        seed = cfg.seed if seed is None else seed
        tag = f"{ds.name}/{ds.source.split(':')[0]}/{ds.x.shape[0]}/{cfg.normalize}"
        t = time.perf_counter()
        res = jl.cached_train(
            model, ds.x, ds.y, key=jax.random.key(jl.validate.check_seed(seed, "seed")), data_tag=tag, epochs=epochs or cfg.epochs, batch_size=cfg.batch_size,
            lr=cfg.lr, progress=self.progress
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


def result_arrays(result) -> dict[str, np.ndarray]:
    """A jaxland result (NamedTuple, with its ``info`` metadata flattened to ``info_*``) or a dict, as numpy arrays.

    The one place where results become what ``results.npz`` and the parts
    store; ``None`` metadata is stored as NaN-free strings (``"None"``).
    """
    if hasattr(result, "_asdict"):
        out = {}
        for k, v in result._asdict().items():
            if hasattr(v, "_asdict"):
                out.update({f"{k}_{m}": ("None" if u is None else u) for m, u in v._asdict().items()})
            else:
                out[k] = v
        result = out
    return {k: np.asarray("None" if v is None else v) for k, v in result.items()}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ------------------------------------------------------------ output folders


def _is_record(path: Path) -> bool:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and "experiment" in rec and "config_hash" in rec


def is_output_folder(path: str | os.PathLike) -> bool:
    """Whether jaxland wrote ``path``: it or one of its sub-folders (the main job's layout) holds the ``.jaxland``
    marker or the run record of an earlier jaxland."""
    p = Path(path)
    return ((p / MARKER).is_file() or any(q.is_file() for q in p.glob(f"*/{MARKER}"))
            or _is_record(p / "results.json") or any(_is_record(q) for q in p.glob("*/results.json")))


def check_out(out, *, force: bool = False) -> Path:
    """``--out``: a writable folder path, not empty; an existing non-empty folder must be one jaxland wrote, unless ``force``.

    A symbolic link is judged by the folder it points to. Nothing is created.
    """
    p = check_output_dir(out, "--out")
    if p.is_dir() and not force and any(p.iterdir()) and not is_output_folder(p):
        raise ConfigError(
            f"--out {out}: the folder is not empty and was not written by jaxland (it has no {MARKER} file); "
            "choose a new or empty folder, or pass --force to write into it"
        )
    return p


def mark(out: Path) -> None:
    """Create ``out`` if needed and mark it as a jaxland output folder."""
    if not (out / MARKER).is_file():
        jl.write_json(out / MARKER, {"jaxland": jl.__version__, "what": "output folder of jaxland experiments"})


def reusable(out: Path, rec, config_hash_: str) -> str | None:
    """Why the finished run in ``out`` with record ``rec`` cannot be reused; None if it can.

    It can when the record is a jaxland record of the same config, every
    figure it lists exists, and ``results.npz`` loads without pickles and
    holds exactly the arrays, with the shapes, that the record lists.
    """
    if not isinstance(rec, dict) or "config_hash" not in rec:
        return "results.json is not a jaxland record"
    if rec.get("config_hash") != config_hash_:
        return "results.json holds another configuration"
    shapes = rec.get("array_shapes")
    if not isinstance(shapes, dict):
        return "results.json does not list its arrays' shapes (an older jaxland wrote it)"
    try:
        with np.load(out / "results.npz", allow_pickle=False) as z:
            got = {k: list(z[k].shape) for k in z.files}  # reading every array: a truncated member fails here
    except FileNotFoundError:
        return "results.npz is missing"
    except Exception as e:  # noqa: BLE001  (zip, format and pickle errors all mean: not the file we wrote)
        return f"results.npz is unreadable ({type(e).__name__}: {str(e)[:80]})"
    if got != shapes:
        return "results.npz does not hold the arrays (names and shapes) that results.json lists"
    missing = [f"{s}.png" for s in rec.get("figures", []) if not (out / f"{s}.png").exists()]
    if missing:
        return f"figure {missing[0]} is missing"
    return None


# ----------------------------------------------------------------- running


def run_experiment(spec: Spec, cfg, out: str | os.PathLike, *, progress: bool = True, force: bool = False, mode: str = "custom") -> dict:
    """Validate ``cfg``, run ``spec.run`` and write ``results.{npz,json}`` into ``out``.

    If ``out/results.json`` already holds a finished run of the same config
    whose arrays verify (:func:`reusable`), nothing is recomputed
    (``force=True`` recomputes); otherwise the reason is printed and the run
    recomputed (resuming finished parts). ``out`` must pass :func:`check_out`.
    Returns the JSON record. Bad arguments raise before ``out`` is created; if
    the run fails before writing anything, a folder it created is removed again.
    """
    cfg.validate()
    out = check_out(out, force=force)
    record_path = out / "results.json"
    h = config_hash(cfg)

    def say(msg: str) -> None:
        if progress:
            print(f"[{spec.name}] {msg}", file=sys.stderr, flush=True)

    if record_path.exists() and not force:
        try:
            rec = read_json(record_path)
        except (OSError, ValueError) as e:
            rec, why = None, f"results.json is unreadable ({type(e).__name__})"
        else:
            why = reusable(out, rec, h)
        if why is None:
            say(f"up to date in {out} (use --force to recompute)")
            rec["skipped"] = True
            return rec
        say(f"{why}; recomputing")
    created = out.absolute()  # the outermost folder this run creates, if any
    while not created.parent.exists():
        created = created.parent
    created = None if out.exists() else created
    mark(out)
    ctx = Context(spec, cfg, out, progress=progress, force=force)
    t0 = time.perf_counter()
    try:
        outcome = spec.run(cfg, ctx)
    except BaseException:
        if created is not None and not ctx.wrote and created.exists():
            shutil.rmtree(created, ignore_errors=True)
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
        "array_shapes": {k: list(v.shape) for k, v in sorted(arrays.items())},
    }
    jl.write_npz(out / "results.npz", **arrays)
    jl.write_json(record_path, record)
    say(f"done in {total:.1f} s -> {out}")
    return record
