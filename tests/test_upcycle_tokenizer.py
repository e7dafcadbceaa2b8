"""Upcycling writes a tokenizer only when the base has one (issue 11, item 4)."""

from __future__ import annotations

from multipl_moe.cli import main as cli
from multipl_moe.modeling.tiny import make_tiny_dense

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


def test_base_without_tokenizer_gives_a_checkpoint_without_one_and_says_so(tmp_path, capsys):
    base = tmp_path / "base"
    make_tiny_dense(base)
    assert not any((base / n).exists() for n in TOKENIZER_FILES)
    out = tmp_path / "moe"
    assert cli(["upcycle", "--base", str(base), "--out", str(out), "--preset", "paper"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert not set(TOKENIZER_FILES) & set(written), written
    assert "model.safetensors" in written
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "tokenizer" in line]
    assert notes == [f"note: {base} has no tokenizer, so {out} is written without one"], err


def test_base_with_tokenizer_still_gets_it_copied(tiny_base_factory, tmp_path, capsys):
    from transformers import AutoTokenizer

    base = tiny_base_factory("qwen2")
    out = tmp_path / "moe"
    assert cli(["upcycle", "--base", str(base), "--out", str(out), "--preset", "paper"]) == 0
    assert "no tokenizer" not in capsys.readouterr().err
    original, copied = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(out)
    assert len(copied) == len(original) > 1
    sample = "def add(a, b):\n    return a + b\n"
    assert copied(sample)["input_ids"] == original(sample)["input_ids"]
