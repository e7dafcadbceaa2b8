"""Continued pretraining on Hugging Face Accelerate: one CPU process, DDP, FSDP or DeepSpeed.

The loop is written out rather than hidden in `Trainer` because the run must be resumable step
for step and observable per language: the loss is computed here per sequence (so it can be
grouped by language), the data position is part of the checkpoint, and the router statistics of
the MoE blocks are logged per language.

Loss = next-token cross-entropy + the blocks' auxiliary loss (alpha * load balance, already
weighted by each block). Checkpoints are `accelerator.save_state` directories written under a
temporary name and renamed, so a kill at any moment leaves the last complete one usable; each
carries a manifest (sizes, checksums) so that `--resume` can skip one damaged afterwards (see
`checkpoints`). A full disk stops the run with one line; what was half-written is removed and the
checkpoints before it stay intact, so `--resume` after freeing space is still exact.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ..util.atomic import atomic_file, disk_full_error, is_disk_full
from . import checkpoints
from .config import TrainConfig, TrainConfigError, check_output_dir

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"


def cosine_with_warmup(optimizer, cfg):
    o = cfg.optim

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / (o.warmup_steps + 1)
        progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps))
        lr = o.min_lr + 0.5 * (o.lr - o.min_lr) * (1 + math.cos(math.pi * progress))
        return lr / o.lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _collate(lang_index):
    def collate(rows):
        return {"input_ids": torch.stack([r["input_ids"] for r in rows]),
                "lang_id": torch.tensor([lang_index[r["lang"]] for r in rows])}
    return collate


def sequence_losses(model, input_ids):
    """Per-sequence mean next-token cross-entropy [B], the model output, and its aux loss."""
    out = model(input_ids=input_ids, use_cache=False)
    logits = out.logits
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten(), reduction="none")
    return ce.view(input_ids.shape[0], -1).mean(1), out, getattr(out, "aux_loss", None)


def _global_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over data-parallel processes, differentiable (for balance statistics)."""
    import torch.distributed as dist
    import torch.distributed.nn.functional as dist_fn

    return dist_fn.all_reduce(t, op=dist.ReduceOp.SUM) / dist.get_world_size()


def _moe_blocks(model):
    from ..moe import HybridMoEBlock

    return [m for m in model.modules() if isinstance(m, HybridMoEBlock)]


def latest_checkpoint(out: Path) -> Path | None:
    """The newest intact checkpoint (damaged newer ones are set aside with a warning)."""
    return checkpoints.select(out / CHECKPOINTS, _warn)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _resume_point(accelerator, out: Path) -> Path | None:
    """The main process verifies and chooses; every process resumes from its choice."""
    from accelerate.utils import broadcast_object_list

    choice: list = [None]
    if accelerator.is_main_process:
        try:
            found = latest_checkpoint(out)
            choice = [("ok", str(found) if found else None)]
        except TrainConfigError as e:
            choice = [("error", str(e))]
    choice = broadcast_object_list(choice)
    kind, value = choice[0]
    if kind == "error":
        raise TrainConfigError(value)
    return Path(value) if value else None


class RouterLoad:
    """Per-language expert load (summed over layers) for both MoE levels, over a logging window."""

    def __init__(self):
        self.token = defaultdict(lambda: 0)
        self.segment = defaultdict(lambda: 0)

    def add(self, router_stats, lang_ids, langs):
        if not router_stats:
            return
        for stats in router_stats.values():
            for key, store in (("token_load", self.token), ("segment_load", self.segment)):
                if key in stats:
                    load = stats[key].detach().float().cpu()
                    for i, lid in enumerate(lang_ids.tolist()):
                        store[langs[lid]] = store[langs[lid]] + load[i]

    def fractions(self):
        out = {}
        for name, store in (("token_load_by_lang", self.token), ("segment_load_by_lang", self.segment)):
            if store:
                out[name] = {lang: [round(float(x), 4) for x in (v / v.sum().clamp(min=1))]
                             for lang, v in sorted(store.items())}
        return out


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..data import build_train_val
    from .model_setup import build_model

    out = Path(cfg.output_dir)
    check_output_dir(out)
    from .loggers import check as check_loggers

    check_loggers(cfg)   # a missing optional logger is told before minutes of loading
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and torch.cuda.is_available())
    # cpu=True without a GPU: Accelerate then runs several launched processes over gloo (without it,
    # each CPU process would silently train alone as rank 0).
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process
    if main:
        print(f"accelerate: {accelerator.distributed_type.value}, {accelerator.num_processes} process(es), "
              f"device {accelerator.device}, precision {'bf16' if use_bf16 else 'fp32'}")
    ckpt = _resume_point(accelerator, out) if resume else None
    if resume and ckpt is None and main:
        print(f"no complete checkpoint under {out / CHECKPOINTS}: starting from step 0")
    if not resume and (out / CHECKPOINTS).exists() and any((out / CHECKPOINTS).glob("step-*")):
        raise TrainConfigError(f"{out} already holds checkpoints: pass --resume to continue, or choose "
                               "another output_dir")
    set_seed(cfg.seed)
    if cfg.data.shuffle_seed is None:  # the run's seed also picks the data order (not the split)
        cfg.data.shuffle_seed = cfg.seed
    run_record = None
    if main:  # issue 14: the resolved config and what runs it, before anything heavy
        from .run_record import write_start

        run_record = write_start(cfg, out, ckpt)
    model, tokenizer = build_model(cfg)
    train_stream, val = build_train_val(cfg.data, tokenizer, progress=main)
    if main:
        from .run_record import print_data_table

        print_data_table("\n".join(train_stream.report.lines()))
    langs = sorted(train_stream.weights)
    lang_index = {lang: i for i, lang in enumerate(langs)}
    if cfg.model.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):   # its name from transformers 5.2x on
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if cfg.balance_over_global_batch and accelerator.num_processes > 1:
        for block in _moe_blocks(model):
            block.balance_reduce = _global_mean

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise TrainConfigError("no trainable parameter: check model.freeze / model.variant")
    groups = [{"params": [p for _, p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
              {"params": [p for _, p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps)
    scheduler = cosine_with_warmup(optimizer, cfg)
    loader = DataLoader(train_stream, batch_size=cfg.micro_batch_size, collate_fn=_collate(lang_index))
    # The scheduler is stepped by hand once per optimizer step: a prepared one would step once
    # per process, and the schedule would depend on the number of processes.
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)

    start = 0
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        lost = checkpoints.rng_restored(ckpt, accelerator.process_index)
        if lost:
            _warn(f"process {accelerator.process_index}: {lost}: the resumed run is NOT exact "
                  "(its random draws differ from an uninterrupted run)")
        start = json.loads((ckpt / checkpoints.STATE).read_text())["step"]
        if main:
            print(f"resumed from {ckpt} at step {start}")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_file(out / "config.json") as f:
            f.write(json.dumps(cfg.to_dict(), indent=2, default=list) + "\n")
        _truncate_metrics(out / METRICS, start)
    writer = None
    if main:  # TensorBoard and/or W&B (`report_to`), behind the SummaryWriter calls below
        from .loggers import make as make_loggers

        writer = make_loggers(cfg, out, run_record)

    # The data position is part of the run's state: skip what was consumed before the checkpoint.
    batches = iter(accelerator.skip_first_batches(loader, start * cfg.grad_accum) if start else loader)
    trainable = [p for _, p in params]
    window = {"loss": 0.0, "lm": 0.0, "aux": 0.0, "n": 0, "tokens": 0, "t0": time.perf_counter()}
    by_lang = defaultdict(lambda: [0.0, 0])
    load = RouterLoad()
    last = {}
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not main)
    try:  # the error line of a failed run starts on a line of its own, not after the bar
        model.train()
        for step in range(start + 1, cfg.steps + 1):
            for micro in range(cfg.grad_accum):
                batch = next(batches)
                sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 else accelerator.no_sync(model)
                with sync:
                    seq_loss, output, aux = sequence_losses(model, batch["input_ids"])
                    lm = seq_loss.mean()
                    loss = lm + aux if aux is not None else lm
                    accelerator.backward(loss / cfg.grad_accum)
                aux_value = aux.detach() if aux is not None else lm.new_zeros(())
                stats = torch.stack([loss.detach(), lm.detach(), aux_value])
                stats = accelerator.reduce(stats, "mean")
                window["loss"] += stats[0].item() / cfg.grad_accum
                window["lm"] += stats[1].item() / cfg.grad_accum
                window["aux"] += stats[2].item() / cfg.grad_accum
                window["tokens"] += batch["input_ids"].numel() * accelerator.num_processes
                lang_ids = accelerator.gather(batch["lang_id"])
                per_seq = accelerator.gather(seq_loss.detach())
                for lid, value in zip(lang_ids.tolist(), per_seq.tolist()):
                    by_lang[langs[lid]][0] += value
                    by_lang[langs[lid]][1] += 1
                load.add(getattr(output, "router_stats", None), batch["lang_id"], langs)
            if cfg.optim.grad_clip > 0:
                accelerator.clip_grad_norm_(trainable, cfg.optim.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            window["n"] += 1
            bar.update(1)

            if step % cfg.log_every == 0 or step == cfg.steps:
                dt = time.perf_counter() - window["t0"]
                record = {"step": step, "loss": window["loss"] / window["n"], "lm_loss": window["lm"] / window["n"],
                          "aux_loss": window["aux"] / window["n"], "lr": scheduler.get_last_lr()[0],
                          "tokens_per_s": round(window["tokens"] / max(dt, 1e-9), 1),
                          "train_loss_by_lang": {k: v[0] / v[1] for k, v in sorted(by_lang.items())}}
                record.update(load.fractions())
                _log(out, record, writer, main)
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                last = record
                window = {"loss": 0.0, "lm": 0.0, "aux": 0.0, "n": 0, "tokens": 0, "t0": time.perf_counter()}
                by_lang.clear()
                load = RouterLoad()
            if step % cfg.eval_every == 0 or step == cfg.steps:
                val_loss = evaluate(accelerator.unwrap_model(model), val, cfg, accelerator.device)
                _log(out, {"step": step, "val_loss_by_lang": val_loss}, writer, main)
                last["val_loss_by_lang"] = val_loss
                model.train()
            if step % cfg.save_every == 0 or step == cfg.steps:
                save_checkpoint(accelerator, out, step, cfg)
    finally:
        bar.close()
    if main:
        _save_final(accelerator.unwrap_model(model), tokenizer, out / "final")
        if writer is not None:
            writer.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return last


@torch.no_grad()
def evaluate(model, val: dict, cfg: TrainConfig, device) -> dict[str, float]:
    """Mean next-token loss on each language's held-out blocks (every process computes it)."""
    model.eval()
    result = {}
    for lang, blocks in val.items():
        limit = len(blocks) if cfg.eval_batches == 0 else cfg.eval_batches * cfg.micro_batch_size
        blocks = blocks[:limit]
        total, n = 0.0, 0
        for i in range(0, len(blocks), cfg.micro_batch_size):
            ids = torch.stack([b["input_ids"] for b in blocks[i:i + cfg.micro_batch_size]]).to(device)
            seq_loss, _, _ = sequence_losses(model, ids)
            total += seq_loss.sum().item()
            n += ids.shape[0]
        if n:
            result[lang] = total / n
    return result


def save_checkpoint(accelerator, out: Path, step: int, cfg: TrainConfig) -> None:
    """All processes write their state into a temporary directory; the main process adds the
    trainer state and, last, the manifest, then renames it."""
    root = out / CHECKPOINTS
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            from ..util.provenance import provenance  # issue 14: what wrote this checkpoint

            (tmp / checkpoints.STATE).write_text(json.dumps({"step": step, "provenance": provenance()})
                                                 + "\n")
            checkpoints.write_manifest(tmp)
    except Exception as e:
        if not is_disk_full(e, tmp):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        before = checkpoints.step_dirs(root)
        kept = (f"the checkpoints before it are intact: free space, then --resume continues exactly from "
                f"{before[0].name}" if before else "no earlier checkpoint")
        raise disk_full_error(final, "the partial checkpoint", kept) from None
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        checkpoints._sync_dir(root)
        for old in checkpoints.step_dirs(root)[cfg.keep_last:]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(".step-*.tmp"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_final(model, tokenizer, path: Path) -> None:
    from ..modeling.upcycle import save_checkpoint as save_hf

    if hasattr(model, "merge_and_unload"):  # LoRA: a plain dense checkpoint evaluates anywhere
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    save_hf(model, path, tokenizer=tokenizer, force=True)


def _log(out: Path, record: dict, writer, main: bool) -> None:
    if not main:
        return
    path = out / METRICS
    size = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except Exception as e:
        if not is_disk_full(e, path):
            raise
        with contextlib.suppress(OSError):  # no half record: resume reads this file back
            os.truncate(path, size)
        raise disk_full_error(path, "the partial record", "--resume continues exactly from the last "
                              "checkpoint") from None
    if writer is not None:
        step = record["step"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step":
                writer.add_scalar(f"train/{key}", value, step)
            elif key in ("train_loss_by_lang", "val_loss_by_lang"):
                for lang, v in value.items():
                    writer.add_scalar(f"{key}/{lang}", v, step)


def _truncate_metrics(path: Path, step: int) -> None:
    """On resume, forget what was logged after the checkpoint: those steps are redone."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if line and json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            pass  # a record cut short by a kill: its step is redone and logged again
    with atomic_file(path) as f:
        f.write("".join(line + "\n" for line in keep))
