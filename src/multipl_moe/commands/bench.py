"""`multipl-moe bench`: the hybrid block and the model against the dense FFN and transformers' MoE."""

from __future__ import annotations

import argparse

from multipl_moe.errors import UserError

DESCRIPTION = """\
Measure, in one run and side by side:
  block     one FFN replacement, forward + backward: the dense SwiGLU FFN, transformers'
            Qwen2MoeSparseMoeBlock with each experts backend (eager, grouped_mm, batched_mm where
            memory allows), our token level, segment level and hybrid block (batch and causal).
            Time, peak memory, and the ratio to the FLOP-ideal (active FFNs x the dense FFN's
            time in the same round).
  model     a small Qwen2-shaped model, dense vs token-only MoE vs hybrid: training tokens/s
            (forward + backward + AdamW) and greedy decoding tokens/s with the KV cache at
            batch 1 and 8.
  executor  the evaluation executor: programs/s and CPU per program, per language (sandboxed
            and not) and every language in one run with 1 and 2 workers; with
            --peer-multipl-e DIR, MultiPL-E's own executor runs on the same completion files,
            interleaved, with per-round ratios and verdict agreement (without it, no comparison
            is made). Needs a source checkout (it runs the language tests' hand-written
            completions on ../shared/data/multipl-e), bubblewrap and the toolchains
            (`make toolchains`); a missing language is reported unavailable.

Shapes: `cpu` (H=512, I=1376, 8 x 1024 tokens; the default on CPU), `paper` (H=2048, I=5504,
8 x 1024, the default on CUDA, bf16), `quick` (tiny, seconds; for smoke tests). Times are medians
over interleaved rounds after a warm-up. Writes OUT/<part>.json, OUT/<part>.md and OUT/bench.md.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark the MoE block and model (time, memory, FLOP-ideal ratio)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", default=["block", "model", "executor"],
                   choices=["block", "model", "executor"], help="what to measure (default: all three)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="activations and weights (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after the warm-up (default: 5)")
    p.add_argument("--out", default="runs/bench", help="output folder (default: runs/bench)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    p.add_argument("--shape", default=None, choices=["cpu", "paper", "quick"],
                   help="override the shape chosen from --device / --quick")
    p.add_argument("--with-reference", action="store_true",
                   help="also time the hybrid block with the reference (per-expert loop) dispatch")
    p.add_argument("--peer-multipl-e", metavar="DIR", default=None,
                   help="a checkout of MultiPL-E's evaluation/ folder: run its executor "
                        "(src/main.py) beside ours in the executor part")
    p.set_defaults(func=run)


def run(args) -> int:
    from multipl_moe.bench.run import resolve_device, run as run_bench

    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    try:
        resolve_device(args.device)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.peer_multipl_e:
        from multipl_moe.bench.executor import find_peer

        if "executor" not in args.parts:
            raise UserError("--peer-multipl-e is used by the executor part: add it to --parts")
        try:
            find_peer(args.peer_multipl_e)
        except ValueError as e:
            raise UserError(str(e)) from None
    run_bench(args.parts, device=args.device, dtype=args.dtype, repeats=args.repeats, out=args.out,
              quick=args.quick, shape=args.shape, with_reference=args.with_reference,
              peer_multipl_e=args.peer_multipl_e)
    return 0
