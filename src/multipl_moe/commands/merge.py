"""`multipl-moe merge`: per-language fine-tunes become one mixture of experts (mergekit-moe's config)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "merge", help="merge fine-tunes of one base into a Mixtral, Qwen2-MoE or MultiPL-MoE checkpoint",
        description="Read a mergekit-moe YAML config (base_model, gate_mode, dtype, experts_per_token, experts with "
        "source_model / positive_prompts / negative_prompts / noise_scale / residual_scale, shared_experts, "
        "architecture) and write the merged model. An expert may be a full checkpoint or a PEFT LoRA adapter "
        "on the base. architecture: mixtral (Llama/Mistral bases), qwen (Qwen2-MoE with a shared expert: the "
        "named one or the base's FFN), multipl-moe (hybrid checkpoint for `multipl-moe train`).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example config:\n"
        "  base_model: runs/tiny-base\n  gate_mode: hidden\n  experts_per_token: 1\n  experts:\n"
        "    - source_model: runs/ft-py/final\n      positive_prompts: [\"def main():\"]\n"
        "    - source_model: runs/rs-lora-adapter   # a PEFT adapter directory on base_model\n"
        "      positive_prompts: [\"fn main() {\"]\n\n"
        "per-language fine-tunes (one per language, then list each final/ as an expert):\n"
        "  multipl-moe train configs/tiny-cpu.yaml model.base=runs/tiny-base model.variant=dense \\\n"
        "      'data.languages=[py]' output_dir=runs/ft-py\n"
        "  multipl-moe train configs/tiny-cpu.yaml model.base=runs/tiny-base model.variant=lora \\\n"
        "      'data.languages=[rs]' optim.lr=1e-3 output_dir=runs/ft-rs     (final/ holds the LoRA merged in)\n"
        "  4-bit QLoRA needs bitsandbytes on a CUDA GPU (multipl_moe.merge.qlora); it is not supported on CPU.\n\n"
        "example:\n  multipl-moe merge merge.yaml --out runs/merged --architecture multipl-moe")
    p.add_argument("config", help="mergekit-moe YAML config")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    p.add_argument("--architecture", default=None,
                   help="override the config's architecture: mixtral, qwen, multipl-moe")
    p.add_argument("--gate-input", choices=["router", "residual"], default=None,
                   help="hidden-state gates read the router's real input (post-attention norm; default) or the "
                   "residual stream entering the layer (mergekit's choice)")
    p.add_argument("--non-expert", choices=["base", "average"], default=None,
                   help="attention, norms, embeddings and head from the base (default) or averaged over the experts")
    p.add_argument("--hybrid-preset", default=None,
                   help="multipl-moe output: block preset around the merged token experts (default paper)")
    p.add_argument("--seed", type=int, default=None, help="seed of random gates, noise and segment routers")
    p.add_argument("--allow-all-same", "--i-understand-this-is-not-useful-without-training", action="store_true",
                   default=None, help="accept experts that are all the same model (only useful if training follows)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..merge import merge

    merge(args.config, args.out, force=args.force, architecture=args.architecture, gate_input=args.gate_input,
          non_expert=args.non_expert, hybrid_preset=args.hybrid_preset, seed=args.seed,
          allow_all_same=args.allow_all_same)
    return 0
