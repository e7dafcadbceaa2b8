"""XLCoST text-to-code: the NEW_LINE/INDENT/DEDENT encoding both ways, loading local files in
the hub repository's layout and the hub path (a stand-in `load_dataset`), `multipl-moe xlcost`
against a stand-in OpenAI-compatible server on 127.0.0.1 and a tiny local model, resuming an
interrupted run, CodeBLEU in `multipl-moe report`, and the docstring -> function set."""

from __future__ import annotations

import ast
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from multipl_moe import cli
from multipl_moe.evaluation import xlcost as X
from multipl_moe.evaluation.generate import Sampling

# Rows as the dataset writes them (Python from its card; the others in its style).
PY_ROWS = [
    {"text": "Maximum Prefix Sum | Stores the maximum prefix sum of the array A [ ] ; Driver code",
     "code": "def maxPresum ( a , b ) : NEW_LINE INDENT X = max ( a [ 0 ] , 0 ) NEW_LINE "
             "for i in range ( 1 , len ( a ) ) : NEW_LINE INDENT a [ i ] += a [ i - 1 ] NEW_LINE "
             "X = max ( X , a [ i ] ) NEW_LINE DEDENT return X NEW_LINE DEDENT "
             "A = [ 2 , - 1 , 4 ] NEW_LINE print ( maxPresum ( A , A ) ) NEW_LINE"},
    {"text": "Count even numbers ; Driver code",
     "code": "def countEven ( arr , n ) : NEW_LINE INDENT count = 0 NEW_LINE for i in range ( n ) "
             ": NEW_LINE INDENT if ( arr [ i ] % 2 == 0 ) : NEW_LINE INDENT count += 1 NEW_LINE "
             "DEDENT DEDENT return count NEW_LINE DEDENT arr = [ 1 , 2 , 3 ] NEW_LINE "
             "print ( countEven ( arr , 3 ) ) NEW_LINE"},
    {"text": "GCD of two numbers | Recursive function",
     "code": "def gcd ( a , b ) : NEW_LINE INDENT if ( b == 0 ) : NEW_LINE INDENT return a "
             "NEW_LINE DEDENT return gcd ( b , a % b ) NEW_LINE DEDENT"},
]
CPP_ROWS = [
    {"text": "Sum of an array ; Driver code",
     "code": "#include <bits/stdc++.h> NEW_LINE using namespace std ; int sum ( int a [ ] , int n "
             ") { int s = 0 ; for ( int i = 0 ; i < n ; i ++ ) s += a [ i ] ; return s ; } "
             "int main ( ) { int a [ ] = { 1 , 2 } ; cout << sum ( a , 2 ) ; return 0 ; }"},
    {"text": "GCD of two numbers",
     "code": "int gcd ( int a , int b ) { if ( b == 0 ) return a ; return gcd ( b , a % b ) ; }"},
]


def test_decode_gives_real_python_and_encode_gives_the_dataset_string_back():
    for row in PY_ROWS:
        code = X.decode(row["code"])
        ast.parse(code)  # real code: lines and indentation
        assert X.encode(code, "Python") == row["code"]
    assert X.decode(PY_ROWS[2]["code"]) == ("def gcd ( a , b ) :\n    if ( b == 0 ) :\n"
                                            "        return a\n    return gcd ( b , a % b )\n")


def test_encode_then_decode_keeps_the_program():
    src = ("def f(xs, k=2):\n    # a comment\n    total = 0\n    for x in xs:\n"
           "        if x % k:\n            total += x\n\n    return total\n\nprint(f([1, 2, 3]))\n")
    enc = X.encode(src, "Python")
    assert "\n" not in enc and enc.count("INDENT") == enc.count("DEDENT") == 3
    assert ast.dump(ast.parse(X.decode(enc))) == ast.dump(ast.parse(src))
    with pytest.raises(ValueError):
        X.encode('def f():\n    return """a\nb"""\n', "Python")  # cannot be one line
    cpp = "#include <cstdio>\nint main() {\n  printf(\"%d\", 1);\n  return 0;\n}\n"
    assert X.encode(cpp, "C++") == ('#include <cstdio> NEW_LINE int main() { printf("%d", 1); '
                                    "return 0; }")


def test_decoded_brace_languages_parse():
    from codebleu.utils import get_tree_sitter_language
    from tree_sitter import Parser

    parser = Parser()
    parser.language = get_tree_sitter_language("cpp")
    for row in CPP_ROWS:
        code = X.decode(row["code"])
        assert not parser.parse(code.encode()).root_node.has_error, code
    assert X.decode(CPP_ROWS[0]["code"]).startswith("#include <bits/stdc++.h>\nusing namespace")


def write_dataset(root: Path, rows_by_config: dict[str, list[dict]], as_array=False) -> Path:
    for config, rows in rows_by_config.items():
        folder = root / "data" / config
        folder.mkdir(parents=True)
        for split in ("train", "valid", "test"):
            text = json.dumps(rows) if as_array else "".join(json.dumps(r) + "\n" for r in rows)
            (folder / f"{split}.json").write_text(text)
    return root


def test_local_files_in_the_hub_layout(tmp_path):
    root = write_dataset(tmp_path / "a", {"Python-program-level": PY_ROWS})
    assert X.load_rows("Python", "program", "test", root) == PY_ROWS
    assert X.load_rows("Python", "program", "validation", root / "data") == PY_ROWS
    arr = write_dataset(tmp_path / "b", {"C++-snippet-level": CPP_ROWS}, as_array=True)
    assert X.load_rows("C++", "snippet", "train", arr) == CPP_ROWS
    with pytest.raises(FileNotFoundError, match="Java-program-level"):
        X.load_rows("Java", "program", "test", root)
    bad = tmp_path / "bad.json"
    bad.write_text('{"text": "t", "code": 3}\n')
    with pytest.raises(ValueError, match="bad.json:1"):
        X.load_file(bad)
    with pytest.raises(ValueError):
        X.config_name("Rust", "program")
    assert X.parse_langs("py,JAVA,cpp,cs,php") == ["Python", "Java", "C++", "Csharp", "PHP"]
    with pytest.raises(KeyError):
        X.parse_langs("python,go")


def test_hub_path_asks_for_the_config_split_and_revision(monkeypatch):
    """No network: `datasets.load_dataset` is replaced by one serving the rows above."""
    import datasets

    calls = []

    def fake_load_dataset(name, config, revision=None, split=None):
        calls.append((name, config, revision, split))
        return datasets.Dataset.from_list(PY_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows = X.load_rows("Python", "program", "validation", None, revision="abc")
    assert calls == [("codeparrot/xlcost-text-to-code", "Python-program-level", "abc",
                      "validation")]
    assert rows == PY_ROWS and isinstance(rows[0], dict)


class Answers(BaseHTTPRequestHandler):
    """/v1/completions answering each prompt's last `Text:` with a table's encoded code."""
    table: dict = {}
    prompts: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).prompts.append(body["prompt"])
        text = body["prompt"].rsplit("Text: ", 1)[1].split("\n", 1)[0]
        answer = " " + type(self).table.get(text, "pass NEW_LINE") + "\nText: junk\n"
        data = json.dumps({"choices": [{"index": i, "text": answer}
                                       for i in range(body["n"])]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Answers.prompts = []
    Answers.table = {r["text"]: r["code"] for r in PY_ROWS}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_xlcost_command_against_a_server(tmp_path, server, capsys):
    data = write_dataset(tmp_path / "xl", {"Python-program-level": PY_ROWS,
                                           "C++-program-level": CPP_ROWS})
    out = tmp_path / "out"
    args = ["xlcost", "--model", "served", "--server", server, "--data-dir", str(data),
            "--langs", "Python,C++", "--shots", "1", "--out", str(out), "--no-progress"]
    assert cli.main(args) == 0
    py = json.loads((out / "xlcost-Python-program-level-test" / "codebleu.jsonl").read_text())
    cpp = json.loads((out / "xlcost-C++-program-level-test" / "codebleu.jsonl").read_text())
    # Every Python answer is the reference itself; the C++ ones are not C++ at all.
    assert py["problems"] == 3 and py["codebleu"] == pytest.approx(1.0)
    assert py["dataflow_edges"] > 0 and py["weights"] == [0.25] * 4
    assert cpp["codebleu"] < 0.5
    shot = "Text: " + PY_ROWS[0]["text"] + "\nPython: " + PY_ROWS[0]["code"] + "\n\n"
    assert shot + "Text: " + PY_ROWS[1]["text"] + "\nPython:" in Answers.prompts
    printed = capsys.readouterr().out
    assert "| xlcost | Python-program-level | 3 | 3 | 100.0 |" in printed
    assert (out / "codebleu.md").read_text().startswith("| task | config |")

    # Run again: nothing is asked of the server; other weights rescore the same completions.
    n = len(Answers.prompts)
    assert cli.main(args + ["--paper-weights"]) == 0
    assert len(Answers.prompts) == n
    py2 = json.loads((out / "xlcost-Python-program-level-test" / "codebleu.jsonl").read_text())
    assert py2["weights"] == [0.1, 0.1, 0.4, 0.4]
    # Other generation settings on the same folder: one line, no traceback.
    assert cli.main(args + ["--shots", "0"]) == 2
    assert "other settings" in capsys.readouterr().err
    for bad in (["--weights", "1,1"], ["--langs", "Go"], ["--limit", "0"],
                ["--template", "{oops}"]):
        assert cli.main(args + bad) == 2
    # Sampling: n completions per problem, all scored against the problem's reference.
    sampled = args[:-3] + ["--out", str(tmp_path / "sampled"), "--no-progress", "--sample",
                           "--n", "2", "--langs", "py"]
    assert cli.main(sampled) == 0
    rec = json.loads((tmp_path / "sampled" / "xlcost-Python-program-level-test"
                      / "codebleu.jsonl").read_text())
    assert rec["problems"] == 3 and rec["samples"] == 6 and rec["codebleu"] == pytest.approx(1.0)


def test_generation_resumes_after_an_interruption(tmp_path):
    problems = X.make_problems(PY_ROWS * 3, "Python")
    settings = {"k": 1}
    s = Sampling(n=1, temperature=0)
    asked = []

    class Flaky:
        def __init__(self, fail_after):
            self.left = fail_after

        def complete(self, prompts, stops, sampling, on_batch=None):
            if self.left == 0:
                raise KeyboardInterrupt
            self.left -= 1
            asked.extend(prompts)
            return [" x = 1 NEW_LINE"] * len(prompts)

    with pytest.raises(KeyboardInterrupt):
        X.generate(problems, Flaky(2), s, tmp_path, settings, progress=False, chunk_samples=3)
    journal = tmp_path / X.JOURNAL
    assert len(journal.read_text().splitlines()) == 1 + 6  # settings + two chunks
    with open(journal, "a") as f:
        f.write('{"id": 6, "text": "torn')  # a write cut short by the interruption
    asked.clear()
    done = X.generate(problems, Flaky(10), s, tmp_path, settings, progress=False,
                      chunk_samples=3)
    assert len(asked) == 3 and sorted(done) == list(range(9))
    assert [json.loads(line).get("id") for line in journal.read_text().splitlines()[1:]] == \
        list(range(9))
    with pytest.raises(ValueError, match="other settings"):
        X.read_journal(journal, {"k": 2})


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([r["text"] + "\n" + r["code"] for r in PY_ROWS] * 10, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_xlcost_command_with_a_tiny_local_model(tmp_path, tiny_model):
    data = write_dataset(tmp_path / "xl", {"Python-program-level": PY_ROWS})
    out = tmp_path / "out"
    assert cli.main(["xlcost", "--model", str(tiny_model), "--data-dir", str(data), "--langs",
                     "py", "--shots", "1", "--limit", "2", "--max-new-tokens", "6", "--device",
                     "cpu", "--out", str(out), "--no-progress"]) == 0
    folder = out / "xlcost-Python-program-level-test"
    lines = (folder / X.JOURNAL).read_text().splitlines()
    assert json.loads(lines[0])["settings"]["model"] == str(tiny_model) and len(lines) == 3
    assert all(len(json.loads(line)["completions"]) == 1 for line in lines[1:])
    record = json.loads((folder / X.SCORES).read_text())
    assert record["problems"] == 2 and 0 <= record["codebleu"] <= 1


def test_report_shows_codebleu_beside_passk(tmp_path, capsys):
    from multipl_moe.evaluation import formats

    run = tmp_path / "run"
    (run / "humaneval-py").mkdir(parents=True)
    formats.write_json_atomic(run / "humaneval-py" / "HumanEval_0_f.results.json", {
        "name": "HumanEval_0_f", "language": "py",
        "results": [{"status": "OK", "exit_code": 0}, {"status": "Exception", "exit_code": 1}]})
    record = {"task": "xlcost", "config": "Python-program-level", "split": "test",
              "language": "Python", "problems": 3, "samples": 3, "codebleu": 0.4125,
              "ngram": 0.3, "weighted_ngram": 0.35, "syntax": 0.5, "dataflow": 0.5,
              "dataflow_edges": 7, "weights": [0.25] * 4}
    X.write_scores(run / "xlcost-Python-program-level-test", record)
    assert cli.main(["report", str(run), "--k", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| humaneval | py | 1 | 2 | 50.0 |" in printed
    assert "CodeBLEU (text-to-code)" in printed
    assert "| xlcost | Python-program-level | 3 | 3 | 41.2 | 30.0 | 35.0 | 50.0 | 50.0 |" in printed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["codebleu"][0]["codebleu"] == 0.4125
    assert "CodeBLEU" in (run / "passk.md").read_text()

    only = tmp_path / "only"
    X.write_scores(only / "xlcost-Python-program-level-test", record)
    assert cli.main(["report", str(only)]) == 0  # a folder with CodeBLEU alone is a report too
    other = tmp_path / "other"
    X.write_scores(other / "xlcost-Python-program-level-test", {**record, "codebleu": 0.5})
    assert cli.main(["report", str(only), str(other)]) == 0
    assert "| xlcost | Python-program-level test | 41.2 | 50.0 | +8.8 |" in capsys.readouterr().out


def test_docstring_set_from_a_python_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.py").write_text(
        'def add(x, y):\n    """Add two numbers.\n\n    More words."""\n    return x + y\n\n'
        'def nodoc(x):\n    return x\n\n'
        'class K:\n    def twice(self, v):\n        """Double v."""\n        r = v * 2\n'
        '        return r\n')
    (corpus / "broken.py").write_text("def (:\n")
    rows = X.docstring_problems(corpus)
    assert [r["text"] for r in rows] == ["Add two numbers.", "Double v."]
    assert rows[0]["code"] == "def add ( x , y ) : NEW_LINE INDENT return x + y NEW_LINE DEDENT"

    class Echo:  # answers with the reference: CodeBLEU 1
        def complete(self, prompts, stops, sampling, on_batch=None):
            table = {r["text"]: r["code"] for r in rows}
            return [" " + table[p.rsplit("Text: ", 1)[1].split("\n")[0]] for p in prompts]

    record = X.text_to_code_codebleu(rows, Echo(), Sampling(n=1, temperature=0),
                                     tmp_path / "out", shots=1)
    assert record["problems"] == 1 and record["codebleu"] == pytest.approx(1.0)
    assert (tmp_path / "out" / X.SCORES).exists()
    with pytest.raises(ValueError, match="nothing to score"):
        X.text_to_code_codebleu(rows, Echo(), Sampling(n=1, temperature=0), tmp_path / "o2",
                                shots=2)
