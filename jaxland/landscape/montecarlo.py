"""Monte Carlo ``Delta_k`` for every k at once, with standard errors.

Notation (docs/reference.md): per-sample losses ``l_i(w)``, ``L_k = (1/k) sum_{i<=k} l_i``,
subspace ``w(theta) = w* + theta @ P`` (:class:`~jaxland.Subspace`), and

    Delta_k = E_theta[(L_{k+1}(w(theta)) - L_k(w(theta)))^2],  theta ~ N(0, sigma^2 I_d).

One draw's per-sample losses on all N samples give every ``L_k`` by prefix
means (:mod:`jaxland.landscape.prefix`), so all k cost one pass over the data per draw.
k counts samples, or batches of ``samples_per_k`` consecutive samples.

The sample order is the order of ``x`` and is shared by every draw. Averaging
over R random orderings is explicit (``orderings=R`` plus a key, or an (R, N)
array of permutations); the losses do not depend on the order, so the
orderings cost only cumulative sums.

Any model of the protocol works (:func:`jaxland.as_model`); a model with a
specialised kernel (the MLP's first-layer precompute) gets it automatically,
and a model whose first layer splits off (:meth:`~jaxland.models.base.Model.first_layer`)
gets the first-layer kernel where it saves arithmetic.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from .._compat import renamed_kwargs
from .delta_result import DeltaInfo, DeltaResult
from ..errors import ConfigError
from .kernels import DEFAULT_SAMPLE_BLOCK, default_blocks, delta_stream, fast_kernel as choose_kernel, loss_matrix, squared_increments
from ..sharding import AXIS, gather, pad_rows, replicate, resolve_mesh
from .theory import SubspaceCurvature, subspace_curvature
from .. import memory
from .passes import StreamPlan, pass_budget, stream_plan
from ..validate import (as_array, check_data, check_fast_kernel, check_key, check_sigma, check_subspace, finite_result,
                        group_split, num_groups, positive_int, unit)
from .variance import DEFAULT_VARIANCE_REDUCTION, control_inputs, draw_or_check_units, estimate_from_moments, parse_variance_reduction

__all__ = [
    "DeltaInfo",
    "DeltaResult",
    "StreamPlan",
    "draw_thetas",
    "orderings_array",
    "per_sample_loss_matrix",
    "stream_plan",
    "delta_from_losses",
    "delta_monte_carlo",
]


def draw_thetas(key: jax.Array, num_draws: int, d: int, sigma: float, dtype=jnp.float32) -> jax.Array:
    """``theta_t ~ N(0, sigma^2 I_d)``, shape (T, d); the same key gives the same draws."""
    sigma = check_sigma(sigma)
    num_draws = positive_int("num_draws (T)", num_draws, minimum=2)
    d = positive_int("d", d)
    memory.require(f"draw_thetas ({num_draws} x {d})", {"draws": memory.nbytes((num_draws, d), dtype)},
                   fix="draw fewer at a time (several keys, jax.random.fold_in)")
    return sigma * jax.random.normal(check_key(key), (num_draws, d), dtype)


def orderings_array(orderings, n: int, key=None):
    """None, an (R, N) integer array of permutations, or an int R (random permutations from ``key``)."""
    if orderings is None:
        return None
    if isinstance(orderings, (int, np.integer)):
        r = positive_int("orderings", orderings)
        if key is None:
            raise ConfigError("orderings=R needs an explicit key= for the random permutations (or pass an (R, N) permutation array)")
        memory.require(f"orderings={r} over N={n}", {"permutations": memory.nbytes((r, n), jnp.int32)},
                       fix="average over fewer orderings")
        return jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(check_key(key), r))
    try:
        perms = np.asarray(orderings)
    except (TypeError, ValueError):
        raise ConfigError(f"orderings must be an int R or an (R, {n}) integer array of permutations, got {type(orderings).__name__}") from None
    if perms.ndim == 1:
        perms = perms[None]
    if perms.ndim != 2 or perms.shape[1] != n or not np.issubdtype(perms.dtype, np.integer):
        raise ConfigError(f"orderings must be an int R or an (R, {n}) integer array of permutations, got {perms.shape}")
    if not np.all(np.sort(perms, axis=1) == np.arange(n)):
        raise ConfigError("every row of orderings must be a permutation of range(N)")
    return jnp.asarray(perms)


def check_matmul_dtype(model, matmul_dtype):
    """None (full precision), or a 16-bit float type for the Monte Carlo forward passes."""
    if matmul_dtype is None:
        return None
    if not hasattr(model, "per_sample_losses_lowp"):
        raise ConfigError(
            f"matmul_dtype needs a model with a low-precision forward pass; {type(model).__name__} has none: "
            "build it with jaxland.as_model (or pass matmul_dtype=None)"
        )
    names = {"bf16": jnp.bfloat16, "bfloat16": jnp.bfloat16, "f16": jnp.float16, "float16": jnp.float16,
             "f32": None, "float32": None, "fp32": None}
    if isinstance(matmul_dtype, str):
        if matmul_dtype.lower() not in names:
            raise ConfigError(f"matmul_dtype must be None, 'bf16' or a jnp dtype, got {matmul_dtype!r}")
        matmul_dtype = names[matmul_dtype.lower()]
        if matmul_dtype is None:
            return None
    dt = jnp.dtype(matmul_dtype)
    if dt == jnp.dtype(jnp.float32):
        return None
    if dt not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        raise ConfigError(f"matmul_dtype must be bfloat16 (or float16/float32), got {dt}")
    return dt


_KERNEL_NAMES = {"model": "specialised", "first_layer": "first_layer", None: "generic"}


def _sample_block(sample_block, d, n, samples_per_k=None, default=DEFAULT_SAMPLE_BLOCK):
    # per (block, draw) an MLP's deeper layers' W(theta) cost d/block of the forward pass: keep block >= 8d
    block = min(positive_int("sample_block", sample_block, max(default, 8 * d)), n)
    if samples_per_k is not None:  # the data-order stream needs whole batches in a block
        block = max(int(samples_per_k), block // int(samples_per_k) * int(samples_per_k))
    return block


@renamed_kwargs(chunk="chunk_size")
def per_sample_loss_matrix(
    model,
    subspace,
    thetas: jax.Array,
    x: jax.Array,
    y: jax.Array,
    *,
    chunk_size: int | None = None,
    sample_block: int | None = None,
    fast_kernel: bool | str = True,
    mesh=None,
    matmul_dtype=None,
) -> jax.Array:
    """``l_i(w* + theta_t @ P)`` for every draw t and sample i: shape (T, N).

    One jitted program (data are arguments, never constants): sample blocks
    outside, draws chunked inside (:mod:`jaxland.landscape.kernels`). Defaults
    per model (:func:`jaxland.landscape.kernels.default_blocks`, measured on 2
    CPU cores): the MLP ``chunk_size = 16`` draws vmapped together and
    ``sample_block = max(512, 8 d)`` samples; on a CPU a network with a
    convolution maps its draws one at a time (vmapped draws turn its
    convolutions into grouped ones) over blocks of 128 samples.

    ``fast_kernel``: use the model's specialised kernel when it has one (the
    MLP's first layer sees fixed inputs, so ``x @ W1(theta) = x @ W1* + sum_j
    theta_j (x @ P1_j)`` is formed once per block; see
    :meth:`jaxland.MLPConfig.subspace_kernel`), else the first-layer kernel
    when the model's first layer (a Dense, Conv or Embed on the data) splits
    off (:meth:`jaxland.models.base.Model.first_layer`: the same identity for
    any network) and that saves at least a tenth of the forward pass's
    multiply-adds (a LeNet-5's 5x5 convolution), else the generic kernel;
    ``fast_kernel="first_layer"``: the first-layer kernel wherever the first
    layer splits off; ``False``: the generic kernel. ``mesh``: the draws are
    split over a 1-D device mesh (None: every visible device; an int n: the
    first n devices); numbers equal
    the single-device ones to float rounding. ``matmul_dtype``: e.g.
    ``"bf16"`` runs the forward passes in bfloat16 (the MLP keeps float32
    accumulation; other models compute every layer in it).
    """
    x, y, thetas = as_array("x", x), as_array("y", y), as_array("thetas", thetas)
    d = check_subspace(model, subspace)
    n = check_data(model, x, y)
    if thetas.ndim != 2 or thetas.shape[1] != d or not jnp.issubdtype(thetas.dtype, jnp.floating):
        raise ConfigError(f"thetas must be a float array (T, d={d}), got {thetas.dtype} of shape {tuple(thetas.shape)}")
    memory.require(f"per_sample_loss_matrix ({thetas.shape[0]} draws x {n} samples)",
                   {"loss matrix (T, N)": 2 * memory.nbytes((thetas.shape[0], n), thetas.dtype)},
                   fix="use fewer draws or grid points, or jaxland.delta_monte_carlo, which never holds the matrix")
    mesh = resolve_mesh(mesh)
    mdt = check_matmul_dtype(model, matmul_dtype)
    fast = choose_kernel(model, subspace, x, y, enabled=check_fast_kernel(fast_kernel), matmul_dtype=mdt)
    block0, chunk0 = default_blocks(model, fast, subspace, x, y)
    subspace, x, y = replicate(mesh, subspace, x, y)
    out = loss_matrix(
        model, subspace, thetas, x, y,
        draw_chunk=positive_int("chunk_size", chunk_size, chunk0),
        sample_block=_sample_block(sample_block, d, n, default=block0),
        fast=fast,
        matmul_dtype=mdt,
        mesh=mesh,
    )
    return gather(out)


def _result(delta, se, num_k, perms, samples_per_k, *, sigma, num_draws, subspace_dim, kernel, allow_nonfinite,
            num_samples, method="none", effective=None, model=None) -> DeltaResult:
    """Attach k = 1..K-1, the k^2-scaled curves and the metadata to per-k estimates."""
    finite_result(
        "Delta_k", (delta, se), where="k-1 = ", allow=allow_nonfinite,
        cause="non-finite losses at some draws (sigma too large for this model, or a diverged w*)",
    )
    k = np.arange(1, num_k)
    k2 = jnp.asarray(k, delta.dtype) ** 2
    _, used, _ = group_split(num_samples, samples_per_k)
    info = DeltaInfo(float(sigma), int(num_draws), subspace_dim, samples_per_k,
                     1 if perms is None else int(perms.shape[0]), unit(samples_per_k, model), kernel, method, effective,
                     int(num_samples), int(used), None if perms is None else np.asarray(perms))
    return DeltaResult(k, delta, se, delta * k2, se * k2, info)


@jax.jit
def _stats_from_q(q):
    return q.mean(0), q.std(0, ddof=1) / jnp.sqrt(q.shape[0])


@renamed_kwargs(batch_size="samples_per_k", ordering_key="key")
def delta_from_losses(
    losses: jax.Array,
    *,
    samples_per_k: int | None = None,
    orderings=None,
    key=None,
    sigma: float = float("nan"),
    allow_nonfinite: bool = False,
) -> DeltaResult:
    """``Delta_k`` and its standard error from a (T, N) per-sample loss matrix.

    For each draw t, ``q_t,k = mean_r (L^(r)_{k+1} - L^(r)_k)^2`` over the
    orderings r (one ordering -- the data order -- by default); then
    ``Delta_k = mean_t q_t,k`` and ``stderr = std_t(q_t,k) / sqrt(T)``.
    """
    losses = as_array("losses", losses)
    if losses.ndim != 2 or losses.shape[0] < 2 or not jnp.issubdtype(losses.dtype, jnp.floating):
        raise ConfigError(f"losses must be a float array (T >= 2, N), got {losses.dtype} of shape {tuple(losses.shape)}")
    n = int(losses.shape[1])
    num_k = num_groups(n, samples_per_k)
    perms = orderings_array(orderings, n, None if key is None else check_key(key))
    delta, se = _stats_from_q(squared_increments(losses, perms, samples_per_k))
    return _result(delta, se, num_k, perms, samples_per_k, sigma=sigma, num_draws=losses.shape[0],
                   subspace_dim=None, kernel="none", allow_nonfinite=allow_nonfinite, num_samples=n)


@renamed_kwargs(removed={"ordering_key": "the orderings come from key (jax.random.fold_in(key, 1)); "
                                                 "pass orderings= an (R, N) permutation array to choose them"},
                batch_size="samples_per_k", chunk="chunk_size")
def delta_monte_carlo(
    model,
    subspace,
    x: jax.Array,
    y: jax.Array,
    *,
    sigma: float,
    num_draws: int | None = None,
    key: jax.Array | None = None,
    samples_per_k: int | None = None,
    orderings=None,
    thetas: jax.Array | None = None,
    variance_reduction=DEFAULT_VARIANCE_REDUCTION,
    curvature: SubspaceCurvature | None = None,
    chunk_size: int | None = None,
    sample_block: int | None = None,
    fast_kernel: bool | str = True,
    mesh=None,
    memory_budget: int | None = None,
    matmul_dtype=None,
    allow_nonfinite: bool = False,
) -> DeltaResult:
    """Monte Carlo ``Delta_k = E_theta[(L_{k+1} - L_k)^2]`` at ``w* + theta @ P`` for every k.

    ``theta_t ~ N(0, sigma^2 I_d)``, t = 1..T (``num_draws``), drawn from
    ``key`` along all d directions (or given as ``thetas`` (T, d), e.g. to
    share draws with another implementation; ``sigma`` is then only recorded,
    and used for the control variate's mean, so the rows must be N(0, sigma^2 I)).
    k counts samples, or batches of ``samples_per_k`` consecutive samples.

    ``variance_reduction`` (:mod:`jaxland.landscape.variance`): ``"none"`` (None),
    ``"cv"`` (the exact second-order model as a control variate; costs one
    per-sample curvature pass, or pass it as ``curvature=``, the
    :func:`~jaxland.subspace_curvature` of the same model, subspace and data),
    ``"antithetic"`` (pairs ``(theta, -theta)``), ``"sobol"`` (scrambled
    Sobol' sets; the standard error comes from the spread between
    scramblings), any ``+``-joined combination, or a
    :class:`~jaxland.landscape.variance.VarianceReduction`. ``info.variance_reduction`` and
    ``info.effective_draws`` record the method and its worth in plain draws.
    Default ``"none"``: on the reference problem no method gave more than about 2x fewer draws for
    the same error at sigma = 1 (:data:`~jaxland.landscape.variance.DEFAULT_VARIANCE_REDUCTION` has the measurement).

    ``orderings``: None (the data order, shared by every draw), an int R (R
    random permutations from ``jax.random.fold_in(key, 1)``), or an (R, N)
    array of permutations (no key needed).

    Memory is bounded; the (T, N) loss matrix is never held. In the data order
    a scan over blocks of ``sample_block`` samples carries each draw's running
    loss sum and emits, per k, the count, the mean of ``q_t,k = (L_{k+1} -
    L_k)^2`` over draws and its sum of squared deviations: memory O(T *
    sample_block). With orderings the draws go in passes whose (pass_draws, N)
    rows fit ``memory_budget`` (bytes per device, default 1 GiB;
    :func:`stream_plan`). Passes and devices are merged with Chan's pairwise
    update (:mod:`jaxland.landscape.moments`). Without variance reduction the
    result equals :func:`delta_from_losses` on the full matrix to float rounding.

    Memory is checked before anything is drawn (:mod:`jaxland.memory`): the
    draws (T, d), the orderings and one kernel block must fit in the memory
    available, and the passes get ``memory_budget`` or what is left, whichever
    is smaller; a call that cannot fit with one unit of draws per pass is
    refused with a :class:`~jaxland.ConfigError` stating the estimate.

    ``samples_per_k`` that does not divide N drops the trailing incomplete
    batch with a ``RuntimeWarning``; ``info.samples_used`` records it.

    ``mesh``: draws split over a 1-D device mesh (None: every visible device;
    an int: that many; statistics merged with a psum, so every process gets
    the whole result). ``fast_kernel``, ``matmul_dtype``: see
    :func:`per_sample_loss_matrix`. A non-finite result raises
    :class:`~jaxland.NumericalError` unless ``allow_nonfinite=True``.
    """
    sigma = check_sigma(sigma)
    key = None if key is None else check_key(key)
    x, y, thetas = as_array("x", x), as_array("y", y), as_array("thetas", thetas, allow_none=True)
    d = check_subspace(model, subspace)
    n = check_data(model, x, y)
    num_k = num_groups(n, samples_per_k)
    vr = parse_variance_reduction(variance_reduction)
    dtype = subspace.directions.dtype
    if thetas is None and (num_draws is None or key is None):
        raise ConfigError("delta_monte_carlo needs num_draws and an explicit key= (or thetas)")
    planned = positive_int("num_draws (T)", num_draws, minimum=2) if thetas is None else (int(thetas.shape[0]) if thetas.ndim >= 1 else 2)
    perms = orderings_array(orderings, n, None if key is None else jax.random.fold_in(key, 1))
    mdt = check_matmul_dtype(model, matmul_dtype)
    fast = choose_kernel(model, subspace, x, y, enabled=check_fast_kernel(fast_kernel), matmul_dtype=mdt)
    block0, chunk0 = default_blocks(model, fast, subspace, x, y)
    draw_chunk = positive_int("chunk_size", chunk_size, chunk0)
    block = _sample_block(sample_block, d, n, samples_per_k, default=block0)
    budget = pass_budget(model, subspace, x, y, planned, vr, perms, draw_chunk, block, memory_budget,
                            control_variate=vr.control_variate and curvature is None)
    units = draw_or_check_units(thetas, num_draws, key, d, sigma, vr, dtype)
    num_units, m = int(units.shape[0]), int(units.shape[1])
    t = num_units * m
    if num_units < (4 if vr.control_variate else 2):
        raise ConfigError(f"variance_reduction={vr.name!r} gives {num_units} independent unit(s) from {t} draws; "
                          f"need >= {4 if vr.control_variate else 2} (the control variate fits beta on two halves): "
                          "raise num_draws" + (" or lower scramblings" if vr.sobol else ""))
    mesh = resolve_mesh(mesh)
    coef = eh = None
    if vr.control_variate:
        curv = subspace_curvature(model, subspace, x, y, mesh=1 if mesh is None else mesh) if curvature is None else curvature
        coef, eh = control_inputs(curv, n, d, sigma, samples_per_k, perms)
    plan = stream_plan(
        t, n, devices=1 if mesh is None else mesh.size, memory_budget=budget, itemsize=units.dtype.itemsize,
        sample_block=block if perms is None else None, unit_draws=m, control_variate=vr.control_variate,
    )
    pass_units = plan.pass_draws // m
    total = plan.devices * plan.passes * pass_units
    # padded units carry weight 0; device i gets units [i*total/dev, (i+1)*total/dev), in passes;
    # the halves of the cross-fitted control variate alternate unit by unit
    th = pad_rows(units, total)
    valid = jnp.arange(total) < num_units
    halves = jnp.arange(total) % 2
    if mesh is not None:
        rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))
        th, valid, halves = (jax.device_put(a, rows) for a in (th, valid, halves))
    subspace, x, y, perms, coef = replicate(mesh, subspace, x, y, perms, coef)
    unit_stats, draw_stats = delta_stream(
        model, subspace, th, valid, halves, x, y, perms, coef,
        draw_chunk=draw_chunk,
        sample_block=block,
        fast=fast,
        matmul_dtype=mdt,
        mesh=mesh,
        samples_per_k=samples_per_k,
        pass_units=pass_units,
        unit_draws=m,
        draw_level=m > 1,
    )
    delta, se, eff = estimate_from_moments(unit_stats, draw_stats, eh, fit_on_draws=vr.sobol)
    return _result(delta, se, num_k, perms, samples_per_k, sigma=sigma, num_draws=t, subspace_dim=d, model=model,
                   kernel=_KERNEL_NAMES[fast], allow_nonfinite=allow_nonfinite, num_samples=n,
                   method=vr.name, effective=float(np.median(eff)))
