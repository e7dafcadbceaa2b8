"""`multipl-moe train`: continued pretraining of a dense, LoRA or MoE variant from a YAML config."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="continued pretraining on multi-language code (Accelerate: CPU, DDP, FSDP, DeepSpeed)",
        description="Train one variant (hybrid, token-only, dense, lora) from a YAML config. Overrides are dotted "
        "KEY=VALUE pairs (the README's configuration reference lists every key); a misspelt key or a bad value "
        "fails before anything is loaded. Run under `accelerate launch --config_file "
        "configs/accelerate/<ddp|fsdp|deepspeed-zero2>.yaml -m multipl_moe.cli train ...` for several "
        "processes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  multipl-moe train configs/tiny-cpu.yaml\n"
        "  multipl-moe train configs/paper.yaml model.base=Qwen/Qwen1.5-1.8B output_dir=runs/paper\n"
        "  multipl-moe train configs/paper.yaml model.moe.segment.routing=causal model.moe.segment.segment_length=32\n"
        "  multipl-moe train configs/tiny-cpu.yaml model.variant=lora optim.lr=1e-3 --resume")
    p.add_argument("config", help="YAML training config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. optim.lr=1e-5 model.variant=dense model.preset=preserving")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest intact checkpoint in output_dir, exactly, step for step (each is "
                   "checked against its manifest; a damaged one is set aside with a warning)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training import load_config
    from ..training.trainer import train

    cfg = load_config(args.config, args.overrides)
    from ..util.checkpoints import check_train_inputs

    # issue 14: a missing base or corpus is named with the commands that make it, in ms, not
    # after minutes of hub retries
    check_train_inputs(args.config, cfg.model.base, list(cfg.data.sources))
    train(cfg, resume=args.resume)
    return 0
