"""How much data? The dataset size N* at which a network's own loss landscape has settled.

A pilot set of N samples, trained to its own minimum ``w*_N``, gives a curve
``Delta_k^(N)`` for k up to N (Definition 4's quantity, REFERENCE.md). A
forecast of K from one pilot (:func:`jaxland.forecast_sufficient_k`) assumes
the landscape does not change with N; it does (a small set's minimum is
sharper), so one pilot asks for too much data. Here pilots at several sizes
(nested subsets, each trained to its own w*, several seeds allowed) model
the change:

    Delta_k^(N) = C(N) h(k),   log C(N_c) = a_0 + beta log(N_c / N_ref) + eta_c,   h(k) ~ k^-alpha in its tail,

a shape ``h`` shared by every pilot (the same samples enter at every k), a
level that follows a power law in N, and ``eta_c ~ N(0, omega^2)``, the
spread between retrainings. The fits are :mod:`jaxland.sample_size.joint_fit`:
levels and shape by weighted least squares in logs, the levels against
log N, and ``log h(k) = b_0 - alpha log k`` over the last ``1 - tail`` of the
pilots' k.

Answers. ``K(N)``: Definition 4 on the curve of a network trained on N
samples. Inside the k the pilots reach, that curve is the shared shape at
the network's level, ``log Delta_k = a(N) + phi_k``, with its observed
fluctuations (the same samples enter at k) and Gaussian noise of the size
the networks do not share (``tau`` and the Monte Carlo error); beyond, it
follows the trend ``exp(a_0 + beta log(N / N_ref) + b_0) k^-alpha`` and
scatters around it like the pilots' curves do around theirs (their residual
ratios resampled along k, as :mod:`jaxland.sample_size.scatter`).
``K_trend(N)`` is where the trend alone crosses tol.
``N* = min{N : K(N) <= N / samples_per_k}``: the smallest N whose own
network's landscape is settled (``Delta_k < tol`` for every ``k >= K``)
within its own data; the trend version has the closed form
``log N* = ((a_0 + b_0 - beta log N_ref - log tol) / alpha + log s) / (1 - beta / alpha)``
(``s`` samples per unit of k), finite only where ``beta < alpha``. With
``n_target``: the K that will be measured on a network trained on
``n_target`` samples, whose curve ends at ``k = n_target / s - 1``
(conditioned on it settling there, which happens with probability ``p_settled``).

Interval. A parametric bootstrap: per replicate, ``omega_b^2 = omega^2 nu / chi^2_nu``
(``nu = C - 2``: the spread between retrainings is itself estimated from C
levels), new levels ``a_0 + beta x_c + eta_c + sqrt(v_c) z`` (``eta_c ~ N(0, omega_b^2)``,
``v_c`` the level's error from the Monte Carlo errors and scatter) refitted
against log N, a new shape tail ``b_0 - alpha log k`` plus its errors and
scatter refitted, and a new network ``eta* ~ N(0, omega_b^2)`` at the size
asked for. So the interval carries the Monte Carlo error, the fit errors and
the spread between retrainings; the ``level`` quantiles of the mixture over
replicates are the interval, its median the forecast.

Why it should hold, and where it cannot. The first k samples are the same
for every pilot, so ``Delta_k^(N)`` at one k changes with N only through
``w*_N`` and its curvature, which move smoothly once the networks share a
basin: a level that is a power law in N is a first-order description over
a range of sizes, and its error grows with the extrapolation
(``diagnostics["extrapolation"]``). It cannot hold for pilots too small to
be in the larger sets' basin (their levels sit off the line:
``diagnostics["level_residuals"]``, warned beyond 3), for a shape that is
not a power law in k or whose exponent drifts with N (fitted per size:
``diagnostics["alpha_trend"]``, warned beyond 3 standard errors), for a
level that changes its trend beyond the pilots (nothing inside the pilots
can show that; pilots trained for a fixed number of epochs take fewer
optimiser steps than a network on more data, and on MNIST and Fashion-MNIST
part of the level's fall at 20,000-60,000 images is that longer training:
``benchmarks/forecast_training_length.py``), or where ``beta >= alpha`` (the landscape sharpens as fast as
more data settles it: N* is infinite).

Cost (:class:`PilotCost`), in sample-gradients (one forward and backward
pass of one sample): pilot training ``epochs x N``, Hessian eigenpairs
``2 x matvecs x N`` (a Hessian-vector product costs about two gradients),
Monte Carlo ``draws x N / 3`` (a forward pass is about a third of a
gradient), against training one network on N* for the same epochs.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from ..errors import ConfigError
from ..validate import check_real, check_seed, positive_int
from .fit import power_law_k
from .joint_fit import fit_level_line, fit_profile, fit_tail_line, paule_mandel
from .pilots import PilotCost, curve_grid, pilot_list, pilot_cost, size_diagnostics, tolerances, warnings_for
from .scatter import cdf_quantiles, log_p_below_until
from .size_result import DatasetSizeForecast

__all__ = ["DatasetSizeForecast", "PilotCost", "forecast_dataset_size"]

_N_CAP = 1e15  # samples: beyond this an answer is reported as inf
_MAX_RATIOS = 128  # quantiles of the pooled residual ratios kept for the scatter model


# ----------------------------------------------------------------------------- forecast


def forecast_dataset_size(
    pilots,
    tol,
    *,
    samples_per_k: int | None = None,
    n_target: int | None = None,
    level: float = 0.9,
    tail: float = 0.25,
    k_min: float | None = None,
    min_points: int = 5,
    size_tail: float = 0.25,
    num_bootstrap: int = 1000,
    seed: int = 0,
    epochs: int | None = None,
    num_matvecs=0,
    num_draws: int | None = None,
) -> DatasetSizeForecast:
    """Forecast the dataset size N* whose own trained network's ``Delta_k`` has settled, from pilots at >= 3 sizes.

    Args:
      pilots: ``{N: curve}``, ``{N: [curves]}`` (several trainings of one
        size) or a sequence of ``(N, curve)`` pairs; N is the pilot's number of
        samples (nested subsets of the data, each pilot trained to its own
        w*); a curve is the pilot's :class:`DeltaResult` or a
        ``(k, delta, stderr)`` triple over its whole set.
      tol: a tolerance or a sequence of them (Definition 4).
      samples_per_k: samples per unit of k (DeltaResults carry it; for
        triples the default 1 means k counts samples).
      n_target: also forecast the K measured on a network trained on this
        many samples (e.g. the full data set, to check the forecast).
      level: coverage of the intervals; ``num_bootstrap`` replicates make them
        (numpy seed ``seed``: the same seed gives the same intervals).
      tail, k_min: the power law in k is fitted to the shared shape over
        ``k >= tail * k_max`` (``k_min`` overrides), k_max the largest k of
        the pilots, at least ``min_points`` values of k.
      size_tail: the level's power law in N is fitted to the pilots with
        ``N >= size_tail * N_max`` (at least the three largest sizes): the
        smallest pilots can sit in another regime, as the first k can
        (``diagnostics["level_residuals"]`` shows them against the line).
      epochs, num_matvecs, num_draws: the cost model (:class:`PilotCost`):
        training epochs of the pilots and of the network on N*, Hessian-vector
        products per pilot (a number or one per curve, in input order; 0:
        not counted), Monte Carlo draws per pilot (DeltaResults carry them).

    Raises :class:`ConfigError` for fewer than 3 pilot sizes, curves in
    different or impossible units, NaN, too few k in the tail, or a tail
    that does not decrease (fitted ``alpha <= 0``).
    """
    curves, spk = pilot_list(pilots, positive_int("samples_per_k", samples_per_k, None), num_draws)
    tols = tolerances(tol)
    level = check_real("level", level)
    if not level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    if k_min is None and not 0 <= float(tail) < 1:
        raise ConfigError(f"tail must be in [0, 1), got {tail}")
    if not 0 <= float(size_tail) < 1:
        raise ConfigError(f"size_tail must be in [0, 1), got {size_tail}")
    min_points = positive_int("min_points", min_points, minimum=3)
    num_bootstrap = positive_int("num_bootstrap", num_bootstrap, minimum=100)
    rng = np.random.default_rng(check_seed(seed))
    n_target = positive_int("n_target", n_target, None, minimum=2 * spk)

    k, y, v, mask, dropped = curve_grid(curves)
    n_c = np.array([c[0] for c in curves], float)
    n_ref = float(np.exp(np.mean(np.log(np.unique(n_c)))))
    x = np.log(n_c / n_ref)
    ncurve, ntol = len(curves), tols.size

    # stage 1: levels and shared shape; stage 2: levels against log N; stage 3: the shape's tail in log k
    a_c, phi, tau, v_a, resid, shared = fit_profile(y, v, mask)
    dof1 = int((mask & shared).sum()) - int(shared.sum()) - (ncurve - 1)
    chi2_red = float((resid**2 / np.where(mask & shared, v, 1.0)).sum() / max(dof1, 1))
    gof_p = float(stats.chi2.sf(chi2_red * dof1, dof1)) if dof1 > 0 else float("nan")
    # the level line uses the largest sizes (N >= size_tail * N_max, at least three sizes): small pilots can sit in another regime
    sizes_all = np.unique(n_c)
    n_lo = min(size_tail * sizes_all.max(), sizes_all[-3])
    on = n_c >= n_lo
    omega2 = float(paule_mandel(a_c[on], v_a[on], x[on]))
    a0, beta, cov2, _ = (np.asarray(t) for t in fit_level_line(a_c[on], v_a[on], x[on], omega2))
    a0, beta = float(a0), float(beta)
    k_lo = float(k_min) if k_min is not None else float(tail) * float(k.max())
    sel = (k >= k_lo) & mask.any(0)
    if sel.sum() < min_points:
        raise ConfigError(f"too few k to fit the shape's power law: {int(sel.sum())} with k >= {k_lo:g} (k_max = {k.max():g}), "
                          f"need min_points={min_points}; use larger pilots, a smaller tail fraction or a smaller k_min")
    w_all = np.where(mask, 1.0 / (v + tau**2), 0.0)
    v_phi = 1.0 / w_all[:, sel].sum(0)
    logk_t = np.log(k[sel])
    b0, alpha, cov3, s2 = (np.asarray(t) for t in fit_tail_line(logk_t, phi[sel], v_phi))
    b0, alpha = float(b0), float(alpha)
    if not alpha > 0:
        raise ConfigError(f"the pilots' tails do not decrease: Delta_k ~ k^(-alpha) over k in [{k[sel][0]:g}, {k[sel][-1]:g}] has "
                          f"alpha = {alpha:.3g} <= 0; no sufficient size can be forecast (use larger pilots or a later tail)")
    # residual ratios of every curve around its own trend over the fitted tail: how one network's curve scatters
    trend_t = a_c[:, None] + b0 - alpha * logk_t[None, :]
    ratios = np.sort(np.exp(y[:, sel] - trend_t)[mask[:, sel]])
    if ratios.size > _MAX_RATIOS:
        ratios = np.quantile(ratios, (np.arange(_MAX_RATIOS) + 0.5) / _MAX_RATIOS)

    # parametric bootstrap: levels (retraining spread with its own uncertainty, level errors), shape tail, a new network
    b = num_bootstrap
    xo, vo = x[on], v_a[on]
    nu = xo.size - 2
    omega_b = math.sqrt(omega2) * np.sqrt(nu / rng.chisquare(nu, b))
    lev_b = a0 + beta * xo + omega_b[:, None] * rng.standard_normal((b, xo.size)) + np.sqrt(vo) * rng.standard_normal((b, xo.size))
    a0_b, beta_b, _, _ = fit_level_line(lev_b, vo, xo, paule_mandel(lev_b, vo, xo))
    phi_b = b0 - alpha * logk_t + np.sqrt(v_phi + s2) * rng.standard_normal((b, logk_t.size))
    b0_b, alpha_b, _, _ = fit_tail_line(logk_t, phi_b, v_phi)
    eta_new = omega_b * rng.standard_normal(b)
    ok_b = alpha_b > 0
    inv_alpha = np.where(ok_b, 1.0 / np.where(ok_b, alpha_b, 1.0), 0.0)[:, None, None]
    log_r = np.log(np.where(ratios > 0, ratios, 1.0))

    def level_at(n):
        """log C of the trend ``C k^-alpha`` of a new network of ``n`` (ntol,) samples, per replicate (B, ntol)."""
        return (a0_b + b0_b + eta_new)[:, None] + beta_b[:, None] * np.log(np.asarray(n) / n_ref)[None, :]

    def bounds(c_bt):
        """Exceedance bounds (B, ntol, R), sorted as the ratios are: ``C k^-alpha r_j >= tol`` exactly for ``k <= u_j``."""
        log_t = (c_bt[..., None] + log_r - np.log(tols)[:, None]) * inv_alpha
        u = np.where(ratios > 0, np.floor(np.exp(np.minimum(log_t, 35.0))), 0.0)
        return np.where(ok_b[:, None, None], u, np.inf)

    # inside the pilots' k the shape's own fluctuations are known (the same samples enter at each k), beyond it resampled
    seen = mask.any(0)
    k_seen, phi_seen, k_top = k[seen], phi[seen], float(k[seen].max())
    sig_seen = np.sqrt(tau**2 + (np.where(mask, v, 0.0).sum(0) / np.maximum(mask.sum(0), 1))[seen])

    def log_p_below(n, k_from, k_end):
        """log P(Delta_k' < tol for every k' in [k_from, k_end]) (B, ntol) on the curve of a new network of n (ntol,) samples."""
        c = level_at(n)
        p_in = np.zeros(c.shape)
        for j in range(ntol):  # one tolerance at a time bounds the memory to B x K
            z = (math.log(tols[j]) - (c[:, j] - b0_b)[:, None] - phi_seen) / sig_seen
            inside = (k_seen >= np.asarray(k_from)[..., j, None]) & (k_seen <= np.asarray(k_end)[..., j, None])
            p_in[:, j] = np.where(inside, special.log_ndtr(z), 0.0).sum(-1)
        return p_in + log_p_below_until(bounds(c), np.maximum(k_from, k_top + 1), k_end)

    def cdf_n(n):  # P(N* <= n): the network of n samples settles by k = n / spk, over every later k
        return np.exp(log_p_below(n, np.floor(n / spk)[None, :], np.full(ntol, np.inf))).mean(0)

    n_star, lower, upper = cdf_quantiles(cdf_n, level, np.full(ntol, 2.0 * spk), np.full(ntol, _N_CAP), False)
    q = (1 - level) / 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        slope_b = np.where(ok_b, beta_b * inv_alpha[:, 0, 0], np.inf)
        log_n = ((a0_b + b0_b + eta_new - beta_b * math.log(n_ref))[:, None] - np.log(tols)) * inv_alpha[:, :, 0] + math.log(spk)
        n_tr_b = np.where((slope_b < 1)[:, None], np.exp(np.minimum(log_n / (1 - slope_b)[:, None], 700.0)), np.inf)
        log_n_hat = (a0 + b0 - beta * math.log(n_ref) - np.log(tols)) / alpha + math.log(spk)
        n_trend = np.exp(np.minimum(log_n_hat / (1 - beta / alpha), 700.0)) if beta < alpha else np.full(ntol, np.inf)
    lower_tr, upper_tr = np.quantile(n_tr_b, q, 0, method="lower"), np.quantile(n_tr_b, 1 - q, 0, method="higher")
    n_trend, lower_tr, upper_tr = (np.where(t > _N_CAP, np.inf, np.ceil(t)) for t in (n_trend, lower_tr, upper_tr))

    target = (None,) * 7
    if n_target is not None:
        k_end = np.full(ntol, float(n_target // spk - 1))
        n_t = np.full(ntol, float(n_target))
        c_t = level_at(n_t)
        p_set = np.exp(log_p_below(n_t, k_end, k_end)).mean(0)  # P(Delta < tol at the curve's last k)

        def cdf_k(kk):  # P(K <= kk | the curve settles within its data)
            return np.exp(log_p_below(n_t, np.broadcast_to(kk, (b, ntol)), k_end)).mean(0) / np.maximum(p_set, 1e-300)

        k_t, k_lo_t, k_hi_t = (np.where(p_set > 1e-6, t, np.inf) for t in cdf_quantiles(cdf_k, level, np.zeros(ntol), k_end, True))
        kt_b = np.where(ok_b[:, None], power_law_k(c_t, np.where(ok_b, alpha_b, 1.0)[:, None], tols), np.inf)
        target = (k_t, k_lo_t, k_hi_t, p_set, power_law_k(a0 + b0 + beta * math.log(n_target / n_ref), alpha, tols),
                  np.quantile(kt_b, q, 0, method="lower"), np.quantile(kt_b, 1 - q, 0, method="higher"))

    sizes, al_n, al_se, al_slope, al_slope_se = size_diagnostics(n_c, k, y, mask, a_c, float(tail))
    level_resid = (a_c - a0 - beta * x) / np.sqrt(v_a + omega2)
    warns = warnings_for(n_c, level_resid, al_slope, al_slope_se, beta, alpha, n_star, sizes.max())
    within = [a_c[n_c == n] - a_c[n_c == n].mean() for n in sizes if (n_c == n).sum() > 1]
    dof_w = sum(t.size - 1 for t in within)
    diag = {
        "pilot_sizes": n_c.astype(int).tolist(), "levels": a_c.tolist(), "level_stderr": np.sqrt(v_a).tolist(),
        "level_residuals": level_resid.tolist(), "sizes": sizes.astype(int).tolist(), "alpha_by_size": al_n.tolist(),
        "alpha_by_size_stderr": al_se.tolist(), "alpha_trend": al_slope, "alpha_trend_stderr": al_slope_se,
        "level_sizes": sorted(set(n_c[on].astype(int).tolist())), "omega_seeds": float(math.sqrt(sum((t**2).sum() for t in within) / dof_w)) if dof_w else None,
        "shape_scatter": float(math.sqrt(s2)), "k_fit": (float(k[sel][0]), float(k[sel][-1])), "num_fit": int(sel.sum()),
        "shape_k": k.tolist(), "shape": phi.tolist(), "shape_b0": b0, "dropped_nonpositive": dropped,
        "extrapolation": (np.asarray(n_star, float) / sizes.max()).tolist(), "num_bootstrap": b, "warnings": warns,
    }
    cost = None if epochs is None else pilot_cost(curves, positive_int("epochs", epochs), num_matvecs, n_star)
    scalar = np.ndim(tol) == 0

    def out(t):
        if t is None:
            return None
        t = np.asarray(t, float)
        return float(t.reshape(-1)[0]) if scalar else t

    log_c_se = math.sqrt(float(cov2[0, 0]) + float(cov3[0, 0]))
    return DatasetSizeForecast(
        tol=out(tols), n_star=out(n_star), lower=out(lower), upper=out(upper), k_star=out(n_star / spk),
        n_star_trend=out(n_trend), lower_trend=out(lower_tr), upper_trend=out(upper_tr),
        n_target=n_target, k_target=out(target[0]), k_lower=out(target[1]), k_upper=out(target[2]), p_settled=out(target[3]),
        k_target_trend=out(target[4]), k_lower_trend=out(target[5]), k_upper_trend=out(target[6]),
        alpha=alpha, alpha_stderr=float(math.sqrt(cov3[1, 1])), beta=beta, beta_stderr=float(math.sqrt(cov2[1, 1])),
        log_c=a0 + b0, log_c_stderr=log_c_se, n_ref=n_ref, omega=math.sqrt(omega2), scatter=tau, chi2_reduced=chi2_red,
        gof_p=gof_p, level=float(level), diagnostics=diag,
        cost=None if cost is None else cost._replace(target=out(cost.target), ratio=out(cost.ratio)),
        unit="samples" if spk == 1 else "batches", samples_per_k=spk,
    )
