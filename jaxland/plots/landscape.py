"""Figures shared by the experiments and by notebook users.

Every function builds a :class:`matplotlib.figure.Figure` directly (no pyplot
state, so nothing leaks in loops and the non-interactive Agg canvas is used
for saving); in a notebook, ``display(fig)`` or ending a cell with ``fig``
shows it inline. :func:`save_figure` writes PNG and PDF atomically.

Conventions follow the papers: ``Delta_k`` on a log y-axis beside
``Delta_k * k^2`` on a linear one (figs. 4, 5, 8); the theory-vs-empirical
comparison on a log y-axis with both curves smoothed by a centred moving mean
(fig. 9); loss surfaces as two 3-D plots side by side, ``L_k`` left and
``(L_{k+1} - L_k)^2`` right (figs. 2, 3, 6, 7); the companion paper's
``|L_{k+1} - L_k|`` on log-log axes. Monte Carlo curves carry a band of
+-2 standard errors.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..io import atomic_write_bytes
from ..sample_size.stopping import moving_mean

__all__ = [
    "save_figure",
    "plot_spectrum",
    "plot_delta",
    "plot_surfaces",
    "plot_theory_vs_empirical",
    "plot_loss_difference",
    "plot_bound_vs_measured",
    "plot_sufficient_k",
    "plot_online_stop",
]

_BAND = 2.0  # width of Monte Carlo error bands, in standard errors


def save_figure(fig: Figure, path: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf"), dpi: int = 130) -> list[Path]:
    """Write ``fig`` as ``path.png`` and ``path.pdf`` (suffix of ``path`` ignored), each atomically."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in {".png", ".pdf", ".svg"} else path
    written = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(atomic_write_bytes(stem.with_name(f"{stem.name}.{fmt}"), buf.getvalue()))
    return written


def _band(ax, k, mean, se, color, positive: bool):
    if se is None:
        return
    lo, hi = mean - _BAND * np.asarray(se), mean + _BAND * np.asarray(se)
    if positive:
        # log axis: where mean - SE <= 0 the band would run to -inf; clip its lower
        # edge one decade below the estimate at that k (pointwise, so one noisy
        # curve does not paint streaks down through the others)
        lo = np.maximum(lo, np.where(mean > 0, mean / 10.0, 1e-300))
    ax.fill_between(k, lo, hi, color=color, alpha=0.2, linewidth=0)


def _k_label(unit: str) -> str:
    return {"batch": "k (batches of data)", "batches": "k (batches of data)", "sample": "k (samples)", "samples": "k (samples)"}.get(unit, f"k ({unit})")


def plot_spectrum(eigenvalues, *, title: str = "Top Hessian eigenvalues at w*", logy: bool = False, spread: str = "std") -> Figure:
    """Eigenvalues in descending order; ``eigenvalues`` is (m,) or (S, m) for S trained models.

    With several models the line is the mean and the band the standard deviation
    (``spread="std"``) or the min..max range (``spread="range"``).
    """
    ev = np.atleast_2d(np.asarray(eigenvalues, dtype=np.float64))
    idx = np.arange(1, ev.shape[1] + 1)
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    mean = ev.mean(0)
    ax.plot(idx, mean, "o-", ms=4, color="C0", label=f"mean over {ev.shape[0]} model(s)" if ev.shape[0] > 1 else "eigenvalue")
    if ev.shape[0] > 1:
        lo, hi = (mean - ev.std(0), mean + ev.std(0)) if spread == "std" else (ev.min(0), ev.max(0))
        ax.fill_between(idx, lo, hi, alpha=0.25, color="C0", label="+-1 std" if spread == "std" else "min..max")
    if logy:
        ax.set_yscale("symlog" if np.any(ev <= 0) else "log", **({"linthresh": 1e-3} if np.any(ev <= 0) else {}))
    ax.set_xlabel("eigenvalue index i (descending)")
    ax.set_ylabel(r"$\lambda_i(H(w^*))$")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_delta(
    k,
    curves: Mapping[str, tuple],
    *,
    title: str = r"$\Delta_k$",
    unit: str = "batch",
    logx: bool = False,
    logy_k2: bool | None = None,
) -> Figure:
    r"""``Delta_k`` (left, log y) and ``Delta_k * k^2`` (right) for one or several settings.

    ``logy_k2``: log y-axis on the right panel too; by default only when the
    curves' magnitudes differ by more than 100x (e.g. a sweep over sigma).

    ``curves`` maps a label to ``(delta, stderr)`` (stderr may be None), each of
    the length of ``k``. The band is +-2 standard errors.
    """
    k = np.asarray(k, dtype=np.float64)
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if logy_k2 is None:
        meds = [np.nanmedian(np.asarray(d, dtype=np.float64)) for d, _ in curves.values()]
        meds = [m for m in meds if m > 0]
        logy_k2 = len(meds) > 1 and max(meds) / min(meds) > 100
    for i, (label, (delta, se)) in enumerate(curves.items()):
        c = f"C{i}"
        delta = np.asarray(delta, dtype=np.float64)
        se = None if se is None else np.asarray(se, dtype=np.float64)
        ax1.plot(k, delta, color=c, lw=1.3, label=label)
        _band(ax1, k, delta, se, c, positive=True)
        ax2.plot(k, delta * k**2, color=c, lw=1.3, label=label)
        _band(ax2, k, delta * k**2, None if se is None else se * k**2, c, positive=bool(logy_k2))
    ax1.set_yscale("log")
    if logy_k2:
        ax2.set_yscale("log")
    ax1.set_ylabel(r"$\Delta_k$")
    ax2.set_ylabel(r"$\Delta_k \cdot k^2$")
    for ax in (ax1, ax2):
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(_k_label(unit))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


def plot_surfaces(
    alpha,
    beta,
    panels: Sequence[tuple],
    *,
    title: str = "",
    axis_labels: tuple[str, str] = (r"$\theta_1$", r"$\theta_2$"),
) -> Figure:
    r"""3-D surfaces side by side; ``panels`` is a list of ``(Z, title, zlabel)`` with Z of shape (len(beta), len(alpha)).

    The papers' figures 2-3 / 6-7 use two panels: ``L_k`` and ``(L_{k+1} - L_k)^2``.
    """
    A, B = np.meshgrid(np.asarray(alpha), np.asarray(beta))
    n = len(panels)
    fig = Figure(figsize=(5.6 * n, 4.8))
    for i, (Z, ptitle, zlabel) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        ax.plot_surface(A, B, np.asarray(Z), cmap="viridis", linewidth=0, antialiased=True, rcount=60, ccount=60)
        ax.set_xlabel(axis_labels[0])
        ax.set_ylabel(axis_labels[1])
        ax.set_zlabel(zlabel)
        ax.set_title(ptitle, fontsize=10)
        ax.ticklabel_format(axis="z", style="sci", scilimits=(-2, 3))
    if title:
        fig.suptitle(title)
    return fig


def plot_theory_vs_empirical(
    k,
    empirical,
    stderr,
    theory: Mapping[str, np.ndarray],
    *,
    window: int = 11,
    unit: str = "batch",
    title: str = r"Theoretical and empirical $\Delta_k$",
) -> Figure:
    """Monte Carlo ``Delta_k`` (solid, +-2 SE band) against theoretical curves (dashed), log y.

    All curves are smoothed by :func:`moving_mean` with ``window`` (the paper used 11);
    the band is the smoothed standard error (an upper bound on the smoothed
    mean's, since neighbouring k share samples).
    """
    k = np.asarray(k, dtype=np.float64)
    emp = moving_mean(empirical, window, clip=True)
    se = moving_mean(stderr, window, clip=True) if stderr is not None else None
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    ax.plot(k, emp, color="C0", lw=1.6, label="empirical (Monte Carlo)")
    _band(ax, k, emp, se, "C0", positive=True)
    for i, (label, th) in enumerate(theory.items()):
        ax.plot(k, moving_mean(th, window, clip=True), "--", color=f"C{i + 1}", lw=1.4, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(_k_label(unit))
    ax.set_ylabel(r"$\Delta_k$" + (f" (moving mean, window {window})" if window > 1 else ""))
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_loss_difference(panels: Mapping[str, Mapping[str, tuple]], *, title: str = "", unit: str = "sample", ref_slope: bool = True) -> Figure:
    r"""Companion paper's figure: ``|L_{k+1}(w*) - L_k(w*)|`` against k, log-log.

    ``panels`` maps a panel title to ``{label: (k, values)}``; a dotted ``c/k``
    line (fitted to the last point of the first curve) shows the expected slope.
    """
    n = max(len(panels), 1)
    fig = Figure(figsize=(5.6 * n, 4.3))
    for i, (ptitle, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(1, n, i + 1)
        for j, (label, (k, v)) in enumerate(curves.items()):
            ax.plot(np.asarray(k), np.asarray(v), color=f"C{j}", lw=1.3, label=label)
        if ref_slope and curves:
            k0, v0 = (np.asarray(a, dtype=np.float64) for a in next(iter(curves.values())))
            if k0.size and v0[-1] > 0:
                ax.plot(k0, v0[-1] * k0[-1] / k0, ":", color="grey", label=r"$\propto 1/k$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(_k_label(unit))
        ax.set_ylabel(r"$|\mathcal{L}_{k+1}(w^*) - \mathcal{L}_k(w^*)|$ (EMA)")
        ax.set_title(ptitle, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_bound_vs_measured(labels: Sequence[str], bound, measured, *, title: str = "Per-sample Hessian norm: bound vs measured") -> Figure:
    """Bar-style comparison (log y) of a theoretical bound and the measured value, per model."""
    x = np.arange(len(labels))
    fig = Figure(figsize=(max(6.0, 0.55 * len(labels) + 2), 4.3))
    ax = fig.add_subplot()
    ax.plot(x, np.asarray(bound, dtype=np.float64), "s--", color="C3", label="Theorem 1 bound on max_i ||H_i||_2")
    ax.plot(x, np.asarray(measured, dtype=np.float64), "o-", color="C0", label="measured max_i lambda_max(H_i)")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("spectral norm")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_sufficient_k(curves: Mapping[str, tuple], tol: Mapping[str, float] | float, *, unit: str = "batch", title: str = "Sufficient sample size K") -> Figure:
    """``Delta_k`` curves with the tolerance line(s) and the sufficient size K marked.

    ``curves`` maps a label to ``(k, delta, K)`` (K may be None when never reached).
    """
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    for i, (label, (k, delta, K)) in enumerate(curves.items()):
        c = f"C{i}"
        ax.plot(np.asarray(k), np.asarray(delta), color=c, lw=1.3, label=label)
        t = tol[label] if isinstance(tol, Mapping) else tol
        ax.axhline(t, color=c, ls=":", lw=1)
        if K is not None:
            ax.axvline(K, color=c, ls="--", lw=1)
            ax.annotate(f"K={K}", (K, t), color=c, fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel(_k_label(unit))
    ax.set_ylabel(r"$\Delta_k$")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_online_stop(k, delta, tol: float, k_stop, *, accuracy=None, full_accuracy: float | None = None, unit: str = "batch") -> Figure:
    """Algorithm 1 trace: the estimated Delta at each data size (log y) and, if given, test accuracy."""
    k = np.asarray(k)
    fig = Figure(figsize=(11 if accuracy is not None else 6.5, 4.2))
    ax = fig.add_subplot(1, 2 if accuracy is not None else 1, 1)
    ax.plot(k, np.asarray(delta), "o-", ms=3, label=r"estimated $\Delta$")
    ax.axhline(tol, color="C3", ls=":", label=f"tolerance {tol:g}")
    if k_stop is not None:
        ax.axvline(k_stop, color="C2", ls="--", label=f"stop at k={k_stop}")
    ax.set_yscale("log")
    ax.set_xlabel(_k_label(unit))
    ax.set_ylabel(r"$\Delta$")
    ax.set_title("Algorithm 1: online stopping")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if accuracy is not None:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.plot(k, np.asarray(accuracy), "o-", ms=3, color="C1", label="test accuracy (data so far)")
        if full_accuracy is not None:
            ax2.axhline(full_accuracy, color="k", ls=":", label=f"all data: {full_accuracy:.3f}")
        if k_stop is not None:
            ax2.axvline(k_stop, color="C2", ls="--")
        ax2.set_xlabel(_k_label(unit))
        ax2.set_ylabel("test accuracy")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    return fig
