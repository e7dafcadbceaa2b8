"""Timing, peak memory and report writing shared by the benchmarks.

Timing: every variant is warmed up, then the variants are timed *interleaved*, one call each per
round, for `repeats` rounds; a variant's figure is the median over rounds, and a ratio between two
variants is the median of the per-round ratios. The machines these run on are shared and noisy
(other jobs come and go), and a slow drift hits the two sides of a ratio taken in the same round
alike. Threads are left at torch's default.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` above what was allocated at the start of
the call. On CPU, torch keeps no such counter, so one extra call runs under `torch.profiler` with
`profile_memory=True` and the peak of the running sum of its allocation/free events is taken:
bytes held by torch's CPU allocator for tensors created during the call (activations, gradients,
temporaries), above what was live when it started. It is neither the process RSS nor Python's
heap; it is what a GPU's `max_memory_allocated` would report.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


@dataclass
class Timed:
    """Per-round times of the variants timed together (seconds), keyed by variant name."""

    rounds: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def ratio(self, name: str, base: str, scale: float = 1.0) -> float:
        """Median over rounds of time(name) / (scale * time(base)), both from the same round."""
        return statistics.median(a / (scale * b) for a, b in zip(self.rounds[name], self.rounds[base]))


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                     warmup: int = 1, progress: Callable[[str], None] | None = print) -> Timed:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    timed = Timed({name: [] for name in fns})
    for r in range(repeats):
        for name, fn in fns.items():
            timed.rounds[name].append(time_call(fn, device))
        if progress:
            progress(f"  round {r + 1}/{repeats}: " + ", ".join(
                f"{n} {timed.rounds[n][-1] * 1e3:.0f} ms" for n in fns))
    return timed


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by torch during one call of `fn`, above those live at its start."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and str(e.device_type()).endswith("CPU"))
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def environment(device: torch.device) -> dict:
    import transformers

    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(),
           "device": str(device), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def mib(nbytes: float | None) -> float | None:
    return None if nbytes is None else round(nbytes / 2**20, 1)


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def markdown_table(columns: list[tuple[str, str]], rows: list[dict]) -> str:
    """`columns`: (key, header) pairs; missing values print as `-`."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def write_report(out_dir: Path, name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    from ..util.provenance import provenance  # issue 14: git commit and all four library versions

    json_path.write_text(json.dumps({**payload, "provenance": provenance()}, indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def run_line(env: dict, command: str, repeats: int) -> str:
    """The line under a part's heading: when, with what, how, and how loaded the machine was."""
    return (f"{env['date']}, torch {env['torch']}, transformers {env['transformers']}, {env['threads']} threads"
            + (f"; `{command}`" if command else "") + f"; median of {repeats} interleaved rounds; "
            f"1-min load average {env['loadavg_1m_at_start']} at start, {env.get('loadavg_1m_at_end')} at end.")
