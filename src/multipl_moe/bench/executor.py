"""Evaluation-executor benchmark: programs per second per language, with and without the sandbox.

The completions are the hand-written ones of the language tests (tests/test_eval_languages.py):
per language, 3 HumanEval problems x 12 completions (6 correct, 3 wrong, 3 unparsable), so the
mix of verdicts is realistic and every run executes exactly the same programs. The same folder is
executed sandboxed (bubblewrap) and unsandboxed; verdicts must agree, and the benchmark says so.
The per-run toolchain caches (C++ precompiled header, warm Go cache, javac archive) are built once
per run, as in a real evaluation, and their build time is included.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# MultiPL-E's own executor on this machine class (100 hand-written completions over 10 languages):
# 2.85 programs/s with its default worker count (1 on 2 cores), 4.2 with 2 workers (issue 6).
MULTIPL_E_BASELINE = {1: 2.85, 2: 4.2}


def _solutions():
    spec = importlib.util.spec_from_file_location("_lang_solutions", REPO / "tests" / "test_eval_languages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_set(out: Path, langs: list[str] | None = None, repeat: int = 3) -> int:
    """Write MultiPL-E completion files; returns the number of programs."""
    sol = _solutions()
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for lang, pairs in sol.SOLUTIONS.items():
        if langs and lang not in langs:
            continue
        path = sol.DATA / f"humaneval-{lang}.jsonl"
        if not path.is_file():
            continue
        rows = {json.loads(line)["name"]: json.loads(line) for line in path.read_text().splitlines()}
        for name, (good, bad) in zip(sol.PROBLEMS, pairs):
            completions = [good, good, bad, sol.GARBAGE] * repeat
            with gzip.open(out / f"{name}_{lang}.json.gz", "wt") as f:
                json.dump(dict(rows[name], completions=completions), f)
            n += len(completions)
    return n


def _verdicts(root: Path) -> dict[str, list[str]]:
    out = {}
    for p in sorted(root.rglob("*.results.json")):
        out[p.name] = [r["status"] for r in json.loads(p.read_text())["results"]]
    return out


def run_executor_bench(out_dir: Path, quick: bool = False, workers: tuple[int, ...] = (1, 2)) -> tuple[dict, str]:
    from ..evaluation.execute import execute
    from ..evaluation.sandbox import BwrapRunner, UnsafeRunner, bwrap_path

    langs = ["py", "cpp", "rs"] if quick else None
    repeat = 1 if quick else 3
    rows, agree = [], True
    with tempfile.TemporaryDirectory(prefix="executor-bench-") as tmp:
        src = Path(tmp) / "completions"
        programs = build_set(src, langs, repeat)
        for w in workers:
            verdicts = {}
            for sandboxed in ((True, False) if bwrap_path() else (False,)):
                work = Path(tmp) / f"run-{w}-{sandboxed}"
                shutil.copytree(src, work)
                runner = BwrapRunner() if sandboxed else UnsafeRunner()
                t0 = time.perf_counter()
                summary = execute(work, workers=w, runner=runner, progress=False, log=lambda *_: None)
                seconds = time.perf_counter() - t0
                verdicts[sandboxed] = _verdicts(work)
                rows.append({"workers": w, "sandboxed": sandboxed, "programs": summary.executed,
                             "seconds": round(seconds, 2), "programs_per_s": round(summary.executed / seconds, 2),
                             "statuses": dict(Counter(summary.statuses)),
                             "multipl_e_baseline_per_s": MULTIPL_E_BASELINE.get(w)})
                print(f"executor: workers={w} sandboxed={sandboxed}: {summary.executed} programs in "
                      f"{seconds:.1f} s = {summary.executed / seconds:.2f}/s", flush=True)
            if len(verdicts) == 2 and verdicts[True] != verdicts[False]:
                agree = False
    md = ["| workers | sandboxed | programs | seconds | programs/s | MultiPL-E's executor (issue 6 figure) |",
          "|---|---|---|---|---|---|"]
    for r in rows:
        base = r["multipl_e_baseline_per_s"]
        md.append(f"| {r['workers']} | {'yes' if r['sandboxed'] else 'no'} | {r['programs']} | {r['seconds']} | "
                  f"{r['programs_per_s']} | {base if base else '-'}"
                  + (f" ({r['programs_per_s'] / base:.1f}x)" if base and r["sandboxed"] else "") + " |")
    md.append("")
    md.append(f"Verdicts sandboxed vs unsandboxed: {'identical' if agree else 'DIFFERENT'}. "
              f"{programs} programs ({'quick: py, cpp, rs' if quick else 'every available language'}); "
              "toolchain caches built once per run and included in the time.")
    result = {"part": "executor", "rows": rows, "verdicts_agree": agree, "programs": programs}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "executor.json").write_text(json.dumps(result, indent=2))
    (out_dir / "executor.md").write_text("\n".join(md) + "\n")
    return result, "### Executor\n\n" + "\n".join(md) + "\n"
