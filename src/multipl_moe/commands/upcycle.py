"""`multipl-moe upcycle`: a dense checkpoint becomes a MultiPL-MoE checkpoint."""

from __future__ import annotations

import argparse
import math

from ..errors import UserError


def add_parser(sub) -> None:
    from ..moe.presets import PRESETS

    p = sub.add_parser(
        "upcycle", help="turn a dense Hugging Face checkpoint into a MultiPL-MoE checkpoint",
        description="Copy every dense weight, clone each FFN into every expert, initialise the routers, and "
        "write a standard Hugging Face checkpoint (safetensors + config + tokenizer + modeling code). "
        "Supported bases: Qwen2/Qwen1.5/Qwen2.5, Llama, Mistral.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets:\n" + "\n".join(f"  {name:18s}{desc}" for name, (desc, _) in PRESETS.items())
        + "\n\nexample:\n  multipl-moe upcycle --base Qwen/Qwen1.5-1.8B --out runs/qwen1.5-1.8b-moe --preset paper",
    )
    p.add_argument("--base", required=True, help="dense checkpoint: a local directory or a hub id")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--preset", default="paper", help="preset name (below) or a YAML file with a `moe:` mapping")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a block setting, e.g. --set segment.routing=causal --set token.top_k=3")
    p.add_argument("--moe-layers", default=None,
                   help="comma-separated layer indices to upcycle (default: every layer)")
    p.add_argument("--noise-std", type=float, default=0.0,
                   help="std of Gaussian noise added to each expert copy (default 0: exact copies)")
    p.add_argument("--seed", type=int, default=0, help="seed of the router init and the noise")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of the written weights (default: the base checkpoint's)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..moe import ConfigError
    from ..moe.presets import resolve_preset
    from ..modeling.upcycle import CheckpointError, upcycle

    if not math.isfinite(args.noise_std) or args.noise_std < 0:
        raise UserError(f"--noise-std must be a finite number >= 0 (got {args.noise_std})")
    try:
        moe = resolve_preset(args.preset, args.overrides)
        layers = [int(x) for x in args.moe_layers.split(",")] if args.moe_layers else None
        out = upcycle(args.base, args.out, moe, layers, args.noise_std, args.seed, args.dtype, args.force)
    except (ConfigError, CheckpointError, FileExistsError, FileNotFoundError, KeyError) as e:
        raise UserError(str(e).strip("'\"")) from None
    except ValueError as e:  # e.g. --moe-layers out of range or not integers
        raise UserError(str(e)) from None
    print(f"wrote {out}")
    return 0
