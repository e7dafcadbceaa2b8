"""Executor benchmark (issue 6, part 3): programs/s per language, sandboxed vs not.

    python benchmarks/executor.py [--quick] [--repeats 3] [--out runs/bench]

Same code and output as `multipl-moe bench --parts executor` (src/multipl_moe/bench/executor.py).
"""

from __future__ import annotations

import sys

from multipl_moe.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--parts", "executor", *sys.argv[1:]]))
