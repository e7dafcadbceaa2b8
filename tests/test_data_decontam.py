"""Decontamination drops a planted copy of a real MultiPL-E prompt and keeps the rest (test 6)."""

from __future__ import annotations

import json
import random
import re
import sysconfig
from pathlib import Path

import pytest

from multipl_moe.data.config import DataConfig
from multipl_moe.data.decontam import Decontaminator, DecontamReport
from multipl_moe.data.sources import Document

SHARED_MULTIPL_E = Path(__file__).resolve().parents[2] / "shared/data/multipl-e"
needs_data = pytest.mark.skipif(not SHARED_MULTIPL_E.is_dir(),
                                reason=f"MultiPL-E data not found at {SHARED_MULTIPL_E}")


def _row(name: str, index: int) -> dict:
    with open(SHARED_MULTIPL_E / name, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == index:
                return json.loads(line)
    raise AssertionError


def _unrelated(lang: str, i: int, rng: random.Random) -> str:
    body = "\n".join(f"    let v{j} = compute_{rng.randrange(10**6)}(v{j - 1}, {rng.random():.4f});"
                     for j in range(1, 40))
    return f"// {lang} module {i}\nfn helper_{i}() {{\n{body}\n}}\n"


@pytest.fixture(scope="module")
def deco():
    if not SHARED_MULTIPL_E.is_dir():
        pytest.skip(f"MultiPL-E data not found at {SHARED_MULTIPL_E}")
    return Decontaminator.from_dir(SHARED_MULTIPL_E)


@needs_data
def test_planted_prompt_and_tests_are_found(deco):
    rs = _row("humaneval-rs.jsonl", 10)
    go = _row("mbpp-go.jsonl", 3)
    rng = random.Random(0)
    planted_prompt = _unrelated("rs", 1, rng) + "\n" + rs["prompt"] + "    todo!()\n}\n"
    planted_tests = "package main\n" + go["tests"]
    assert deco.match(planted_prompt) is not None
    assert deco.match(planted_prompt).startswith("humaneval_")
    assert deco.match(planted_tests) is not None
    # unrelated code, a run of numbers, and a real stdlib file that shares a number run with MBPP
    assert all(deco.match(_unrelated("rs", i, rng)) is None for i in range(50))
    assert deco.match(" ".join(str(i) for i in range(1, 40))) is None
    heapq = Path(sysconfig.get_paths()["stdlib"]) / "heapq.py"
    if heapq.exists():
        assert deco.match(heapq.read_text()) is None
    # one n-gram too short to count: only a 12-token fragment of the prompt
    words = rs["prompt"].split()
    assert deco.match(" ".join(words[:12])) is None


@needs_data
def test_filter_reports_drops_per_language(deco):
    rng = random.Random(1)
    rs = _row("humaneval-rs.jsonl", 20)
    docs = [Document(f"u{i}", "rs" if i % 2 else "py", _unrelated("x", i, rng)) for i in range(20)]
    docs.insert(7, Document("planted", "rs", "// copied\n" + rs["prompt"]))
    report = DecontamReport()
    kept = list(deco.filter(docs, report))
    assert [d.id for d in kept] == [d.id for d in docs if d.id != "planted"]
    assert report.dropped == {"rs": 1} and report.checked == {"rs": 11, "py": 10}
    assert report.examples[0][0] == "planted"
    assert "dropped 1 of 21" in "\n".join(report.lines())


def test_boilerplate_shared_by_many_problems_is_ignored():
    header = "import java.util.*; import java.lang.reflect.*; import org.javatuples.*; " \
             "import java.security.*; import java.math.*; import java.io.*;"
    texts = [(f"p{i}", header + f" class Problem{i} {{ int solve_{i}(int a) {{ return a * {i}; }} }}")
             for i in range(30)]
    d = Decontaminator(texts, n=8, max_problems=10)
    assert d.match("// my code\n" + header + "\nclass Mine {}") is None
    assert d.match("class Problem7 { int solve_7(int a) { return a * 7; } }") == "p7"


@needs_data
def test_training_data_is_decontaminated(tmp_path):
    from multipl_moe.data.packing import build_train_val
    from multipl_moe.data.tokenizer import train_bpe_tokenizer

    rng = random.Random(2)
    rs = _row("humaneval-rs.jsonl", 30)
    rows = [{"content": _unrelated("rs", i, rng) + f"// <keep{i}>\n", "lang": "rs" if i % 3 else "go"}
            for i in range(60)]
    rows.insert(25, {"content": "// <planted>\n" + rs["prompt"] + rs["tests"], "lang": "rs"})
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = train_bpe_tokenizer([r["content"] for r in rows], vocab_size=500)

    def markers(train, val):
        text = "".join(tok.decode(b) for lang in train.sources for b in train.sources[lang](0, 1, 0))
        text += "".join(tok.decode(b["input_ids"]) for v in val.values() for b in v)
        return set(re.findall(r"<(planted|keep\d+)>", text))

    base = dict(sources=[str(path)], seq_len=128, val_fraction=0.2)
    train, val = build_train_val(DataConfig(**base), tok)
    assert "planted" in markers(train, val)  # without the pass, the copy would be trained on
    train, val = build_train_val(DataConfig(**base, decontaminate=True,
                                            decontam_dir=str(SHARED_MULTIPL_E)), tok)
    found = markers(train, val)
    assert "planted" not in found and len(found) >= 50  # a few markers are cut by block ends
    assert train.report.decontam.dropped == {"rs": 1}

    cfg = DataConfig(**base, decontaminate=True, decontam_dir=str(SHARED_MULTIPL_E),
                     streaming=True)
    train, val = build_train_val(cfg, tok)
    found = markers(train, val)
    assert "planted" not in found and len(found) >= 50


@needs_data
def test_cli_decontam(tmp_path, capsys):
    from multipl_moe.cli import main

    rs = _row("humaneval-rs.jsonl", 40)
    rows = [{"content": "fn main() { println!(\"hello\"); }\n", "lang": "rs"},
            {"content": rs["prompt"], "lang": "rs"},
            {"content": "print('hi')\n", "lang": "py"}]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    assert main(["data", "decontam", str(src), "--out", str(out),
                 "--data-dir", str(SHARED_MULTIPL_E)]) == 0
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["content"] for r in kept] == [rows[0]["content"], rows[2]["content"]]
    assert "dropped 1 of 3" in capsys.readouterr().out
