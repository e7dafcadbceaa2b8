"""`multipl-moe demo`: the paper's experiment in miniature on a CPU."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the paper's experiment in miniature on a CPU (about 15 minutes; --quick: about 2)",
        description="Build the built-in corpus, pre-train a tiny dense base on high-resource languages, continue "
        "training it as dense / LoRA / token-only MoE / MultiPL-MoE batch / MultiPL-MoE causal (two seeds), "
        "compare held-out losses per language, run the real MultiPL-E evaluation on a small slice, and write "
        "OUT/report.md. Re-running continues where a previous run stopped, if the settings and the code are the "
        "same (--fresh starts over).")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="toy sizes: about two minutes")
    p.add_argument("--data-dir", default=None,
                   help="MultiPL-E JSONL folder for the evaluation slice (default: ../shared/data/multipl-e "
                   "or $MULTIPL_E_DIR if present; without one the slice is skipped and the report says so)")
    p.add_argument("--eval-langs", default=None, help="comma-separated languages of the slice (default: py + low-resource)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1)")
    p.add_argument("--fresh", action="store_true",
                   help="delete an earlier demo's results in OUT and start over")
    p.set_defaults(func=run)


def run(args) -> int:
    from multipl_moe.cli import UserError
    from ..demo import DemoOutputError, run_demo

    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    langs = args.eval_langs.split(",") if args.eval_langs else None
    try:
        run_demo(Path(args.out), quick=args.quick, data_dir=Path(args.data_dir) if args.data_dir else None,
                 eval_langs=langs, seeds=seeds, fresh=args.fresh)
    except DemoOutputError as e:
        raise UserError(str(e)) from None
    return 0
