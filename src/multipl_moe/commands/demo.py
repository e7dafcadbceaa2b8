"""`multipl-moe demo`: the paper's experiment in miniature on a CPU (or, with --size gpu, on a GPU)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..demo.settings import CPU, GPU, QUICK

# The one run-time estimate, shown by `multipl-moe --help`, `demo --help` and the README.
ESTIMATE = f"{CPU.estimate}; --quick: {QUICK.estimate.split(' on ')[0]}"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help=f"the paper's experiment in miniature on a CPU ({ESTIMATE})",
        description="Split a six-language code corpus three ways (train / validation / test), pre-train a tiny "
        "dense base with the low-resource languages rare, continue training it on a low-resource-heavy mix as "
        "dense / LoRA / token-only MoE / MultiPL-MoE batch / MultiPL-MoE causal (a learning-rate sweep per "
        "variant on the validation split, then three seeds), compare every pair of variants on the test split "
        "paired by seed, run the real MultiPL-E evaluation on a small slice, and write OUT/report.md. "
        f"Run time: {ESTIMATE}. Re-running continues where a previous run stopped, if the settings and the code "
        "are the same (--fresh starts over).")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="toy sizes (the same as --size quick)")
    p.add_argument("--size", default=None, choices=("cpu", "quick", "gpu"),
                   help="cpu (default), quick, or gpu: Qwen/Qwen2.5-0.5B on The Stack (bigcode/the-stack-smol) "
                   f"and MultiPL-E from the hub ({GPU.estimate})")
    p.add_argument("--recipe", type=Path, default=None,
                   help="YAML file: `size: cpu|quick|gpu` and any settings over it (base, sources, steps, seeds, "
                   "lr_grid, ...)")
    p.add_argument("--data-dir", default=None,
                   help="MultiPL-E JSONL folder for the evaluation slice (default: ../shared/data/multipl-e "
                   "or $MULTIPL_E_DIR if present; without one the slice is skipped and the report says so)")
    p.add_argument("--eval-langs", default=None, help="comma-separated languages of the slice (default: py + low-resource)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--fresh", action="store_true",
                   help="delete an earlier demo's results in OUT and start over")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import UserError
    from ..demo import DemoOutputError, DemoStageError, check_options, run_demo

    if args.quick and args.size not in (None, "quick"):
        raise UserError(f"--quick and --size {args.size} contradict each other")
    size = "quick" if args.quick else (args.size or "cpu")
    opts = check_options(Path(args.out), size_name=size, recipe=args.recipe,
                         data_dir=Path(args.data_dir) if args.data_dir else None, eval_langs=args.eval_langs,
                         seeds=args.seeds, fresh=args.fresh,
                         command=shlex.join(["multipl-moe", "demo", *sys.argv[2:]]) if sys.argv[1:2] == ["demo"]
                         else f"multipl-moe demo --size {size} --out {args.out}")
    try:
        run_demo(opts)
    except (DemoOutputError, DemoStageError) as e:
        raise UserError(str(e)) from None
    return 0
