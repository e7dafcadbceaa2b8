"""Executor benchmark (issues 6 and 18): programs/s and CPU per program, per language and for the
whole set, ours sandboxed and not, and MultiPL-E's own executor beside it when given a checkout.

    python benchmarks/executor.py [--quick] [--repeats 3] [--out runs/bench] [--peer-multipl-e DIR]

Same code and output as `multipl-moe bench --parts executor` (src/multipl_moe/bench/executor.py).
"""

from __future__ import annotations

import sys

from multipl_moe.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--parts", "executor", *sys.argv[1:]]))
