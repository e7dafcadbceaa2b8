"""`multipl-moe info`: parameter counts of a MultiPL-MoE checkpoint, or of a base + preset."""

from __future__ import annotations

import json

from ..errors import UserError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "info", help="total and active parameters, experts per layer, frozen/trainable counts",
        description="Report the size of a MultiPL-MoE model from its config alone (no weights are read). "
        "DIR is a MultiPL-MoE checkpoint, or a dense checkpoint / hub id together with --preset to see what "
        "upcycling it would give.")
    p.add_argument("model", metavar="DIR", help="checkpoint directory or hub id")
    p.add_argument("--preset", default=None, help="for a dense DIR: the preset to apply (default: paper)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..modeling.info import format_info, model_info
    from ..modeling import MultiplMoEConfig
    from ..moe import ConfigError
    from ..moe.presets import resolve_preset
    from ..modeling.upcycle import CheckpointError, check_model_ref, load_base_config

    try:
        from transformers import AutoConfig

        check_model_ref(args.model)
        from ..util.checkpoints import is_training_run, training_run_message

        if is_training_run(args.model):  # issue 14: its config.json is the training config
            raise UserError(training_run_message(args.model, "multipl-moe info"))

        try:
            raw = AutoConfig.from_pretrained(args.model)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot read the config of {args.model!r}: {e}") from None
        if isinstance(raw, MultiplMoEConfig):
            if args.preset:
                raise UserError(f"{args.model} is already a MultiPL-MoE checkpoint; --preset applies to dense ones")
            config = raw
        else:
            base = load_base_config(args.model)
            config = MultiplMoEConfig.from_base(base, resolve_preset(args.preset or "paper"))
    except (CheckpointError, ConfigError, KeyError, FileNotFoundError) as e:
        raise UserError(str(e).strip("'\"")) from None
    info = model_info(config)
    if not isinstance(raw, MultiplMoEConfig):  # issue 14: never shown as if it were the checkpoint
        preset = args.preset or "paper"
        what = (f"{args.model} is a dense {raw.model_type} checkpoint; shown is what `multipl-moe upcycle "
                f"--base {args.model} --preset {preset}` would give (not this checkpoint)")
        info = {"dense_checkpoint": args.model, "upcycled_with_preset": preset, **info}
        print(json.dumps(info, indent=2) if args.json else f"{what}\n{format_info(info)}")
        return 0
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
