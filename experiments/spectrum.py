"""Top-32 Hessian eigenvalues at w*, mean and spread over S independently trained models (paper fig. 1),
and the whole spectrum of the first models: density, trace, lambda_min / lambda_max and a measured d.

Each model is the reference MLP trained from its own seed (seed, seed+1, ...);
the top-m eigenvalues of the full-data Hessian H(w*) come from a matrix-free
Lanczos eigensolver (signed, descending; the original code's power iteration
returned norms). Weights are cached, so a rerun or a larger S only trains the
missing models.

For the first ``spectrum_models`` models: the eigenvalue density by stochastic
Lanczos quadrature (log scale over the whole range, the chosen top-d marked),
the trace by Hutch++, lambda_min by Lanczos on -H, and
``jaxland.choose_d``: the smallest d whose top eigenvalues hold ``d_share`` of
the positive curvature ``tr(H_+)``, and the eigengap d. The paper fixes d = 10
by eye; the report checks it against these.

Run: ``python -m experiments.spectrum [--quick] [--out DIR] [--num_models 50] [--top 32]``.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
from tqdm.auto import tqdm

from jaxland.errors import ConfigError
from jaxland.plots import plot_spectrum
from jaxland.plots.spectrum import plot_spectral_density

from ._cli import main_for
from ._config import QUICK_REFERENCE, TINY_REFERENCE, BaseConfig
from ._runner import Claim, Outcome, Spec


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
    num_models: int = 50
    top: int = 32
    eig_tol: float = 1e-3
    spectrum_models: int = 3  # models whose whole spectrum is estimated (the first ones)
    density_probes: int = 4
    lanczos_steps: int = 100
    trace_probes: int = 150  # Hutch++ HVP budget
    bottom_tol: float = 1e-3
    bottom_max_matvecs: int = 150
    d_share: float = 0.5  # choose_d: share of tr(H_+) the top-d eigenvalues must hold
    paper_d: int = 10

    def validate(self) -> None:
        super().validate()
        for f in ("density_probes", "lanczos_steps", "trace_probes", "bottom_max_matvecs", "paper_d"):
            if int(getattr(self, f)) != getattr(self, f) or getattr(self, f) < 1:
                raise ConfigError(f"{f} must be a positive integer, got {getattr(self, f)!r}")
        if self.spectrum_models < 0:
            raise ConfigError(f"spectrum_models must be >= 0, got {self.spectrum_models}")
        if self.trace_probes < 6:
            raise ConfigError(f"trace_probes must be >= 6 (Hutch++), got {self.trace_probes}")
        if self.lanczos_steps < 2:
            raise ConfigError(f"lanczos_steps must be >= 2, got {self.lanczos_steps}")
        if not 0 < self.d_share <= 1:
            raise ConfigError(f"d_share must be in (0, 1], got {self.d_share}")
        if not self.bottom_tol > 0:
            raise ConfigError(f"bottom_tol must be > 0, got {self.bottom_tol}")
        if self.num_models < 1:
            raise ConfigError(f"num_models must be >= 1, got {self.num_models}")
        if self.top < 1:
            raise ConfigError(f"top must be >= 1, got {self.top}")
        if not self.eig_tol > 0:
            raise ConfigError(f"eig_tol must be > 0, got {self.eig_tol}")


QUICK = dict(QUICK_REFERENCE, num_models=3, top=12, eig_tol=1e-2, spectrum_models=1, density_probes=2, lanczos_steps=20,
             trace_probes=15, bottom_tol=1e-2, bottom_max_matvecs=40)
TINY = dict(TINY_REFERENCE, num_models=2, top=4, spectrum_models=1, density_probes=2, lanczos_steps=10, trace_probes=9,
            bottom_max_matvecs=30)


def whole_spectrum(cfg: Config, ctx, i: int, model, w, x, y) -> dict:
    """Density, trace and lambda_min of model i (a resumable part)."""

    def compute():
        import jax

        import jaxland as jl

        key = jax.random.fold_in(jax.random.key(cfg.seed), 2000 + i)
        kd, kt, kb = jax.random.split(key, 3)
        dn = jl.spectral_density(model, w, x, y, num_probes=cfg.density_probes, lanczos_steps=cfg.lanczos_steps, key=kd)
        tr = jl.hessian_trace(model, w, x, y, num_probes=cfg.trace_probes, key=kt)
        bot = jl.bottom_eigenpairs(model, w, x, y, 1, key=kb, tol=cfg.bottom_tol, max_matvecs=cfg.bottom_max_matvecs)
        return {"nodes": np.asarray(dn.nodes), "weights": np.asarray(dn.weights), "sigma": float(dn.sigma), "dim": dn.dim,
                "trace": float(tr.trace), "trace_stderr": float(tr.stderr), "lambda_min": float(bot.eigenvalues[0]),
                "lambda_min_relres": float(bot.relative_residuals[0]), "lambda_min_converged": bool(bot.converged),
                "hvps": dn.num_matvecs + tr.num_matvecs + int(bot.num_matvecs)}

    return ctx.part(f"whole_spectrum_model{i:03d}", compute)


def run(cfg: Config, ctx) -> Outcome:
    ev, conv, whole = [], [], []
    bar = tqdm(range(cfg.num_models), desc="spectrum: models", unit="model", disable=not ctx.progress)
    for i in bar:
        model, res, x, y = ctx.reference(seed=cfg.seed + i)
        e = ctx.eigenpairs(f"eigenvalues_model{i:03d}", model, res.params, x, y, cfg.top, seed_offset=i, vectors=False, tol=cfg.eig_tol)
        ev.append(e["eigenvalues"])
        conv.append(bool(np.all(e["converged"])))
        if i < cfg.spectrum_models:
            whole.append(whole_spectrum(cfg, ctx, i, model, res.params, x, y))
    ev = np.stack(ev)
    spec_summary, spec_claims, spec_arrays = _spectrum_results(cfg, ctx, ev, whole)
    ctx.figure(plot_spectrum(ev, title=f"Top-{cfg.top} Hessian eigenvalues at w*, {cfg.num_models} trained model(s)"), "spectrum")
    ctx.figure(plot_spectrum(ev, title=f"Top-{cfg.top} Hessian eigenvalues at w* (log scale)", logy=True), "spectrum_log")
    mean = ev.mean(0)
    m10 = min(10, cfg.top)
    summary = {
        "num_models": cfg.num_models,
        "mean_eigenvalues": [float(v) for v in mean],
        "std_eigenvalues": [float(v) for v in ev.std(0)],
        "lambda1_over_lambda10": float(mean[0] / mean[m10 - 1]) if cfg.top >= 2 else None,
        "lambda1_over_lambda_last": float(mean[0] / mean[-1]),
        "all_converged": all(conv),
        **spec_summary,
    }
    claims = []
    if cfg.top >= 10:
        r = mean[0] / mean[9]
        claims.append(Claim("the top-10 Hessian eigenvalues decay rapidly (low effective rank)", bool(r >= 3),
                            f"mean lambda_1 / lambda_10 = {r:.3g} (held if >= 3); lambda_1 / lambda_{cfg.top} = {mean[0] / mean[-1]:.3g}"))
    else:
        claims.append(Claim("the top-10 Hessian eigenvalues decay rapidly (low effective rank)", None, f"only the top {cfg.top} computed"))
    neg = int(np.sum(ev < 0))
    claims.append(Claim("the top eigenvalues at w* are positive (w* is near a minimum)", neg == 0, f"{neg} negative among {ev.size} computed top eigenvalues"))
    if cfg.num_models > 1:
        cv = float(ev[:, 0].std() / abs(ev[:, 0].mean()))
        claims.append(Claim("the spectrum is reproducible across independent trainings", bool(cv < 0.5),
                            f"coefficient of variation of lambda_1 over {cfg.num_models} models = {cv:.2f} (held if < 0.5)"))
    return Outcome({"eigenvalues": ev, "converged": np.asarray(conv), **spec_arrays}, summary, claims + spec_claims)


def _spectrum_results(cfg: Config, ctx, ev, whole):
    """Summary, claims and arrays of the whole-spectrum part (models 0 .. spectrum_models-1)."""
    import jaxland as jl

    if not whole:
        return {}, [Claim(f"d = {cfg.paper_d} Hessian directions hold the dominant curvature", None, "spectrum_models = 0")], {}
    per_model, claims = [], []
    for i, wsp in enumerate(whole):
        grid, rho, sigma = jl.smooth_density(wsp["nodes"], wsp["weights"])
        dn = jl.SpectralDensity(wsp["nodes"], wsp["weights"], grid, rho, sigma, int(wsp["dim"]), wsp["nodes"].size)
        ch = jl.choose_d(ev[i], dn, share=cfg.d_share)
        m10 = min(cfg.paper_d, ev.shape[1])
        row = {
            "model": i, "trace": wsp["trace"], "trace_stderr": wsp["trace_stderr"],
            "trace_from_density": dn.dim * jl.density_moments(dn, 1)[0],
            "positive_trace": ch.positive_trace, "positive_trace_stderr": ch.positive_trace_stderr,
            "lambda_max": float(ev[i, 0]), "lambda_min": wsp["lambda_min"], "lambda_min_relres": wsp["lambda_min_relres"],
            "lambda_min_converged": bool(wsp["lambda_min_converged"]), "min_over_max": wsp["lambda_min"] / float(ev[i, 0]),
            "chosen_d": ch.d, "d_eigengap": ch.d_eigengap, "share_target": ch.target,
            f"share_top{m10}": float(ch.captured[m10 - 1]), f"share_top{m10}_stderr": float(ch.captured_stderr[m10 - 1]),
            "hvps": int(wsp["hvps"]),
        }
        per_model.append({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()})
        if i == 0:
            d_mark = ch.d if ch.d is not None else m10
            fig = plot_spectral_density(
                dn, top_eigenvalues=ev[i], d=d_mark, extremes=(wsp["lambda_min"], float(ev[i, 0])),
                title=f"Hessian eigenvalue density at w* (model 0); d = {d_mark} "
                      + ("chosen" if ch.d is not None else f"(paper; {cfg.d_share:.0%} not reached by top-{ev.shape[1]})"))
            ctx.figure(fig, "spectral_density")
        reach = f"d = {ch.d}" if ch.d is not None else f"d > {ev.shape[1]} (top-{ev.shape[1]} hold {ch.captured[-1]:.1%})"
        detail = (f"model {i}: top-{m10} eigenvalues hold {ch.captured[m10 - 1]:.1%} +- {ch.captured_stderr[m10 - 1]:.1%} "
                  f"of tr(H_+) = {ch.positive_trace:.3g}; the smallest d holding {cfg.d_share:.0%} is {reach}; "
                  f"largest eigenvalue ratio gap at d = {ch.d_eigengap}; held if the chosen d <= {cfg.paper_d}")
        held = None if ev.shape[1] < cfg.paper_d and ch.d is None else bool(ch.d is not None and ch.d <= cfg.paper_d)
        claims.append(Claim(f"d = {cfg.paper_d} Hessian directions hold {cfg.d_share:.0%} of the positive curvature "
                            "(the paper's choice of d)", held, detail))
        claims.append(Claim("w* is near a minimum (lambda_min small against lambda_max)",
                            bool(row["min_over_max"] > -0.1),
                            f"model {i}: lambda_min = {row['lambda_min']:.3g} (relative residual {row['lambda_min_relres']:.1e}), "
                            f"lambda_max = {row['lambda_max']:.3g}, ratio {row['min_over_max']:.3g} (held if > -0.1)"))
    arrays = {"density_nodes_model0": whole[0]["nodes"], "density_weights_model0": whole[0]["weights"],
              "trace": np.asarray([r["trace"] for r in per_model]), "lambda_min": np.asarray([r["lambda_min"] for r in per_model])}
    return {"whole_spectrum": per_model}, claims, arrays


SPEC = Spec("spectrum", "Top Hessian eigenvalues at w* over independently trained models", "paper fig. 1", Config, run, QUICK, TINY)
main = main_for(SPEC)

if __name__ == "__main__":
    sys.exit(main())
