"""Run the benchmark parts and write their reports: `multipl-moe bench` and `benchmarks/*.py` call this.

Each part writes `OUT/<part>.json` (every figure, the per-round times, the environment) and
`OUT/<part>.md` (the table and the targets); `OUT/bench.md` gathers the parts of the run.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch

from .common import write_report

PARTS = ("block", "model", "executor")


def resolve_device(name: str) -> torch.device:
    """`cpu` or `cuda[:N]`; ValueError with a one-line reason when it cannot be used here."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (use cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine (this torch: "
                         f"{torch.__version__}); run with --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported (use cpu or cuda)")
    return device


def run_executor(quick: bool, repeats: int, progress, peer: str | None = None) -> tuple[dict, str]:
    """The executor part needs a source checkout: it executes the language tests' hand-written
    completions on the MultiPL-E prompts next to the repository (../shared/data/multipl-e)."""
    from .executor import REPO, run_executor_bench

    needed = [REPO / "tests" / "test_eval_languages.py", REPO.parent / "shared" / "data" / "multipl-e"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        md = "### Executor\n\nnot run: needs a source checkout with " + ", ".join(missing) + "\n"
        progress(md.strip().splitlines()[-1])
        return {"part": "executor", "skipped": "missing " + ", ".join(missing)}, md
    # Each executor round runs every program three to five times: 3 rounds unless told fewer.
    return run_executor_bench(quick=quick, rounds=min(repeats, 3), peer=peer, progress=progress)


def default_shape(device: torch.device, quick: bool) -> str:
    return "quick" if quick else ("paper" if device.type == "cuda" else "cpu")


def run(parts: list[str], device: str = "cpu", dtype: str | None = None, repeats: int = 5,
        out: str | Path = "runs/bench", quick: bool = False, shape: str | None = None,
        with_reference: bool = False, command: str | None = None, progress=print,
        peer_multipl_e: str | None = None) -> dict[str, dict]:
    from .block import block_markdown, run_block
    from .model import model_markdown, run_model

    dev = resolve_device(device)
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    shape = shape or default_shape(dev, quick)
    if command is None:
        prog = Path(sys.argv[0]).name
        prog = "multipl-moe" if prog in ("multipl-moe", "__main__.py", "cli.py") else f"python {sys.argv[0]}"
        command = " ".join([prog, *(shlex.quote(a) for a in sys.argv[1:])])
    out = Path(out)
    results, sections = {}, []
    for part in parts:
        if part == "block":
            res = run_block(shape, dev, torch_dtype, repeats, with_reference, progress)
            md = block_markdown(res, command)
        elif part == "model":
            res = run_model(shape, dev, torch_dtype, max(1, repeats), progress)
            md = model_markdown(res, command)
        else:
            res, md = run_executor(quick, repeats, progress, peer_multipl_e)
        json_path, md_path = write_report(out, part, res, md)
        progress(f"wrote {json_path} and {md_path}")
        results[part] = res
        sections.append(md)
    (out / "bench.md").write_text("\n\n".join(s.rstrip() for s in sections) + "\n")
    progress("\n\n".join(sections))
    return results
