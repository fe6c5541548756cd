"""Ctrl-C in the experiment programs: one line on stderr and exit code 130, never a traceback.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread is.
Inside a callback (jax's garbage-collection hook runs at arbitrary moments,
including the interpreter's shutdown) the exception is printed as "Exception
ignored" and the program carries on; during the imports or the shutdown there
is nothing to clean up. So a program (``python -m experiments[.NAME]``) is
*quiet* outside its run: SIGINT, or a ``KeyboardInterrupt`` that a callback
would swallow, prints one line, flushes and ends the process with
``os._exit(130)``. While it *runs*, SIGINT raises ``KeyboardInterrupt`` as
usual, so partial outputs are cleaned up before the same exit. This module
imports nothing heavy: the package installs it before jax is imported.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

INTERRUPTED = "interrupted; finished parts are kept and a rerun resumes"


def interrupted(program: bool) -> int:
    """Print the one line; a program then exits at once with 130 (no interpreter shutdown), else returns 130."""
    try:
        print(INTERRUPTED, file=sys.stderr)
    except (OSError, ValueError):
        pass
    if not program:
        return 130
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(130)


def _on_sigint(signum, frame):
    interrupted(True)


def _unraisable(hook):
    def handle(info):
        if isinstance(info.exc_value, KeyboardInterrupt):  # met inside a callback: end the program, do not carry on
            interrupted(True)
        hook(info)

    handle.jaxland = True
    return handle


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def quiet() -> None:
    """Outside a run (imports, shutdown): Ctrl-C ends the program at once with one line and 130."""
    if not getattr(sys.unraisablehook, "jaxland", False):
        sys.unraisablehook = _unraisable(sys.unraisablehook)
    if _main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def running() -> None:
    """During a run: Ctrl-C raises KeyboardInterrupt (so partial outputs are cleaned up); one swallowed by a callback still ends the program."""
    if not getattr(sys.unraisablehook, "jaxland", False):
        sys.unraisablehook = _unraisable(sys.unraisablehook)
    if _main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
