"""One validation layer for every public entry point.

Each check raises :class:`~jaxland.ConfigError` naming the argument, the
problem and the fix, before any compiled program runs, so a bad input never
surfaces as a traceback from inside JAX or as a silently wrong number.
Checks of array *values* (finite inputs, label range) run once per call on the
host; they are skipped for traced arrays (inside a user's ``jit``), where the
finite-result guard on the output (:func:`finite_result`) still applies.

The checks live in four modules: :mod:`.values` (scalars, keys, options, arrays,
results), :mod:`.inputs` (data, parameters, subspaces, vectors, curvature),
:mod:`.prefix` (k and its units) and :mod:`.paths` (folders and files the
user names).
"""

from .values import as_array, check_fast_kernel, check_key, check_loop, check_real, check_seed, check_sigma, finite_result, positive_int, warn
from .inputs import check_curvature, check_data, check_quadratic_coefficients, is_sequence_model, check_labels, check_model, check_operator, check_output_loss, check_params, check_subspace, check_vectors, mse_shapes_match
from .prefix import check_prefix, clamp_prefix, group_split, num_groups, unit
from .paths import check_data_dir, check_output_dir, check_private

__all__ = [
    "as_array",
    "positive_int",
    "check_sigma",
    "check_data",
    "check_params",
    "check_subspace",
    "check_prefix",
    "clamp_prefix",
    "check_labels",
    "mse_shapes_match",
    "num_groups",
    "group_split",
    "warn",
    "unit",
    "is_sequence_model",
    "check_quadratic_coefficients",
    "finite_result",
    "check_model",
    "check_key",
    "check_seed",
    "check_real",
    "check_vectors",
    "check_output_loss",
    "check_operator",
    "check_curvature",
    "check_output_dir",
    "check_data_dir",
    "check_private",
    "check_loop",
    "check_fast_kernel",
]
