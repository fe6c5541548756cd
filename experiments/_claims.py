"""Claim statistics shared by the experiments: is ``Delta_k k^2`` bounded, log-log slopes."""

from __future__ import annotations

import numpy as np

from ._runner import Claim



def k_axis(n_units: int) -> np.ndarray:
    """k = 1 .. n_units - 1 (Delta_k needs L_{k+1})."""
    return np.arange(1, n_units)


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
    return ratio, loglog_slope(k[n // 3 :], np.maximum(d[n // 3 :], 1e-300))


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


def loglog_slope(k, v) -> float:
    k, v = np.asarray(k, np.float64), np.asarray(v, np.float64)
    ok = (k > 0) & (v > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(k[ok]), np.log(v[ok]), 1)[0])
