"""The command line of every experiment: ``--field value`` options from the config dataclass."""

from __future__ import annotations

import argparse
import errno
import dataclasses
import sys
import types
import typing
from typing import Any, Callable

from jaxland.errors import ConfigError, JaxlandError

from ._runner import Spec, check_out, run_experiment
from ._signals import interrupted, quiet, running


class Parser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one line on stderr (``error: ...; see --help``) and exit code 2."""

    def error(self, message: str):
        # the message quotes the user's argument: control characters are shown escaped, not sent to the terminal
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(message.split()))
        sys.stderr.write(f"error: {text}; see --help\n")
        sys.exit(2)


def _field_parser(tp) -> tuple[Callable[[str], Any], str]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        parse, meta = _field_parser(inner[0])
        return (lambda s: None if s.lower() in ("none", "") else parse(s)), meta
    if origin is tuple:
        elem = args[0]
        parse, meta = _field_parser(elem)
        return (lambda s: tuple(parse(p) for p in s.split(",") if p.strip() != "")), f"{meta},{meta},..."
    if tp is bool:

        def pb(s: str) -> bool:
            if s.lower() in ("1", "true", "yes", "y", "on"):
                return True
            if s.lower() in ("0", "false", "no", "n", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")

        return pb, "BOOL"
    if tp is int:
        return int, "INT"
    if tp is float:
        return float, "FLOAT"
    return str, "STR"


def build_parser(spec: Spec) -> argparse.ArgumentParser:
    p = Parser(
        prog=f"python -m experiments.{spec.name}",
        description=f"{spec.title} ({spec.paper_ref}). Defaults are the paper's reference configuration.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=f"runs/{spec.name}", help="output folder")
    p.add_argument("--quick", action="store_true", help=f"small settings, about a minute on a 2-core CPU: {spec.quick}")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="recompute even if finished results/parts exist; write into a non-empty folder jaxland did not write")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")
    hints = typing.get_type_hints(spec.config)
    defaults = spec.config()
    for f in dataclasses.fields(spec.config):
        parse, meta = _field_parser(hints[f.name])
        opts = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        d = getattr(defaults, f.name)
        shown = ",".join(map(str, d)) if isinstance(d, tuple) else d
        p.add_argument(*opts, dest=f.name, type=parse, default=argparse.SUPPRESS, metavar=meta, help=f"(default: {shown})")
    return p


def resolve_config(spec: Spec, overrides: dict, *, quick: bool = False, tiny: bool = False):
    """Paper defaults, then the quick/tiny preset, then explicit overrides."""
    base = {}
    if quick or tiny:
        base.update(spec.quick)
    if tiny:
        base.update(spec.tiny)
    base.update(overrides)
    names = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(base) - names)
    if unknown:
        raise ConfigError(f"{spec.name}: unknown setting(s) {unknown}; valid: {sorted(names)}")
    return spec.config(**base)


def cli(spec: Spec, argv=None) -> int:
    """Run one experiment from the command line; returns the exit code.

    A user error (a bad flag value, unknown dataset or architecture, unreadable
    data, an ``--out`` that is a file, not writable, empty, or a non-empty
    folder jaxland did not write, a full disk) prints one line on stderr and
    returns 2; anything else is a bug and keeps its traceback. Ctrl-C prints one
    line and returns 130 (run as a program, ``argv=None``: exits with 130).
    """
    program = argv is None
    if program:
        running()
    try:
        return _cli(spec, argv)
    except KeyboardInterrupt:
        return interrupted(program)
    finally:
        if program:
            quiet()


def _cli(spec: Spec, argv) -> int:
    parser = build_parser(spec)
    args = vars(parser.parse_args(argv))
    out, quick, tiny, force, progress = (args.pop(k) for k in ("out", "quick", "tiny", "force", "progress"))
    try:
        check_out(out, force=force)
        cfg = resolve_config(spec, args, quick=quick, tiny=tiny)
        rec = run_experiment(spec, cfg, out, progress=progress, force=force, mode="tiny" if tiny else "quick" if quick else "custom")
    except JaxlandError as e:
        print("error: " + terminal_safe(" ".join(line.strip() for line in str(e).splitlines())), file=sys.stderr)
        return 2
    except OSError as e:
        if not user_os_error(e):
            raise
        print(f"error: {terminal_safe(e)}", file=sys.stderr)
        return 2
    print_summary(rec)
    return 0


# C0 and C1 control characters and DEL, plus the bidirectional overrides that reorder what a terminal shows
_CONTROL = {c for c in range(0x20)} | {0x7F} | set(range(0x80, 0xA0)) | {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
_ESCAPES = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _CONTROL}


def terminal_safe(value) -> str:
    """``str(value)`` with every control character written as an escape (``\\x1b``), so text from data or
    results files cannot move the cursor, retitle the terminal or hide what follows; the caller adds its own newlines."""
    return str(value).translate(_ESCAPES)


def print_summary(rec: dict) -> None:
    """Print a record's title, scalar summary values and claims; every value is :func:`terminal_safe`."""
    t = terminal_safe
    print(f"{t(rec.get('experiment', '?'))}: {t(rec.get('title', ''))}")
    summary = rec.get("summary")
    for k, v in (summary.items() if isinstance(summary, dict) else ()):
        if not isinstance(v, (list, dict)):
            print(f"  {t(k)}: {t(v)}")
    for c in rec.get("claims", []):
        verdict = {True: "HELD", False: "NOT HELD"}.get(c.get("held"), "n/a")
        print(f"  [{verdict}] {t(c.get('claim', ''))}: {t(c.get('detail', ''))}")


def main_for(spec: Spec):
    def main(argv=None) -> int:
        return cli(spec, argv)

    return main


def user_os_error(e: BaseException) -> bool:
    """Whether ``e`` is an OS error the user can fix: permissions, a path that is a file, a full or read-only disk."""
    return isinstance(e, (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)) or (
        isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES)
    )
