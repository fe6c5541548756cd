"""When has the curve settled? Smoothing of Delta_k curves and the sufficient sample size.

:func:`sufficient_k` is the paper's Definition 4 on a measured curve;
:func:`moving_mean` (the paper's smoothing) and :func:`ema` (the companion
paper's) are the one implementation of each smoother that plots, experiments
and the stopping rule share.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConfigError
from ..validate import check_real

__all__ = ["moving_mean", "ema", "sufficient_k"]


def moving_mean(a, window: int, *, clip: bool = False) -> np.ndarray:
    """Centred moving mean with edge replication (the paper's smoothing, window 11); same length as ``a``.

    ``window`` must be an odd positive integer. A window longer than the curve
    raises, unless ``clip=True``, which uses the longest odd window that fits
    (for plotting short curves).
    """
    try:
        a = np.asarray(a, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"the curve to smooth must be numbers, got {type(a).__name__}") from None
    if a.ndim != 1:
        raise ConfigError(f"the curve to smooth must be a 1-D array, got shape {a.shape}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer, float)) or int(window) != window or window < 1 or window % 2 == 0:
        raise ConfigError(f"smoothing window must be an odd positive integer, got {window!r}")
    n = a.shape[0]
    if window > n:
        if not clip:
            raise ConfigError(f"smoothing window {window} is longer than the curve ({n} points); pass clip=True to shrink it")
        window = max(1, n if n % 2 else n - 1)
    if window == 1:
        return a.copy()
    h = window // 2
    padded = np.concatenate([np.full(h, a[0]), a, np.full(h, a[-1])])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def ema(x, decay: float = 0.99, axis: int = -1) -> np.ndarray:
    """Exponential moving average ``m_t = decay m_{t-1} + (1 - decay) x_t``, bias-corrected.

    The companion paper smooths ``|L_{k+1} - L_k|`` with decay 0.99; dividing
    by ``1 - decay^t`` keeps the first points on the scale of the data instead
    of pulling them toward zero.
    """
    if not 0 <= float(decay) < 1:
        raise ConfigError(f"decay must be in [0, 1), got {decay!r}")
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.empty_like(x)
    m = np.zeros(x.shape[:-1])
    for t in range(x.shape[-1]):
        m = decay * m + (1.0 - decay) * x[..., t]
        out[..., t] = m / (1.0 - decay ** (t + 1))
    return np.moveaxis(out, -1, axis)


def sufficient_k(delta, tol: float, *, k=None, smooth: int | None = None):
    """Definition 4: ``K = min{k : Delta_k' < tol for every k' >= k}``, or None if the curve never settles.

    ``delta``: a curve (values at ``k``, default 1..len) or a result with
    ``.delta`` and ``.k`` (:class:`~jaxland.DeltaResult`). ``smooth``: odd window
    of :func:`moving_mean` applied first (the paper used 11). A curve with NaN
    or inf raises: the answer would be meaningless. When the last value is not
    below ``tol`` a ``RuntimeWarning`` says so and None is returned.
    """
    if hasattr(delta, "delta") and hasattr(delta, "k"):
        k = delta.k if k is None else k
        delta = delta.delta
    try:
        curve = np.asarray(delta, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"delta must be a 1-D curve of numbers (or a DeltaResult), got {type(delta).__name__}") from None
    if curve.ndim != 1 or curve.size == 0:
        raise ConfigError(f"delta must be a non-empty 1-D curve, got shape {curve.shape}")
    if not np.all(np.isfinite(curve)):
        bad = np.nonzero(~np.isfinite(curve))[0]
        raise ConfigError(f"delta has {bad.size} non-finite value(s) (first at index {bad[0]}); K is undefined on such a curve")
    tol_f = check_real("tol", tol)
    ks = np.arange(1, curve.size + 1) if k is None else np.asarray(k)
    if ks.shape != curve.shape:
        raise ConfigError(f"k has shape {ks.shape} but delta has {curve.shape}")
    if smooth is not None:
        curve = moving_mean(curve, smooth)
    below = curve < tol_f
    if not below[-1]:
        warnings.warn(
            f"Delta never settles below tol={tol_f:g}: the last value (k={ks[-1]}) is {curve[-1]:.4g}; "
            "more data (or a larger tol) is needed",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    above = np.nonzero(~below)[0]
    first = 0 if above.size == 0 else above[-1] + 1
    return int(ks[first])
