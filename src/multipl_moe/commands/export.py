"""`multipl-moe export`: write the token-level-only variant as a standard Qwen2-MoE checkpoint."""

from __future__ import annotations

from ..errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="export a token-level-only MultiPL-MoE checkpoint as Qwen2MoeForCausalLM",
        description="Write the token-level-only variant (upcycled with --preset qwen2-moe) as a standard "
        "Qwen2MoeForCausalLM checkpoint that loads without this package or remote code.")
    p.add_argument("model", metavar="DIR", help="MultiPL-MoE checkpoint directory")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--to", default="qwen2-moe", choices=["qwen2-moe"], help="target format")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..modeling.export import ExportError, to_qwen2_moe
    from ..modeling import MultiplMoEForCausalLM
    from ..modeling.upcycle import save_checkpoint

    if not (Path(args.model) / "config.json").is_file() and not Path(args.model, "final").is_dir():
        raise UserError(f"{args.model}: no config.json (not a checkpoint directory)")
    from ..util.checkpoints import require_multipl_moe

    require_multipl_moe(Path(args.model), "export")  # issue 14: before transformers reads weights
    if Path(args.out).exists() and not args.force:
        raise UserError(f"{args.out} already exists (pass --force to replace it)")
    try:
        model = MultiplMoEForCausalLM.from_pretrained(args.model)
        q_model = to_qwen2_moe(model)
    except (ExportError, OSError, ValueError) as e:
        raise UserError(str(e)) from None
    save_checkpoint(q_model, args.out, tokenizer_source=args.model, force=args.force)
    print(f"wrote {args.out} (Qwen2MoeForCausalLM)")
    return 0
