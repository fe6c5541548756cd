"""Figures of the sufficient-sample-size forecast and of the split of Delta_k (matplotlib, no pyplot state)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_forecast_curves", "plot_forecast_vs_measured", "plot_delta_split", "plot_online_forecast", "plot_dataset_size"]


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
            err = [np.maximum(k - lo, 0.0)[ok], np.maximum(hi - k, 0.0)[ok]]  # a point forecast outside its bootstrap interval: no bar on that side
            ax.errorbar(np.asarray(xs)[ok], k[ok], yerr=err, fmt="o", ms=4, capsize=3, color=f"C{i}", label=lab)
        meas = [next((r["measured"] for r in sub if r["tol"] == t), None) for t in tols]
        xm = [i for i, m in enumerate(meas) if m is not None]
        ax.plot(xm, [meas[i] for i in xm], "k_", ms=22, mew=2, label="measured (Definition 4)")
        ax.set_xticks(range(len(tols)), [f"{t:g}" for t in tols], rotation=45, fontsize=7)
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


def plot_dataset_size(forecast, curves: Mapping[int, list], *, big: dict | None = None, measured: Mapping | None = None,
                      nstar_measured: Mapping | None = None, title: str = "How much data?") -> Figure:
    """Three panels of :func:`jaxland.sample_size.dataset_size.forecast_dataset_size`'s answer.

    Left: the pilots' ``Delta_k`` (``curves[N]``: dicts with ``k``, ``delta``,
    one per seed), optionally the largest set's curve (``big``: ``k``,
    ``delta``, ``n``), the trend forecast for ``forecast.n_target`` and the
    tolerances. Middle: the pilots' levels ``log C`` against N, the fitted
    line and its extrapolation (the largest set's own level over the fitted
    k, against the shared shape, marked when ``big`` is given). Right: N* with its interval per tolerance (and the
    trend N*); ``measured[tol]``: K measured on the largest set, drawn as
    ``K x samples_per_k``; ``nstar_measured[tol] = (lower, upper)``: a bracket of N*.
    """
    import matplotlib

    d = forecast.diagnostics
    spk = forecast.samples_per_k
    fig = Figure(figsize=(16, 4.8))
    ax1, ax2, ax3 = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    sizes = sorted(curves)
    cmap = matplotlib.colormaps["viridis"]
    for i, n in enumerate(sizes):
        col = cmap(i / max(1, len(sizes) - 1) * 0.9)
        for j, c in enumerate(curves[n]):
            dd = np.asarray(c["delta"], float)
            ax1.plot(np.asarray(c["k"], float), np.where(dd > 0, dd, np.nan), color=col, lw=0.7, alpha=0.7, label=f"pilot N={n}" if j == 0 else None)
    tols = np.atleast_1d(forecast.tol)
    kmax = max(float(np.max(c["k"])) for cs in curves.values() for c in cs)
    if big is not None:
        bd = np.asarray(big["delta"], float)
        ax1.plot(np.asarray(big["k"], float), np.where(bd > 0, bd, np.nan), color="k", lw=0.7, alpha=0.8, label=f"measured, N={big['n']}")
        kmax = max(kmax, float(np.max(big["k"])))
    if forecast.n_target is not None:
        kk = np.geomspace(d["k_fit"][0], kmax, 100)
        lc = forecast.log_c + forecast.beta * np.log(forecast.n_target / forecast.n_ref)
        ax1.plot(kk, np.exp(lc - forecast.alpha * np.log(kk)), "r--", lw=1.2, label=f"forecast trend, N={forecast.n_target}")
    for t in tols:
        ax1.axhline(t, color="grey", ls=":", lw=0.8)
    ax1.set(xscale="log", yscale="log", xlabel=_k_label(forecast.unit), ylabel=r"$\Delta_k^{(N)}$", title="pilot curves (dotted: tolerances)")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=6)

    n_c = np.asarray(d["pilot_sizes"], float)
    lev = np.asarray(d["levels"], float)
    on = np.isin(n_c, d.get("level_sizes", n_c))
    err = np.asarray(d["level_stderr"])
    ax2.errorbar(n_c[on], lev[on], yerr=err[on], fmt="o", ms=4, color="C0", label="pilot levels (one per training), fitted")
    if (~on).any():
        ax2.errorbar(n_c[~on], lev[~on], yerr=err[~on], fmt="o", ms=4, mfc="none", color="C0", label="pilot levels not in the fit (size_tail)")
    n_hi = max(n_c.max(), forecast.n_target or 0, *(v for v in np.atleast_1d(forecast.n_star) if np.isfinite(v)))
    nn = np.geomspace(n_c.min(), n_hi, 100)
    a0 = forecast.log_c - d["shape_b0"]
    line = a0 + forecast.beta * np.log(nn / forecast.n_ref)
    band = np.hypot(forecast.omega, forecast.beta_stderr * np.log(nn / forecast.n_ref))
    ax2.plot(nn, line, "r-", lw=1.2, label=rf"fit: $\beta$ = {forecast.beta:.2f} $\pm$ {forecast.beta_stderr:.2f}")
    ax2.fill_between(nn, line - 1.645 * band, line + 1.645 * band, color="r", alpha=0.12, label="90% band for one new training")
    if big is not None:
        k_s, phi = np.asarray(d["shape_k"], float), np.asarray(d["shape"], float)
        kb, bd = np.asarray(big["k"], float), np.asarray(big["delta"], float)
        common = np.isin(kb, k_s) & (bd > 0) & (kb >= d["k_fit"][0]) & (kb <= d["k_fit"][1])  # where the shape's power law is fitted
        if common.any():
            own = float(np.mean(np.log(bd[common]) - phi[np.searchsorted(k_s, kb[common])]))
            ax2.plot([big["n"]], [own], "k*", ms=12, label=f"measured level, N={big['n']}")
    ax2.set(xscale="log", xlabel="dataset size N (samples)", ylabel=r"level $\log C(N)$ (relative)", title="how the landscape changes with N")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=6)

    x = np.arange(tols.size)
    ns, lo, hi = (np.atleast_1d(v).astype(float) for v in (forecast.n_star, forecast.lower, forecast.upper))
    top = 10 * np.nanmax(np.where(np.isfinite(ns), ns, np.nan)) if np.isfinite(ns).any() else 1e9
    ok = np.isfinite(ns)
    hi_c = np.minimum(np.where(np.isfinite(hi), hi, top), top)
    ax3.errorbar(x[ok], ns[ok], yerr=[(ns - lo)[ok], (hi_c - ns)[ok]], fmt="o", capsize=3, color="C3", label=f"N* ({forecast.level:.0%} interval)")
    ax3.plot(x, np.atleast_1d(forecast.n_star_trend), "x", color="C1", label="N* of the trend alone")
    if measured:
        km = [measured.get(t) for t in tols]
        xm = [i for i, v in enumerate(km) if v is not None]
        ax3.plot(xm, [km[i] * spk for i in xm], "k_", ms=16, mew=2, label=f"K x {spk} measured at N={forecast.n_target}")
    if nstar_measured:
        for i, t in enumerate(tols):
            if t in nstar_measured and nstar_measured[t][1] is not None:
                lo_m, hi_m = nstar_measured[t]
                ax3.plot([i, i], [lo_m or hi_m / 2, hi_m], color="k", lw=6, alpha=0.25, label="N* bracket measured" if i == 0 else None)
    if forecast.n_target is not None:
        ax3.axhline(forecast.n_target, color="grey", ls="--", lw=0.8)
    ax3.set_xticks(x, [f"{t:g}" for t in tols], rotation=45, fontsize=7)
    ax3.set(yscale="log", xlabel="tolerance", ylabel="samples", title="the answer: dataset size N*")
    ax3.grid(alpha=0.3, which="both")
    ax3.legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
