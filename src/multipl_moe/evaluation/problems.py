"""MultiPL-E problems: from a folder of JSONL files, or from the Hugging Face hub.

A folder is laid out as `../shared/data/multipl-e` is (see its SOURCE.md): `{benchmark}-{lang}.jsonl`
for MultiPL-E v3 (what the hub serves and published numbers use) and the same names under
`latest/` for the upstream fixes since. Each row has `name, language, prompt, tests,
stop_tokens` (plus `doctests, original, prompt_terminology`), the hub's schema exactly.

Rows are checked as they load: a name becomes a file name (`NAME.json.gz`), so one such as
`../../x` is refused, and so is a field of the wrong type, before anything is generated.
"""

from __future__ import annotations

import json
from pathlib import Path

from .formats import check_name

BENCHMARKS = ("humaneval", "mbpp")
VERSIONS = ("v3", "latest")
HUB_DATASET = "nuprl/MultiPL-E"
_KEYS = ("name", "language", "prompt", "tests", "stop_tokens")


def jsonl_path(data_dir: Path, benchmark: str, lang: str, version: str = "v3") -> Path:
    if version not in VERSIONS:
        raise ValueError(f"unknown MultiPL-E version {version!r} (choose from {VERSIONS})")
    folder = Path(data_dir) / "latest" if version == "latest" else Path(data_dir)
    return folder / f"{benchmark}-{lang}.jsonl"


def check_row(row, where: str) -> dict:
    """`row` if it is a usable MultiPL-E problem, else ValueError naming `where`."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: not a MultiPL-E row (a JSON {type(row).__name__})")
    missing = [k for k in _KEYS if k not in row]
    if missing:
        raise ValueError(f"{where}: not a MultiPL-E row (missing {missing})")
    try:
        check_name(row["name"])
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    for key in ("language", "prompt", "tests"):
        if not isinstance(row[key], str):
            raise ValueError(f"{where}: `{key}` of {row['name']} is not a string")
    stops = row["stop_tokens"]
    if not isinstance(stops, list) or not all(isinstance(t, str) for t in stops):
        raise ValueError(f"{where}: `stop_tokens` of {row['name']} is not a list of strings")
    return row


def load_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not JSON ({e})") from None
            rows.append(check_row(row, f"{path}:{lineno}"))
    return rows


def load_hub(benchmark: str, lang: str, dataset: str = HUB_DATASET,
             revision: str | None = None) -> list[dict]:
    """Rows of the hub config `{benchmark}-{lang}` (split `test`). The hub has no Python
    config (MultiPL-E's Python prompts are only in the repository), so `py` needs a folder."""
    if lang == "py":
        raise ValueError(f"{dataset} on the hub has no Python ({benchmark}-py) config; "
                         "use --data-dir with MultiPL-E's JSONL files")
    from datasets import load_dataset  # heavy; only when the hub is used

    config = f"{benchmark}-{lang}"
    ds = load_dataset(dataset, config, revision=revision, split="test")
    return [check_row(dict(row), f"{dataset} {config} row {i}") for i, row in enumerate(ds)]


def load_problems(benchmark: str, lang: str, data_dir: Path | None = None, version: str = "v3",
                  dataset: str = HUB_DATASET, revision: str | None = None) -> list[dict]:
    """Problems of one benchmark and language, from `data_dir` if given, else from the hub."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r} (choose from {BENCHMARKS})")
    if data_dir is not None:
        path = jsonl_path(data_dir, benchmark, lang, version)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        return load_jsonl(path)
    if version != "v3":
        raise ValueError("the hub serves MultiPL-E v3; `latest` needs --data-dir")
    return load_hub(benchmark, lang, dataset, revision)
