"""The main job: run every experiment and write ``report.html``.

``python -m experiments [--out DIR] [--full] [--only a,b] [--seed N]``

Default mode runs each experiment's quick preset on the embedded data (the
first 10,000 MNIST training images shipped in the package), about 10 minutes
on a 2-core CPU; ``--full`` runs the papers' reference configurations. Trained
weights are cached ($JAXLAND_CACHE_DIR) and finished parts are kept, so a rerun
resumes where it stopped. Progress goes to stderr.
"""

from __future__ import annotations

import html
import os
import sys
import time
import traceback
from pathlib import Path

from jaxland.errors import ConfigError, DataError, JaxlandError
from jaxland.memory import release_compiled_programs

from . import EXPERIMENTS, get_spec
from ._cli import Parser, resolve_config, terminal_safe, user_os_error
from ._runner import check_out, mark, run_experiment
from ._signals import interrupted, quiet, running


def _parse(argv):
    p = Parser(prog="python -m experiments", description="Run every experiment of the two papers and write report.html.")
    p.add_argument("--out", default="runs/main", help="output folder (one sub-folder per experiment, plus report.html)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="the papers' full reference configurations (hours on a CPU)")
    mode.add_argument("--tiny", action="store_true", help="tiny smoke-test settings (CI)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--seed", type=int, default=None, help="seed for every experiment (default: each config's, 0)")
    p.add_argument("--data_dir", "--data-dir", default=None, help="folder with the original dataset files (default: $JAXLAND_DATA_DIR, else embedded MNIST)")
    p.add_argument("--force", action="store_true", help="recompute finished experiments; write into a non-empty folder jaxland did not write")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p.parse_args(argv)


def _cross_claims(recs: dict) -> list[dict]:
    """Claims that compare two experiments' results."""
    out = []
    rs, hs = recs.get("random_surface"), recs.get("hessian_surface")
    if rs and hs:
        a, b = hs["summary"]["max_diff_sq_max_k"], rs["summary"]["max_diff_sq_max_k"]
        out.append({"experiment": "hessian_surface vs random_surface", "claim": "at the largest k the squared difference on Hessian directions stays higher than on random directions",
                    "held": bool(a > b), "detail": f"max (L_(k+1) - L_k)^2 on the grid: {a:.3g} (Hessian) vs {b:.3g} (random)"})
    rd, hd = recs.get("random_delta"), recs.get("hessian_delta")
    if rd and hd:
        rand = rd["summary"]["mean_delta"]
        key = next((k for k in rand if k.startswith("d=2, sigma=1")), None)
        if key:
            a, b = hd["summary"]["mean_delta_hessian"], rand[key]
            out.append({"experiment": "hessian_delta vs random_delta", "claim": "Delta_k is higher on the top-10 Hessian directions than on 2 random directions (paper sec. 5.2.2)",
                        "held": bool(a > b), "detail": f"mean Delta_k over k: {a:.3g} (Hessian, d=10) vs {b:.3g} (random, d=2, sigma=1)"})
    return out


def _one_line(e: BaseException) -> str:
    return terminal_safe(" ".join(line.strip() for line in str(e).splitlines()) or type(e).__name__)


def main(argv=None) -> int:
    """Run the selected experiments and write the report; returns the exit code.

    User errors (bad flags, ``--out`` that is a file, not writable, empty or a
    non-empty folder jaxland did not write, unreadable data files, a full disk)
    print one line on stderr and return 2. A missing optional dataset or a
    numerical failure fails only its experiment (exit 1 at the end); an
    unexpected exception shows its traceback. Ctrl-C prints one line and
    returns 130 (run as a program, ``argv=None``: exits with 130).
    """
    program = argv is None
    if program:
        running()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return interrupted(program)
    finally:
        if program:
            quiet()


def _main(argv) -> int:
    args = _parse(argv)
    names = list(EXPERIMENTS)
    try:
        check_out(args.out, force=args.force)
        if args.only:
            names = [n.strip() for n in args.only.split(",") if n.strip()]
            for n in names:
                get_spec(n)  # raises on an unknown name
            if not names:
                raise ConfigError("--only is empty")
        if args.seed is not None and args.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {args.seed}")
        overrides = {}
        if args.seed is not None:
            overrides["seed"] = args.seed
        if args.data_dir is not None:
            if not Path(args.data_dir).is_dir():
                raise ConfigError(f"--data_dir {args.data_dir}: no such folder")
            if not os.access(args.data_dir, os.R_OK | os.X_OK):
                raise ConfigError(f"--data_dir {args.data_dir}: folder is not readable")
            overrides["data_dir"] = args.data_dir
        mode = "full" if args.full else "tiny" if args.tiny else "quick"
        # resolve and validate every config before anything runs or is written
        plan = []
        for n in names:
            spec = get_spec(n)
            cfg = resolve_config(spec, overrides, quick=mode == "quick", tiny=mode == "tiny")
            cfg.validate()
            plan.append((spec, cfg))
    except JaxlandError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2

    out = Path(args.out).expanduser()
    t0 = time.perf_counter()
    recs, failures = {}, {}
    for i, (spec, cfg) in enumerate(plan, 1):
        print(f"=== [{i}/{len(plan)}] {spec.name}: {spec.title} ({mode}) — {time.perf_counter() - t0:.0f} s elapsed", file=sys.stderr, flush=True)
        try:
            recs[spec.name] = run_experiment(spec, cfg, out / spec.name, progress=args.progress, force=args.force, mode=mode)
        except DataError as e:  # the user's data files are unreadable: every later experiment would fail too
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return 2
        except JaxlandError as e:
            failures[spec.name] = f"{type(e).__name__}: {e}"
            print(f"[{spec.name}] failed: {terminal_safe(e)}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001  (report the failure, keep going with the other experiments)
            if isinstance(e, OSError) and user_os_error(e):  # the output folder or disk: nothing later can succeed
                print(f"error: {_one_line(e)}", file=sys.stderr)
                return 2
            failures[spec.name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            # compiled programs hold memory mappings (at most vm.max_map_count per process): free them
            # once there are many; below that the next experiment reuses the programs it shares with this one
            release_compiled_programs()
    total = time.perf_counter() - t0
    from ._report import write_report

    header = (f"<p>Mode: <b>{mode}</b> ({'papers’ reference configurations' if mode == 'full' else 'quick presets on the embedded data' if mode == 'quick' else 'tiny smoke-test settings'}); "
              f"total wall time {total:.0f} s. Command: <code>python -m experiments {html.escape(' '.join(argv if argv is not None else sys.argv[1:]))}</code></p>")
    if out.exists() or recs:
        mark(out)
        path = write_report(out, [s.name for s, _ in plan], extra_claims=_cross_claims(recs), failures=failures, header=header)
        print(f"report: {path}  ({total:.0f} s)", file=sys.stderr)
    for n, r in recs.items():
        held = [c["held"] for c in r["claims"]]
        print(f"{n:22s} {r['timings']['total_s']:7.1f} s  claims held {sum(h is True for h in held)}/{sum(h is not None for h in held)}")
    for n, msg in failures.items():
        print(f"{n:22s} FAILED: {terminal_safe(msg.splitlines()[0])}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
