"""Stage 5 of the demo: the real evaluation pipeline (generation with the KV cache, sandboxed
execution with the real toolchains, pass@1) on a small MultiPL-E HumanEval slice, per variant."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .common import log


def default_data_dir() -> Path | None:
    candidates = [os.environ.get("MULTIPL_E_DIR"), Path(__file__).resolve().parents[4] / "shared" / "data" / "multipl-e",
                  Path.cwd().parent / "shared" / "data" / "multipl-e"]
    for c in candidates:
        if c and (Path(c) / "humaneval-py.jsonl").is_file():
            return Path(c)
    return None


def evaluate_slice(out: Path, models: dict[str, Path], data_dir: Path | None, langs: list[str], problems: int,
                   max_new_tokens: int, device: str = "cpu", hub: bool = False
                   ) -> tuple[list[str], str, list[str]]:
    """(table rows, note, names of the models whose evaluation failed)."""
    from ..errors import UserError
    from ..evaluation.generate import Sampling
    from ..evaluation.pipeline import ExecutionOptions, ModelSource, ProblemSource, evaluate

    if data_dir is None and not hub:
        return ["(skipped)"], ("No MultiPL-E folder was found (pass --data-dir or set MULTIPL_E_DIR), so the "
                               "evaluation slice was skipped."), []
    rows = ["| model | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    unavailable: dict[str, str] = {}
    failures: list[str] = []
    for name, model_dir in models.items():
        dest = out / name
        log(f"   eval {name}: HumanEval first {problems} problems x {','.join(langs)}, greedy")
        try:
            result = evaluate(ModelSource(str(model_dir), device=device),
                              ProblemSource(benchmarks=("humaneval",), langs=tuple(langs), data_dir=data_dir,
                                            limit=problems),
                              Sampling(n=1, temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens),
                              out=dest, execution=ExecutionOptions(progress=False), progress=False)
            rc = result.status
        except UserError as e:  # the same one line `multipl-moe eval` would print
            log(f"   eval {name}: error: {e}")
            rc = 2
        if rc != 0:
            failures.append(name)
            rows.append(f"| {name} | " + " | ".join("FAILED" for _ in langs) + " |")
            continue
        summary = json.loads((dest / "summary.json").read_text())
        unavailable.update(summary.get("unavailable", {}))
        by_lang = {r["language"]: r for r in summary["results"] if r["benchmark"] == "humaneval"}
        cells = []
        for lang in langs:
            r = by_lang.get(lang)
            if r is None or r.get("pass@1") is None:
                cells.append("unavailable" if lang in unavailable else "-")
            else:
                cells.append(f"{100 * r['pass@1']:.1f}% of {r['problems']}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if failures:
        note = (f"The evaluation FAILED for {', '.join(failures)} (its error is in the demo's log above the report "
                "line); the other rows are what ran.")
    else:
        note = ("Tiny models (trained for minutes on a few MB of code) score about 0: this stage shows that the real "
                "pipeline ran end to end for every model in the table — completions generated with the KV cache, cut at "
                "the stop tokens, compiled and run by the real toolchains in the bubblewrap sandbox, and scored by the "
                f"unbiased pass@k estimator. Completions and MultiPL-E-format results are under `{out}/<model>/`.")
    if unavailable:
        note += " Unavailable toolchains (not scored): " + ", ".join(f"{k} ({v})" for k, v in unavailable.items()) + "."
    return rows, note, failures
