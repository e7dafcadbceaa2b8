"""Packing, validation split and language sampling on a synthetic corpus (issue 4, test 5)."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter

import pytest
import torch

from multipl_moe.data.config import DataConfig, DataError
from multipl_moe.data.packing import (LanguageSampler, Packer, build_train_val, is_validation,
                                      pack_documents, sampling_weights)
from multipl_moe.data.tokenizer import train_bpe_tokenizer

SEQ = 64
# very different sizes, so that temperature sampling and proportional sampling differ clearly
DOCS_PER_LANG = {"py": 240, "rs": 60, "go": 20}
SYNTAX = {"py": "def {f}(x):\n    return x + {n}  # {m}\n",
          "rs": "fn {f}(x: i64) -> i64 {{ x + {n} }} // {m}\n",
          "go": "func {f}(x int) int {{ return x + {n} }} // {m}\n"}


def _doc(lang: str, i: int, rng: random.Random) -> str:
    lines = [SYNTAX[lang].format(f=f"f{rng.randrange(10**6)}", n=rng.randrange(1000),
                                 m=f"<{lang}doc{i}>") for _ in range(rng.randrange(1, 12))]
    return "".join(lines)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("packing") / "corpus.jsonl"
    docs = {lang: [_doc(lang, i, rng) for i in range(n)] for lang, n in DOCS_PER_LANG.items()}
    rows = [{"content": text, "lang": lang} for lang in docs for text in docs[lang]]
    rng.shuffle(rows)  # languages interleaved in the file
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    order = {lang: [r["content"] for r in rows if r["lang"] == lang] for lang in docs}
    return path, order


@pytest.fixture(scope="module")
def tokenizer(corpus):
    _, docs = corpus
    return train_bpe_tokenizer([d for ds in docs.values() for d in ds], vocab_size=400)


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _markers(tokenizer, block) -> set[str]:
    return set(re.findall(r"<([a-z]+doc\d+)>", tokenizer.decode(block)))


def _epoch(train, lang, shard=0, num_shards=1, epoch=0) -> list[list[int]]:
    return [b.tolist() for b in train.sources[lang](shard, num_shards, epoch)]


def test_packer_eos_between_documents_and_only_the_tail_dropped():
    rng = random.Random(0)
    docs = [[rng.randrange(5, 100) for _ in range(rng.randrange(0, 150))] for _ in range(40)]
    eos = 1
    blocks = list(pack_documents(docs, 32, eos))
    stream = [t for d in docs for t in d + [eos]]
    assert all(len(b) == 32 for b in blocks)
    assert [t for b in blocks for t in b] == stream[:len(blocks) * 32]
    assert len(stream) - len(blocks) * 32 < 32  # only the final remainder is lost
    assert sum(t == eos for b in blocks for t in b) >= len(docs) - 1 - 32
    p = Packer(8, eos)
    assert p.add([5, 6, 7]) == [] and p.remainder == 4
    assert p.add([9] * 5) == [[5, 6, 7, eos, 9, 9, 9, 9]] and p.remainder == 2


def test_blocks_are_exactly_the_packed_documents(corpus, tokenizer):
    path, docs = corpus
    train, val = build_train_val(DataConfig(sources=[str(path)], seq_len=SEQ, val_fraction=0.0),
                                 tokenizer)
    eos = tokenizer.eos_token_id
    assert val == {}
    for lang, texts in docs.items():
        stream = [t for text in texts for t in _ids(tokenizer, text) + [eos]]
        n = len(stream) // SEQ
        expected = sorted(stream[i * SEQ:(i + 1) * SEQ] for i in range(n))
        got = _epoch(train, lang)
        assert sorted(got) == expected  # one epoch = every full block once (shuffled)
        assert train.report.train_blocks[lang] == n
        assert train.report.train_tokens[lang] == len(stream)
        assert train.report.dropped_tail[lang] == len(stream) - n * SEQ < SEQ
        # every block is one language's, and all its documents but the tail are there
        seen = set().union(*(_markers(tokenizer, b) for b in got))
        assert all(m.startswith(lang) for m in seen)
        assert len(seen) >= len(texts) - 1 - SEQ // 8
    block = next(iter(train))
    assert block["input_ids"].dtype == torch.long and block["input_ids"].shape == (SEQ,)


def test_validation_split_is_deterministic_and_disjoint(corpus, tokenizer):
    path, docs = corpus
    cfg = DataConfig(sources=[str(path)], seq_len=SEQ, val_fraction=0.25, seed=3)
    train, val = build_train_val(cfg, tokenizer)
    train2, val2 = build_train_val(cfg, tokenizer)
    assert set(val) == set(DOCS_PER_LANG)
    for lang in val:
        assert [b["input_ids"].tolist() for b in val[lang]] == \
               [b["input_ids"].tolist() for b in val2[lang]]
        assert all(b["lang"] == lang for b in val[lang])
        val_marks = set().union(*(_markers(tokenizer, b["input_ids"]) for b in val[lang]))
        train_marks = set().union(*(_markers(tokenizer, b) for b in _epoch(train, lang)))
        assert val_marks and train_marks and not (val_marks & train_marks)
    # split is by document hash: the report's counts are exactly the hash's decisions
    for lang, texts in docs.items():
        n_val = sum(is_validation(t, 0.25, 3) for t in texts)
        assert train.report.val_docs[lang] == n_val
        assert train.report.train_docs[lang] == len(texts) - n_val
    total = sum(len(t) for t in docs.values())
    assert 0.15 < sum(train.report.val_docs.values()) / total < 0.35
    # another seed gives another split
    assert [is_validation(t, 0.25, 3) for t in docs["py"]] != \
           [is_validation(t, 0.25, 4) for t in docs["py"]]


def test_sampling_weights_formulas():
    sizes = {"py": 900, "rs": 100, "go": 0}
    assert sampling_weights(sizes, temperature=1.0) == pytest.approx({"py": 0.9, "rs": 0.1})
    assert sampling_weights(sizes, temperature=2.0) == pytest.approx({"py": 0.75, "rs": 0.25})
    flat = sampling_weights(sizes, temperature=1e6)
    assert flat["py"] == pytest.approx(0.5, abs=1e-4)
    assert sampling_weights(sizes, {"py": 1, "rs": 3, "go": 5}) == pytest.approx({"py": .25, "rs": .75})
    assert sampling_weights({"py": 10**12, "rs": 1}, temperature=0.05)["py"] == pytest.approx(1.0)
    with pytest.raises(DataError):
        sampling_weights(sizes, {"go": 1.0})


def test_language_sampler_frequencies():
    weights = {"py": 0.5, "rs": 0.3, "go": 0.15, "rb": 0.05}
    s = LanguageSampler(weights, seed=7)
    n = 20000
    counts = Counter(s.draw() for _ in range(n))
    for lang, w in weights.items():
        assert counts[lang] / n == pytest.approx(w, abs=0.015)
    a, b = LanguageSampler(weights, seed=1), LanguageSampler(weights, seed=1)
    assert [a.draw() for _ in range(200)] == [b.draw() for _ in range(200)]  # seeded


@pytest.mark.parametrize("weights,temperature", [({"py": 0.2, "rs": 0.3, "go": 0.5}, 1.0),
                                                 (None, 1.0), (None, 3.0)])
def test_training_stream_follows_the_weights(corpus, tokenizer, weights, temperature):
    path, _ = corpus
    cfg = DataConfig(sources=[str(path)], seq_len=SEQ, val_fraction=0.0, sampling_weights=weights,
                     sampling_temperature=temperature, seed=5)
    train, _ = build_train_val(cfg, tokenizer)
    tokens = train.report.train_tokens
    if weights is None:
        z = sum(v ** (1 / temperature) for v in tokens.values())
        expected = {k: v ** (1 / temperature) / z for k, v in tokens.items()}
    else:
        expected = weights
    assert train.weights == pytest.approx(expected)
    n = 6000
    blocks = list(itertools.islice(train, n))  # go has few blocks: it is repeated (epochs)
    freq = Counter(b["lang"] for b in blocks)
    for lang, p in expected.items():
        assert freq[lang] / n == pytest.approx(p, abs=0.025)
    for b in blocks[:300]:  # each block holds only its language
        assert all(m.startswith(b["lang"]) for m in _markers(tokenizer, b["input_ids"]))


def test_explicit_zero_weight_excludes_a_language(corpus, tokenizer):
    path, _ = corpus
    cfg = DataConfig(sources=[str(path)], seq_len=SEQ, sampling_weights={"py": 1, "rs": 1})
    train, _ = build_train_val(cfg, tokenizer)
    assert set(train.weights) == {"py", "rs"}
    assert {b["lang"] for b in itertools.islice(train, 300)} == {"py", "rs"}


def test_shards_are_disjoint_and_complete(corpus, tokenizer):
    path, _ = corpus
    for streaming in (False, True):
        cfg = DataConfig(sources=[str(path)], seq_len=SEQ, val_fraction=0.0,
                         streaming=streaming, shuffle_buffer=0)
        train, _ = build_train_val(cfg, tokenizer)
        whole = _epoch(train, "rs")
        parts = [_epoch(train, "rs", s, 2) for s in range(2)]
        assert parts[0] and parts[1]
        if not streaming:  # blocks are dealt out: the union is the whole
            assert sorted(parts[0] + parts[1]) == sorted(whole)
        else:  # documents are dealt out: every document is in exactly one shard
            marks = [set().union(*(_markers(tokenizer, b) for b in p)) for p in parts]
            assert not (marks[0] & marks[1])


def test_streaming_matches_in_memory(corpus, tokenizer):
    path, docs = corpus
    kw = dict(sources=[str(path)], seq_len=SEQ, val_fraction=0.2, seed=2)
    mem, val_mem = build_train_val(DataConfig(**kw), tokenizer)
    st, val_st = build_train_val(DataConfig(**kw, streaming=True, shuffle_buffer=16), tokenizer)
    assert {k: [b["input_ids"].tolist() for b in v] for k, v in val_mem.items()} == \
           {k: [b["input_ids"].tolist() for b in v] for k, v in val_st.items()}
    for lang in docs:
        e0, e1 = _epoch(st, lang, epoch=0), _epoch(st, lang, epoch=1)
        assert sorted(e0) == sorted(_epoch(mem, lang)) == sorted(e1)
        if len(e0) > 20:
            assert e0 != e1  # reshuffled each epoch
    n = 1500
    freq = Counter(b["lang"] for b in itertools.islice(st, n))
    for lang, p in st.weights.items():
        assert freq[lang] / n == pytest.approx(p, abs=0.05)


def test_dataloader_batches(corpus, tokenizer):
    path, _ = corpus
    train, val = build_train_val(DataConfig(sources=[str(path)], seq_len=SEQ, val_fraction=0.3),
                                 tokenizer)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch["input_ids"].shape == (4, SEQ) and len(batch["lang"]) == 4
    vb = next(iter(torch.utils.data.DataLoader(val["py"], batch_size=2)))
    assert vb["input_ids"].shape == (2, SEQ) and vb["lang"] == ["py", "py"]


def test_helpful_errors(corpus, tokenizer, tmp_path):
    path, _ = corpus
    with pytest.raises(DataError, match="text_field='text'"):
        build_train_val(DataConfig(sources=[str(path)], text_field="text"), tokenizer)

    class NoEos:
        eos_token_id = None

    with pytest.raises(DataError, match="eos"):
        build_train_val(DataConfig(sources=[str(path)]), NoEos())
    with pytest.raises(DataError, match="no such file"):
        build_train_val(DataConfig(sources=[str(tmp_path / "nope.jsonl")]), tokenizer)


@pytest.mark.parametrize("streaming", [False, True])
def test_dataloader_workers_read_disjoint_shares(corpus, tokenizer, streaming):
    import pickle

    path, _ = corpus
    cfg = DataConfig(sources=[str(path)], seq_len=SEQ, val_fraction=0.0, streaming=streaming,
                     sampling_weights={"rs": 1.0}, shuffle_buffer=0)
    train, _ = build_train_val(cfg, tokenizer)
    pickle.dumps(train)  # workers started with spawn/forkserver need this
    halves = [_epoch(train, "rs", s, 2) for s in range(2)]
    n = min(map(len, halves))
    loader = torch.utils.data.DataLoader(train, batch_size=1, num_workers=2)
    got = [b["input_ids"][0].tolist() for b in itertools.islice(loader, 2 * n)]
    # the loader alternates between the workers: each one's first n blocks, none twice
    assert sorted(got) == sorted(halves[0][:n] + halves[1][:n])
    assert len({tuple(b) for b in got}) == 2 * n
