"""Variance reduction for Monte Carlo ``Delta_k``: control variates, antithetic and quasi-random draws.

Per draw t and k, the plain estimator averages ``f_t,k = (L_{k+1} - L_k)^2`` at
``w* + theta_t @ P``. Three independent devices reduce its variance; any
combination is allowed (:class:`VarianceReduction`):

* **control variate** (``cv``). With the per-k increments at ``w*`` of the
  per-sample Taylor data (:func:`jaxland.subspace_curvature`), ``c_k = L_{k+1}(w*)
  - L_k(w*)``, ``g_k = P (grad L_{k+1} - grad L_k)``, ``A_k = P (H_{k+1} - H_k) P^T``,
  the quadratic model's value ``h_t,k = (c_k + g_k.theta_t + theta_t^T A_k
  theta_t / 2)^2`` has the exactly known mean ``E[h_k]`` =
  :func:`jaxland.theory_delta`'s ``second_order``. The estimate is
  ``mean(f - beta_k (h - E h))``. ``beta_k`` is *cross-fitted*: the units
  (below) are split into two halves by parity, each half is corrected with the
  ``beta_k = cov(f, h) / var(h)`` fitted on the other half, and the two
  halves are pooled. Given the other half, each half's estimate is exactly
  unbiased for every T, which fitting beta on the same draws is not (its
  bias, ``-cov(beta_hat, mean h)``, is O(1/T) and largest exactly where ``f``
  and ``h`` are heavy-tailed); it costs an O(1/T) relative variance. The
  standard error is the residual one: ``SE^2 = sum_halves n_j var_j(F - beta_j
  H) / n^2``. On a loss that is exactly quadratic in the subspace ``f = h``
  and the variance is zero up to rounding.
* **antithetic** pairs ``(theta, -theta)``: the pair mean cancels the part of
  ``f`` odd in theta (the ``g.theta`` cross terms); the unit is the pair.
* **sobol**: ``S = scramblings`` independent Owen-scrambled Sobol' point sets
  of ``T / S`` points (``scipy.stats.qmc.Sobol``), mapped to ``N(0, sigma^2 I)``
  by the inverse normal CDF; the unit is one scrambling's mean, so the
  standard error comes from the spread between scramblings (``S - 1`` degrees
  of freedom) and is honest for any integrand.

Statistics are streamed over *units* (one draw, an antithetic pair, or one
scrambling): per k the count, means and co-moments of (F, H), per half,
merged with Chan's update across chunks, passes, devices and halves
(:func:`jaxland.landscape.moments.chan_merge`). With Sobol' draws beta is fitted on individual draws
(a half holds only S/2 units); otherwise on units.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from .moments import pool_halves, variance
from .theory import SubspaceCurvature, theory_terms
from ..validate import check_sigma, positive_int

__all__ = [
    "DEFAULT_VARIANCE_REDUCTION",
    "VarianceReduction",
    "control_inputs",
    "parse_variance_reduction",
    "draw_units",
    "draw_or_check_units",
    "quadratic_features",
    "curvature_coefficients",
    "control_mean",
    "estimate_from_moments",
]

DEFAULT_VARIANCE_REDUCTION = "none"
"""The default of :func:`jaxland.delta_monte_carlo`: plain Monte Carlo, chosen from a measurement.

``python -m benchmarks.variance`` (benchmarks/results/variance.json): the
reference MLP 784-256-256-10 on 9,984 MNIST images, k in batches of 64, d = 10,
plain T = 1,024 against each method at T = 256, then rerun at the T that the
fixed-draws ratio predicts for the plain error. Draws for equal error, plain
over method, confirmed by the rerun (``T_plain / (T_eq (SE_eq/SE_plain)^2)``,
median over k; antithetic never helped, 0.5-0.86 at fixed draws, so it was
not rerun):

method            H 0.1  H 1   H 5   R 0.1  R 1   R 5
cv                 1.21  0.80  0.63  2.62  1.04  1.02
sobol              1.56  1.46  1.17  3.53  1.38  1.49
cv+antithetic      0.97  0.68  0.55  3.87  <1    <1
cv+sobol           1.55  2.19  1.89  4.03  1.72  1.83

(H: top-10 Hessian eigenvectors; R: filter-normalised random directions.)
Wall time to the plain T = 1,024 error at sigma = 1 on H, timed alternately
(``--interleaved``, curvature pass included): sobol 1.9x and cv+sobol 2.0x
less than plain, cv 0.7x, cv+antithetic 1.0x (load 7-9, about +-30%).
No method comes near the 10x target; the gains are 1-2x with wide spread over
k, and at sigma >= 1 the second-order model at w* (ReLU, cross-entropy)
explains little of f, so the control variate's curvature pass is not repaid.
Sobol' costs nothing per draw but needs T a multiple of 16, refuses
``thetas=``, and its standard error has only 15 degrees of freedom, so the
default stays plain; ask for ``"sobol"`` or ``"cv+sobol"`` explicitly where
1.5x fewer draws matters.
"""

_NAMES = {"cv": "control_variate", "antithetic": "antithetic", "sobol": "sobol"}


class VarianceReduction(NamedTuple):
    """Which variance reductions :func:`jaxland.delta_monte_carlo` applies (any combination).

    ``control_variate``: the exact second-order model as a control variate
    (needs the per-sample curvature pass, one ``jacfwd(jacfwd)`` over the data);
    ``antithetic``: draws in pairs ``(theta, -theta)``; ``sobol``: ``scramblings``
    independent scrambled Sobol' sets (T must be a multiple of ``scramblings``,
    times 2 with antithetic; ``T / scramblings`` a power of two is best).
    """

    control_variate: bool = False
    antithetic: bool = False
    sobol: bool = False
    scramblings: int = 16

    @property
    def name(self) -> str:
        """``"none"``, or the parts joined by ``+`` (e.g. ``"cv+antithetic"``)."""
        parts = [s for s, f in _NAMES.items() if getattr(self, f)]
        return "+".join(parts) if parts else "none"

    def unit_draws(self, num_draws: int) -> int:
        """Draws per independent unit: 1, 2 (a pair), or ``T / scramblings`` (a scrambling)."""
        return num_draws // self.scramblings if self.sobol else (2 if self.antithetic else 1)


def parse_variance_reduction(spec) -> VarianceReduction:
    """None / ``"none"``, a ``+``-joined string of ``cv``, ``antithetic``, ``sobol``, or a :class:`VarianceReduction`."""
    if isinstance(spec, VarianceReduction):
        positive_int("VarianceReduction.scramblings", spec.scramblings, minimum=2)
        return spec
    if spec is None:
        return VarianceReduction()
    if not isinstance(spec, str):
        raise ConfigError(f"variance_reduction must be None, a string like 'cv+antithetic' or a VarianceReduction, got {type(spec).__name__}")
    parts = [p.strip().lower() for p in spec.split("+") if p.strip()]
    if parts == ["none"]:
        return VarianceReduction()
    bad = [p for p in parts if p not in _NAMES]
    if bad or not parts or len(set(parts)) != len(parts):
        raise ConfigError(
            f"variance_reduction={spec!r}: use 'none' or '+'-joined distinct parts from {sorted(_NAMES)} (e.g. 'cv+antithetic')"
        )
    return VarianceReduction(**{_NAMES[p]: True for p in parts})


def _sobol_normals(seed: int, num_points: int, d: int) -> np.ndarray:
    """``num_points`` scrambled Sobol' points in R^d mapped to N(0, I) (float64)."""
    from scipy.stats import qmc
    from scipy.special import ndtri

    m = max(0, int(np.ceil(np.log2(num_points))))
    # a prefix of a power-of-two set is still a randomised QMC set (each point uniform), only less balanced
    u = qmc.Sobol(d, scramble=True, seed=np.random.default_rng(seed)).random_base2(m)[:num_points]
    # scrambled points are 0 with probability 2^-32 per coordinate; keep the inverse CDF finite (|z| < 7.1)
    return ndtri(np.clip(u, 1e-12, 1 - 1e-12))


def draw_units(key: jax.Array, num_draws: int, d: int, sigma: float, vr: VarianceReduction, dtype=jnp.float32) -> jax.Array:
    """Draws grouped into independent units: (U, m, d), every row marginally ``N(0, sigma^2 I_d)``.

    Plain draws are :func:`jaxland.draw_thetas` (U = T, m = 1). Antithetic:
    ``T/2`` Gaussian draws and their negatives (m = 2). Sobol': ``scramblings``
    sets of ``T / scramblings`` points (with antithetic, half as many points and
    their negatives). The same key gives the same draws.
    """
    return _units(key, positive_int("num_draws (T)", num_draws, minimum=2), int(d), check_sigma(sigma), vr, dtype)


def _units(key, t: int, d: int, sigma: float, vr: VarianceReduction, dtype):
    """:func:`draw_units` on checked arguments."""
    pairs = 2 if vr.antithetic else 1
    groups = vr.scramblings if vr.sobol else 1
    if t % (pairs * groups):
        raise ConfigError(
            f"variance_reduction={vr.name!r} needs num_draws divisible by {pairs * groups} "
            f"({'scramblings' if vr.sobol else ''}{' x ' if vr.sobol and vr.antithetic else ''}{'2 for the pairs' if vr.antithetic else ''}), got {t}"
        )
    base_n = t // pairs
    if vr.sobol:
        seeds = np.asarray(jax.random.bits(key, (groups,), jnp.uint32)).astype(np.int64)
        z = np.stack([_sobol_normals(int(s), base_n // groups, d) for s in seeds])  # (S, M, d)
        base = sigma * jnp.asarray(z, dtype)
    else:
        base = (sigma * jax.random.normal(key, (base_n, d), dtype))[:, None, :]  # (U, 1, d)
    return jnp.concatenate([base, -base], axis=1) if vr.antithetic else base


def draw_or_check_units(thetas, num_draws, key, d: int, sigma: float, vr: VarianceReduction, dtype) -> jax.Array:
    """The units of :func:`jaxland.delta_monte_carlo`: :func:`draw_units` from ``key``, or given ``thetas`` (T, d) as T units."""
    if thetas is None:
        if num_draws is None or key is None:
            raise ConfigError("delta_monte_carlo needs num_draws and an explicit key (or thetas)")
        return _units(key, positive_int("num_draws (T)", num_draws, minimum=2), int(d), sigma, vr, dtype)
    if vr.antithetic or vr.sobol:
        raise ConfigError(f"thetas= gives the draws, variance_reduction={vr.name!r} makes its own: "
                          "pass num_draws and key instead, or variance_reduction='cv' or 'none'")
    thetas = jnp.asarray(thetas)
    if thetas.ndim != 2 or thetas.shape[1] != d:
        raise ConfigError(f"thetas must be (T, d={d}), got shape {tuple(thetas.shape)}")
    if num_draws is not None and thetas.shape[0] != num_draws:
        raise ConfigError(f"thetas has {thetas.shape[0]} rows but num_draws={num_draws}")
    positive_int("num_draws (T)", int(thetas.shape[0]), minimum=2)
    return thetas[:, None, :]


def _triu(d: int):
    return np.triu_indices(d)


def quadratic_features(thetas: jax.Array) -> jax.Array:
    """``[1, theta, theta_i theta_j s_ij]`` (i <= j, ``s_ii = 1/2``, else 1) per draw: (T, 1 + d + d(d+1)/2).

    With :func:`curvature_coefficients` ``[c, g, A_ij (i <= j)]`` of a symmetric
    A, ``features @ coefficients = c + g.theta + theta^T A theta / 2``.
    """
    t, d = thetas.shape
    i, j = _triu(d)
    scale = jnp.where(jnp.asarray(i == j), 0.5, 1.0).astype(thetas.dtype)
    quad = thetas[:, i] * thetas[:, j] * scale
    return jnp.concatenate([jnp.ones((t, 1), thetas.dtype), thetas, quad], axis=1)


def curvature_coefficients(curv: SubspaceCurvature) -> jax.Array:
    """Per-sample ``[c_i, g_i, sym(G_i)_ab (a <= b)]``: (N, 1 + d + d(d+1)/2), linear in the sample.

    Prefix increments of these rows (:func:`jaxland.landscape.prefix.prefix_increments`)
    are the ``[c_k, g_k, A_k]`` of the quadratic model of ``L_{k+1} - L_k``.
    """
    c, g, G = (jnp.asarray(a) for a in curv)
    i, j = _triu(g.shape[1])
    sym = 0.5 * (G + jnp.swapaxes(G, -1, -2))
    return jnp.concatenate([c[:, None], g, sym[:, i, j]], axis=1)


def control_mean(curv: SubspaceCurvature, sigma: float, *, samples_per_k=None, perms=None) -> jax.Array:
    """``E[h_k]`` for k = 1..K-1: the exact second-order ``Delta_k`` (:func:`jaxland.theory_delta`).

    With orderings (an (R, N) array of permutations) the control variate is
    the mean of h over orderings, so its mean is the mean of the per-ordering
    ``second_order`` curves.
    """
    if perms is None:
        return theory_terms(*(jnp.asarray(a) for a in curv), sigma, samples_per_k=samples_per_k)[1]
    c, g, G = (jnp.asarray(a) for a in curv)
    perms = np.asarray(perms)
    total = 0.0
    for p in perms:
        total = total + theory_terms(c[p], g[p], G[p], sigma, samples_per_k=samples_per_k)[1]
    return total / perms.shape[0]


def control_inputs(curv, n: int, d: int, sigma: float, samples_per_k=None, perms=None):
    """``(coefficients (N, F), E[h_k] (K-1,))`` for the control variate, after checking ``curv``'s shapes."""
    if not isinstance(curv, SubspaceCurvature):
        raise ConfigError(f"curvature must be the jaxland.SubspaceCurvature of the same model, subspace and data, got {type(curv).__name__}")
    shapes = tuple(tuple(jnp.shape(a)) for a in curv)
    if shapes != ((n,), (n, d), (n, d, d)):
        raise ConfigError(f"curvature has shapes {shapes}, expected {((n,), (n, d), (n, d, d))} for N={n} samples and d={d}: "
                          "compute it with jaxland.subspace_curvature on the same subspace and data")
    return curvature_coefficients(curv), control_mean(curv, sigma, samples_per_k=samples_per_k, perms=perms)


@jax.jit
def _estimate_plain(unit, draw):
    total, mean, com = pool_halves(unit)
    nd, _, comd = pool_halves(draw)
    # per-draw variance of f: what plain Monte Carlo pays per draw
    return mean[..., 0], jnp.sqrt(variance(com[..., 0, 0], total) / total), variance(comd[..., 0, 0], nd)


def estimate_from_moments(unit_stats, draw_stats, control_mean_k=None, *, fit_on_draws: bool = False):
    """``(delta, stderr, effective_draws)`` per k from streamed per-half moments.

    ``unit_stats`` / ``draw_stats``: (count (2,), mean (2, K, V), co-moment
    (2, K, V, V)) over units and over single draws (V = 1: f; V = 2: f and h),
    from :func:`jaxland.landscape.kernels.delta_stream`; ``draw_stats`` None when units
    are single draws. Without ``control_mean_k``: the pooled unit mean and
    ``std / sqrt(U)``. With it (``E[h_k]``): the cross-fitted control-variate
    estimate of the module docstring, beta fitted on draws when
    ``fit_on_draws`` (Sobol') else on units. ``effective_draws = var(f) /
    stderr^2``: the plain draws that would give the same standard error.
    """
    draw = unit_stats if draw_stats is None else draw_stats
    if control_mean_k is None:
        delta, se, var_plain = _estimate_plain(unit_stats, draw)
    else:
        fit = draw if fit_on_draws else unit_stats
        delta, se, var_plain = _estimate_cv(unit_stats, draw, fit, jnp.asarray(control_mean_k))
    var_plain, se2 = np.asarray(var_plain, np.float64), np.asarray(se, np.float64) ** 2
    draws = float(np.sum(np.asarray(draw[0])))
    # rounding of equal values leaves a variance of order (eps * mean)^2: that is no variance
    flat = var_plain <= (64 * np.finfo(np.asarray(delta).dtype).eps * np.abs(np.asarray(delta, np.float64))) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        # a zero standard error: every draw gave the same value (worth the draws made), or the method removed all variance
        eff = np.where(flat, draws, np.where(se2 > 0, var_plain / np.where(se2 > 0, se2, 1.0), np.inf))
    return delta, se, eff


@jax.jit
def _estimate_cv(unit, draw, fit, eh):
    n, mean, com = unit
    nd, _, comd = pool_halves(draw)
    var_plain = variance(comd[..., 0, 0], nd)
    var_h = fit[2][..., 1, 1]
    ok = var_h > 0
    # half j is corrected with the beta fitted on the other half: reversed along the half axis
    beta = jnp.where(ok, fit[2][..., 0, 1] / jnp.where(ok, var_h, 1), 0.0)[::-1]
    est = mean[..., 0] - beta * (mean[..., 1] - eh)
    resid = com[..., 0, 0] - 2 * beta * com[..., 0, 1] + beta * beta * com[..., 1, 1]
    var = variance(resid, n[:, None])
    total = n[0] + n[1]
    delta = (n[0] * est[0] + n[1] * est[1]) / total
    se = jnp.sqrt(n[0] * var[0] + n[1] * var[1]) / total
    return delta, se, var_plain
