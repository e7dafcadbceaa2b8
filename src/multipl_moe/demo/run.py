"""`multipl-moe demo`: the paper's experiment in miniature, on a CPU, with nothing downloaded.

1. The built-in corpus (the installed toolchains' standard-library sources), split into
   high-resource (Python, Java, C++) and low-resource languages (Rust, Go, Ruby, or those present).
2. A byte-level BPE tokenizer, and a tiny dense Qwen2 model pre-trained on the high-resource
   languages only: the stand-in for the base LLM.
3. Continued training of each variant with the same data and token budget: dense, LoRA,
   token-level-only MoE, MultiPL-MoE `batch`, MultiPL-MoE `causal`; two seeds each.
4. Held-out loss per language (gain on low-resource, forgetting on high-resource), with the
   differences that exceed the seed-to-seed spread called out.
5. The real evaluation pipeline (generation, sandboxed execution, pass@1) on a MultiPL-E slice.
6. `report.md` with the tables, plots and the commands that reproduce it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .common import log
from .settings import FULL, HIGH, LOW, QUICK, VARIANTS, DemoSize

def _train(out: Path, base: Path, corpus: Path, size: DemoSize, variant: str, seed: int, langs: list[str],
           steps: int, lr: float):
    from ..training import load_config
    from ..training.trainer import train

    overrides = [
        f"model.base={base}", f"model.variant={variant}", f"data.sources=[{corpus}]",
        f"data.languages=[{','.join(langs)}]", f"data.seq_len={size.seq_len}", "data.val_fraction=0.1",
        "data.val_max_blocks_per_lang=16", f"data.sampling_weights={{{', '.join(f'{l}: 1' for l in langs)}}}",
        f"steps={steps}", f"micro_batch_size={size.batch}", f"optim.lr={lr}", "optim.warmup_steps=10",
        f"seed={seed}", f"output_dir={out}", "log_every=5", f"eval_every={steps}", f"save_every={steps}",
        "eval_batches=0", "precision=fp32", "tensorboard=false", "data.seed=0",
        f"model.moe_overrides.segment.segment_length={size.segment_length}",
    ]
    if variant in ("dense", "lora"):
        overrides.append("model.freeze=all")
    cfg = load_config(None, overrides)
    train(cfg)
    return overrides


def _val_losses(model_dir: Path, corpus: Path, size: DemoSize, langs: list[str]) -> dict[str, float]:
    """Held-out loss of a saved model on the same validation blocks the variants are scored on."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import multipl_moe.modeling  # noqa: F401 (registers the MoE class)

    from ..data import DataConfig, build_train_val
    from ..training.config import TrainConfig
    from ..training.trainer import evaluate

    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = TrainConfig(data=DataConfig(sources=[str(corpus)], languages=langs, seq_len=size.seq_len,
                                      val_fraction=0.1, val_max_blocks_per_lang=16),
                      micro_batch_size=size.batch, eval_batches=0)
    _, val = build_train_val(cfg.data, tok)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return evaluate(model, val, cfg, torch.device("cpu"))


def _final_val(run: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val_loss_by_lang" in r][-1]["val_loss_by_lang"]


class DemoOutputError(Exception):
    """The output folder cannot be used as it is (a user mistake, reported in one line)."""


STAMP = "demo-settings.json"


def fingerprint(size: DemoSize) -> dict:
    """What a finished stage's results depend on: the sizes and seeds, and this package's code."""
    src = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(src.rglob("*.py")):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0" + path.read_bytes())
    return {"settings": asdict(size), "code": digest.hexdigest()[:16]}


def claim_output(out: Path, stamp: dict, fresh: bool) -> None:
    """Make `out` this demo's folder. Finished stages found there are reused (a re-run continues
    where an interrupted one stopped), but only if they were made with the same settings and code:
    anything else would mix results of two different experiments in one report."""
    import shutil

    stamp_path = out / STAMP
    if out.exists() and any(out.iterdir()):
        if not (stamp_path.is_file() or (out / "pretrain").is_dir() or (out / "init").is_dir()):
            raise DemoOutputError(f"{out} is not empty and was not written by `multipl-moe demo`; "
                                  "choose another --out")
        if fresh:
            shutil.rmtree(out)
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


def run_demo(out: Path, quick: bool = False, data_dir: Path | None = None, eval_langs: list[str] | None = None,
             seeds: list[int] | None = None, fresh: bool = False) -> Path:
    from transformers import AutoTokenizer

    from ..data.local_corpus import build_local_corpus, find_sources
    from ..data.tokenizer import train_tokenizer_from_corpus
    from ..tiny import make_tiny_dense

    size = replace(QUICK if quick else FULL)
    if seeds:
        size.seeds = seeds
    t_start = time.time()
    claim_output(out, fingerprint(size), fresh)
    commands = [f"multipl-moe demo{' --quick' if quick else ''} --out {out}"]

    # 1. corpus ------------------------------------------------------------------------------
    sources, _ = find_sources(None)
    high = [l for l in HIGH if l in sources]
    low = [l for l in LOW if l in sources] or [l for l in sources if l not in HIGH][:3]
    if not high or not low:
        raise RuntimeError(f"the demo needs high- and low-resource languages; found {sorted(sources)}")
    langs = high + low
    corpus = out / "corpus.jsonl"
    log(f"1/6 corpus: high-resource {high}, low-resource {low}")
    report = build_local_corpus(corpus, langs=langs, max_bytes_per_lang=size.bytes_per_lang)
    corpus_lines = report.table().splitlines()

    # 2. tokenizer and base model -----------------------------------------------------------------
    log("2/6 tokenizer and a tiny dense base pre-trained on the high-resource languages")
    init = out / "init"
    if not (init / "tokenizer.json").exists():
        train_tokenizer_from_corpus([corpus], init, vocab_size=size.vocab)
    tok = AutoTokenizer.from_pretrained(init)
    make_tiny_dense(init, tokenizer=tok, hidden_size=size.hidden, intermediate_size=size.inter,
                    num_layers=size.layers, num_heads=size.heads, num_kv_heads=size.heads // 2,
                    max_positions=size.seq_len * 2)
    pre = out / "pretrain"
    if not (pre / "final" / "config.json").exists():
        _train(pre, init, corpus, size, "dense", 0, high, size.pretrain_steps, 3e-3)
    base = pre / "final"

    # 3. continued training of each variant -----------------------------------------------------
    lr = 2e-3
    runs: dict[str, dict[int, Path]] = {v: {} for v in VARIANTS}
    for variant in VARIANTS:
        for seed in size.seeds:
            run = out / "runs" / f"{variant}-seed{seed}"
            log(f"3/6 continued training: {variant}, seed {seed}")
            if not (run / "final" / "config.json").exists():
                if run.exists():
                    import shutil

                    shutil.rmtree(run)
                _train(run, base, corpus, size, variant, seed, langs, size.steps, lr)
            runs[variant][seed] = run

    # 4. held-out loss per language ---------------------------------------------------------------
    log("4/6 held-out loss per language")
    base_val = _val_losses(base, corpus, size, langs)
    val = {v: {s: _final_val(r) for s, r in rs.items()} for v, rs in runs.items()}

    # 5. evaluation on a MultiPL-E slice ----------------------------------------------------------
    log("5/6 MultiPL-E slice: generation, sandboxed execution, pass@1")
    from .eval import evaluate_slice

    pass_at_1, eval_note = evaluate_slice(out / "eval", {"base": base, **{v: rs[size.seeds[0]] / "final"
                                                                         for v, rs in runs.items()}},
                                          data_dir, eval_langs or ["py"] + low, size.eval_problems,
                                          size.max_new_tokens)

    # 6. report ------------------------------------------------------------------------------------
    log("6/6 report")
    from .report import write_report

    path = write_report(out, size=size, quick=quick, high=high, low=low, base_val=base_val, val=val,
                        runs=runs, pass_at_1=pass_at_1, eval_note=eval_note, corpus_lines=corpus_lines,
                        commands=commands, seconds=time.time() - t_start,
                        machine=f"{platform.machine()}, {_cpu_count()} CPU cores, Python {sys.version.split()[0]}")
    log(f"done in {time.time() - t_start:.0f} s: {path}")
    return path


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
