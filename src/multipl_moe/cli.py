"""The `multipl-moe` command: one subcommand per job.

Each subcommand lives in its own module under `multipl_moe.commands` and exposes
`add_parser(subparsers)` (which sets `func`) so that this file stays a thin dispatcher and
importing the CLI does not import torch until a command actually runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Re-exported: older code and tests import UserError from here.
from .errors import UserError  # noqa: F401

# (module name under multipl_moe.commands) in the order `--help` lists them.
COMMAND_MODULES = [
    "upcycle",
    "info",
    "export",
    "data",
    "train",
    "demo",
    "eval",
    "execute",
    "report",
    "bench",
    "synth",
    "xlcost",
    "merge",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multipl-moe",
        description="Upcycle a dense code LLM into a hybrid token+segment mixture of experts, "
        "train it on multi-language code, and evaluate it on MultiPL-E.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"multipl_moe.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .util.quiet import install as _quiet_transformers

    _quiet_transformers()   # no per-tensor loading bars from transformers in our commands
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"multipl-moe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `multipl-moe info ... | head`: the reader left, nothing went wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":
    # Run as `python -m multipl_moe.cli`: dispatch through the imported module, so that the
    # UserError the commands raise is the class `main` catches (not a copy made for __main__).
    from multipl_moe.cli import main as _main

    sys.exit(_main())
