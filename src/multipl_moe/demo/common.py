"""Small helpers the demo's stages share (no imports back into the demo)."""

from __future__ import annotations

import shlex
import statistics
import time
from datetime import datetime, timezone


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_stats(per_seed: dict[int, float]) -> tuple[float, float]:
    """Mean and range (max - min) over seeds."""
    values = list(per_seed.values())
    return statistics.fmean(values), (max(values) - min(values)) if len(values) > 1 else 0.0


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def shell(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
