"""What kind of folder a user passed where a checkpoint is expected, told in one line.

Read from `config.json` and the folder layout only (no torch, no transformers), so a command can
say what is wrong before it loads anything:

- a training run folder (`train`'s `output_dir`: its `config.json` is the training config, with
  no `model_type`, and the model is in `final/`) is named as such, with its `final/`;
- a dense checkpoint given to a command that needs a MultiPL-MoE one is named as dense;
- a base model that is neither a local checkpoint nor a hub id usable offline is reported with
  the commands that make it, instead of minutes of hub retries.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError

MOE_MODEL_TYPE = "multipl_moe"


def read_config(path: Path) -> dict | None:
    """`path/config.json` as a dict, or None when there is none or it is not a JSON object."""
    try:
        data = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_training_run(path: Path) -> bool:
    """A `train` output folder: training config (no model_type) or checkpoints/metrics, not weights."""
    path = Path(path)
    if not path.is_dir():
        return False
    cfg = read_config(path)
    if cfg is not None and "model_type" in cfg:
        return False
    return (path / "final").is_dir() or (path / "checkpoints").is_dir() or \
        (path / "metrics.jsonl").is_file() or (cfg is not None and "output_dir" in cfg)


def training_run_message(path: Path, what: str) -> str:
    final = Path(path) / "final"
    if (final / "config.json").is_file():
        return (f"{path} is a training run folder, not a checkpoint: its trained model is {final} "
                f"({what} {final})")
    return (f"{path} is a training run folder without a final model yet (the run has not finished; "
            f"its checkpoints/ hold training states, not models): finish it with `multipl-moe train "
            f"... --resume`, then use {final}")


def check_checkpoint_dir(path: Path, what: str) -> dict:
    """The config of the Hugging Face checkpoint `path`, or UserError saying what `path` is."""
    path = Path(path)
    if is_training_run(path):
        raise UserError(training_run_message(path, what))
    cfg = read_config(path)
    if cfg is None:
        raise UserError(f"{path}: not a Hugging Face checkpoint directory (no readable config.json)")
    if "model_type" not in cfg:
        raise UserError(f"{path}/config.json has no model_type: not a Hugging Face model config")
    return cfg


def require_multipl_moe(path: Path, command: str) -> dict:
    """Config of a MultiPL-MoE checkpoint, or UserError (checked before any weight is read)."""
    cfg = check_checkpoint_dir(path, f"multipl-moe {command}")
    if cfg.get("model_type") != MOE_MODEL_TYPE:
        raise UserError(f"{path} is not a MultiPL-MoE checkpoint (model_type {cfg.get('model_type')!r}, a "
                        f"dense model): `multipl-moe {command}` needs one made by `multipl-moe upcycle` "
                        "(or trained from one)")
    return cfg


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def check_model_source(ref: str, option: str, how_to_make: list[str] | None = None) -> None:
    """`ref` (a base model: local folder or hub id) is usable, or UserError at once.

    A local-looking path that does not exist is named with the commands that make it (a shipped
    config's YAML comments); a hub id is left to the hub unless the hub is switched off
    (HF_HUB_OFFLINE) and the id is not in the local cache, in which case waiting for retries
    would only delay the same error."""
    path = Path(ref).expanduser()
    # `runs/tiny-base` is also a well-formed hub id; a folder that the making commands write is
    # meant to be local, and asking the hub for it would only cost retries.
    made_here = any(ref in c.split() for c in how_to_make or [])
    local = ref.startswith(("/", "./", "../", "~")) or ref.count("/") != 1 or path.exists() or made_here
    make = ("; make it first with:\n  " + "\n  ".join(how_to_make)) if how_to_make else ""
    if local:
        if not path.exists():
            raise UserError(f"{option} {ref}: no such folder{make}")
        if is_training_run(path):
            raise UserError(f"{option}: " + training_run_message(path, option))
        if path.is_dir() and read_config(path) is None:
            raise UserError(f"{option} {ref}: not a Hugging Face checkpoint (no config.json){make}")
        return
    from .hub import offline

    if offline() and not _in_hub_cache(ref):
        raise UserError(f"{option} {ref}: not a local folder, and the hub is off (HF_HUB_OFFLINE) "
                        f"with no cached copy{make}")


def commands_in_comments(yaml_path: Path) -> list[str]:
    """The shell commands in a config's leading comment block (indented `#   ` lines, with
    backslash continuations joined): what a shipped config says to run first."""
    try:
        lines = Path(yaml_path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    commands: list[str] = []
    joining = False
    for line in lines:
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if joining:
            commands[-1] = commands[-1].rstrip("\\").rstrip() + " " + text
        elif line.startswith("#  ") and text.split(" ", 1)[0] in ("multipl-moe", "python", "python3", "make"):
            commands.append(text)
        else:
            continue
        joining = text.endswith("\\")
    return commands


def check_train_inputs(yaml_path: Path, base: str, sources: list[str]) -> None:
    """Before `train` builds anything: the base model and local data files exist, or one line
    with the commands (from the config's own comments) that make them."""
    commands = commands_in_comments(yaml_path)
    missing = [s for s in sources if isinstance(s, str) and s.endswith((".jsonl", ".jsonl.gz", ".json"))
               and not Path(s).expanduser().exists()]
    if missing:
        make = ("; make it first with:\n  " + "\n  ".join(commands)) if commands else ""
        raise UserError(f"data.sources: {missing[0]} does not exist{make}")
    check_model_source(base, "model.base", commands)
