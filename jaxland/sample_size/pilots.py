"""Pilot curves for :func:`jaxland.sample_size.dataset_size.forecast_dataset_size`: reading them, their grid, their diagnostics, their cost.

A pilot is a network trained to its own minimum on the first N samples
(nested subsets), and its ``Delta_k`` curve for k up to N. Several trainings
(seeds) of one N are several pilots of that size.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..validate import check_real, positive_int
from .joint_fit import fit_level_line, paule_mandel

__all__ = ["PilotCost", "pilot_list", "tolerances", "curve_grid", "size_diagnostics", "warnings_for", "pilot_cost"]


class PilotCost(NamedTuple):
    """Compute in sample-gradients (one forward and backward pass of one sample); ``target``, ``ratio`` per tolerance.

    ``training`` (``epochs x N``), ``curvature`` (``2 x matvecs x N``: a
    Hessian-vector product costs about two gradients), ``monte_carlo``
    (``draws x N / 3``: a forward pass is about a third of a gradient): what
    the pilots took, summed over pilots (``pilots`` is the total);
    ``target``: training one network on N* for the same epochs;
    ``ratio = pilots / target`` (above 1: the pilots cost more than the
    network they size).
    """

    pilots: float
    training: float
    curvature: float
    monte_carlo: float
    target: np.ndarray | float
    ratio: np.ndarray | float


def _one_curve(n, curve, samples_per_k, num_draws):
    """(k, delta, stderr, samples per k, draws) of one pilot curve: a DeltaResult or a (k, delta, stderr) triple."""
    if hasattr(curve, "delta") and hasattr(curve, "stderr") and hasattr(curve, "info"):
        k, d, s = curve.k, curve.delta, curve.stderr
        spk, draws = curve.info.samples_per_k or 1, curve.info.num_draws
    elif isinstance(curve, (tuple, list)) and len(curve) == 3 and not hasattr(curve, "_fields"):
        (k, d, s), spk, draws = curve, samples_per_k or 1, num_draws
    else:
        raise ConfigError(f"pilot N={n}: a curve must be a DeltaResult or a (k, delta, stderr) triple, got {type(curve).__name__}")
    try:
        k, d, s = (np.asarray(v, dtype=float) for v in (k, d, s))
    except (TypeError, ValueError):
        raise ConfigError(f"pilot N={n}: k, delta and stderr must be arrays of numbers") from None
    if d.ndim != 1 or d.size == 0 or k.shape != d.shape or s.shape != d.shape:
        raise ConfigError(f"pilot N={n}: k, delta and stderr must be 1-D arrays of one length, got shapes {k.shape}, {d.shape}, {s.shape}")
    bad = ~(np.isfinite(d) & np.isfinite(s) & np.isfinite(k))
    if bad.any():
        raise ConfigError(f"pilot N={n}: {int(bad.sum())} non-finite k, Delta_k or standard error(s) (first at index {int(np.argmax(bad))}); "
                          "no power law can be fitted through NaN: recompute the curve or drop those k")
    if np.any(k <= 0) or np.any(np.diff(k) <= 0):
        raise ConfigError(f"pilot N={n}: k must be positive and increasing (the shape is a power law in log k)")
    if np.any(s < 0):
        raise ConfigError(f"pilot N={n}: standard errors must be >= 0")
    return k, d, s, int(spk), draws


def pilot_list(pilots, samples_per_k, num_draws):
    """[(N, k, delta, stderr, draws)] and the common samples per k, from a mapping or a sequence of (N, curve) pairs."""
    if isinstance(pilots, dict):
        pairs = [(n, c) for n, cs in pilots.items() for c in (cs if isinstance(cs, list) else [cs])]
    else:
        try:
            pairs = [tuple(p) for p in pilots]
        except TypeError:
            raise ConfigError("pilots must be a mapping {N: curve or [curves]} or a sequence of (N, curve) pairs") from None
        if any(len(p) != 2 for p in pairs):
            raise ConfigError("pilots must be a mapping {N: curve or [curves]} or a sequence of (N, curve) pairs")
    out, units = [], set()
    for n, c in pairs:
        n = positive_int("pilot size N", n, minimum=2)
        k, d, s, spk, draws = _one_curve(n, c, samples_per_k, num_draws)
        if samples_per_k is not None and spk != samples_per_k:
            raise ConfigError(f"inconsistent units: pilot N={n}'s curve counts k in units of {spk} sample(s) but samples_per_k={samples_per_k}; "
                              "pass the samples_per_k the curves were made with")
        units.add(spk)
        if k.max() * spk > n:
            raise ConfigError(f"inconsistent units: pilot N={n}'s curve reaches k={k.max():g} x {spk} sample(s) per k = {k.max() * spk:g} "
                              f"samples, more than the pilot has; pass the pilot's own size and samples_per_k")
        if (k.max() + 1) * spk < n / 2:
            raise ConfigError(f"inconsistent units: pilot N={n}'s curve ends at k={k.max():g} ({(k.max() + 1) * spk:g} samples at "
                              f"{spk} per k), less than half the pilot; if k counts batches pass samples_per_k=, else compute "
                              "Delta_k over the whole pilot set")
        out.append((n, k, d, s, draws))
    if len(units) > 1:
        raise ConfigError(f"inconsistent units: the pilot curves count k in different units ({sorted(units)} samples per k); "
                          "recompute them with one samples_per_k")
    sizes = sorted({p[0] for p in out})
    if len(sizes) < 3:
        raise ConfigError(f"too few pilot sizes: got N = {sizes}; the change of the landscape with N needs pilots at >= 3 different "
                          "sizes (nested subsets, each trained to its own w*)")
    return out, units.pop()


def tolerances(tol):
    """Positive finite tolerance(s) as a 1-D array."""
    t = np.atleast_1d(np.asarray(tol, dtype=object))
    if t.ndim != 1 or t.size == 0:
        raise ConfigError(f"tol must be a positive number or a sequence of them, got {tol!r}")
    return np.array([check_real("tol", v) for v in t])


def curve_grid(curves):
    """The curves on the union of their k: (k (K,), y = log Delta (C, K), v = var(y) (C, K), mask (C, K), dropped).

    ``var(y) = (s / Delta)^2`` (delta method); values <= 0 have no logarithm
    and are dropped (their count per curve is returned).
    """
    k_all = np.unique(np.concatenate([c[1] for c in curves]))
    y, v = np.zeros((len(curves), k_all.size)), np.ones((len(curves), k_all.size))
    mask = np.zeros((len(curves), k_all.size), bool)
    dropped = []
    for i, (n, k, d, s, _) in enumerate(curves):
        pos = d > 0
        if pos.sum() < 0.9 * d.size:
            raise ConfigError(f"pilot N={n}: {int((~pos).sum())} of {d.size} values of Delta_k are <= 0; the fit is on log Delta_k: "
                              "use plain Monte Carlo estimates (squares, so positive) or more draws")
        j = np.searchsorted(k_all, k[pos])
        y[i, j], v[i, j], mask[i, j] = np.log(d[pos]), np.maximum((s[pos] / d[pos]) ** 2, 1e-8), True
        dropped.append(int((~pos).sum()))
    return k_all, y, v, mask, dropped


def size_diagnostics(n_c, k, y, mask, a_c, tail):
    """The exponent fitted to each size's own tail (``y - a_c`` against log k) and its trend in log N: (sizes, alpha, se, slope, slope_se)."""
    sizes = np.unique(n_c)
    al, se = [], []
    for n in sizes:
        rows = n_c == n
        kmax = k[mask[rows].any(0)].max()
        sel = mask[rows] & (k >= tail * kmax)[None, :]
        yy = (y[rows] - a_c[rows, None])[sel]
        lk = np.broadcast_to(np.log(k), sel.shape)[sel]
        if yy.size < 3 or np.ptp(lk) == 0:
            al.append(np.nan)
            se.append(np.inf)
            continue
        x = np.stack([np.ones_like(lk), -lk], 1)
        coef, res, *_ = np.linalg.lstsq(x, yy, rcond=None)
        r = yy - x @ coef
        cov = np.linalg.inv(x.T @ x) * (r @ r) / max(yy.size - 2, 1)
        al.append(float(coef[1]))
        se.append(float(np.sqrt(cov[1, 1])))
    al, se = np.array(al), np.array(se)
    ok = np.isfinite(al)
    if ok.sum() < 3:
        return sizes, al, se, float("nan"), float("nan")
    xs = np.log(sizes[ok] / np.exp(np.mean(np.log(sizes[ok]))))
    _, slope, cov, _ = fit_level_line(al[ok], se[ok] ** 2, xs, float(paule_mandel(al[ok], se[ok] ** 2, xs)))
    return sizes, al, se, float(slope), float(np.sqrt(cov[1, 1]))


def warnings_for(n_c, level_resid, slope, slope_se, beta, alpha, n_star, n_max) -> list:
    """Where the model's assumptions show signs of failing (:mod:`jaxland.sample_size.dataset_size`)."""
    warns = []
    far = [f"N={int(n)} ({r:+.1f})" for n, r in zip(n_c, level_resid) if abs(r) > 3]
    if far:
        warns.append("pilot levels off the power law in N by more than 3 standard deviations (a pilot too small to share the "
                     "larger sets' minimum?): " + ", ".join(far))
    if np.isfinite(slope) and abs(slope) > 3 * slope_se:
        warns.append(f"the exponent alpha drifts with N (d alpha / d log N = {slope:.2f} +- {slope_se:.2f}): Delta_k^(N) is not "
                     "C(N) k^-alpha; forecasts beyond the pilots are biased")
    if not beta < alpha or np.any(~np.isfinite(np.asarray(n_star, float))):
        warns.append(f"beta = {beta:.2f} against alpha = {alpha:.2f}: where the landscape sharpens with N as fast as more data "
                     "settles it, N* is infinite")
    extrap = np.asarray(n_star, float) / n_max
    if np.any(np.isfinite(extrap) & (extrap > 10)):
        warns.append(f"N* is up to {np.max(extrap[np.isfinite(extrap)]):.0f}x the largest pilot: a long extrapolation in N")
    return warns


def pilot_cost(curves, epochs, num_matvecs, n_star):
    """:class:`PilotCost` of the pilots and of training one network on N* (per tolerance)."""
    n_c = np.array([c[0] for c in curves], float)
    mv = np.broadcast_to(np.asarray(num_matvecs, float), n_c.shape) if np.ndim(num_matvecs) == 0 else np.asarray(num_matvecs, float)
    if mv.shape != n_c.shape or np.any(~np.isfinite(mv) | (mv < 0)):
        raise ConfigError(f"num_matvecs must be a number >= 0 or one per pilot curve ({n_c.size}), got {num_matvecs!r}")
    draws = [c[4] for c in curves]
    if any(t is None for t in draws):
        raise ConfigError("the cost model needs the Monte Carlo draws of every pilot: pass num_draws= for (k, delta, stderr) curves")
    train = float(epochs * n_c.sum())
    curv = float(2.0 * (mv * n_c).sum())
    mc = float((np.asarray(draws, float) * n_c).sum() / 3.0)
    pilots = train + curv + mc
    target = epochs * np.asarray(n_star, float)
    with np.errstate(divide="ignore"):
        return PilotCost(pilots, train, curv, mc, target, pilots / target)
