"""Model benchmark (issue 6, part 2): training and greedy-decoding tokens/s of a small Qwen2-shaped model.

    python benchmarks/model.py [--device cpu|cuda] [--shape cpu|paper|quick] [--repeats 3] [--out runs/bench]

Same code and output as `multipl-moe bench --parts model` (src/multipl_moe/bench/model.py).
"""

from __future__ import annotations

import sys

from multipl_moe.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--parts", "model", *sys.argv[1:]]))
