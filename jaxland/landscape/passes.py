"""How :func:`jaxland.delta_monte_carlo` splits its draws into passes that fit in memory.

A pass holds the per-sample rows of ``pass_draws`` draws at once;
:func:`stream_plan` sizes the passes from a byte budget and
:func:`pass_budget` sets that budget from the memory the machine has left
after the call's fixed buffers (:mod:`jaxland.memory`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from .. import memory
from ..sharding import DEFAULT_MEMORY_BUDGET, auto_chunk, ceil_div
from ..validate import positive_int

__all__ = ["StreamPlan", "stream_plan", "pass_budget"]


class StreamPlan(NamedTuple):
    """How :func:`delta_monte_carlo` splits T draws: ``devices`` x ``passes`` x ``pass_draws`` (>= T, padded)."""

    devices: int
    passes: int
    pass_draws: int
    bytes_per_draw: int


def stream_plan(
    num_draws: int,
    num_samples: int,
    *,
    devices: int = 1,
    memory_budget: int | None = None,
    itemsize: int = 4,
    sample_block: int | None = None,
    unit_draws: int = 1,
    control_variate: bool = False,
) -> StreamPlan:
    """How many draws one pass of :func:`delta_monte_carlo` holds so that it fits ``memory_budget``.

    Data order (``sample_block`` given): a pass scans the samples block by
    block, so a draw holds about 8 arrays of ``sample_block`` values (losses,
    group means, running sums, increments, squares). With orderings
    (``sample_block=None``) a draw holds about 8 arrays of N values (its loss
    row, the transpose out of the sample-block map, a permuted copy, cumulative
    sums, increments, squares). ``memory_budget`` is in bytes per device
    (default :data:`jaxland.sharding.DEFAULT_MEMORY_BUDGET`, 1 GiB). The draws
    of each device are split into equal passes, padded by at most
    ``passes - 1``. The kernel's own working set (``chunk`` draws on one sample
    block) does not grow with T or N. Draws go in whole units of
    ``unit_draws`` (an antithetic pair, a Sobol' scrambling); the control
    variate adds about 6 arrays per draw (h, the stacked values, deviations).
    """
    budget = positive_int("memory_budget", memory_budget, DEFAULT_MEMORY_BUDGET)
    m = positive_int("unit_draws", unit_draws)
    per_device = ceil_div(ceil_div(num_draws, m), devices)  # units
    row = int(num_samples) if sample_block is None else min(int(sample_block), int(num_samples))
    bytes_per_draw = (14 if control_variate else 8) * row * int(itemsize)
    passes = ceil_div(per_device, auto_chunk(per_device, bytes_per_draw * m, budget))
    return StreamPlan(int(devices), passes, ceil_div(per_device, passes) * m, bytes_per_draw)


def pass_budget(model, subspace, x, y, num_draws, vr, perms, draw_chunk, block, memory_budget, *, control_variate):
    """Bytes per device the passes of :func:`delta_monte_carlo` may hold: ``memory_budget`` (default 1 GiB),
    lowered to what the machine has left after the fixed buffers; a :class:`ConfigError` when not even one
    unit of draws per pass fits (:mod:`jaxland.memory`)."""
    requested = positive_int("memory_budget", memory_budget, DEFAULT_MEMORY_BUDGET)
    r = 0 if perms is None else int(perms.shape[0])
    fixed = memory.monte_carlo_parts(model, subspace, x, y, num_draws=num_draws, draw_chunk=draw_chunk, sample_block=block,
                                     num_orderings=r, control_variate=control_variate)
    m = max(1, vr.unit_draws(num_draws))
    smallest = stream_plan(m, int(x.shape[0]), memory_budget=1, itemsize=jnp.dtype(subspace.directions.dtype).itemsize,
                           sample_block=block if perms is None else None, unit_draws=m, control_variate=vr.control_variate)
    one_pass = smallest.bytes_per_draw * m
    memory.require(
        f"delta_monte_carlo ({num_draws} draws, N={int(x.shape[0])}, d={int(subspace.directions.shape[0])})",
        {**fixed, f"one pass of {m} draw(s)": one_pass},
        fix="lower num_draws (run several calls with different keys and average them), chunk_size or sample_block, "
            "or average over fewer orderings",
    )
    return max(one_pass, memory.draw_budget(sum(fixed.values()), requested))
