"""Completions for MultiPL-E problems, written as MultiPL-E completion files.

Two backends behind one method, `complete(prompts, stops, sampling) -> list[str]`:

- `HFBackend`: a local checkpoint through `transformers` (`trust_remote_code=True`, so our own MoE
  checkpoints load too). Prompts are sorted by length and left-padded into batches, generation
  uses the KV cache, and a stopping criterion ends a row once its new text contains a stop token,
  so a batch does not run to `max_new_tokens` after every row is finished.
- `OpenAIBackend`: an OpenAI-compatible `/v1/completions` server (vLLM, TGI, llama.cpp), with
  only the standard library (`urllib`), requests in parallel threads.

Either way the completion is cut at the first stop token, as MultiPL-E does, and the n samples
of a problem go to `{name}.json.gz` (atomic write). Problems whose file already holds n
completions are skipped, so an interrupted generation resumes where it stopped.

MultiPL-E's defaults for pass@1: 20 samples, temperature 0.2, top_p 0.95; temperature 0 means
greedy (one sample is then enough).
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from . import formats


@dataclass(frozen=True)
class Sampling:
    n: int = 20
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0

    def __post_init__(self):
        if self.n < 1:
            raise ValueError("the number of samples must be at least 1")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError("temperature must be a number >= 0 (0 means greedy)")
        if self.temperature == 0 and self.n > 1:
            raise ValueError("greedy decoding (temperature 0) gives one sample; use n=1")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (got {self.max_new_tokens})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Text up to the earliest occurrence of any stop token (MultiPL-E's post-processing)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


class HFBackend:
    """A local Hugging Face checkpoint (see the module docstring)."""

    def __init__(self, model_dir: str | Path, device: str | None = None, dtype: str = "auto",
                 batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import multipl_moe.modeling  # noqa: F401 (registers our MoE class for the Auto* loaders)

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), trust_remote_code=True, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval()
        self.batch_size = batch_size

    def _stopping(self, prompt_len: int, stops: list[Sequence[str]]):
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok, torch = self.tokenizer, self.torch
        window = 24  # tokens of new text decoded per step: enough for any stop token

        class StopOnTokens(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                done = []
                for row, row_stops in zip(input_ids[:, prompt_len:], stops):
                    tail = tok.decode(row[-window:], skip_special_tokens=True)
                    done.append(any(s and s in tail for s in row_stops))
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        return StoppingCriteriaList([StopOnTokens()])

    def _batch(self, prompts: list[str], stops: list[Sequence[str]], s: Sampling) -> list[str]:
        torch, tok = self.torch, self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, return_token_type_ids=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        prompt_len = enc["input_ids"].shape[1]
        kwargs = dict(max_new_tokens=s.max_new_tokens, use_cache=True,
                      pad_token_id=tok.pad_token_id, stopping_criteria=self._stopping(prompt_len, stops))
        if s.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            # top_k=0: nucleus sampling only, as servers (vLLM) and bigcode-evaluation-harness
            # do; transformers would otherwise add its default top_k=50.
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        texts = []
        for i, prompt in enumerate(prompts):
            mask = enc["attention_mask"][i].bool()
            prompt_ids = enc["input_ids"][i][mask]
            new_ids = out[i, prompt_len:]
            # Decode prompt + completion together and drop the decoded prompt: decoding the new
            # tokens alone loses a leading space with SentencePiece tokenizers (indentation!).
            full = tok.decode(torch.cat([prompt_ids, new_ids]), skip_special_tokens=True)
            head = tok.decode(prompt_ids, skip_special_tokens=True)
            text = full[len(head):] if full.startswith(head) else tok.decode(
                new_ids, skip_special_tokens=True)
            texts.append(cut_at_stop(text, stops[i]))
        return texts

    def complete(self, prompts: list[str], stops: list[Sequence[str]], s: Sampling,
                 on_batch: Callable[[int], None] | None = None) -> list[str]:
        """One completion per prompt (repeat a prompt n times for n samples)."""
        self.torch.manual_seed(s.seed)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less padding
        out: list[str] = [""] * len(prompts)
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            for i, text in zip(idx, self._batch([prompts[i] for i in idx], [stops[i] for i in idx], s)):
                out[i] = text
            if on_batch:
                on_batch(len(idx))
        return out


class OpenAIBackend:
    """An OpenAI-compatible completions server (vLLM, TGI, llama.cpp); stdlib only."""

    def __init__(self, server: str, model: str, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 600.0, retries: int = 5):
        base = server.rstrip("/")
        self.url = base + ("/completions" if base.endswith("/v1") else "/v1/completions")
        self.model, self.api_key = model, api_key
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers)
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.load(resp)
            except urllib.error.HTTPError as e:
                if e.code < 500 and e.code != 429 or attempt == self.retries:
                    detail = e.read().decode(errors="replace")[:500]
                    raise RuntimeError(f"{self.url}: HTTP {e.code}: {detail}") from e
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt == self.retries:
                    raise RuntimeError(f"{self.url}: {e}") from e
            time.sleep(min(30.0, 2.0 ** attempt))
        raise AssertionError("unreachable")

    def _one(self, prompt: str, stops: Sequence[str], s: Sampling, n: int) -> list[str]:
        texts: list[str] = []
        while len(texts) < n:  # some servers (llama.cpp) return one choice whatever n is
            body = {"model": self.model, "prompt": prompt, "max_tokens": s.max_new_tokens,
                    "temperature": s.temperature, "n": n - len(texts), "stop": list(stops),
                    "seed": s.seed + len(texts)}
            if not s.greedy:
                body["top_p"] = s.top_p
            choices = sorted(self._post(body).get("choices", []), key=lambda c: c.get("index", 0))
            if not choices:
                raise RuntimeError(f"{self.url}: response without choices")
            texts += [cut_at_stop(c.get("text", ""), stops) for c in choices]
        return texts[:n]

    def complete(self, prompts: list[str], stops: list[Sequence[str]], s: Sampling,
                 on_batch: Callable[[int], None] | None = None) -> list[str]:
        """One completion per prompt; identical prompts in a row are sent as one request."""
        groups: list[tuple[int, int]] = []  # (first index, count) of runs of equal prompts
        for i, p in enumerate(prompts):
            if groups and prompts[groups[-1][0]] == p and stops[groups[-1][0]] == stops[i]:
                groups[-1] = (groups[-1][0], groups[-1][1] + 1)
            else:
                groups.append((i, 1))
        out: list[str] = [""] * len(prompts)

        def work(g: tuple[int, int]) -> tuple[tuple[int, int], list[str]]:
            return g, self._one(prompts[g[0]], stops[g[0]], s, g[1])

        with ThreadPoolExecutor(self.concurrency) as pool:
            for (first, count), texts in pool.map(work, groups):
                out[first:first + count] = texts
                if on_batch:
                    on_batch(count)
        return out


def completion_path(out_dir: Path, problem: dict) -> Path:
    """Where a problem's completions go; ValueError for a name that would lead elsewhere."""
    return Path(out_dir) / f"{formats.check_name(problem.get('name'))}.json.gz"


def pending(problems: list[dict], sampling: Sampling, out_dir: Path) -> list[dict]:
    """Problems whose completion file is missing, unreadable or has fewer than n completions."""
    todo = []
    for p in problems:
        path = completion_path(out_dir, p)
        try:
            done = formats.read_json(path).get("completions", [])
            if isinstance(done, list) and len(done) >= sampling.n:
                continue
        except (*formats.READ_ERRORS, AttributeError):
            pass  # missing, unreadable or not a completion file: generate
        todo.append(p)
    return todo


def generate(problems: list[dict], backend, sampling: Sampling, out_dir: Path,
             progress: bool = True, chunk_samples: int = 256) -> int:
    """Write `{name}.json.gz` with `sampling.n` completions per problem; returns how many
    problems were generated now (the others already had their completions). Problems go to the
    backend in chunks of about `chunk_samples` samples, and each chunk's files are written as
    soon as it is done, so an interruption loses at most one chunk."""
    todo = pending(problems, sampling, out_dir)
    for chunk, samples in complete_in_chunks(todo, backend, sampling, f"generate {Path(out_dir).name}",
                                             progress, chunk_samples):
        for p, completions in zip(chunk, samples):
            record = {k: p[k] for k in ("name", "language", "prompt", "tests", "stop_tokens")}
            record.update(temperature=sampling.temperature, top_p=sampling.top_p,
                          max_tokens=sampling.max_new_tokens, n=sampling.n, completions=completions)
            formats.write_json_atomic(completion_path(out_dir, p), record)
    return len(todo)


def complete_in_chunks(todo: list[dict], backend, sampling: Sampling, desc: str,
                       progress: bool = True, chunk_samples: int = 256):
    """Yield (chunk of problems, their `sampling.n` completions each), chunk by chunk, under one
    progress bar: callers write each chunk as soon as it is done, so an interruption loses at most
    one chunk. Problems need `prompt` and `stop_tokens`."""
    from tqdm import tqdm

    n = sampling.n
    per_chunk = max(1, chunk_samples // n)
    with tqdm(total=len(todo) * n, unit="sample", desc=desc, disable=not progress or not todo,
              dynamic_ncols=True) as bar:
        for c in range(0, len(todo), per_chunk):
            chunk = todo[c:c + per_chunk]
            prompts = [p["prompt"] for p in chunk for _ in range(n)]
            stops = [p["stop_tokens"] for p in chunk for _ in range(n)]
            texts = backend.complete(prompts, stops, sampling, on_batch=bar.update)
            yield chunk, [texts[j * n:(j + 1) * n] for j in range(len(chunk))]
