"""Keyword names that changed: the old spelling keeps working, with a warning that names the new one."""

from __future__ import annotations

import functools
import warnings

from .errors import ConfigError


def renamed_kwargs(removed: dict[str, str] | None = None, **old_to_new):
    """Decorator: accept each old keyword (``old=new`` pairs) as its new name, with a ``DeprecationWarning``.

    Passing both spellings is a :class:`~jaxland.ConfigError`; so is a keyword
    in ``removed`` (``{old: what to do instead}``).
    """
    removed = removed or {}

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, fix in removed.items():
                if old in kwargs:
                    raise ConfigError(f"{fn.__name__}: {old}= is no longer accepted; {fix}")
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ConfigError(f"{fn.__name__}: pass {new}= only ({old}= is its old name)")
                    warnings.warn(f"{fn.__name__}({old}=) is now {new}=", DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return inner

    return wrap
