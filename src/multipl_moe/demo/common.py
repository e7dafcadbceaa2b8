"""Small helpers the demo's stages share (no imports back into the demo)."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
