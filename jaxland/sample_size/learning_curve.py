"""The baseline a user would otherwise pick: extrapolate the learning curve of test loss in the dataset size.

The pilots' test losses ``L(n)`` (one per trained network, several seeds per
size allowed) are fitted by ``L(n) = c + A n^-b`` (least squares; for a
given b the fit is linear in (c, A), so b is found by a grid and golden
sections), as Keras-style learning-curve extrapolation does. The answer for a
tolerance on the squared change of a loss per added unit of k (the
quantity Definition 4 bounds for ``Delta_k``): the smallest n at which one
more unit (``samples_per_k`` samples) changes the fitted test loss by less
than ``sqrt(tol)``,

    A (n^-b - (n + s)^-b) < sqrt(tol),

found by bisection in log n. With ``relative_to=L`` the change is relative,
the same fraction of the test loss that ``sqrt(tol)`` is of ``L`` (the loss
level the tolerance refers to, e.g. the mean loss at the perturbed points
``w* + P theta`` where ``Delta_k`` is measured):
``(L(n) - L(n + s)) / L(n) < sqrt(tol) / relative_to``. The interval is a
residual bootstrap (residuals resampled with replacement, the curve
refitted). With four or fewer networks ``c`` is fixed at 0 (three parameters
would fit them exactly).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..validate import check_real, check_seed, positive_int

__all__ = ["LearningCurveForecast", "learning_curve_size"]

_GOLD = (math.sqrt(5.0) - 1.0) / 2.0


class LearningCurveForecast(NamedTuple):
    """Learning-curve answer per tolerance: ``n`` (samples) with its ``level`` interval, ``k = n / samples_per_k``.

    ``a``, ``b``, ``c``: the fit ``L(n) = c + a n^-b``; ``rmse``: its
    root-mean-square residual; ``form``: ``"c + a n^-b"`` or ``"a n^-b"``;
    ``relative_to``: the loss level of a relative criterion (None: absolute).
    """

    tol: np.ndarray | float
    n: np.ndarray | float
    lower: np.ndarray | float
    upper: np.ndarray | float
    k: np.ndarray | float
    a: float
    b: float
    c: float
    rmse: float
    form: str
    relative_to: float | None
    level: float
    samples_per_k: int

    @property
    def info(self) -> dict:
        """``level``, ``samples_per_k``, ``form``, ``rmse``, ``relative_to``."""
        return {"level": self.level, "samples_per_k": self.samples_per_k, "form": self.form, "rmse": self.rmse,
                "relative_to": self.relative_to}


def _linear(u, y, with_c):
    """Least-squares (c, A) of ``y ~ c + A u`` over the last axis (c = 0 if not ``with_c``), and the sum of squares."""
    if with_c:
        um, ym = u.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
        amp = ((u - um) * (y - ym)).sum(-1) / np.maximum(((u - um) ** 2).sum(-1), 1e-300)
        c = (ym[..., 0] - amp * um[..., 0])
    else:
        amp = (u * y).sum(-1) / (u * u).sum(-1)
        c = np.zeros_like(amp)
    r = y - c[..., None] - amp[..., None] * u
    return c, amp, (r * r).sum(-1)


def _fit(logn, y, with_c, lo=0.01, hi=3.0, grid=60, iters=40):
    """(c, A, b) minimising the squared error over b (grid, then golden sections), batched over leading axes of y."""
    sse = lambda b: _linear(np.exp(-b[..., None] * logn), y, with_c)[2]  # noqa: E731
    bs = np.linspace(lo, hi, grid)
    vals = np.stack([sse(np.full(y.shape[:-1], v)) for v in bs], -1)
    best = np.argmin(vals, -1)
    step = bs[1] - bs[0]
    x0, x3 = np.maximum(bs[best] - step, 1e-4), bs[best] + step
    x1, x2 = x3 - _GOLD * (x3 - x0), x0 + _GOLD * (x3 - x0)
    f1, f2 = sse(x1), sse(x2)
    for _ in range(iters):
        left = f1 < f2
        x0, x3 = np.where(left, x0, x1), np.where(left, x2, x3)
        x1n, x2n = x3 - _GOLD * (x3 - x0), x0 + _GOLD * (x3 - x0)
        x1, x2 = np.where(left, x1n, x2), np.where(left, x1, x2n)
        fn = sse(np.where(left, x1, x2))
        f1, f2 = np.where(left, fn, f2), np.where(left, f1, fn)
    b = (x0 + x3) / 2
    c, amp, _ = _linear(np.exp(-b[..., None] * logn), y, with_c)
    return c, amp, b


def _settle_n(c, amp, b, step, tols, relative_to):
    """Smallest n where one more step changes ``c + amp n^-b`` by less than ``sqrt(tol)`` (relative: a fraction), (..., ntol)."""
    c, amp, b = np.asarray(c)[..., None], np.asarray(amp)[..., None], np.asarray(b)[..., None]
    target = np.sqrt(tols) / (1.0 if relative_to is None else relative_to)

    def change(n):
        diff = amp * (n ** -b - (n + step) ** -b)
        return diff if relative_to is None else diff / np.maximum(c + amp * n ** -b, 1e-300)

    lo, hi = np.zeros(np.broadcast(amp, target).shape), np.full(np.broadcast(amp, target).shape, math.log(1e15))
    for _ in range(80):
        mid = (lo + hi) / 2
        below = change(np.exp(mid)) < target
        lo, hi = np.where(below, lo, mid), np.where(below, mid, hi)
    n = np.ceil(np.exp(hi))
    return np.where((amp > 0) & (b > 0) & (change(np.exp(hi)) < target), n, np.inf)


def learning_curve_size(n, test_loss, tol, *, samples_per_k: int = 1, relative_to: float | None = None, level: float = 0.9,
                        num_bootstrap: int = 1000, seed: int = 0) -> LearningCurveForecast:
    """The Keras-style answer: where the fitted test-loss curve ``c + a n^-b`` changes by less than ``sqrt(tol)`` per unit of k.

    Args:
      n: dataset size of each trained network (repeats: several seeds).
      test_loss: its loss on held-out data, one per network.
      tol: a tolerance or a sequence of them (on the squared change of the
        loss when ``samples_per_k`` samples are added).
      relative_to: None (absolute change) or the loss level ``tol`` refers to
        (relative change, module docstring).
      level, num_bootstrap, seed: the residual-bootstrap interval.

    Raises :class:`ConfigError` for fewer than 3 sizes, NaN or non-positive values.
    """
    try:
        nn, y = np.asarray(n, float), np.asarray(test_loss, float)
    except (TypeError, ValueError):
        raise ConfigError("n and test_loss must be arrays of numbers") from None
    if nn.ndim != 1 or nn.shape != y.shape:
        raise ConfigError(f"n and test_loss must be 1-D arrays of one length, got shapes {nn.shape} and {y.shape}")
    if not (np.all(np.isfinite(nn) & (nn > 0)) and np.all(np.isfinite(y))):
        raise ConfigError("n must be positive and test_loss finite (drop the networks whose loss is NaN)")
    if np.unique(nn).size < 3:
        raise ConfigError(f"too few dataset sizes for a learning curve: got {sorted(set(nn.tolist()))}, need >= 3")
    tols = np.array([check_real("tol", t) for t in np.atleast_1d(np.asarray(tol, dtype=object))])
    spk = positive_int("samples_per_k", samples_per_k)
    rel = None if relative_to is None else check_real("relative_to", relative_to)
    level = check_real("level", level)
    if not level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    num_bootstrap = positive_int("num_bootstrap", num_bootstrap, minimum=100)
    rng = np.random.default_rng(check_seed(seed))

    with_c = nn.size > 4
    logn = np.log(nn)
    c, amp, b = (float(v) for v in _fit(logn, y, with_c))
    fitted = c + amp * nn**-b
    resid = y - fitted
    n_hat = _settle_n(c, amp, b, spk, tols, rel)
    boot = fitted + rng.choice(resid, (num_bootstrap, nn.size))
    c_b, amp_b, b_b = _fit(logn, boot, with_c)
    n_b = _settle_n(c_b, amp_b, b_b, spk, tols, rel)
    q = (1 - level) / 2
    lower, upper = np.quantile(n_b, q, 0, method="lower"), np.quantile(n_b, 1 - q, 0, method="higher")
    scalar = np.ndim(tol) == 0

    def out(v):
        v = np.asarray(v, float)
        return float(v.reshape(-1)[0]) if scalar else v

    return LearningCurveForecast(
        tol=out(tols), n=out(n_hat), lower=out(lower), upper=out(upper), k=out(n_hat / spk), a=amp, b=b, c=c,
        rmse=float(np.sqrt(np.mean(resid**2))), form="c + a n^-b" if with_c else "a n^-b", relative_to=rel, level=float(level), samples_per_k=spk,
    )
