"""The answer of :func:`jaxland.sample_size.dataset_size.forecast_dataset_size`: N* per tolerance, the K of a larger set, the fit, the cost."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .pilots import PilotCost

__all__ = ["DatasetSizeForecast"]


class DatasetSizeForecast(NamedTuple):
    """The dataset size N* (in samples) per tolerance, and the K of a network trained on ``n_target``.

    ``n_star``, ``lower``, ``upper``: N* for curves that scatter like the
    pilots' (median and ``level`` interval; inf: never settles);
    ``n_star_trend``, ``lower_trend``, ``upper_trend``: where the trend alone
    settles; ``k_star = n_star / samples_per_k``. ``k_target``, ``k_lower``,
    ``k_upper``: Definition 4's K on a network trained on ``n_target``
    samples (None without ``n_target``), ``p_settled`` the probability that
    its curve settles within its data, ``k_target_trend`` (and interval) the
    trend crossing. ``alpha``, ``beta``, ``log_c`` (``log C(n_ref)`` of the
    tail ``C(N) k^-alpha``) with standard errors; ``omega``: spread of the
    level between retrainings; ``scatter``: the part of the curves'
    fluctuation beyond their Monte Carlo errors that networks do not share;
    ``chi2_reduced``, ``gof_p``: the stage-1 fit with the Monte Carlo errors
    alone; ``diagnostics``: per-pilot levels and residuals, the exponent per
    size and its trend, warnings; ``cost``: a :class:`PilotCost` (None
    without ``epochs``).
    """

    tol: np.ndarray | float
    n_star: np.ndarray | float
    lower: np.ndarray | float
    upper: np.ndarray | float
    k_star: np.ndarray | float
    n_star_trend: np.ndarray | float
    lower_trend: np.ndarray | float
    upper_trend: np.ndarray | float
    n_target: int | None
    k_target: np.ndarray | float | None
    k_lower: np.ndarray | float | None
    k_upper: np.ndarray | float | None
    p_settled: np.ndarray | float | None
    k_target_trend: np.ndarray | float | None
    k_lower_trend: np.ndarray | float | None
    k_upper_trend: np.ndarray | float | None
    alpha: float
    alpha_stderr: float
    beta: float
    beta_stderr: float
    log_c: float
    log_c_stderr: float
    n_ref: float
    omega: float
    scatter: float
    chi2_reduced: float
    gof_p: float
    level: float
    diagnostics: dict
    cost: PilotCost | None
    unit: str
    samples_per_k: int

    @property
    def info(self) -> dict:
        """Settings and fit summary: ``level``, ``unit``, ``samples_per_k``, ``n_ref``, pilot sizes, curves, warnings."""
        d = self.diagnostics
        return {"level": self.level, "unit": self.unit, "samples_per_k": self.samples_per_k, "n_ref": self.n_ref,
                "pilot_sizes": sorted(set(d["pilot_sizes"])), "num_curves": len(d["pilot_sizes"]), "k_fit": d["k_fit"],
                "num_bootstrap": d["num_bootstrap"], "warnings": d["warnings"]}

    def summary(self) -> str:
        """The answer per tolerance, the fit and the cost, as lines of text."""
        sizes = sorted(set(self.diagnostics["pilot_sizes"]))
        lines = [f"Delta_k^(N) = C N^beta k^-alpha: alpha = {self.alpha:.2f} +- {self.alpha_stderr:.2f}, beta = {self.beta:.2f} "
                 f"+- {self.beta_stderr:.2f}, retraining spread of log C = {self.omega:.2f}; "
                 f"{len(self.diagnostics['pilot_sizes'])} pilot curves at N = {sizes}"]
        for i, t in enumerate(np.atleast_1d(self.tol)):
            row = f"tol {t:g}: N* = {_fmt(_at(self.n_star, i))} [{_fmt(_at(self.lower, i))}, {_fmt(_at(self.upper, i))}] samples ({self.level:.0%})"
            if self.k_target is not None:
                row += (f"; K at N = {self.n_target:,}: {_fmt(_at(self.k_target, i))} [{_fmt(_at(self.k_lower, i))}, "
                        f"{_fmt(_at(self.k_upper, i))}] {self.unit} (settles within it with p = {_at(self.p_settled, i):.2f})")
            if self.cost is not None:
                row += f"; the pilots cost {_at(self.cost.ratio, i):.2g}x training on N*"
            lines.append(row)
        if self.cost is not None:
            c = self.cost
            lines.append(f"pilot compute: {c.pilots:.3g} sample-gradients (training {c.training:.3g}, Hessian {c.curvature:.3g}, "
                         f"Monte Carlo {c.monte_carlo:.3g})")
        lines += [f"warning: {w}" for w in self.diagnostics["warnings"]]
        return "\n".join(lines)


def _at(v, i):
    return float(np.atleast_1d(v)[i])


def _fmt(v: float) -> str:
    return "inf" if not math.isfinite(v) else f"{v:,.0f}"
