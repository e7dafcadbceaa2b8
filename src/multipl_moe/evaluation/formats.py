"""MultiPL-E's file formats, read and written so that MultiPL-E's own tools can read ours.

- completion file `NAME.json.gz` (or `.json`): one problem's `name, language, prompt, tests,
  stop_tokens` plus `completions` (and generation settings such as `temperature`);
- results file `NAME.results.json` (MultiPL-E's tools also read and write `.results.json.gz`; we
  read both): the same fields without `completions`, plus `results: [{program, status,
  exit_code, stdout, stderr, timestamp}]`, one per completion, in order;
- while a file is being executed, finished results are appended to `NAME.results.partial.jsonl`
  (one JSON line per completion, with its index), so a crash loses at most the programs that
  were running; the final results file replaces it atomically.

Every whole-file write goes to a temporary file in the same folder and is renamed over the
target, so a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from ..atomic import atomic_file

RESULTS_SUFFIXES = (".results.json.gz", ".results.json")
PARTIAL_SUFFIX = ".results.partial.jsonl"
# Files of ours that live beside completion files and are not completion files.
NOT_COMPLETIONS = {"summary.json", "execution.json"}


def read_json(path: Path) -> Any:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def write_json_atomic(path: Path, obj: Any, indent: int | None = None) -> None:
    """Write JSON (gzipped if the name ends in .gz) via a temp file and an atomic rename."""
    data = json.dumps(obj, indent=indent).encode()
    write_bytes_atomic(path, gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def is_completion_file(path: Path) -> bool:
    name = path.name
    return (path.is_file() and not name.startswith(".") and name not in NOT_COMPLETIONS
            and (name.endswith(".json") or name.endswith(".json.gz"))
            and not name.endswith(RESULTS_SUFFIXES))


def completion_files(root: Path) -> list[Path]:
    """Completion files under `root` (recursively), sorted."""
    return sorted(p for p in Path(root).rglob("*.json*") if is_completion_file(p))


def results_files(root: Path) -> list[Path]:
    """Results files under `root`, ours (.results.json) or MultiPL-E's (.results.json.gz); one
    per problem where both exist (the plain one)."""
    found = {}
    for p in sorted(Path(root).rglob("*.results.json*"), key=lambda p: p.name.endswith(".gz")):
        if p.name.endswith(RESULTS_SUFFIXES):
            found.setdefault((p.parent, stem(p)), p)
    return sorted(found.values())


def stem(path: Path) -> str:
    """`HumanEval_53_add.json.gz` -> `HumanEval_53_add`."""
    name = path.name
    for suffix in (".results.json.gz", ".results.json", ".json.gz", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def results_path(completion: Path, completions_root: Path, out_root: Path | None = None) -> Path:
    """Where the results of `completion` go: beside it (MultiPL-E's layout) or mirrored under
    `out_root`; always plain `.results.json` (MultiPL-E's pass_k.py reads it as well as .gz)."""
    folder = completion.parent
    if out_root is not None:
        folder = Path(out_root) / completion.parent.relative_to(completions_root)
    return folder / f"{stem(completion)}.results.json"


def partial_path(results: Path) -> Path:
    return results.parent / f"{stem(results)}{PARTIAL_SUFFIX}"


def read_partial(path: Path) -> Iterator[tuple[int, dict]]:
    """(index, result) for each complete line; a line cut short by a crash is ignored."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                rec = json.loads(line)
                yield int(rec.pop("index")), rec
            except (ValueError, KeyError, TypeError):
                continue


def append_partial(f, index: int, result: dict) -> None:
    f.write(json.dumps({"index": index, **result}) + "\n")
    f.flush()
