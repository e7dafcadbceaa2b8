"""Evaluation-executor throughput, sandboxed vs not (see multipl_moe.bench.executor).

    python benchmarks/executor.py [--quick] [--out runs/bench]
"""

import argparse
from pathlib import Path

from multipl_moe.bench.executor import run_executor_bench

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 languages, 1 repeat")
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    print(run_executor_bench(Path(args.out), quick=args.quick)[1])
