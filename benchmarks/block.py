"""Block benchmark (issue 6, part 1): forward + backward of one FFN replacement.

    python benchmarks/block.py [--device cpu|cuda] [--shape cpu|paper|quick] [--repeats 5] [--out runs/bench]

Same code and output as `multipl-moe bench --parts block` (src/multipl_moe/bench/block.py).
"""

from __future__ import annotations

import sys

from multipl_moe.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--parts", "block", *sys.argv[1:]]))
