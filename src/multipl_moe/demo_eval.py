"""Stage 5 of the demo: the real evaluation pipeline on a small MultiPL-E slice (placeholder until
the evaluation command lands; replaced below)."""

from __future__ import annotations

from pathlib import Path


def evaluate_slice(out: Path, models: dict[str, Path], data_dir: Path | None, langs: list[str], problems: int,
                   max_new_tokens: int) -> tuple[list[str], str]:
    return ["(evaluation not wired yet)"], ""
