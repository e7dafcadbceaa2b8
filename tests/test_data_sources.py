"""Reading inputs: fields, language inference, skip counts, MultiPL-E refusal, config checks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from multipl_moe.data.config import DataConfig, DataError
from multipl_moe.languages import (HIGH_RESOURCE, LOW_RESOURCE, lang_from_path,
                                        normalize_lang, resource_group)
from multipl_moe.data.sources import SourceReport, iter_documents

SHARED_MULTIPL_E = Path(__file__).resolve().parents[2] / "shared/data/multipl-e"


def _read(sources, **kw):
    report = SourceReport()
    docs = list(iter_documents([str(s) for s in sources], report=report, **kw))
    return docs, report


def test_language_tags():
    assert [normalize_lang(x) for x in ("Python", "C++", "rust", "go_test.go", "OCaml", "Racket",
                                        "jl", "Brainfuck", None)] == \
           ["py", "cpp", "rs", "go", "ml", "rkt", "jl", None, None]
    assert [lang_from_path(p) for p in ("a/b.py", "x.RS", "lib/foo.hpp", "m.mli", "README",
                                        "x.unknown", "C:\\src\\a.rb")] == \
           ["py", "rs", "cpp", "ml", None, None, "rb"]
    assert HIGH_RESOURCE == ("py", "java", "cpp")
    assert {"rs", "go", "rb"} <= set(LOW_RESOURCE)
    assert (resource_group("java"), resource_group("go"), resource_group("c")) == ("high", "low", "other")


def test_jsonl_rows_fields_inference_and_skip_counts(tmp_path):
    lines = [
        json.dumps({"content": "print(1)\n", "lang": "Python"}),                 # name
        json.dumps({"content": "fn main() {}\n", "lang": "rs"}),                # tag
        json.dumps({"content": "package main\n", "path": "cmd/x.go"}),          # path field
        json.dumps({"content": "puts 1\n", "max_stars_repo_path": "a/b.rb"}),   # The Stack layout
        json.dumps({"content": "let x = 1\n", "ext": "ml"}),                    # extension field
        json.dumps({"content": "+++.", "lang": "Brainfuck"}),                   # unknown
        json.dumps({"content": "???", "path": "notes.txt"}),                    # unknown ext
        json.dumps({"content": "   \n", "lang": "py"}),                         # empty
        json.dumps({"content": None, "lang": "py"}),                            # no text
        json.dumps({"lang": "py"}),                                             # no text field
        "{not json",                                                            # undecodable
        "",                                                                      # blank: not a row
    ]
    path = tmp_path / "rows.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n" + b'{"content": "\xff\xfe", "lang": "py"}\n')
    docs, rep = _read([path])
    assert [d.lang for d in docs] == ["py", "rs", "go", "rb", "ml"]
    assert docs[0].text == "print(1)\n" and docs[0].id == "rows.jsonl:0"
    assert rep.docs == {"py": 1, "rs": 1, "go": 1, "rb": 1, "ml": 1}
    assert rep.bytes["rs"] == len("fn main() {}\n")
    assert rep.unknown_lang == {"Brainfuck": 1, ".txt": 1}
    assert (rep.empty, rep.undecodable, rep.too_large) == (3, 2, 0)
    assert "unknown language: 2" in rep.table() and "undecodable: 2" in rep.table()

    docs, rep = _read([path], languages=["rs", "go", "py"], max_doc_bytes=12)
    assert [d.lang for d in docs] == ["py"]
    assert rep.too_large == 2 and rep.other_lang == {"rb": 1, "ml": 1}

    docs, _ = _read([path], text_field="content", lang_field="nope", path_field="path")
    assert [d.lang for d in docs] == ["go"]  # only the explicit path field is used


def test_gzip_json_array_parquet_folder_and_saved_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    with gzip.open(d / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "x = 1", "language": "python"}) + "\n")
    (d / "b.json").write_text(json.dumps([{"text": "int main(){}", "language": "C++"}]))
    pq.write_table(pa.table({"text": [b"fn f() {}", b"\xff\xff"], "language": ["Rust", "Rust"],
                             "extra": [1, 2]}), d / "sub" / "c.parquet")
    (d / "README.md").write_text("ignored: the folder has data files")
    docs, rep = _read([d], text_field="text", lang_field="language")
    assert [(x.lang, x.text) for x in docs] == [("py", "x = 1"), ("cpp", "int main(){}"),
                                                 ("rs", "fn f() {}")]
    assert rep.undecodable == 1
    assert docs[2].id == "sub/c.parquet:0"

    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"content": ["local x = 1", ""], "lang": ["Lua", "Lua"]})}).save_to_disk(str(saved))
    docs, rep = _read([saved])
    assert [(x.lang, x.text) for x in docs] == [("lua", "local x = 1")] and rep.empty == 1
    with pytest.raises(DataError, match="no split 'valid'"):
        _read([saved], split="valid")


def test_folder_of_source_files(tmp_path):
    (tmp_path / "src" / ".git").mkdir(parents=True)
    (tmp_path / "src" / "a.py").write_text("def f(): pass\n")
    (tmp_path / "src" / "b.rs").write_text("fn f() {}\n")
    (tmp_path / "src" / "c.txt").write_text("text\n")
    (tmp_path / "src" / "d.py").write_bytes(b"\x00\x01binary")
    (tmp_path / "src" / "e.go").write_bytes(b"\xc3\x28 not utf-8")
    (tmp_path / "src" / ".git" / "x.py").write_text("hidden = 1\n")
    docs, rep = _read([tmp_path / "src"])
    assert [(x.id, x.lang) for x in docs] == [("src:a.py", "py"), ("src:b.rs", "rs")]
    assert rep.undecodable == 2 and rep.unknown_lang == {".txt": 1}


def test_multipl_e_is_refused(tmp_path):
    row = {"name": "HumanEval_0_x", "language": "py", "prompt": "def x():\n", "tests": "assert 1",
           "stop_tokens": ["\ndef"], "content": "def x(): pass", "lang": "py"}
    # 1. by schema, wherever the file lies
    (tmp_path / "innocent.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="MultiPL-E"):
        _read([tmp_path / "innocent.jsonl"])
    # 2. by folder name (even when the rows look like a normal corpus)
    folder = tmp_path / "MultiPL-E" / "v3"
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"content": "x", "lang": "py"}) + "\n")
    for target in (folder / "corpus.jsonl", tmp_path / "MultiPL-E"):
        with pytest.raises(DataError, match="multipl-e folder"):
            _read([target])
    # 3. by hub name: refused before any network access
    with pytest.raises(DataError, match="hub dataset nuprl/MultiPL-E"):
        _read(["nuprl/MultiPL-E?name=humaneval-rs"])
    # 4. a Parquet file with MultiPL-E's columns
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({k: [v] for k, v in row.items()}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match="fields prompt, stop_tokens, tests"):
        _read([tmp_path / "p.parquet"])
    # 5. the training entry point refuses it too, as a one-line user error
    from multipl_moe.cli import UserError
    from multipl_moe.data.packing import build_train_val

    with pytest.raises(UserError, match="MultiPL-E"):
        build_train_val(DataConfig(sources=[str(tmp_path / "innocent.jsonl")]), _FakeTok())


@pytest.mark.skipif(not SHARED_MULTIPL_E.is_dir(), reason="shared/data/multipl-e not present")
def test_the_real_multipl_e_files_are_refused():
    for target in (SHARED_MULTIPL_E, SHARED_MULTIPL_E / "humaneval-rs.jsonl"):
        with pytest.raises(DataError, match="MultiPL-E"):
            _read([target])


class _FakeTok:
    eos_token_id = 0

    def __call__(self, texts, **kw):
        return {"input_ids": [[1] * len(t) for t in texts]}


def test_missing_input_and_bad_hub_name(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        _read([tmp_path / "absent.jsonl"])
    with pytest.raises(DataError, match="no such file"):
        _read(["not a name"])


def test_data_config_validation_names_the_field():
    cfg = DataConfig(sources="a.jsonl", languages="Python, rust", sampling_weights={"Go": 2})
    assert cfg.sources == ["a.jsonl"] and cfg.languages == ["py", "rs"]
    assert cfg.sampling_weights == {"go": 2.0}
    assert DataConfig(languages=["high", "Rust"]).languages == ["py", "java", "cpp", "rs"]
    assert DataConfig(languages="low").languages == list(LOW_RESOURCE)
    bad = [({"seq_len": 1}, "data.seq_len"), ({"seq_len": 8.5}, "data.seq_len"),
           ({"val_fraction": 1.0}, "data.val_fraction"),
           ({"sampling_temperature": 0}, "data.sampling_temperature"),
           ({"sampling_weights": {"py": -1}}, "data.sampling_weights.py"),
           ({"sampling_weights": {"klingon": 1}}, "data.sampling_weights"),
           ({"sampling_weights": {"py": 0}}, "data.sampling_weights"),
           ({"languages": ["py", "cobol"]}, "data.languages"),
           ({"decontaminate": "yes"}, "data.decontaminate"),
           ({"decontam_ngram": 0}, "data.decontam_ngram"),
           ({"sources": [1]}, "data.sources"), ({"text_field": ""}, "data.text_field")]
    for kwargs, name in bad:
        with pytest.raises(DataError, match=name.replace(".", r"\.")):
            DataConfig(**kwargs)
    with pytest.raises(DataError, match="unknown key seqlen"):
        DataConfig.from_dict({"seqlen": 5})
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
