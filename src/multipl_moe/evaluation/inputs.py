"""`eval`'s inputs checked before any work: the model folder and where the problems come from.

- `--model` given a training run folder (train's output_dir) names its `final/`, instead of the
  tokenizer error transformers gives for a folder whose config.json is a training config;
- problems: `--data-dir`, else `$MULTIPL_E_DIR` (as the demo and decontamination use it), else
  the hub. The hub stays the default, as documented, for a user who is online; offline, one
  quick connection attempt to the hub's host (the host `datasets` would contact anyway) replaces
  24 s of retries and a ConnectionError traceback with one line naming --data-dir.
  HF_HUB_OFFLINE=1 skips the probe and lets `datasets` read its cache.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import UserError
from ..util import hub
from ..util.checkpoints import check_checkpoint_dir


def check_model_arg(args: argparse.Namespace) -> None:
    if args.server:
        return
    path = Path(args.model)
    if not path.is_dir():
        raise UserError(f"--model {args.model}: not a checkpoint directory (to use a server, "
                        "pass --server URL and the served model's name as --model)")
    check_checkpoint_dir(path, "use --model")


def _example() -> str:
    shared = Path.cwd().parent / "shared" / "data" / "multipl-e"
    return f" (e.g. --data-dir {shared})" if shared.is_dir() else ""


def no_hub_message(why: str) -> str:
    return (f"no --data-dir, and {why}: pass --data-dir with MultiPL-E's JSONL files"
            f"{_example()}, or set $MULTIPL_E_DIR")


def resolve_data_dir(args: argparse.Namespace) -> Path | None:
    """The folder of problems to use, or None for the hub (checked to be reachable)."""
    if args.data_dir is not None:
        return args.data_dir
    env = os.environ.get("MULTIPL_E_DIR")
    if env:
        if not Path(env).is_dir():
            raise UserError(f"$MULTIPL_E_DIR {env} is not a directory")
        return Path(env)
    if hub.offline():
        return None
    if not hub.reachable():
        host, port = hub.endpoint()
        raise UserError(no_hub_message(f"the hub ({host}:{port}) cannot be reached from here"))
    return None
