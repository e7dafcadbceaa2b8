"""Loading MultiPL-E problems from a folder (v3 and latest/), with SOURCE.md's row counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from multipl_moe.evaluation.problems import load_problems

DATA = Path(__file__).resolve().parents[2] / "shared/data/multipl-e"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"MultiPL-E data not found at {DATA}")


@pytest.mark.parametrize("bench,lang,version,rows", [
    ("humaneval", "py", "v3", 161), ("humaneval", "go", "v3", 154), ("mbpp", "java", "v3", 386),
    ("mbpp", "java", "latest", 383), ("humaneval", "rs", "latest", 155), ("mbpp", "ml", "latest", 358),
])
def test_folder_counts_match_source_md(bench, lang, version, rows):
    problems = load_problems(bench, lang, DATA, version)
    assert len(problems) == rows
    assert all({"name", "language", "prompt", "tests", "stop_tokens"} <= set(p) for p in problems)


def test_lua_stop_tokens_differ_between_v3_and_latest():
    v3 = load_problems("humaneval", "lua", DATA, "v3")[0]["stop_tokens"]
    latest = load_problems("humaneval", "lua", DATA, "latest")[0]["stop_tokens"]
    assert "\n\n" in v3 and "\n\n" not in latest  # upstream issue #165, see SOURCE.md


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_problems("humaneval", "py", tmp_path)
    with pytest.raises(ValueError):
        load_problems("apps", "py", DATA)
    with pytest.raises(ValueError, match="no Python"):
        load_problems("humaneval", "py", None)  # the hub has no Python config
    with pytest.raises(ValueError, match="latest"):
        load_problems("humaneval", "java", None, "latest")


def test_hub_loading_asks_for_the_benchmark_language_config(monkeypatch):
    """No network here: `datasets.load_dataset` is replaced by one serving the shared JSONL, to
    check the hub path's config name, split and revision, and that rows come back as dicts."""
    import datasets

    calls = []

    def fake_load_dataset(name, config, revision=None, split=None):
        calls.append((name, config, revision, split))
        return datasets.Dataset.from_list(load_problems("humaneval", config.split("-")[1], DATA))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = load_problems("humaneval", "rs", None, revision="abc123")
    assert calls == [("nuprl/MultiPL-E", "humaneval-rs", "abc123", "test")]
    assert rows == load_problems("humaneval", "rs", DATA) and isinstance(rows[0], dict)
