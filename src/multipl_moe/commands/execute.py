"""`multipl-moe execute`: run MultiPL-E completion files in the sandbox, write results files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from multipl_moe.errors import UserError

DESCRIPTION = """\
Execute MultiPL-E completion files (NAME.json.gz or NAME.json with fields name, language, prompt,
tests, stop_tokens, completions; searched recursively) and write MultiPL-E results files beside
them (NAME.results.json: results = [{program, status, exit_code, stdout, stderr}], status one
of OK / SyntaxError / Exception / Timeout), which MultiPL-E's own pass_k.py can read.

Each program (prompt + completion + "\\n" + tests) runs with MultiPL-E's compile/run commands and
time limits inside a bubblewrap sandbox: no network, read-only system, no home directories, a
private /tmp, an unprivileged uid, limits on memory, CPU, processes, file size and output.
Without bubblewrap the command refuses to run unless --unsafe-no-sandbox is given.

Toolchains are checked first; a language that cannot run here is skipped and reported as
unavailable (never scored 0). Finished programs are recorded as they complete, so rerunning
after a crash or Ctrl-C only runs what is missing. Install toolchains with `make toolchains`.

A completion file that cannot be run (damaged, not JSON, a field of the wrong type, an unknown
language) is reported on one line and skipped; the others run, and the exit status is then 1.
Only one run at a time works on a folder: a second one stops at once and says so.
"""


def add_execution_args(p: argparse.ArgumentParser) -> None:
    """Options shared with `eval`."""
    from multipl_moe.evaluation.sandbox import Limits

    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="programs run in parallel (default: CPU count, %(default)s)")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="run-step time limit for every language instead of MultiPL-E's "
                        "(15 s, 30 s for go test); compile steps keep theirs")
    g.add_argument("--memory-mb", type=int, default=Limits.memory_mb,
                   help="data/address-space limit per process (default %(default)s)")
    g.add_argument("--no-toolchain-cache", action="store_true",
                   help="do not build the per-run C++ precompiled header, warm Go cache and "
                        "javac archive (slower; verdicts are the same)")
    g.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="run model-written programs WITHOUT bubblewrap (only rlimits, a temp "
                        "dir and a process-group kill). Dangerous: use only on a throw-away machine")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_execution_args(args: argparse.Namespace) -> None:
    """The execution options' ranges, checked before anything else runs (eval: before hours of
    generation)."""
    import math

    if args.workers < 1:
        raise UserError(f"--workers must be at least 1 (got {args.workers})")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UserError(f"--timeout must be a positive number of seconds (got {args.timeout})")
    if args.memory_mb < 1:
        raise UserError(f"--memory-mb must be at least 1 (got {args.memory_mb})")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def make_runner(args: argparse.Namespace):
    from dataclasses import replace

    from multipl_moe.evaluation.sandbox import (Limits, SandboxError, UnsafeRunner, bwrap_path,
                                                make_runner as _make)

    limits = replace(Limits(), memory_mb=args.memory_mb)
    if args.unsafe_no_sandbox:
        print(UnsafeRunner.warning(), file=sys.stderr)
        return _make(unsafe=True, limits=limits)
    if bwrap_path() is None:
        raise UserError("bubblewrap (bwrap) is not installed, and model-written code must not run "
                        "unsandboxed by default. Install it (`apt-get install bubblewrap`, or "
                        "`make toolchains` as root), or pass --unsafe-no-sandbox on a throw-away "
                        "machine")
    try:
        return _make(unsafe=False, limits=limits)
    except SandboxError as e:
        raise UserError(str(e)) from e


def execute_and_report(completions: Path, out_dir: Path | None, langs, args) -> int:
    from multipl_moe.evaluation import report
    from multipl_moe.evaluation.execute import FolderBusy, execute
    from multipl_moe.evaluation.sandbox import SandboxError

    runner = make_runner(args)
    try:
        s = execute(completions, out_dir, langs=langs, workers=args.workers, runner=runner,
                    run_timeout=args.timeout, use_cache=not args.no_toolchain_cache,
                    progress=not args.no_progress)
    except (FileNotFoundError, FolderBusy) as e:
        raise UserError(str(e)) from e
    except SandboxError as e:
        raise UserError(f"{e}. Pass --unsafe-no-sandbox only on a throw-away machine") from e
    for path, why in s.skipped.items():
        print(f"skipped {_one_line(path)}: {_one_line(why)}", file=sys.stderr)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items())) or "none"
    print(f"executed {s.executed} programs in {s.seconds:.1f} s ({s.programs_per_second:.2f}/s, "
          f"{args.workers} workers, {'sandboxed' if s.sandboxed else 'UNSANDBOXED'}); "
          f"reused {s.reused}; statuses: {statuses}")
    root = out_dir or completions
    run = report.collect(root)
    for path, why in run.unreadable.items():
        print(f"left out of the report {_one_line(path)}: {why}", file=sys.stderr)
    paths = report.write_report(run, root)
    print(report.table(run))
    print(f"wrote {paths['summary']}, {paths['table']}, {paths['chart']}")
    if s.skipped:
        print(f"multipl-moe: {len(s.skipped)} of {s.files} completion files were not run (each "
              "is listed above with its reason)", file=sys.stderr)
    if run.unreadable:
        print(f"multipl-moe: {len(run.unreadable)} results files could not be read (listed "
              "above)", file=sys.stderr)
    return 1 if s.skipped or run.unreadable else 0


def run(args: argparse.Namespace) -> int:
    from multipl_moe.evaluation.languages import parse_langs

    if not args.completions_dir.is_dir():
        raise UserError(f"{args.completions_dir} is not a directory")
    check_execution_args(args)
    langs = parse_langs(args.langs) if args.langs else None  # a UserError names a bad one
    return execute_and_report(args.completions_dir, args.output_dir, langs, args)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("execute", help="run MultiPL-E completion files in a sandbox",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("completions_dir", type=Path, metavar="COMPLETIONS_DIR",
                   help="folder with MultiPL-E completion files (searched recursively)")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="write results (mirroring the folder layout) here instead of beside "
                        "the completion files")
    p.add_argument("--langs", default=None,
                   help="only these languages, e.g. py,java,cpp (default: all found)")
    add_execution_args(p)
    p.set_defaults(func=run)
