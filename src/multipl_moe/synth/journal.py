"""The per-stage journal: an append-only JSONL file, one line per finished input item.

Why a journal rather than one output file per stage: a stage over 10k functions runs for hours,
and a kill (Ctrl-C, OOM, a lost machine) must lose at most the items that were in flight. Each
finished item is appended as one line with a single `write` on an `O_APPEND` descriptor, so a
line is either whole or, after a kill in the middle of the write, a cut tail that the next open
truncates away. Nothing is ever rewritten in place.

Each line is `{"key", "input", "counts", "items"}`:

- `key` names the input item (a document id, a function id, `function@lang`);
- `input` is a hash of the item's content *and* the stage's settings: an item is done when a
  line with the same key and hash exists, so a rerun skips it (idempotent), a changed input or
  setting makes it run again, and the line of an older input is simply ignored;
- `counts` says what became of it (`{"kept": 3}`, `{"no passing test": 1}`);
- `items` are the outputs the next stage reads (zero, one or many per input item).

When the stage has gone through its whole input, its outputs are written (atomically) beside the
journal as `{i}-{stage}.out.jsonl`; the next stage reads only that file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable values (the item's content and the settings)."""
    data = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


class Journal:
    """One stage's journal file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[tuple[str, str], dict] = {}
        self._fd: int | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line cut short by a kill: drop it so the next append is clean
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "key" in rec and "input" in rec:
                # The last line of a (key, input) wins; with the skip in `pending` there is one.
                self.records[(rec["key"], rec["input"])] = rec

    def has(self, key: str, input_hash: str) -> bool:
        return (key, input_hash) in self.records

    def get(self, key: str, input_hash: str) -> dict | None:
        return self.records.get((key, input_hash))

    def _write(self, rec: dict) -> None:
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        written = os.write(self._fd, line)
        if written != len(line):  # a short write (disk full): never leave half a line
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")

    def add(self, key: str, input_hash: str, counts: dict[str, int], items: list[dict]) -> None:
        rec = {"key": key, "input": input_hash, "counts": counts, "items": items}
        self._write(rec)
        self.records[(key, input_hash)] = rec

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tally(records: Iterable[dict]) -> Counter:
    counts: Counter = Counter()
    for rec in records:
        counts.update(rec["counts"])
    return counts
