"""Experiments reproducing the figures and tables of the two papers (see ``python -m experiments --help``).

Each module ``experiments.NAME`` runs on its own (``python -m experiments.NAME --quick``);
``python -m experiments`` runs them all and writes ``report.html``.
"""

import sys

if sys.argv[:1] == ["-m"]:  # being run as python -m experiments[.NAME]: quiet Ctrl-C from the first import on
    from ._signals import quiet

    quiet()

EXPERIMENTS = (
    "spectrum",
    "random_surface",
    "random_delta",
    "hessian_surface",
    "hessian_delta",
    "theory_vs_empirical",
    "sample_size",
    "online_stop",
    "forecast",
    "loss_difference",
    "architectures",
    "language_model",
)


def get_spec(name: str):
    """The :class:`experiments._runner.Spec` of experiment ``name``."""
    import importlib

    from jaxland.errors import ConfigError

    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose from: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"experiments.{name}").SPEC
