"""Transitional re-exports of the experiment framework (split into _config, _runner, _cli, _claims)."""

from ._claims import bounded_k2, k2_growth, k_axis, loglog_slope  # noqa: F401
from ._cli import build_parser, cli, main_for, print_summary, resolve_config  # noqa: F401
from ._config import QUICK_REFERENCE, TINY_REFERENCE, BaseConfig, config_dict, config_hash, positive_fields  # noqa: F401
from ._runner import Claim, Context, Outcome, Spec, result_arrays, run_experiment  # noqa: F401
