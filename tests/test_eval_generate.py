"""Generation: stop-token cutting, the Hugging Face backend (batched, left-padded, stopping early)
on a tiny random model built here, the OpenAI-compatible backend against a local stdlib server,
MultiPL-E completion files with resume, and `multipl-moe eval` end to end."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from multipl_moe import cli
from multipl_moe.evaluation import formats
from multipl_moe.evaluation.generate import (HFBackend, OpenAIBackend, Sampling, cut_at_stop,
                                             generate)
from multipl_moe.evaluation.sandbox import bwrap_path

DATA = Path(__file__).resolve().parents[2] / "shared/data/multipl-e"
PY_STOPS = ["\ndef", "\n#", "\nif", "\nclass"]
PROMPTS = ["def add(x: int, y: int) -> int:\n    \"\"\"Add.\"\"\"\n",
           "def f():\n",
           "def strlen(string: str) -> int:\n    \"\"\"Return length of given string\n"
           "    >>> strlen('abc')\n    3\n    \"\"\"\n"]


def test_cut_at_stop():
    assert cut_at_stop("    return 1\ndef g():\n#x", PY_STOPS) == "    return 1"
    assert cut_at_stop("a\n#b\ndef", PY_STOPS) == "a"          # the earliest stop wins
    assert cut_at_stop("no stop here", PY_STOPS) == "no stop here"
    assert cut_at_stop("\n}", ["\n}"]) == ""
    assert cut_at_stop("x", ["", "y"]) == "x"                   # an empty stop token is ignored


def test_sampling_checks():
    assert Sampling().n == 20 and Sampling().temperature == 0.2 and Sampling().top_p == 0.95
    for bad in [dict(n=0), dict(temperature=-1), dict(temperature=0, n=2), dict(top_p=0)]:
        with pytest.raises(ValueError):
            Sampling(**bad)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A 2-layer random Llama with a byte-level BPE tokenizer trained on a few prompts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PROMPTS * 20 + ["    return x + y\n", "\ndef g():\n# comment\n"] * 20,
                            trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_hf_batched_left_padded_equals_one_by_one(tiny_checkpoint):
    greedy = Sampling(n=1, temperature=0, max_new_tokens=12)
    batched = HFBackend(tiny_checkpoint, device="cpu", batch_size=3)
    single = HFBackend(tiny_checkpoint, device="cpu", batch_size=1)
    stops = [PY_STOPS] * len(PROMPTS)
    out = batched.complete(PROMPTS, stops, greedy)
    assert out == single.complete(PROMPTS, stops, greedy)
    assert len(out) == 3 and any(out)
    assert not any(s in text for text in out for s in PY_STOPS)
    sampled = batched.complete(PROMPTS, stops, Sampling(n=1, temperature=0.8, max_new_tokens=12))
    assert len(sampled) == 3


def test_hf_stops_early_and_cuts(tiny_checkpoint):
    backend = HFBackend(tiny_checkpoint, device="cpu", batch_size=2)
    greedy = Sampling(n=1, temperature=0, max_new_tokens=40)
    (free,) = backend.complete(PROMPTS[:1], [[]], greedy)
    assert len(free) > 3
    stop = free[2:4]  # something the model is about to write
    lengths = []
    real_generate = backend.model.generate

    def spy(**kw):
        out = real_generate(**kw)
        lengths.append(out.shape[1] - kw["input_ids"].shape[1])
        return out

    backend.model.generate = spy
    (cut,) = backend.complete(PROMPTS[:1], [[stop]], greedy)
    assert cut == free[: free.index(stop)]
    assert lengths[0] < 40, "generation should stop once the stop token is written"


class FakeServer(BaseHTTPRequestHandler):
    """An OpenAI-style /v1/completions that fails once, then returns at most 2 choices."""
    requests: list = []
    fail_first = True

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        if type(self).fail_first:
            type(self).fail_first = False
            self.send_response(500)
            self.end_headers()
            return
        k = min(body["n"], 2)
        choices = [{"index": i, "text": f"    return {len(self.requests)}\n\ndef junk():\n"}
                   for i in range(k)]
        data = json.dumps({"choices": choices}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FakeServer.requests, FakeServer.fail_first = [], True
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_openai_backend(server):
    backend = OpenAIBackend(server, "my-model", concurrency=1, retries=2)
    s = Sampling(n=3, temperature=0.2, top_p=0.95, max_new_tokens=64)
    texts = backend.complete(["def f():\n"] * 3, [PY_STOPS] * 3, s)
    assert len(texts) == 3 and all(t.startswith("    return ") and "def" not in t for t in texts)
    paths = {p for p, _ in FakeServer.requests}
    bodies = [b for _, b in FakeServer.requests]
    assert paths == {"/v1/completions"}
    assert [b["n"] for b in bodies] == [3, 3, 1]  # a retry after the 500, then a top-up
    assert all(b["model"] == "my-model" and b["temperature"] == 0.2 and b["top_p"] == 0.95
               and b["max_tokens"] == 64 and b["stop"] == PY_STOPS for b in bodies)


def test_generate_writes_completion_files_and_resumes(tmp_path):
    class Fake:
        calls = 0

        def complete(self, prompts, stops, s, on_batch=None):
            Fake.calls += 1
            return [f"    return {i}\n" for i in range(len(prompts))]

    problems = [{"name": f"HumanEval_{i}_f", "language": "py", "prompt": "def f():\n",
                 "tests": "assert f() == 0\n", "stop_tokens": PY_STOPS, "doctests": "x"}
                for i in range(5)]
    s = Sampling(n=2, temperature=0.2)
    assert generate(problems, Fake(), s, tmp_path, progress=False, chunk_samples=4) == 5
    assert Fake.calls == 3  # chunks of two problems (4 samples), each written when done
    row = formats.read_json(tmp_path / "HumanEval_0_f.json.gz")
    assert set(row) == {"name", "language", "prompt", "tests", "stop_tokens", "temperature",
                        "top_p", "max_tokens", "n", "completions"}
    assert row["completions"] == ["    return 0\n", "    return 1\n"]
    assert generate(problems, Fake(), s, tmp_path, progress=False) == 0
    (tmp_path / "HumanEval_3_f.json.gz").unlink()
    assert generate(problems, Fake(), s, tmp_path, progress=False) == 1


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason=f"no MultiPL-E data at {DATA}")
@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
@pytest.mark.parametrize("backend", ["hf", "server"])
def test_eval_end_to_end(tmp_path, tiny_checkpoint, server, backend, capsys, monkeypatch):
    out = tmp_path / "out"
    model = ["--model", str(tiny_checkpoint)] if backend == "hf" else \
        ["--model", "served", "--server", server]
    sampling = ["--greedy"] if backend == "hf" else ["--n", "2", "--temperature", "0.2"]
    FakeServer.fail_first = False
    args = ["eval", *model, "--data-dir", str(DATA), "--benchmark", "humaneval", "--langs", "py",
            "--limit", "2", "--max-new-tokens", "8", "--out", str(out), "--no-progress",
            *sampling]
    assert cli.main(args) == 0
    files = sorted((out / "humaneval-py").glob("*.json*"))
    names = [f.name for f in files]
    assert names == ["HumanEval_0_has_close_elements.json.gz",
                     "HumanEval_0_has_close_elements.results.json",
                     "HumanEval_1_separate_paren_groups.json.gz",
                     "HumanEval_1_separate_paren_groups.results.json"]
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["results"]
    assert row["problems"] == 2 and row["samples_min"] == (1 if backend == "hf" else 2)
    assert 0 <= row["pass@1"] <= 1 and (out / "passk.png").exists()
    # Run again: everything is reused, the model is not even loaded.
    monkeypatch.setattr("multipl_moe.evaluation.pipeline.load_backend",
                        lambda args: pytest.fail("should not generate again"))
    assert cli.main(args) == 0
    assert "executed 0 programs" in capsys.readouterr().out

