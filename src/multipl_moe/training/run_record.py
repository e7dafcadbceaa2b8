"""What a training run writes into output_dir before it starts: the resolved config and a record.

- `config.yaml`: the complete config after the YAML file, the preset and the overrides were
  merged, in the form `multipl-moe train` reads back (`multipl-moe train output_dir/config.yaml`
  repeats the run), written before the model is even loaded, as Hugging Face Trainer users
  expect to find it;
- `run.json`: one entry per start of the run (a `--resume` adds one): when, the command line,
  the checkpoint it resumed from, and `util.provenance` (project version, git commit, torch /
  transformers / accelerate / peft versions). A model trained over several starts says so.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from ..util.atomic import atomic_file, write_json_atomic
from ..util.provenance import provenance

CONFIG_YAML = "config.yaml"
RUN_JSON = "run.json"


def _plain(cfg) -> dict:
    # tuples (optim.betas) and other non-YAML types, as the JSON config already writes them
    return json.loads(json.dumps(cfg.to_dict(), default=list))


def write_start(cfg, out: Path, resumed_from: Path | None = None) -> dict:
    """Write config.yaml and append this start to run.json; returns this start's record."""
    import yaml

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / CONFIG_YAML) as f:
        f.write("# Resolved config of this run (file + preset + overrides), written when it started.\n")
        yaml.safe_dump(_plain(cfg), f, sort_keys=False)
    record = {"started": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
              "command": sys.argv, "resumed_from": str(resumed_from) if resumed_from else None,
              "provenance": provenance()}
    runs = []
    try:
        old = json.loads((out / RUN_JSON).read_text())
        runs = old.get("runs", []) if isinstance(old, dict) else []
    except (OSError, ValueError):
        pass
    write_json_atomic(out / RUN_JSON, {"runs": runs + [record]}, indent=2)
    return record


_printed_tables: set[str] = set()


def print_data_table(text: str) -> None:
    """The per-language data table, once per process: the demo trains a dozen runs on the same
    data in one process, and the same table a dozen times buries the lines that differ."""
    if text in _printed_tables:
        print("data: the same blocks as in the table above")
        return
    _printed_tables.add(text)
    print(text)
