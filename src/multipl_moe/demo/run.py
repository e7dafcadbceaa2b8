"""`multipl-moe demo`: the paper's experiment in miniature, designed so that both claims could fail.

1. Corpus: six languages, high-resource (Python, Java, C++) and low-resource (Rust, Go, Ruby),
   split three ways by a hash of each document: test (the report's numbers), validation (the
   learning-rate choice and the loss curves) and training.
2. Base: a tiny dense Qwen2 pre-trained on all six languages with the low-resource ones rare
   (`pretrain_low_share` of the blocks), so every token's embedding is trained, as in a real base
   model. (`--size gpu` starts from a real base instead.)
3. Continued training on a mix dominated by the low-resource languages with a small replay of the
   high-resource ones (`replay_share`): each variant swept over the same learning rates (seed 0),
   the best by validation loss then run with the other seeds.
4. Held-out test loss per language, trainable parameters and training FLOPs per variant.
5. The real evaluation pipeline (generation, sandboxed execution, pass@1) on a MultiPL-E slice.
6. `report.md`: every pair of variants compared paired by seed, curves, heatmaps, reproduction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from .common import log
from .settings import HIGH, LOW, SIZES, TEST_SPLIT_KEY, VARIANTS, DemoSize, continue_weights, pretrain_weights

STAMP = "demo-settings.json"
LOCK = ".demo.lock"


class DemoOutputError(Exception):
    """The output folder cannot be used as it is (a user mistake, reported in one line)."""


class DemoStageError(Exception):
    """A stage failed: the command fails, and the report (if any) says what failed."""


# ---------------------------------------------------------------------------------------------
# options, checked before any work starts

@dataclasses.dataclass
class DemoOptions:
    out: Path
    size: DemoSize
    eval_langs: list[str] | None
    data_dir: Path | None
    fresh: bool
    command: str


def check_options(out: Path, size_name: str = "cpu", recipe: Path | None = None, data_dir: Path | None = None,
                  eval_langs: str | None = None, seeds: str | None = None, fresh: bool = False,
                  command: str = "multipl-moe demo") -> DemoOptions:
    """Every option checked, and every input the run needs found, before anything is written."""
    from ..errors import UserError
    from ..evaluation.languages import canonical
    from .eval import default_data_dir
    from .settings import load_recipe

    if size_name not in SIZES:
        raise UserError(f"--size {size_name!r}: choose one of {', '.join(SIZES)}")
    size = dataclasses.replace(SIZES[size_name])
    if recipe is not None:
        if not recipe.is_file():
            raise UserError(f"--recipe {recipe}: no such file")
        size = load_recipe(recipe)
    if seeds is not None:
        try:
            size.seeds = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
        if len(set(size.seeds)) != len(size.seeds):
            raise UserError(f"--seeds {seeds!r}: each seed once")
    if not size.seeds or not size.lr_grid:
        raise UserError("the demo needs at least one seed and one learning rate")
    langs = None
    if eval_langs is not None:
        langs = []
        for tag in eval_langs.split(","):
            try:
                langs.append(canonical(tag))
            except KeyError:
                raise UserError(f"--eval-langs: unknown language {tag.strip()!r} "
                                f"(known: {', '.join(HIGH + LOW)} and other MultiPL-E tags)") from None
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if data_dir is not None:
        if not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir}: not a folder")
    elif size.eval_data not in (None, "hub"):
        data_dir = Path(size.eval_data)
    elif size.eval_data is None:
        data_dir = default_data_dir()
    if data_dir is not None:
        missing = [lang for lang in (langs or ["py", *LOW]) if not (data_dir / f"humaneval-{lang}.jsonl").is_file()]
        if missing:
            raise UserError(f"--data-dir {data_dir}: no humaneval-{missing[0]}.jsonl "
                            f"(needed for --eval-langs {','.join(langs or ['py', *LOW])})")
    if size.base is not None and not Path(size.base).exists() and "/" not in size.base:
        raise UserError(f"base {size.base!r}: neither a folder nor a hub name")
    for lang, src in (size.sources or {}).items():
        if lang not in HIGH + LOW:
            raise UserError(f"sources: {lang!r} is not one of the demo's languages ({', '.join(HIGH + LOW)})")
        if not Path(src).exists() and "/" not in src.split("?")[0]:
            raise UserError(f"sources.{lang} = {src!r}: neither a file or folder nor a hub dataset name")
    if size.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"size {size.name!r} trains on a CUDA GPU and none is visible; use the CPU sizes, or a "
                            "--recipe with device: cpu")
    return DemoOptions(out=out, size=size, eval_langs=langs, data_dir=data_dir, fresh=fresh, command=command)


# ---------------------------------------------------------------------------------------------
# the output folder: claimed, locked, reused only when made with the same settings and code

def fingerprint(size: DemoSize) -> dict:
    """What a finished stage's results depend on: the settings, and this package's code."""
    src = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(src.rglob("*.py")):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes())
    return {"settings": size.public(), "code": digest.hexdigest()[:16]}


def _ours(out: Path) -> bool:
    return (out / STAMP).is_file() or (out / "pretrain").is_dir() or (out / "init").is_dir()


@contextlib.contextmanager
def locked_output(out: Path):
    """Hold an exclusive lock on `out` for the whole run: a second demo into the same folder stops
    at once, in one line, instead of reading half-written checkpoints of the first."""
    import fcntl

    if out.exists() and any(p.name != LOCK for p in out.iterdir()) and not _ours(out):
        raise DemoOutputError(f"{out} is not empty and was not written by `multipl-moe demo`; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise DemoOutputError(f"another `multipl-moe demo` (pid {holder}) is writing to {out}; wait for it to "
                                  "finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def claim_output(out: Path, stamp: dict, fresh: bool) -> None:
    """Make `out` this demo's folder. Finished stages found there are reused (a re-run continues
    where an interrupted one stopped), but only if they were made with the same settings and code:
    anything else would mix results of two different experiments in one report."""
    stamp_path = out / STAMP
    if out.exists() and any(p.name != LOCK for p in out.iterdir()):
        if not _ours(out):
            raise DemoOutputError(f"{out} is not empty and was not written by `multipl-moe demo`; "
                                  "choose another --out")
        if fresh:
            for p in out.iterdir():
                if p.name != LOCK:  # the lock stays: this process holds it
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        elif not stamp_path.is_file():
            raise DemoOutputError(f"{out} holds a demo run from an older multipl-moe (no {STAMP}); rerun "
                                  "with --fresh to start over there, or choose another --out")
        else:
            old = json.loads(stamp_path.read_text())
            if old != stamp:
                what = "sizes or seeds" if old.get("settings") != stamp["settings"] else "multipl-moe code"
                raise DemoOutputError(f"{out} holds a demo run made with other {what}; rerun with --fresh "
                                      "to start over there, or choose another --out")
            log(f"reusing the finished stages in {out} (same settings and code; --fresh starts over)")
    out.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# stage 1: the corpus, split three ways

def build_corpus(out: Path, size: DemoSize) -> tuple[Path, Path, list[str], list[str], list[str]]:
    """(train file, test file, high, low, table lines). The test split is taken out here, by a
    keyed hash of each document; the trainer then draws its validation split from the rest."""
    from ..data.local_corpus import build_local_corpus, find_sources, write_jsonl_atomic
    from ..data.packing import is_validation
    from ..data.sources import iter_documents

    train_file, test_file, info = out / "corpus" / "train.jsonl", out / "corpus" / "test.jsonl", out / "corpus" / "info.json"
    if info.is_file():
        d = json.loads(info.read_text())
        return train_file, test_file, d["high"], d["low"], d["table"]
    every = out / "corpus" / "all.jsonl"
    if size.sources is None:
        found, _ = find_sources(None)
        high = [lang for lang in HIGH if lang in found]
        low = [lang for lang in LOW if lang in found]
        if not high or not low:
            raise DemoStageError(f"the demo needs high- and low-resource languages' sources; found {sorted(found)}")
        report = build_local_corpus(every, langs=high + low, max_bytes_per_lang=size.bytes_per_lang)
        sources = {lang: str(every) for lang in high + low}
        described = report.table().splitlines()
    else:
        high = [lang for lang in HIGH if lang in size.sources]
        low = [lang for lang in LOW if lang in size.sources]
        sources = size.sources
        described = [f"{lang}: {src}" for lang, src in sources.items()]
    rows = {"train": [], "test": []}
    counts: dict[str, dict[str, int]] = {}
    for lang in high + low:
        taken = 0
        for doc in iter_documents([sources[lang]], languages=[lang]):
            if taken >= size.bytes_per_lang:
                break
            for i, text in enumerate(_chunks(doc.text, size.doc_bytes)):
                taken += len(text.encode("utf-8", "surrogatepass"))
                split = "test" if is_validation(text, size.test_fraction, TEST_SPLIT_KEY) else "train"
                rows[split].append({"id": f"{doc.id}#{i}", "lang": lang, "content": text})
                c = counts.setdefault(lang, {"train": 0, "test": 0})
                c[split] += 1
        c = counts.get(lang, {})
        if c.get("train", 0) < 2:
            raise DemoStageError(f"{lang}: fewer than two documents in {sources[lang]}")
        if not c.get("test"):  # few, large files (C++ headers): the language's last document is its test split
            last = max(i for i, row in enumerate(rows["train"]) if row["lang"] == lang)
            rows["test"].append(rows["train"].pop(last))
            c["train"], c["test"] = c["train"] - 1, 1
    no_val = [lang for lang in high + low
              if not any(row["lang"] == lang and is_validation(row["content"], size.val_fraction, 0)
                         for row in rows["train"])]
    if no_val:
        raise DemoStageError(f"{', '.join(no_val)}: no document falls into the validation split; raise "
                             "bytes_per_lang or val_fraction (--recipe)")
    write_jsonl_atomic(rows["test"], test_file)
    write_jsonl_atomic(rows["train"], train_file)
    every.unlink(missing_ok=True)
    table = described + ["documents (train+validation / test): "
                         + ", ".join(f"{lang} {c['train']}/{c['test']}" for lang, c in counts.items())]
    info.write_text(json.dumps({"high": high, "low": low, "table": table}, indent=2) + "\n")
    return train_file, test_file, high, low, table


def _chunks(text: str, limit: int):
    """A long file as pieces of at most about `limit` bytes, cut at line ends: many small documents
    instead of a few large ones, so that every language has documents in all three splits."""
    piece, size = [], 0
    for line in text.splitlines(keepends=True):
        if size and size + len(line) > limit:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece and "".join(piece).strip():
        yield "".join(piece)


# ---------------------------------------------------------------------------------------------
# training runs and held-out losses

def _train(out: Path, size: DemoSize, **kw) -> None:
    from ..training import load_config
    from ..training.trainer import train
    from .settings import train_overrides

    if (out / "final" / "config.json").exists():
        return
    if out.exists():  # an interrupted run: its checkpoints belong to settings we no longer trust
        shutil.rmtree(out)
    train(load_config(None, train_overrides(size, out=out, **kw)))


def final_val(run: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_loss_by_lang" in r][-1]["val_loss_by_lang"]


def heldout_losses(model_dir: Path, cache: Path, test_file: Path, size: DemoSize, langs: list[str]) -> dict[str, float]:
    """Mean next-token loss on each language's test blocks (the split no choice was made on)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import multipl_moe.modeling  # noqa: F401 (registers the MoE class)

    from ..data.packing import pack_documents
    from ..data.sources import iter_documents
    from ..training.trainer import sequence_losses

    tok = AutoTokenizer.from_pretrained(model_dir)
    device = torch.device(size.device if size.device != "cuda" or torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    result = {}
    for lang in langs:
        texts = (d.text for d in iter_documents([str(test_file)], languages=[lang]))
        ids = (tok(t, add_special_tokens=False)["input_ids"] for t in texts)
        blocks = []
        for block in pack_documents(ids, size.seq_len, tok.eos_token_id):
            blocks.append(block)
            if len(blocks) >= size.heldout_blocks:
                break
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(blocks), size.batch):
                batch = torch.tensor(blocks[i:i + size.batch], device=device)
                seq_loss, _, _ = sequence_losses(model, batch)
                total += seq_loss.sum().item()
        result[lang] = total / len(blocks)
    cache.write_text(json.dumps(result, indent=2) + "\n")
    return result


def measure_cost(size: DemoSize, base: str, train_file: Path, variant: str, weights: dict[str, float]) -> dict:
    """Trainable parameters, and the matmul FLOPs of one training step (forward and backward, with
    the variant's freezing) counted by torch's FlopCounterMode on a batch of the run's shape."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..training import load_config
    from ..training.model_setup import build_model
    from ..training.trainer import sequence_losses
    from .settings import train_overrides

    cfg = load_config(None, train_overrides(size, base=base, train_file=train_file, out=Path("unused"),
                                            variant=variant, seed=0, weights=weights, steps=1, lr=1e-3))
    model, tok = build_model(cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, len(tok), (size.batch, size.seq_len), generator=gen)
    counter = FlopCounterMode(display=False)
    with counter:
        seq_loss, _, aux = sequence_losses(model, ids)
        (seq_loss.mean() + (aux if aux is not None else 0)).backward()
    return {"trainable_params": trainable, "total_params": total, "flops_per_step": counter.get_total_flops()}


# ---------------------------------------------------------------------------------------------
# progress: run k of n, time left

class Progress:
    """One line per training run: which one of how many, and the time left at the rates measured
    so far (seconds per step per variant; an unmeasured variant counts at the slowest rate seen)."""

    def __init__(self, plan: list[tuple[str, int]]):
        self.plan, self.done, self.rate, self.reused = plan, 0, {}, 0

    def start(self, what: str) -> None:
        left = self._left(self.done)
        eta = f"; about {_minutes(left)} of training left" if left is not None else ""
        log(f"run {self.done + 1} of {len(self.plan)}: {what}{eta}")

    def finish(self, seconds: float, reused: bool) -> None:
        variant, steps = self.plan[self.done]
        if reused:
            self.reused += 1
        else:
            self.rate[variant] = seconds / steps
        self.done += 1

    def _left(self, start: int) -> float | None:
        if not self.rate:
            return None
        slowest = max(self.rate.values())
        return sum(self.rate.get(v, slowest) * steps for v, steps in self.plan[start:])


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


# ---------------------------------------------------------------------------------------------
# the demo

def run_demo(opts: DemoOptions) -> Path:
    import torch

    # The CPU sizes run torch on one thread (see DemoSize.cpu_threads); give the caller its own
    # setting back, or every later computation in the process (tests, notebooks) runs with
    # other GEMM kernels and stops matching runs made in fresh processes bit for bit.
    threads = torch.get_num_threads()
    try:
        with locked_output(opts.out):
            return _run(opts)
    finally:
        torch.set_num_threads(threads)


def _run(opts: DemoOptions) -> Path:
    from transformers import AutoTokenizer

    from ..data.tokenizer import train_tokenizer_from_corpus
    from ..modeling.tiny import make_tiny_dense

    out, size = opts.out, opts.size
    t_start = time.time()
    if size.cpu_threads:
        import torch

        torch.set_num_threads(size.cpu_threads)
    claim_output(out, fingerprint(size), opts.fresh)
    (out / "report.md").unlink(missing_ok=True)  # never left claiming a result this run did not make
    (out / "summary.json").unlink(missing_ok=True)

    log("1/6 corpus: three-way split (train / validation for choices / test for the report)")
    train_file, test_file, high, low, corpus_lines = build_corpus(out, size)
    langs = high + low

    seeds, grid = size.seeds, size.lr_grid
    plan = ([("dense", size.pretrain_steps)] if size.base is None else []) \
        + [(v, size.steps) for v in VARIANTS for _ in grid] + [(v, size.steps) for v in VARIANTS for _ in seeds[1:]]
    progress = Progress(plan)

    def train_run(run: Path, what: str, **kw) -> None:
        progress.start(what)
        reused = (run / "final" / "config.json").exists()
        t0 = time.time()
        _train(run, size, train_file=train_file, **kw)
        progress.finish(time.time() - t0, reused)

    if size.base is None:
        log(f"2/6 tokenizer and a tiny dense base, pre-trained with the low-resource languages at "
            f"{size.pretrain_low_share:.0%} of the blocks")
        init = out / "init"
        if not (init / "tokenizer.json").exists():
            train_tokenizer_from_corpus([train_file], init, vocab_size=size.vocab)
        tok = AutoTokenizer.from_pretrained(init)
        make_tiny_dense(init, tokenizer=tok, hidden_size=size.hidden, intermediate_size=size.inter,
                        num_layers=size.layers, num_heads=size.heads, num_kv_heads=size.heads // 2,
                        max_positions=size.seq_len * 2)
        pre = out / "pretrain"
        train_run(pre, "pre-training the base", base=init, variant="dense", seed=0,
                  weights=pretrain_weights(high, low, size), steps=size.pretrain_steps, lr=size.pretrain_lr)
        base = str(pre / "final")
    else:
        log(f"2/6 base: {size.base}")
        base = size.base

    log(f"3/6 continued training, {size.replay_share:.0%} high-resource replay: learning-rate sweep "
        f"{grid} (seed {seeds[0]}), then seeds {seeds[1:]} at each variant's best")
    weights = continue_weights(high, low, size)

    def run_dir(variant: str, lr: float, seed: int) -> Path:
        return out / "runs" / f"{variant}-lr{lr:g}-seed{seed}"

    sweep: dict[str, dict[float, float]] = {}
    for variant in VARIANTS:
        for lr in grid:
            run = run_dir(variant, lr, seeds[0])
            train_run(run, f"{variant}, lr {lr:g}, seed {seeds[0]}", base=base, variant=variant, seed=seeds[0],
                      weights=weights, steps=size.steps, lr=lr)
            val = final_val(run)
            sweep.setdefault(variant, {})[lr] = sum(val[lang] for lang in langs) / len(langs)
    best = {v: min(sweep[v], key=sweep[v].get) for v in VARIANTS}
    runs: dict[str, dict[int, Path]] = {v: {seeds[0]: run_dir(v, best[v], seeds[0])} for v in VARIANTS}
    for variant in VARIANTS:
        for seed in seeds[1:]:
            run = run_dir(variant, best[variant], seed)
            train_run(run, f"{variant}, lr {best[variant]:g} (best), seed {seed}", base=base, variant=variant,
                      seed=seed, weights=weights, steps=size.steps, lr=best[variant])
            runs[variant][seed] = run

    log("4/6 held-out test loss per language; trainable parameters and FLOPs per variant")
    base_test = heldout_losses(_base_dir(out, base), out / "base_test_loss.json", test_file, size, langs)
    test = {v: {s: heldout_losses(r / "final", r / "test_loss.json", test_file, size, langs) for s, r in rs.items()}
            for v, rs in runs.items()}
    cost_file = out / "cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    for variant in VARIANTS:
        if variant not in cost:
            cost[variant] = measure_cost(size, base, train_file, variant, weights)
    cost_file.write_text(json.dumps(cost, indent=2) + "\n")

    merged = None
    merge_steps = size.steps if size.merge_steps is None else size.merge_steps
    if merge_steps:
        from .merge_stage import run_merge_stage

        merge_langs = (["py"] if "py" in high else high[:1]) + low
        log(f"4b/6 merge stage: the base fine-tuned on each of {', '.join(merge_langs)} alone, merged three ways; "
            "held-out loss and CodeBLEU")
        merged = run_merge_stage(out / "merge", _base_dir(out, base), train_file, test_file, merge_langs, size,
                                 steps=merge_steps, lr=best["dense"], seed=seeds[0], problems=size.merge_problems,
                                 max_new_tokens=size.merge_max_new_tokens or size.max_new_tokens)

    log("5/6 MultiPL-E slice: generation, sandboxed execution, pass@1")
    from .eval import evaluate_slice

    # Always evaluated afresh (it takes a minute): completions left by an earlier run may come from
    # other MultiPL-E files or another --eval-langs.
    shutil.rmtree(out / "eval", ignore_errors=True)
    pass_at_1, eval_note, failures = evaluate_slice(
        out / "eval", {"base": Path(base), **{v: rs[seeds[0]] / "final" for v, rs in runs.items()}},
        opts.data_dir, opts.eval_langs or ["py", *low], size.eval_problems, size.max_new_tokens, size.device,
        hub=size.eval_data == "hub" and opts.data_dir is None)

    log("6/6 report")
    from .report import write_report

    path = write_report(out, size=size, high=high, low=low, base_test=base_test, test=test, runs=runs,
                        sweep=sweep, best=best, cost=cost, pass_at_1=pass_at_1, eval_note=eval_note,
                        failures=failures, corpus_lines=corpus_lines, command=opts.command, merge=merged,
                        seconds=time.time() - t_start, machine=_machine(), reused=progress.reused)
    if failures:
        raise DemoStageError(f"stage 5 failed for {', '.join(failures)}; {path} says what ran and what failed")
    log(f"done in {_minutes(time.time() - t_start)}: {path}")
    return path


def _base_dir(out: Path, base: str) -> Path:
    """A hub base as a local folder (the test loss is computed from a folder like every other model's)."""
    local = Path(base)
    if local.is_dir():
        return local
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = out / "base"
    if not (dest / "config.json").exists():
        AutoModelForCausalLM.from_pretrained(base).save_pretrained(dest)
        AutoTokenizer.from_pretrained(base).save_pretrained(dest)
    return dest


def _machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f", load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    return f"{platform.machine()}, {cores} CPU cores, Python {sys.version.split()[0]}{load}"
