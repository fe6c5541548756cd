"""Figures of the sufficient-sample-size forecast and of the split of Delta_k (matplotlib, no pyplot state)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_forecast_curves", "plot_forecast_vs_measured", "plot_delta_split", "plot_online_forecast"]


def _k_label(unit: str) -> str:
    return {"batch": "k (batches of data)", "batches": "k (batches of data)", "sample": "k (samples)", "samples": "k (samples)"}.get(unit, f"k ({unit})")


def plot_forecast_curves(curves: Mapping[str, dict], tols, *, unit: str = "batches", title: str = r"$\Delta_k$ and fitted power laws") -> Figure:
    """Observed ``Delta_k`` (log-log) with each fit ``C k^-alpha`` extended to its forecast, and the tolerances.

    ``curves[label]`` holds ``k``, ``delta``, optionally ``stderr``, and
    ``log_c``, ``alpha`` of the fit (None: no fit drawn).
    """
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    kmax = max(float(np.max(c["k"])) for c in curves.values())
    for i, (label, c) in enumerate(curves.items()):
        col = f"C{i}"
        k, d = np.asarray(c["k"], float), np.asarray(c["delta"], float)
        ax.plot(k, np.where(d > 0, d, np.nan), color=col, lw=1.0, alpha=0.8, label=label)
        if c.get("alpha") is not None:
            kk = np.geomspace(max(1.0, float(c.get("k_fit_lo", k[0]))), 10 * kmax, 200)
            ax.plot(kk, np.exp(c["log_c"] - c["alpha"] * np.log(kk)), color=col, ls="--", lw=1.0)
    for t in np.atleast_1d(tols):
        ax.axhline(t, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_k_label(unit))
    ax.set_ylabel(r"$\Delta_k$")
    ax.set_title(title + " (dashed: fits; dotted: tolerances)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def plot_forecast_vs_measured(rows, *, unit: str = "batches", title: str = "Forecast K against K measured on the largest set") -> Figure:
    """One panel per dataset: forecast K with its interval per pilot size, against tol, and the measured K.

    ``rows``: dicts with ``dataset``, ``label`` (the pilot), ``tol``, ``k``,
    ``lower``, ``upper`` (None: unbounded) and ``measured`` (None where the data never settles).
    """
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = Figure(figsize=(5.5 * len(datasets), 4.5))
    for j, ds in enumerate(datasets):
        ax = fig.add_subplot(1, len(datasets), j + 1)
        sub = [r for r in rows if r["dataset"] == ds]
        labels = list(dict.fromkeys(r["label"] for r in sub))
        tols = sorted({r["tol"] for r in sub}, reverse=True)
        width = 0.8 / max(1, len(labels))
        tops = [r["k"] for r in sub if r["k"] is not None] + [r["measured"] for r in sub if r["measured"] is not None]
        ymax = 30.0 * max(tops) if tops else 1e9  # unbounded or huge upper ends are cut here
        for i, lab in enumerate(labels):
            rr = {r["tol"]: r for r in sub if r["label"] == lab}
            xs = [tols.index(t) + (i - (len(labels) - 1) / 2) * width for t in rr]
            k = np.array([np.inf if r["k"] is None else r["k"] for r in rr.values()], float)
            lo = np.array([np.inf if r["lower"] is None else r["lower"] for r in rr.values()], float)
            hi = np.array([ymax if r["upper"] is None else min(r["upper"], ymax) for r in rr.values()], float)  # None: unbounded
            ok = np.isfinite(k)
            ax.errorbar(np.asarray(xs)[ok], k[ok], yerr=[(k - lo)[ok], (hi - k)[ok]], fmt="o", ms=4, capsize=3, color=f"C{i}", label=lab)
        meas = [next((r["measured"] for r in sub if r["tol"] == t), None) for t in tols]
        xm = [i for i, m in enumerate(meas) if m is not None]
        ax.plot(xm, [meas[i] for i in xm], "k_", ms=22, mew=2, label="measured (Definition 4)")
        ax.set_xticks(range(len(tols)), [f"{t:g}" for t in tols])
        ax.set_yscale("log")
        ax.set_ylim(top=ymax)
        ax.set_xlabel("tolerance")
        ax.set_ylabel(f"K ({unit})")
        ax.set_title(ds)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


def plot_delta_split(k, splits: Mapping[str, tuple], *, unit: str = "batches", title: str = r"$\Delta_k$ = theta-free term + rest") -> Figure:
    """Left: ``Delta_k`` per setting and the theta-free ``(L_{k+1}(w*) - L_k(w*))^2`` (dotted, log y).

    Right: the theta-free share ``sum_k c_k^2 / sum_k Delta_k`` per setting.
    ``splits[label] = (delta, theta_free)``.
    """
    import matplotlib

    k = np.asarray(k, float)
    cmap = matplotlib.colormaps["tab20"]
    fig = Figure(figsize=(12, 4.6))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    labels, shares = [], []
    for i, (label, (delta, tf)) in enumerate(splits.items()):
        delta, tf = np.asarray(delta, float), np.asarray(tf, float)
        ax1.plot(k, delta, color=cmap(i % 20), lw=1.0, label=label)
        labels.append(label)
        shares.append(tf.sum() / delta.sum())
    ax1.plot(k, np.asarray(next(iter(splits.values()))[1], float), color="k", ls=":", lw=1.4, label=r"theta-free $(L_{k+1}(w^*)-L_k(w^*))^2$")
    ax1.set_yscale("log")
    ax1.set_ylabel(r"$\Delta_k$")
    ax1.set_xlabel(_k_label(unit))
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=6, ncol=2)
    y = np.arange(len(labels))
    ax2.barh(y, shares, color=[cmap(i % 20) for i in range(len(labels))])
    ax2.set_yticks(y, labels, fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlim(0, 1)
    ax2.set_xlabel(r"theta-free share of $\Delta_k$ (sum over k)")
    ax2.grid(alpha=0.3, axis="x")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_online_forecast(k, delta, tol: float, k_stop, forecast=None, *, unit: str = "batches") -> Figure:
    """Algorithm 1's estimated Delta at each data size, its stop, and the forecast K from its first steps.

    ``forecast``: None or a dict with ``k``, ``lower``, ``upper`` (None:
    unbounded) of Definition 4, ``log_c``, ``alpha``, ``k_used`` (the largest
    size the forecast saw) and optionally ``k_trend`` (where the fit crosses tol).
    """
    k = np.asarray(k, float)
    fig = Figure(figsize=(7, 4.4))
    ax = fig.add_subplot()
    ax.plot(k, np.asarray(delta, float), "o-", ms=3, label=r"estimated $\Delta$ (Algorithm 1)")
    ax.axhline(tol, color="C3", ls=":", label=f"tolerance {tol:g}")
    if k_stop is not None:
        ax.axvline(k_stop, color="C2", ls="--", label=f"stop at k={k_stop}")
    if forecast is not None:
        upper = np.inf if forecast["upper"] is None else float(forecast["upper"])  # None: unbounded
        kk = np.linspace(1.0, max(k[-1], min(upper, 3 * k[-1])), 200)
        ax.plot(kk, np.exp(forecast["log_c"] - forecast["alpha"] * np.log(kk)), color="C1", ls="--", lw=1,
                label=f"fit of the first {forecast['k_used']:g} {unit}")
        if forecast.get("k_trend") is not None:
            ax.axvline(forecast["k_trend"], color="C1", ls=":", lw=1, label=f"fit crosses tol at k={forecast['k_trend']}")
        ax.axvspan(forecast["lower"], min(upper, kk[-1]), color="C1", alpha=0.15,
                   label=f"forecast K = {forecast['k']} [{forecast['lower']}, {'inf' if forecast['upper'] is None else forecast['upper']}]")
    _log_delta_axes(ax, unit, "Algorithm 1: stop against the forecast from its first steps")
    return fig


def _log_delta_axes(ax, unit: str, title: str) -> None:
    """Log-scale Delta axis against k, grid and a small legend."""
    ax.set(yscale="log", xlabel=_k_label(unit), ylabel=r"$\Delta$", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
