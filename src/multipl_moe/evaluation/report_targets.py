"""Which folders `report` scores as one model each, and which files it may write.

`report DIR` reads every results file under DIR. Pointed at a folder that holds several eval
outputs (the demo's `runs/demo`, with one per model), that merged all the models into one table
and wrote its summary.json over the demo's own. So:

- a *result folder* is one model's output: the top of an `eval` run (it holds eval-run.json) or
  of an `execute` run (execution.json). DIR is scored as one model when it is a result folder
  itself, or holds no marked one (MultiPL-E's own results folders); otherwise each result folder
  under it is one model, and they are compared side by side;
- `report` writes only files it owns: its own names (summary.json, passk.md, passk.png,
  compare.md, compare.png) in a result folder or in a folder where they are its own (our
  summary.json says `written_by`; our Markdown ends with the provenance line). Anything else of
  that name is someone else's, and the command stops and says so before writing anything.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..util.provenance import one_line, provenance
from . import formats

MARKS = ("eval-run.json", "execution.json")
WRITTEN_BY = "multipl-moe report"


def is_result_folder(path: Path) -> bool:
    return any((Path(path) / m).is_file() for m in MARKS)


def result_folders(root: Path) -> list[Path]:
    """The outermost result folders under `root` (root itself included), sorted."""
    marked = sorted({p.parent for m in MARKS for p in Path(root).rglob(m)},
                    key=lambda p: (len(p.parts), str(p)))
    outer: list[Path] = []
    for p in marked:
        if not any(p == o or o in p.parents for o in outer):
            outer.append(p)
    return sorted(outer)


def expand(dirs: list[Path]) -> tuple[list[Path], list[str]]:
    """(folders to score, one per model; notes on the expansions made)."""
    folders, notes = [], []
    for d in dirs:
        found = result_folders(d)
        if is_result_folder(d) or not found:
            folders.append(d)
        else:
            folders.extend(found)
            if len(found) > 1:
                notes.append(f"{d} holds {len(found)} result folders, one per model; each is scored "
                             f"on its own: {', '.join(str(f) for f in found)}")
    return folders, notes


def footer(p: dict | None = None) -> str:
    return f"\n_{WRITTEN_BY}: {one_line(p)}_\n"


def _ours_md(path: Path) -> bool:
    try:
        tail = path.read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        return False
    return WRITTEN_BY in tail


def _ours_summary(path: Path) -> bool:
    try:
        data = formats.read_json(path)
    except formats.READ_ERRORS:
        return False
    if not isinstance(data, dict):
        return False
    # older summaries of ours, from before `written_by`: exactly these keys
    return data.get("written_by") == WRITTEN_BY or {"root", "sandboxed", "results"} <= set(data)


def check_writable(folder: Path, names: tuple[str, ...], source: Path | None = None) -> None:
    """UserError (nothing written) if one of `names` in `folder` is not ours to replace, or if
    `folder` is another model's result folder (its summary would then describe `source`)."""
    folder = Path(folder)
    result = is_result_folder(folder)
    if result and source is not None and folder.resolve() != Path(source).resolve():
        raise UserError(f"{folder} is the result folder of another eval/execute run; writing the "
                        f"report of {source} there would mix two models: pass --out with a "
                        "folder of its own")
    summary_ours = (folder / "summary.json").is_file() and _ours_summary(folder / "summary.json")
    for name in names:
        path = folder / name
        if not path.exists():
            continue
        if name.endswith(".json"):
            ours = _ours_summary(path)
        elif name.endswith(".md"):
            ours = _ours_md(path) or result
        else:   # a chart: ours where the table or summary beside it is
            ours = result or summary_ours or _ours_md(path.with_suffix(".md"))
        if not ours:
            raise UserError(f"{path} was not written by `multipl-moe report` (it holds something "
                            "else), so it is not replaced; pass --out with a folder of its own")


def stamp(summary: dict, root: Path) -> dict:
    """The summary with what produced it: this run's provenance, and for an eval folder the runs
    that generated its completions (which were reused, and from when)."""
    out = {"written_by": WRITTEN_BY, **summary, "provenance": provenance()}
    manifest = Path(root) / "eval-run.json"
    if manifest.is_file():
        try:
            record = formats.read_json(manifest)
            out["eval_runs"] = record.get("runs", [])
            out["model"] = record.get("key", {}).get("model")
        except (*formats.READ_ERRORS, AttributeError):
            pass
    return out
