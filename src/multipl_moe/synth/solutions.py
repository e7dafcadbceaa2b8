"""Stage 5: solutions in the target language, kept only when they pass the translated tests.

The model sees the Python function as a comment above the translated prompt (MultiPL-T: "the
Python solution shown as a comment"), so it translates rather than invents. Completions are
written as MultiPL-E completion files whose `prompt` is the translated prompt alone, and the
existing executor runs `prompt + completion + "\\n" + tests` in the sandbox, unchanged; both
steps resume from what is on disk (the executor per program). A kept solution is the function
as a user would write it: prompt + completion, without the tests or the Python comment.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from multipl_moe.evaluation import formats
from multipl_moe.evaluation.languages import canonical

# Line-comment markers; OCaml has only block comments (see `python_comment`).
LINE_COMMENT = {"lua": "--", "rkt": ";;", "r": "#", "jl": "#", "rs": "//", "go": "//", "rb": "#",
                "py": "#", "java": "//", "cpp": "//"}


def python_comment(code: str, lang: str) -> str:
    code = code.rstrip()
    if lang == "ml":
        return "(* " + code.replace("*)", "* )") + " *)\n"
    mark = LINE_COMMENT.get(lang, "#")
    return "".join(f"{mark} {line}".rstrip() + "\n" for line in code.splitlines())


def generation_prompt(problem: dict) -> str:
    return python_comment(problem["python"], problem["lang"]) + "\n" + problem["row"]["prompt"]


def completion_file(folder: Path, problem: dict) -> Path:
    return Path(folder) / problem["lang"] / f"{problem['row']['name']}.json.gz"


def solution_settings(sampling, cfg) -> tuple:
    return asdict(sampling), cfg.generator_id()


def _is_done(path: Path, problem: dict, n: int, generator: str) -> bool:
    try:
        data = formats.read_json(path)
    except (OSError, ValueError, EOFError):
        return False
    row = problem["row"]
    return (len(data.get("completions", [])) >= n and data.get("generator_id") == generator
            and data.get("prompt") == row["prompt"] and data.get("tests") == row["tests"])


def generate_solutions(ctx, problems: list[dict], sampling, folder: Path,
                       chunk_samples: int = 256) -> int:
    """Write one completion file per problem with `sampling.n` completions; problems whose file
    is already complete (same generator, prompt and tests) are skipped. Returns how many ran."""
    from tqdm import tqdm

    gen_id = ctx.cfg.generator_id()
    todo = [p for p in problems if not _is_done(completion_file(folder, p), p, sampling.n, gen_id)]
    per_chunk = max(1, chunk_samples // sampling.n)
    with tqdm(total=len(todo) * sampling.n, desc="synth solutions: generate", unit="sample",
              disable=not ctx.cfg.progress or not todo, dynamic_ncols=True) as bar:
        for c in range(0, len(todo), per_chunk):
            chunk = todo[c:c + per_chunk]
            prompts = [generation_prompt(p) for p in chunk for _ in range(sampling.n)]
            stops = [p["row"]["stop_tokens"] for p in chunk for _ in range(sampling.n)]
            texts = ctx.backend().complete(prompts, stops, sampling, on_batch=bar.update)
            for j, p in enumerate(chunk):
                row = p["row"]
                record = {k: row[k] for k in ("name", "language", "prompt", "tests", "stop_tokens")}
                record.update(temperature=sampling.temperature, top_p=sampling.top_p,
                              max_tokens=sampling.max_new_tokens, n=sampling.n,
                              generator_id=gen_id,
                              completions=texts[j * sampling.n:(j + 1) * sampling.n])
                formats.write_json_atomic(completion_file(folder, p), record)
    return len(todo)


def run_solutions(ctx, problems: list[dict], folder: Path):
    """Execute every completion file of `problems` with the project's executor (resumable)."""
    from multipl_moe.evaluation.execute import ExecutionSummary, execute

    if not problems:
        return ExecutionSummary()
    return execute(folder, langs=sorted({canonical(p["row"]["language"]) for p in problems}),
                   workers=ctx.cfg.workers, runner=ctx.runner(), progress=ctx.cfg.progress,
                   log=ctx.log)


def collect(problem: dict, folder: Path, generator: str, summary) -> tuple[dict, list[dict]]:
    """(counts, kept solutions) of one problem from its results file."""
    code = canonical(problem["row"]["language"])
    path = formats.results_path(completion_file(folder, problem), folder)
    try:
        results = formats.read_json(path)["results"]
    except (OSError, ValueError, KeyError, EOFError):
        if code in summary.unavailable:
            return {f"{code} toolchain unavailable here": 1}, []
        return {"no execution results": 1}, []
    row = problem["row"]
    counts: dict = {}
    kept = []
    for r in results:
        counts[f"solutions: {r['status']}"] = counts.get(f"solutions: {r['status']}", 0) + 1
        if r["status"] != "OK":
            continue
        completion = r["program"][len(row["prompt"]):len(r["program"]) - len(row["tests"]) - 1]
        content = (row["prompt"] + completion).rstrip() + "\n"
        kept.append({"content": content, "lang": problem["lang"], "source_id": problem["source_id"],
                     "problem": row["name"], "test_count": problem["test_count"],
                     "coverage": problem["coverage"], "generator": generator})
    if kept:
        counts["kept"] = 1
    else:
        counts["no passing solution"] = 1
    return counts, kept
