"""Curvature-aligned probing (Kiselev & Grabovoy 2026) beside the 2025 estimate, with per-phase times.

The 2026 criterion is the 2025 one in the top-D Hessian eigenspace:
``Delta_k^(D) = E_z[(L_{k+1}(w* + z U) - L_k(w* + z U))^2]``, ``z ~ N(0, sigma^2 I_D)``,
U (D, P) the top-D eigenvectors of ``H(w*)``. Three estimators of it:

* **direct** Monte Carlo of the true increment (:func:`jaxland.delta_monte_carlo`);
* **quadratic** Monte Carlo of the second-order surrogate
  ``q_k(z) = (a_k + c_k.z + z^T B_k z / 2)^2`` with the coefficients
  ``a_k = L_{k+1}(w*) - L_k(w*)``, ``c_k = U (grad L_{k+1} - grad L_k)(w*)``,
  ``B_k = U (H_{k+1} - H_k)(w*) U^T``;
* its **Gaussian moment** ``E[q_k] = a^2 + a sigma^2 tr B + sigma^2 |c|^2 +
  sigma^4 (2 tr B^2 + (tr B)^2) / 4``, the same number as
  :func:`jaxland.theory_delta`'s ``second_order``.

Unlike the 2026 code, every k comes from one pass: the coefficients are prefix
increments of per-sample Taylor data (:func:`jaxland.subspace_curvature`, so
``H_{k+1} - H_k`` is the exact difference of the two empirical Hessians, not
of two 4-sequence subsets), and each Monte Carlo draw evaluates every
sequence once and gives every k by prefix means.

Beside them :func:`curvature_probe` reports the full-space isotropic criterion
(``w* + sigma eps``, ``eps ~ N(0, I_P)`` on all P parameters), a random-subspace
control (D orthonormal Gaussian directions, the same z), and the share of the
theta-free term ``a_k^2`` in each: where it dominates, every probe gives the
same Delta whatever its directions, so agreement with the full-space signal
says nothing about the subspace. Every Monte Carlo number has its standard
error; the closed forms have none.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..curvature import hessian_eigenpairs
from ..errors import ConfigError
from ..validate import (check_curvature, check_data, check_key, check_params, check_quadratic_coefficients, check_sigma,
                        finite_result, is_sequence_model, num_groups, positive_int, unit)
from .moments import chan_merge, moment_stats
from .montecarlo import DeltaResult, delta_from_losses, delta_monte_carlo, draw_thetas
from .prefix import prefix_increments
from .subspace import Subspace
from .theory import SubspaceCurvature, subspace_curvature
from ..sharding import pad_rows

__all__ = [
    "PHASES",
    "QuadraticCoefficients",
    "QuadraticMC",
    "ProbeInfo",
    "ProbeResult",
    "quadratic_coefficients",
    "gaussian_moment",
    "quadratic_monte_carlo",
    "full_space_delta",
    "orthonormal_directions",
    "curvature_probe",
]

# The phases of the 2026 paper's Table 2, in its order, then the two comparisons it does not time.
PHASES = ("eigenvectors", "direct_mc", "coefficients", "quadratic_mc", "gaussian_moment", "full_space_mc", "random_mc")


class QuadraticCoefficients(NamedTuple):
    """Increments at ``w*`` for k = 1..K-1: ``a`` (K-1,), ``c`` (K-1, D), ``B`` (K-1, D, D) (symmetric)."""

    a: jax.Array
    c: jax.Array
    B: jax.Array


class QuadraticMC(NamedTuple):
    """Monte Carlo mean of ``(a + c.z + z^T B z / 2)^2`` per k, and its standard error (std / sqrt(T), ddof 1)."""

    delta: jax.Array
    stderr: jax.Array


class ProbeInfo(NamedTuple):
    """``sigma``; ``d`` (D); ``num_draws`` (T); ``samples_per_k``; ``unit`` (what k counts: ``"sequences"`` for
    a language model); ``num_params`` (P); ``eig_matvecs`` and ``eig_converged`` of the eigensolve."""

    sigma: float
    d: int
    num_draws: int
    samples_per_k: int | None
    unit: str
    num_params: int
    eig_matvecs: int
    eig_converged: bool


class ProbeResult(NamedTuple):
    """The three 2026 estimators of ``Delta_k^(D)`` for k = 1..K-1, the controls, and the phase times.

    ``direct`` (:class:`~jaxland.DeltaResult`), ``quadratic`` (:class:`QuadraticMC`)
    and ``moment`` (K-1,): the top-D criterion by the three estimators.
    ``theta_free``: ``a_k^2`` (exact). ``full_space``: the isotropic criterion
    on all parameters (a DeltaResult, or None). ``random``: direct Monte Carlo
    on D random orthonormal directions with the same draws (or None).
    ``coefficients``: the :class:`QuadraticCoefficients`. ``eigenvalues`` (D,)
    and ``eigenvectors`` U (D, P).
    ``timings``: seconds per phase (:data:`PHASES`; a phase not run is absent),
    each including compilation on a first call. ``info``: :class:`ProbeInfo`.
    """

    k: np.ndarray
    direct: DeltaResult
    quadratic: QuadraticMC
    moment: jax.Array
    theta_free: jax.Array
    full_space: DeltaResult | None
    random: DeltaResult | None
    coefficients: QuadraticCoefficients
    eigenvalues: jax.Array
    eigenvectors: jax.Array
    timings: dict
    info: ProbeInfo

    unit = property(lambda self: self.info.unit, doc="What k counts (``info.unit``).")

    def theta_free_share(self, which: str = "direct") -> tuple[np.ndarray, np.ndarray]:
        """``(a_k^2 / Delta_k, its standard error)`` per k for ``which`` in ``direct``, ``moment``, ``full_space``, ``random``.

        The error propagates the Monte Carlo error of ``Delta_k`` (``a_k^2`` is
        exact): ``a^2 SE / Delta^2``; zero for the closed-form moment.
        """
        a2 = np.asarray(self.theta_free, np.float64)
        if which == "moment":
            m = np.asarray(self.moment, np.float64)
            return a2 / m, np.zeros_like(m)
        res = {"direct": self.direct, "full_space": self.full_space, "random": self.random}.get(which)
        if res is None:
            raise ConfigError(f"which must be 'direct', 'moment', 'full_space' or 'random' (and that estimate run), got {which!r}")
        d, se = np.asarray(res.delta, np.float64), np.asarray(res.stderr, np.float64)
        return a2 / d, a2 * se / d**2


# ----------------------------------------------------------------------------- closed forms and the surrogate


@functools.partial(jax.jit, static_argnames="samples_per_k")
def _coefficients(c, g, G, *, samples_per_k):
    a, cc, B = (prefix_increments(v, samples_per_k, axis=0) for v in (c, g, G))
    return QuadraticCoefficients(a, cc, 0.5 * (B + jnp.swapaxes(B, -1, -2)))


def quadratic_coefficients(curv: SubspaceCurvature, *, samples_per_k: int | None = None) -> QuadraticCoefficients:
    """``a_k, c_k, B_k`` for every k from per-sample Taylor data at ``w*`` (:func:`jaxland.subspace_curvature`).

    Prefix increments ``X_{k+1} - X_k = (x_{k+1} - X_k) / (k+1)`` of ``c_i``,
    ``g_i`` and ``G_i``: ``a_k = L_{k+1}(w*) - L_k(w*)``, ``c_k = U (grad
    L_{k+1} - grad L_k)``, ``B_k = U (H_{k+1} - H_k) U^T`` (symmetrised).
    """
    num_groups(check_curvature(curv)[0], samples_per_k)
    return _coefficients(jnp.asarray(curv.c), jnp.asarray(curv.g), jnp.asarray(curv.G), samples_per_k=samples_per_k)


def _finite(*arrays):
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(a)) for a in arrays])


def _raise_if_nonfinite(ok) -> None:
    if not isinstance(ok, jax.core.Tracer) and not bool(ok):
        raise ConfigError("coef contains non-finite values (NaN/inf): recompute the coefficients at a finite w*")


@jax.jit
def _moment(a, c, B, sigma):
    """The Gaussian moment per k, and whether every coefficient was finite (checked in the same call)."""
    s2 = sigma * sigma
    tr = jnp.trace(B, axis1=-2, axis2=-1)
    tr2 = jnp.sum(B * B, axis=(-2, -1))
    return a * a + a * s2 * tr + s2 * jnp.sum(c * c, -1) + s2 * s2 * (2 * tr2 + tr * tr) / 4, _finite(a, c, B)


def gaussian_moment(coef: QuadraticCoefficients, *, sigma: float) -> jax.Array:
    """``E_z[(a + c.z + z^T B z / 2)^2]`` for ``z ~ N(0, sigma^2 I_D)``, per k, in closed form.

    ``a^2 + a sigma^2 tr B + sigma^2 |c|^2 + sigma^4 (2 tr B^2 + (tr B)^2) / 4``
    (B symmetric; Isserlis: ``E[(z^T B z)^2] = sigma^4 (2 tr B^2 + (tr B)^2)``).
    """
    check_quadratic_coefficients(coef)
    moment, ok = _moment(coef.a, coef.c, coef.B, check_sigma(sigma))
    _raise_if_nonfinite(ok)
    return moment


@functools.partial(jax.jit, static_argnames="chunk_size")
def _quadratic_mc(a, c, B, z, *, chunk_size):
    t, d = z.shape
    bflat = B.reshape(B.shape[0], d * d)
    z = pad_rows(z, chunk_size)
    valid = jnp.arange(z.shape[0]) < t

    def step(acc, chunk):
        zc, vc = chunk
        zz = (zc[:, :, None] * zc[:, None, :]).reshape(zc.shape[0], d * d)
        q = (a + zc @ c.T + 0.5 * zz @ bflat.T) ** 2  # (chunk, K-1)
        n, mean, com = moment_stats(q[..., None], vc, jnp.zeros(vc.shape, jnp.int32))  # one half: every row
        return chan_merge(acc, (n[0], mean[0], com[0])), None

    zero = (jnp.zeros((), z.dtype), jnp.zeros((*a.shape, 1), z.dtype), jnp.zeros((*a.shape, 1, 1), z.dtype))
    (n, mean, com), _ = jax.lax.scan(step, zero, (z.reshape(-1, chunk_size, d), valid.reshape(-1, chunk_size)))
    mean, m2 = mean[:, 0], com[:, 0, 0]
    return QuadraticMC(mean, jnp.sqrt(m2 / (n - 1) / n)), _finite(a, c, B, z)


def quadratic_monte_carlo(coef: QuadraticCoefficients, *, sigma: float | None = None, num_draws: int | None = None,
                          key=None, thetas=None, chunk_size: int = 256) -> QuadraticMC:
    """Monte Carlo of the surrogate ``(a_k + c_k.z + z^T B_k z / 2)^2`` over T draws, for every k.

    ``z ~ N(0, sigma^2 I_D)`` from ``key`` (``num_draws`` of them), or the given
    ``thetas`` (T, D) -- e.g. the draws of the direct estimate, so the two are
    paired. Draws are streamed ``chunk_size`` at a time (Chan's update), so
    memory is O(chunk_size x K), not O(T x K). One compiled call.
    """
    d = check_quadratic_coefficients(coef)[1]
    if thetas is None:
        if key is None or sigma is None or num_draws is None:
            raise ConfigError("quadratic_monte_carlo needs thetas=, or sigma=, num_draws= and key=")
        thetas = draw_thetas(check_key(key), num_draws, d, sigma, coef.a.dtype)
    thetas = jnp.asarray(thetas, coef.a.dtype)
    if thetas.ndim != 2 or thetas.shape[1] != d or thetas.shape[0] < 2:
        raise ConfigError(f"thetas must be (T >= 2, D={d}), got shape {tuple(thetas.shape)}")
    chunk = min(positive_int("chunk_size", chunk_size), int(thetas.shape[0]))
    out, ok = _quadratic_mc(coef.a, coef.c, coef.B, thetas, chunk_size=chunk)
    _raise_if_nonfinite(ok)
    return out


# ----------------------------------------------------------------------------- full-space noise


@functools.partial(jax.jit, static_argnames=("model", "num_draws", "chunk_size"))
def _full_space_losses(model, w, x, y, key, sigma, *, num_draws, chunk_size):
    def one(t):
        eps = jax.random.normal(jax.random.fold_in(key, t), w.shape, w.dtype)
        return model.per_sample_losses(w + sigma * eps, x, y)

    return jax.lax.map(one, jnp.arange(num_draws), batch_size=chunk_size)


def full_space_delta(model, w, x, y, *, sigma: float, num_draws: int, key, samples_per_k: int | None = None,
                     chunk_size: int = 1) -> DeltaResult:
    """The full-space isotropic criterion ``E_eps[(L_{k+1} - L_k)^2]`` at ``w + sigma eps``, ``eps ~ N(0, I_P)``.

    Noise on every parameter (no subspace); draw t uses ``fold_in(key, t)``, so
    the P-vector of one draw is generated inside the compiled program and never
    stored for all T. The (T, N) per-sample losses give every k
    (:func:`jaxland.landscape.delta_from_losses`). ``chunk_size`` draws are
    vmapped together (1: a map, what a transformer's forward pass prefers).
    """
    sigma = check_sigma(sigma)
    check_data(model, x, y)
    check_params(model, w)
    key = check_key(key)
    num_draws = positive_int("num_draws (T)", num_draws, minimum=2)
    losses = _full_space_losses(model, w, x, y, key, jnp.asarray(sigma, w.dtype), num_draws=num_draws,
                                chunk_size=positive_int("chunk_size", chunk_size))
    return delta_from_losses(losses, samples_per_k=samples_per_k, sigma=sigma)


def orthonormal_directions(num_params: int, d: int, *, key, dtype=jnp.float32) -> jax.Array:
    """``d`` orthonormal rows (d, P) spanning a uniformly random d-dimensional subspace (QR of a Gaussian)."""
    q, r = jnp.linalg.qr(jax.random.normal(check_key(key), (int(num_params), int(d)), dtype))
    return (q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)).T


# ----------------------------------------------------------------------------- the probe


def _timed(timings, name, fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    timings[name] = time.perf_counter() - t
    return out


def curvature_probe(
    model,
    w: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    d: int,
    sigma: float,
    num_draws: int,
    key: jax.Array,
    samples_per_k: int | None = None,
    eigenvectors: jax.Array | None = None,
    coefficients: QuadraticCoefficients | None = None,
    full_space: bool = True,
    random_control: bool = True,
    eig_tol: float = 1e-3,
    eig_method: str = "lanczos",
    eig_options: dict | None = None,
    chunk_size: int | None = None,
    sample_block: int | None = None,
) -> ProbeResult:
    """The 2026 estimators of ``Delta_k^(D)`` on one run, with per-phase times, beside the controls.

    Phases (their Table 2, :data:`PHASES`): ``eigenvectors`` -- top-``d``
    eigenpairs of ``H(w*)`` (Lanczos to ``eig_tol``); ``direct_mc`` --
    :func:`jaxland.delta_monte_carlo` on ``Subspace(w, U)`` with T =
    ``num_draws`` draws ``z ~ N(0, sigma^2 I_D)``; ``coefficients`` --
    :func:`jaxland.subspace_curvature` and :func:`quadratic_coefficients`;
    ``quadratic_mc`` -- :func:`quadratic_monte_carlo` on the same draws;
    ``gaussian_moment`` -- :func:`gaussian_moment`. Then ``full_space_mc``
    (:func:`full_space_delta`, T draws) and ``random_mc`` (direct Monte Carlo
    on :func:`orthonormal_directions`, the same z). The eigenvectors and the
    coefficients do not depend on sigma: pass those of an earlier probe
    (``eigenvectors=res.eigenvectors``, ``coefficients=res.coefficients``) to
    probe another sigma without recomputing them (those phases are then absent
    from ``timings`` and ``eigenvalues`` are NaN).

    Keys: eigensolve ``fold_in(key, 0)``, draws ``fold_in(key, 1)``,
    full-space noise ``fold_in(key, 2)``, random directions ``fold_in(key, 3)``.
    k counts sequences for a language model (samples otherwise), or batches
    of ``samples_per_k``. ``chunk_size``: draws vmapped together in the Monte
    Carlo passes (None: 1 for a language model, whose forward pass runs
    fastest mapped over draws, else the Monte Carlo default); ``sample_block``
    goes to the Monte Carlo and curvature passes. ``eig_options`` go to
    :func:`jaxland.hessian_eigenpairs` (e.g. ``max_matvecs=``, or
    ``basis_dtype=jnp.bfloat16`` to halve the Krylov basis, two
    ``(max_matvecs, P)`` arrays, where P is large).

    Each phase is timed around a blocking call, so a first call's times include
    compilation; call twice for steady-state times.
    """
    sigma = check_sigma(sigma)
    n = check_data(model, x, y)
    check_params(model, w)
    key = check_key(key)
    d = positive_int("d", d)
    if d > model.num_params:
        raise ConfigError(f"d={d} exceeds the number of parameters P={model.num_params}")
    num_draws = positive_int("num_draws (T)", num_draws, minimum=2)
    num_k = num_groups(n, samples_per_k)
    if chunk_size is None and is_sequence_model(model):
        chunk_size = 1
    timings: dict[str, float] = {}
    w = jnp.asarray(w)

    if eigenvectors is None:
        eig = _timed(timings, "eigenvectors",
                     lambda: hessian_eigenpairs(model, w, x, y, d, key=jax.random.fold_in(key, 0), tol=eig_tol, method=eig_method,
                                                                 **(eig_options or {})))
        u, lam, matvecs, conv = jnp.asarray(eig.eigenvectors), eig.eigenvalues, int(eig.num_matvecs), bool(np.all(eig.converged))
    else:
        u = jnp.asarray(eigenvectors, w.dtype)
        if u.shape != (d, model.num_params):
            raise ConfigError(f"eigenvectors must be (d={d}, P={model.num_params}), got {tuple(u.shape)}")
        lam, matvecs, conv = jnp.full((d,), jnp.nan, w.dtype), 0, True
    sub = Subspace(w, u)
    z = draw_thetas(jax.random.fold_in(key, 1), num_draws, d, sigma, w.dtype)
    mc = dict(sigma=sigma, thetas=z, samples_per_k=samples_per_k, chunk_size=chunk_size, sample_block=sample_block)
    direct = _timed(timings, "direct_mc", lambda: delta_monte_carlo(model, sub, x, y, **mc))
    if coefficients is None:
        coef = _timed(timings, "coefficients", lambda: quadratic_coefficients(
            subspace_curvature(model, sub, x, y, sample_block=sample_block), samples_per_k=samples_per_k))
    else:
        if check_quadratic_coefficients(coefficients) != (num_k - 1, d):
            raise ConfigError(f"coefficients must be for K-1 = {num_k - 1} values of k and D = {d} directions, got "
                              f"{check_quadratic_coefficients(coefficients)}")
        coef = QuadraticCoefficients(*(jnp.asarray(a, w.dtype) for a in coefficients))
    # the coefficients and draws are this function's own: the compiled kernels directly, no second validation
    quad = _timed(timings, "quadratic_mc", lambda: _quadratic_mc(*coef, z, chunk_size=min(256, num_draws))[0])
    moment = _timed(timings, "gaussian_moment", lambda: _moment(*coef, sigma)[0])
    full = rand = None
    if full_space:
        full = _timed(timings, "full_space_mc", lambda: full_space_delta(
            model, w, x, y, sigma=sigma, num_draws=num_draws, key=jax.random.fold_in(key, 2), samples_per_k=samples_per_k,
            chunk_size=chunk_size or 1))
    if random_control:
        r_dirs = orthonormal_directions(model.num_params, d, key=jax.random.fold_in(key, 3), dtype=w.dtype)
        rand = _timed(timings, "random_mc", lambda: delta_monte_carlo(model, Subspace(w, r_dirs), x, y, **mc))
    finite_result("curvature_probe (quadratic MC, moment)", (quad, moment), where="k-1 = ",
                  cause="the second-order coefficients overflow (sigma too large?)")
    what = unit(samples_per_k, model)
    direct, full, rand = (None if r is None else r._replace(info=r.info._replace(unit=what)) for r in (direct, full, rand))
    info = ProbeInfo(sigma, d, num_draws, samples_per_k, what, int(model.num_params), matvecs, conv)
    return ProbeResult(np.arange(1, num_k), direct, quad, moment, coef.a * coef.a, full, rand, coef, lam, u, timings, info)
