"""Run one stage over its input items with a journal, a progress bar and a tally of verdicts.

Every stage is the same loop: skip the items the journal already has (same key, same input
hash), process the rest in batches, append one journal line per item as soon as its batch is
done, and finally assemble the stage's output from the journal *in input order*, so a run that
was killed and resumed produces exactly what an uninterrupted run produces.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .journal import Journal

# The stages, in order; the journal of stage i is `{i}-{name}.jsonl` in the output folder.
STAGES = ("extract", "tests", "coverage", "translate", "solutions", "dedupe")


class StageError(RuntimeError):
    """A stage cannot start (its input stage has not finished)."""


@dataclass
class Item:
    key: str
    input: str        # fingerprint of the content and the settings that matter to the stage
    data: Any


@dataclass
class StageResult:
    name: str
    counts: Counter = field(default_factory=Counter)
    """What became of the inputs: `kept` and one entry per reason for dropping."""
    outputs: list[dict] = field(default_factory=list)
    inputs: int = 0
    reused: int = 0   # items whose verdict came from the journal
    ran: int = 0      # items processed now
    unit: str = "item"
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        kept = self.counts.get("kept", 0)
        head = (f"{self.name}: {self.inputs} {self.unit}s in, kept {kept}"
                f" ({self.ran} processed now, {self.reused} from the journal)")
        out = [head]
        # Keys with a colon are details below the item level ("tests: passed"), not verdicts.
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        for reason, n in ranked:
            if reason != "kept" and ":" not in reason:
                out.append(f"  dropped {n:>6}  {reason}")
        for detail, n in sorted(self.counts.items()):
            if ":" in detail:
                out.append(f"  {detail} {n}")
        return out + [f"  note: {n}" for n in self.notes]


def journal_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{STAGES.index(name) + 1}-{name}.jsonl"


def output_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{STAGES.index(name) + 1}-{name}.out.jsonl"


def summary_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / f"{STAGES.index(name) + 1}-{name}.summary.json"


def chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), max(1, size)):
        yield seq[i:i + size]


def begin(out_dir: Path, name: str) -> None:
    """A stage starts: its old outputs go, so a later stage never reads outputs of settings
    that are being replaced (the journal stays: it is what makes the rerun cheap)."""
    output_path(out_dir, name).unlink(missing_ok=True)
    summary_path(out_dir, name).unlink(missing_ok=True)


def finish(out_dir: Path, result: StageResult) -> None:
    """Write the stage's outputs and tally, each atomically: they exist only for a finished stage."""
    from multipl_moe.util.atomic import atomic_file

    with atomic_file(output_path(out_dir, result.name), encoding="utf-8") as f:
        for row in result.outputs:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {"stage": result.name, "inputs": result.inputs, "counts": dict(result.counts),
               "ran": result.ran, "reused": result.reused, "notes": result.notes}
    with atomic_file(summary_path(out_dir, result.name), encoding="utf-8") as f:
        json.dump(summary, f, indent=2)


def read_outputs(out_dir: Path, name: str) -> list[dict]:
    """The outputs of a finished stage; StageError if it has not finished in `out_dir`."""
    path = output_path(out_dir, name)
    if not path.exists():
        why = "did not finish" if journal_path(out_dir, name).exists() else "has not run"
        raise StageError(f"stage {name} {why} in {out_dir} (no {path.name}); "
                         f"run it first (--stages {name})")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_summary(out_dir: Path, name: str) -> dict | None:
    path = summary_path(out_dir, name)
    return json.loads(path.read_text()) if path.exists() else None


def run_stage(out_dir: Path, name: str, items: Iterable[Item],
              process: Callable[[list[Item]], list[tuple[dict, list[dict]]]], *,
              batch: int = 1, total: int | None = None, progress: bool = True,
              unit: str = "item") -> StageResult:
    """Process the items not yet in the stage's journal; `process(batch)` returns one
    `(counts, outputs)` per item, in order. Returns the stage's tally and outputs, input order.
    The caller writes them with `finish` (after any stage-wide step of its own)."""
    from tqdm import tqdm

    begin(out_dir, name)
    result = StageResult(name, unit=unit)
    order: list[tuple[str, str]] = []
    with Journal(journal_path(out_dir, name)) as journal, \
            tqdm(total=total, desc=f"synth {name}", unit=unit, disable=not progress,
                 dynamic_ncols=True) as bar:
        todo: list[Item] = []

        def flush() -> None:
            verdicts = process(todo)
            if len(verdicts) != len(todo):
                raise AssertionError(f"stage {name}: {len(verdicts)} verdicts for {len(todo)} items")
            for item, (counts, outs) in zip(todo, verdicts):
                journal.add(item.key, item.input, counts, outs)
            result.ran += len(todo)
            bar.update(len(todo))
            todo.clear()

        for item in items:
            order.append((item.key, item.input))
            if journal.has(item.key, item.input) or any(
                    t.key == item.key and t.input == item.input for t in todo):
                result.reused += 1
                bar.update(1)
                continue
            todo.append(item)
            if len(todo) >= batch:
                flush()
        if todo:
            flush()
    seen: set[tuple[str, str]] = set()
    for key_input in order:
        if key_input in seen:   # the same item twice in the input counts once
            continue
        seen.add(key_input)
        rec = journal.records[key_input]
        result.counts.update(rec["counts"])
        result.outputs.extend(rec["items"])
    result.inputs = len(seen)
    return result
