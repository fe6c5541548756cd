"""Companion paper (Kiselev & Grabovoy, "Unraveling the Hessian"): |L_{k+1}(w*) - L_k(w*)| against k.

Bias-free ReLU MLPs ``Linear(in,h)+ReLU, n x [Linear(h,h)+ReLU], Linear(h,out)``
with ``h`` in {4,8,16,32,64} at ``n = 5`` and ``n`` in {1,3,5,7,10} at
``h = 16``, trained (Adam 1e-3, batch 64, 10 epochs) on the first 10,000
training images of each dataset, pixels in [-1, 1]. For each trained w* the
per-sample losses are computed once; ``|L_{k+1} - L_k|`` for k = 1..N-1 (in
samples) is averaged over random orderings of the samples and smoothed by an
EMA (0.99). Beside it, per model, the paper's Theorem 1 bound on the
per-sample Hessian norm against the measured ``max_i ||H_i||_2`` (power
iteration on a subset of samples).

Datasets with no local source (CIFAR here) are skipped with a note; the
feature-extraction variant takes a precomputed ``--features FILE.npz``
(arrays ``x`` (n, F) and ``y`` (n,)), since pretrained extractors cannot be
downloaded here.

Run: ``python -m experiments.loss_difference [--quick] [--out DIR] [--datasets mnist,fashion_mnist]``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxland as jl
from jaxland.errors import ConfigError, DataError, DataNotFoundError
from jaxland.plots import plot_bound_vs_measured, plot_loss_difference
from jaxland.sample_size.stopping import ema

from ._claims import loglog_slope
from ._cli import main_for
from ._config import BaseConfig, positive_fields
from ._runner import Claim, Outcome, Spec


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "cifar100")
    n_samples: int = 10000
    normalize: str = "symmetric"
    use_bias: bool = False
    k_unit: str = "samples"
    widths: tuple[int, ...] = (4, 8, 16, 32, 64)
    width_depth: int = 5  # n, the number of Linear(h,h) blocks, in the width sweep
    depths: tuple[int, ...] = (1, 3, 5, 7, 10)
    depth_width: int = 16  # h in the depth sweep
    orderings: int = 100
    ema_decay: float = 0.99
    hessian_samples: int = 256  # per-sample Hessian norms measured on this many samples
    power_iters: int = 50
    features: str | None = None  # precomputed feature file (x, y) for the feature-extraction variant

    def validate(self) -> None:
        super().validate()
        if not self.datasets and not self.features:
            raise ConfigError("datasets is empty and no --features file given")
        for d in self.datasets:
            if str(d).lower().replace("-", "_") not in jl.DATASETS:
                raise DataError(f"unknown dataset {d!r}; valid names are: {', '.join(jl.DATASETS)}")
        if not self.widths and not self.depths:
            raise ConfigError("need at least one width or depth")
        if any(int(h) != h or h < 1 for h in self.widths + (self.depth_width,)):
            raise ConfigError(f"widths must be positive integers, got {self.widths} / {self.depth_width}")
        if any(int(n) != n or n < 0 for n in self.depths + (self.width_depth,)):
            raise ConfigError(f"depths must be integers >= 0, got {self.depths} / {self.width_depth}")
        positive_fields(self, "orderings", "hessian_samples", "power_iters")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.hessian_samples > self.n_samples:
            raise ConfigError(f"hessian_samples={self.hessian_samples} exceeds n_samples={self.n_samples}")
        if self.features is not None and not Path(self.features).is_file():
            raise ConfigError(f"--features {self.features}: no such file (expected an .npz with arrays x (n, F) and y (n,))")


QUICK = dict(datasets=("mnist",), n_samples=2000, epochs=3, widths=(4, 16, 64), depths=(1, 5, 10), hessian_samples=32, power_iters=20)
TINY = dict(n_samples=256, epochs=1, widths=(4, 8), depths=(1,), width_depth=1, depth_width=4, orderings=10, hessian_samples=4, power_iters=5)


def companion_mlp(in_dim: int, h: int, n: int, out_dim: int) -> jl.MLPConfig:
    """Bias-free ReLU MLP of the companion paper: ``in -> h``, ``n`` blocks ``h -> h``, ``h -> out``."""
    return jl.MLPConfig((in_dim, h, *([h] * n), out_dim), "relu", use_bias=False)


def loss_difference_curve(losses: np.ndarray, orderings: int, key, decay: float):
    """Mean over random orderings of ``|L_{k+1} - L_k|`` for k = 1..N-1, then EMA-smoothed.

    Uses the exact identity ``L_{k+1} - L_k = (l_{k+1} - L_k) / (k+1)``.
    """
    l = jnp.asarray(losses, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    n = l.shape[0]

    def one(k):
        p = l[jax.random.permutation(k, n)]
        Lk = jnp.cumsum(p) / jnp.arange(1, n + 1)
        return jnp.abs((p[1:] - Lk[:-1]) / jnp.arange(2, n + 1))

    raw = np.asarray(jax.lax.map(one, jax.random.split(key, orderings))).mean(0)
    return raw, ema(raw, decay)


@functools.partial(jax.jit, static_argnames=("model", "iters"))
def per_sample_hessian_norms(model: jl.MLPConfig, w, x, y, key, *, iters: int):
    """``||H_i||_2`` of each per-sample loss Hessian, by power iteration (``iters`` steps).

    Returns ``||H_i v||`` for the final unit vector ``v``: a lower bound that
    converges to the spectral norm (the largest |eigenvalue|).
    """

    def one(xi, yi, v0):
        g = jax.grad(lambda w_: jl.per_sample_losses(model, w_, xi[None], yi[None])[0])
        _, lin = jax.linearize(g, w)

        def body(_, v):
            hv = lin(v)
            return hv / (jnp.linalg.norm(hv) + 1e-30)

        v = jax.lax.fori_loop(0, iters, body, v0 / jnp.linalg.norm(v0))
        return jnp.linalg.norm(lin(v))

    v0 = jax.random.normal(key, (x.shape[0], w.shape[0]), w.dtype)
    return jax.lax.map(lambda a: one(*a), (x, y, v0))


def theorem1_bound(model: jl.MLPConfig, w, x) -> tuple[float, float, float]:
    """Companion paper's Theorem 1 bound on the per-sample Hessian norm, with its constants.

    ``L sqrt(2) M_x^2 M_W^(2L) + sqrt(2) M_W^2 (M_W^(2L) - 1) / (M_W^2 - 1)`` where
    ``M_W = max_p ||W_p||_2`` over the L weight matrices and ``M_x = max_i ||x_i||_2``.
    Returns ``(bound, M_W, M_x)``.
    """
    mats = [np.asarray(layer.kernel, np.float64) for layer in model.layers(w)]
    L = len(mats)
    mw = max(float(np.linalg.norm(m, 2)) for m in mats)
    mx = float(np.max(np.linalg.norm(np.asarray(x, np.float64), axis=1)))
    geo = 2 * L if abs(mw * mw - 1) < 1e-12 else (mw ** (2 * L) - 1) / (mw * mw - 1)
    bound = L * math.sqrt(2) * mx**2 * mw ** (2 * L) + math.sqrt(2) * mw**2 * geo
    return bound, mw, mx


def _load_features(path: str, n: int):
    with np.load(path) as f:
        xk = next((k for k in ("x", "x_train", "features") if k in f.files), None)
        yk = next((k for k in ("y", "y_train", "labels") if k in f.files), None)
        if xk is None or yk is None:
            raise DataError(f"{path}: expected arrays 'x' (n, F) and 'y' (n,), found {f.files}")
        x, y = np.asarray(f[xk], np.float32), np.asarray(f[yk]).astype(np.int32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise DataError(f"{path}: x must be (n, F) and y (n,), got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: features contain NaN/inf")
    if x.shape[0] < n:
        raise DataError(f"{path}: holds {x.shape[0]} samples, fewer than n_samples={n}")
    return jl.Dataset(x[:n], y[:n], "features", f"features:{path}")


def _models(cfg: Config):
    """(label, sweep, h, n) of each model; the width- and depth-sweeps share h=16, n=5."""
    out = [(f"h={h}, n={cfg.width_depth}", "width", h, cfg.width_depth) for h in cfg.widths]
    out += [(f"h={cfg.depth_width}, n={n}", "depth", cfg.depth_width, n) for n in cfg.depths]
    return out


def run(cfg: Config, ctx) -> Outcome:
    datasets = []
    notes = []
    sources = [(d, None) for d in cfg.datasets] + ([("features", cfg.features)] if cfg.features else [])
    for name, path in sources:
        try:
            ds = _load_features(path, cfg.n_samples) if path else ctx.dataset(name=name)
        except DataNotFoundError as e:
            first = str(e).splitlines()[0]
            notes.append(f"skipped {name}: {first}")
            ctx.log(f"skipping {name}: no local source (pass --data_dir or set JAXLAND_DATA_DIR)")
            continue
        if path:
            ctx.data_sources["features"] = ds.source
        datasets.append(ds)
    if not datasets:
        raise DataNotFoundError("no requested dataset is available here:\n  " + "\n  ".join(notes))

    arrays, summary, rows = {}, {"skipped": [n.split(":")[0].replace("skipped ", "") for n in notes]}, []
    panels = {}
    key = jax.random.key(cfg.seed)
    for ds in datasets:
        n_classes = int(max(ds.num_classes, int(ds.y.max()) + 1))
        x, y = jnp.asarray(ds.x), jnp.asarray(ds.y)
        curves_w, curves_d = {}, {}
        for label, sweep, h, n in _models(cfg):
            model = companion_mlp(x.shape[1], h, n, n_classes)
            tag = f"{ds.name}-h{h}-n{n}"

            def compute(model=model, tag=tag):
                res = ctx.trained(model, ds)
                w = res.params
                losses = np.asarray(jl.per_sample_losses(model, w, x, y))
                raw, smooth = loss_difference_curve(losses, cfg.orderings, jax.random.fold_in(key, 1), cfg.ema_decay)
                m = cfg.hessian_samples
                idx = np.asarray(jax.random.choice(jax.random.fold_in(key, 2), x.shape[0], (m,), replace=False))
                norms = np.asarray(per_sample_hessian_norms(model, w, x[idx], y[idx], jax.random.fold_in(key, 3), iters=cfg.power_iters))
                bound, mw, mx = theorem1_bound(model, w, x)
                return {
                    "raw": raw, "smooth": smooth, "hessian_norms": norms, "bound": bound, "M_W": mw, "M_x": mx,
                    "train_accuracy": res.train_accuracy, "mean_loss": float(losses.mean()),
                }

            r = ctx.part(tag, compute)
            k = np.arange(1, cfg.n_samples)
            for name_, v in (("raw", r["raw"]), ("ema", r["smooth"])):
                arrays[f"{tag}/{name_}"] = v
            arrays[f"{tag}/hessian_norms"] = r["hessian_norms"]
            (curves_w if sweep == "width" else curves_d)[label] = (k, r["smooth"])
            tail = slice(max(1, len(k) // 10), None)
            rows.append({
                "dataset": ds.name, "model": label, "sweep": sweep, "h": h, "n": n, "params": model.num_params,
                "train_accuracy": float(r["train_accuracy"]),
                "final_ema": float(r["smooth"][-1]),
                "slope": loglog_slope(k[tail], r["raw"][tail]),
                "bound": float(r["bound"]), "M_W": float(r["M_W"]), "M_x": float(r["M_x"]),
                "measured_hessian_norm": float(np.max(r["hessian_norms"])),
            })
        panels[ds.name] = (curves_w, curves_d)

    arrays["k"] = np.arange(1, cfg.n_samples)
    for ds_name, (cw, cd) in panels.items():
        ps = {}
        if cw:
            ps[f"{ds_name}: width h (n={cfg.width_depth})"] = cw
        if cd:
            ps[f"{ds_name}: depth n (h={cfg.depth_width})"] = cd
        ctx.figure(plot_loss_difference(ps, title=f"|L_(k+1)(w*) - L_k(w*)|, mean of {cfg.orderings} orderings, EMA {cfg.ema_decay}"), f"loss_difference_{ds_name}")
    labels = [f"{r['dataset']}: {r['model']}" for r in rows]
    ctx.figure(plot_bound_vs_measured(labels, [r["bound"] for r in rows], [r["measured_hessian_norm"] for r in rows]), "hessian_bound")

    summary["rows"] = rows
    summary["datasets"] = [d.name for d in datasets]
    return Outcome(arrays, summary, _claims(cfg, rows), notes)


def _spearman(a, b) -> float:
    if len(a) < 2:
        return float("nan")
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if np.std(ra) > 0 and np.std(rb) > 0 else float("nan")


def _claims(cfg: Config, rows) -> list[Claim]:
    claims = []
    slopes = [r["slope"] for r in rows]
    ok = all(-1.5 <= s <= -0.5 for s in slopes)
    claims.append(Claim(
        "|L_{k+1} - L_k| decays about as 1/k",
        bool(ok),
        f"log-log slopes over the last 90% of k: {min(slopes):.2f} .. {max(slopes):.2f} (-1 expected; held if all in [-1.5, -0.5])",
    ))
    finals = [r["final_ema"] for r in rows]
    if cfg.n_samples >= 10000:
        held = all(1e-5 / 3 <= f <= 3e-4 for f in finals)
        claims.append(Claim("values near 1e-5..1e-4 at k = 10,000", bool(held), f"EMA at the last k: {min(finals):.2e} .. {max(finals):.2e}"))
    else:
        claims.append(Claim("values near 1e-5..1e-4 at k = 10,000", None, f"only {cfg.n_samples} samples in this run; EMA at the last k: {min(finals):.2e} .. {max(finals):.2e}"))
    for sweep, var, sign, text in (("width", "h", -1, "decreases as the hidden width h grows"), ("depth", "n", +1, "increases as the number of layers grows")):
        per_ds = {}
        for r in rows:
            if r["sweep"] == sweep:
                per_ds.setdefault(r["dataset"], []).append((r[var], r["final_ema"]))
        rhos = {d: _spearman([a for a, _ in v], [b for _, b in v]) for d, v in per_ds.items() if len(v) >= 2}
        if not rhos:
            claims.append(Claim(f"|L_{{k+1}} - L_k| {text}", None, f"fewer than two {sweep}s in this run"))
            continue
        held = all(np.isfinite(rho) and sign * rho > 0 for rho in rhos.values())
        claims.append(Claim(f"|L_{{k+1}} - L_k| {text}", bool(held), "Spearman rank correlation of the final value with " + var + ": " + ", ".join(f"{d} {rho:+.2f}" for d, rho in rhos.items())))
    viol = [f"{r['dataset']} {r['model']}" for r in rows if not r["bound"] >= r["measured_hessian_norm"]]
    ratios = [r["bound"] / max(r["measured_hessian_norm"], 1e-300) for r in rows]
    claims.append(Claim(
        "Theorem 1 bounds the per-sample Hessian norm",
        not viol,
        (f"bound / measured = {min(ratios):.3g} .. {max(ratios):.3g} (the bound is loose by that factor)" if not viol else f"violated for {viol}"),
    ))
    return claims


SPEC = Spec("loss_difference", "Companion paper: |L_{k+1}(w*) - L_k(w*)| vs k and the Hessian-norm bound", "Kiselev & Grabovoy, figs. 2-5, Theorem 1", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
