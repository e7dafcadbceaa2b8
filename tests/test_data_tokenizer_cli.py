"""The byte-level BPE tokenizer, and the `multipl-moe data` commands' input and error handling."""

from __future__ import annotations

import json
import random

import pytest

from multipl_moe.cli import main
from multipl_moe.commands.data import parse_size

SNIPPETS = ["def add(a, b):\n    return a + b\n", "fn add(a: i32, b: i32) -> i32 { a + b }\n",
            "func add(a int, b int) int {\n\treturn a + b\n}\n", "def add(a, b) = a + b\n",
            "public static int add(int a, int b) { return a + b; }\n"]
LANGS = ["py", "rs", "go", "rb", "java"]


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(0)
    rows = [{"content": "".join(SNIPPETS[i % 5].replace("add", f"add{rng.randrange(99)}")
                                for _ in range(8)), "lang": LANGS[i % 5]} for i in range(100)]
    rows.append({"content": "", "lang": "py"})
    rows.append({"content": "x", "lang": "klingon"})
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tokenizer_command_roundtrip_and_special_tokens(corpus, tmp_path, capsys):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    out = tmp_path / "tok"
    assert main(["data", "tokenizer", "--corpus", str(corpus), "--out", str(out),
                 "--vocab-size", "400"]) == 0
    assert "wrote" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(str(out))
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert 259 < len(tok) <= 400
    specials = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
    assert None not in specials and len(specials) == 3
    text = "fn main() {\n\tlet s = \"héllo, 世界 ✓\";  // tabs\tand  spaces\r\n}\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: lossless on unseen characters
    assert tok(text)["input_ids"] == ids  # encode adds no special token: packing adds EOS
    assert len(tok("def add(a, b):")["input_ids"]) < len("def add(a, b):")  # merges were learnt
    # retraining overwrites atomically
    assert main(["data", "tokenizer", "--corpus", str(corpus), "--out", str(out),
                 "--vocab-size", "300"]) == 0
    assert len(AutoTokenizer.from_pretrained(str(out))) <= 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "tok"]


def test_stats_command(corpus, capsys):
    assert main(["data", "stats", str(corpus)]) == 0
    out = capsys.readouterr().out
    for lang in LANGS:
        assert f"\n{lang} " in out
    assert "total" in out and "skipped, unknown language: 1 (klingon 1)" in out
    assert "skipped, empty: 1" in out


def test_pack_command(corpus, tmp_path, capsys):
    from multipl_moe.data.tokenizer import train_bpe_tokenizer

    train_bpe_tokenizer(SNIPPETS * 4, vocab_size=300).save_pretrained(str(tmp_path / "tok"))
    assert main(["data", "pack", str(corpus), "--tokenizer", str(tmp_path / "tok"),
                 "--seq-len", "32", "--weights", "py=1,rs=3", "--val-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert float(lines["py"][1]) == pytest.approx(0.25, abs=1e-3)
    assert float(lines["rs"][1]) == pytest.approx(0.75, abs=1e-3)
    assert float(lines["go"][1]) == 0.0


@pytest.mark.parametrize("argv,message", [
    (["data", "stats", "/nonexistent/x.jsonl"], "no such file"),
    (["data", "pack", "{corpus}", "--tokenizer", "{corpus}", "--seq-len", "1"], "data.seq_len"),
    (["data", "pack", "{corpus}", "--tokenizer", "x", "--weights", "py"], "--weights"),
    (["data", "tokenizer", "--corpus", "{corpus}", "--out", "{tmp}/t", "--vocab-size", "10"],
     "--vocab-size"),
])
def test_user_errors_are_one_line(argv, message, corpus, tmp_path, capsys):
    argv = [a.format(corpus=corpus, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_parse_size():
    assert [parse_size(s) for s in ("512", "2k", "2M", "1.5G", "3MiB", "0", "none")] == \
           [512, 2048, 2 * 1024**2, int(1.5 * 1024**3), 3 * 1024**2, None, None]
    with pytest.raises(Exception):
        parse_size("lots")


@pytest.mark.parametrize("arch", ["qwen2", "llama", "mistral"])
def test_a_checkpoints_tokenizer_reloads_to_the_same_ids_as_the_trained_one(tmp_path, arch):
    # transformers 5 loads the tokenizer beside a Qwen2 config as Qwen2Tokenizer, which builds its
    # own pre-tokenizer; with GPT-2's plain byte-level one the reloaded tokenizer split differently.
    from transformers import AutoTokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from multipl_moe.data.tokenizer import QWEN2_PRETOKENIZE_REGEX, train_bpe_tokenizer
    from multipl_moe.modeling.tiny import make_tiny_dense

    assert QWEN2_PRETOKENIZE_REGEX == PRETOKENIZE_REGEX
    rng = random.Random(0)
    texts = ["".join(rng.choice(SNIPPETS) for _ in range(6)) for _ in range(60)]
    tok = train_bpe_tokenizer(texts, vocab_size=400)
    make_tiny_dense(tmp_path / arch, arch, tokenizer=tok)
    reloaded = AutoTokenizer.from_pretrained(tmp_path / arch)
    probes = SNIPPETS + ["x  =  1\r\n\r\n\ty = 'it''s'\n", "naïve café 1234567 ünïcödé\n\n\n"]
    for text in probes:
        assert reloaded(text)["input_ids"] == tok(text)["input_ids"], (type(reloaded).__name__, text)
        assert reloaded.decode(reloaded(text)["input_ids"]) == text
