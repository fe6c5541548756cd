"""Figures of the whole Hessian spectrum (built as :class:`matplotlib.figure.Figure`, no pyplot state)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_spectral_density"]


def plot_spectral_density(
    density,
    *,
    top_eigenvalues: Sequence[float] | None = None,
    d: int | None = None,
    extremes: tuple[float, float] | None = None,
    floor: float = 1e-7,
    title: str = "Hessian eigenvalue density (SLQ)",
) -> Figure:
    """The smoothed SLQ density on a log y-axis over the whole eigenvalue range.

    ``density``: a :class:`jaxland.SpectralDensity`. ``top_eigenvalues`` (from the
    eigensolver) are drawn as ticks along the bottom, the first ``d`` of them
    (the chosen subspace) highlighted; ``extremes=(lambda_min, lambda_max)`` as
    dashed lines. Values below ``floor`` (times the peak) are clipped so the
    log axis shows the outliers' bumps without the Gaussian tails' underflow.
    """
    grid = np.asarray(density.grid, np.float64)
    rho = np.asarray(density.density, np.float64)
    lo = floor * max(float(rho.max()), np.finfo(np.float64).tiny)
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    ax.semilogy(grid, np.maximum(rho, lo), color="C0", lw=1.3,
                label=f"density ({np.asarray(density.nodes).shape[0]} probes x {np.asarray(density.nodes).shape[1]} steps, "
                      f"$\\sigma$ = {float(density.sigma):.3g})")
    ax.set_ylim(lo, None)
    if top_eigenvalues is not None:
        ev = np.sort(np.asarray(top_eigenvalues, np.float64))[::-1]
        k = len(ev) if d is None else int(d)
        if k < len(ev):
            ax.plot(ev[k:], np.full(len(ev) - k, lo), "|", color="0.5", ms=14, mew=1.2, label=f"top-{len(ev)} eigenvalues")
        ax.plot(ev[:k], np.full(min(k, len(ev)), lo), "|", color="C3", ms=18, mew=2.0,
                label=f"top-{k} eigenvalues (d = {k})" if d is not None else f"top-{k} eigenvalues")
    if extremes is not None:
        for v, name in zip(extremes, (r"$\lambda_{min}$", r"$\lambda_{max}$")):
            ax.axvline(v, color="k", ls="--", lw=0.8)
            ax.annotate(f"{name} = {v:.3g}", (v, 0.95), xycoords=("data", "axes fraction"), rotation=90,
                        ha="right", va="top", fontsize=8)
    ax.set_xlabel(r"eigenvalue $\lambda$ of $H(w)$")
    ax.set_ylabel(r"density $\rho(\lambda)$ (log)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig
