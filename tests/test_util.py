"""The shared helpers every layer writes through: atomic outputs and Markdown tables."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from multipl_moe.util.atomic import (atomic_file, replace_then_append, write_json_atomic,
                                     write_jsonl_atomic)
from multipl_moe.util.tables import markdown_table


def test_jsonl_rows_appear_whole_and_a_failing_writer_leaves_neither_file_nor_temp(tmp_path):
    out = tmp_path / "deep" / "corpus.jsonl"
    assert write_jsonl_atomic(({"i": i, "s": "é"} for i in range(3)), out) == 3
    assert [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()] == \
        [{"i": i, "s": "é"} for i in range(3)]
    assert "é" in out.read_text(encoding="utf-8")  # UTF-8 kept as is, not \u-escaped

    def rows():
        yield {"i": 0}
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(rows(), tmp_path / "other.jsonl")
    with pytest.raises(RuntimeError):
        write_jsonl_atomic(rows(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]
    assert os.listdir(out.parent) == ["corpus.jsonl"] and len(out.read_text().splitlines()) == 3


def test_json_is_gzipped_by_name_and_byte_identical_for_equal_data(tmp_path):
    write_json_atomic(tmp_path / "a.json.gz", {"x": 1})
    first = (tmp_path / "a.json.gz").read_bytes()
    write_json_atomic(tmp_path / "a.json.gz", {"x": 1})
    assert (tmp_path / "a.json.gz").read_bytes() == first
    assert json.loads(gzip.decompress(first)) == {"x": 1}


def test_fsync_write_replaces_the_target(tmp_path):
    (tmp_path / "m.json").write_text("old")
    with atomic_file(tmp_path / "m.json", fsync=True) as f:
        f.write("new")
    assert (tmp_path / "m.json").read_text() == "new" and os.listdir(tmp_path) == ["m.json"]


def test_replace_then_append_replaces_a_planted_symlink_instead_of_writing_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    journal = tmp_path / "run" / "x.partial.jsonl"
    journal.parent.mkdir()
    journal.symlink_to(victim)
    with replace_then_append(journal, lambda f: f.write("earlier\n")) as f:
        f.write("later\n")
    assert victim.read_text() == "keep me\n"
    assert not journal.is_symlink() and journal.read_text() == "earlier\nlater\n"


def test_replace_then_append_leaves_the_old_file_when_filling_fails(tmp_path):
    journal = tmp_path / "x.jsonl"
    journal.write_text("old\n")

    def fill(f):
        f.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_then_append(journal, fill)
    assert journal.read_text() == "old\n" and os.listdir(tmp_path) == ["x.jsonl"]


def test_markdown_table_rows_short_rows_and_pipes():
    text = markdown_table(["a", "b", "c"], [[1, "x", 2.5], ["note: a|b"]])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | x | 2.5 |",
                                 "| note: a\\|b | | |"]


def test_markdown_table_refuses_a_row_longer_than_its_head():
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        markdown_table(["a", "b"], [[1, 2, 3]])
