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
target, so a reader (or a crash) never sees half a file. The same rule keeps an untrusted folder
from redirecting our writes: a symlink, hard link or FIFO planted where an output goes is
replaced by the rename, never written through; and outputs are read only if they are regular
files (a planted FIFO would otherwise block the read forever).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

# MultiPL-E files are written through these (re-exported: callers use formats.write_json_atomic).
from ..util.atomic import replace_then_append, write_bytes_atomic, write_json_atomic  # noqa: F401

RESULTS_SUFFIXES = (".results.json.gz", ".results.json")
PARTIAL_SUFFIX = ".results.partial.jsonl"
# Files of ours that live beside completion files and are not completion files.
NOT_COMPLETIONS = {"summary.json", "execution.json", "eval-run.json"}
# What reading a damaged or hostile file can raise (a truncated .gz gives EOFError, a corrupt
# one zlib.error or BadGzipFile, bad UTF-8 or JSON a ValueError).
READ_ERRORS = (OSError, ValueError, EOFError, zlib.error)
# Problem names become file names (NAME.json.gz, NAME.results.partial.jsonl): one path
# component, no leading dot, short enough for the longest suffix within NAME_MAX (255).
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")


class NotRegularFile(OSError):
    pass


def check_name(name: Any) -> str:
    """`name` if it is safe as a file name, else ValueError (problem names come from files and
    the hub, and `../../x` must not lead outside the output folder)."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"problem name {name!r} is not a safe file name (letters, digits, "
                         "'_', '.', '+', '-'; at most 200; no leading dot)")
    return name


def open_regular(path: Path, follow: bool = True):
    """A binary reader of `path` if it is a regular file (OSError otherwise, without blocking on
    a FIFO); with follow=False a symlink is refused too."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(f"{path}: not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_json(path: Path, follow: bool = True) -> Any:
    """JSON from `path` (gunzipped if the name ends in .gz); raises one of READ_ERRORS if it is
    not a readable regular file of JSON. follow=False for our own outputs: a symlink there was
    planted, not written by us."""
    with open_regular(path, follow) as raw:
        data = gzip.GzipFile(fileobj=raw, mode="rb").read() if str(path).endswith(".gz") \
            else raw.read()
    return json.loads(data.decode("utf-8"))


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
    """(index, result) for each complete line; a line cut short by a crash is ignored, and so is
    anything but a regular file (a planted symlink or FIFO)."""
    try:
        raw = open_regular(path, follow=False)
    except OSError:
        return
    with raw, open(raw.fileno(), encoding="utf-8", errors="replace", closefd=False) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                rec = json.loads(line)
                index = int(rec.pop("index"))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            yield index, rec


def start_partial(path: Path, earlier: Iterable[tuple[int, dict]]) -> TextIO:
    """A new journal at `path` holding `earlier`, open for appending. It is a fresh file renamed
    over `path`, so a symlink or hard link planted there (pointing outside the folder) is
    replaced, not appended to."""
    def fill(f):
        for index, result in earlier:
            append_partial(f, index, result)

    return replace_then_append(path, fill, "w", encoding="utf-8")


def append_partial(f, index: int, result: dict) -> None:
    f.write(json.dumps({"index": index, **result}) + "\n")
    f.flush()
