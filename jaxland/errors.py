"""Exceptions raised by jaxland.

Every error jaxland raises on bad input is a :class:`JaxlandError`, and also
subclasses the matching builtin (``ValueError``, ``FileNotFoundError``) so that
generic ``except ValueError`` handlers keep working. Messages name the problem
and the fix.
"""


class JaxlandError(Exception):
    """Base class of every error jaxland raises on purpose."""


class ConfigError(JaxlandError, ValueError):
    """An argument or configuration value is impossible (e.g. ``sigma <= 0``)."""


class DataError(JaxlandError, ValueError):
    """A dataset name is unknown or a data file is corrupt or truncated."""


class DataNotFoundError(JaxlandError, FileNotFoundError):
    """No source could provide the requested dataset."""


class TrainingError(JaxlandError, RuntimeError):
    """Training diverged (non-finite loss)."""


class NumericalError(JaxlandError, ArithmeticError):
    """A numerical routine met non-finite values or could not converge."""
