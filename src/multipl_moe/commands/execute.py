"""`multipl-moe execute`: run MultiPL-E completion files in the sandbox, write results files."""

from __future__ import annotations

import argparse
import os
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


def execution_options(args: argparse.Namespace):
    """The execution flags as the library's typed options, checked."""
    from multipl_moe.evaluation.pipeline import ExecutionOptions

    options = ExecutionOptions(workers=args.workers, timeout=args.timeout, memory_mb=args.memory_mb,
                               toolchain_cache=not args.no_toolchain_cache,
                               unsafe_no_sandbox=args.unsafe_no_sandbox, progress=not args.no_progress)
    options.check()
    return options


def run(args: argparse.Namespace) -> int:
    from multipl_moe.evaluation.languages import parse_langs
    from multipl_moe.evaluation.pipeline import execute_and_report

    if not args.completions_dir.is_dir():
        raise UserError(f"{args.completions_dir} is not a directory")
    options = execution_options(args)
    langs = parse_langs(args.langs) if args.langs else None  # a UserError names a bad one
    return execute_and_report(args.completions_dir, args.output_dir, langs, options)


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
