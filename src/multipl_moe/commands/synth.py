"""`multipl-moe synth`: validated synthetic training data for a low-resource language (MultiPL-T)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from multipl_moe.errors import UserError

STAGE_HELP = {
    "extract": "1. Python functions with docstrings from a corpus (filters, decontamination, pyright)",
    "tests": "2. unit tests written by the model, kept if they pass in the sandbox",
    "coverage": "3. keep functions whose passing tests cover enough of their lines (coverage.py)",
    "translate": "4. rule-based translation of signature, docstring and tests to the targets",
    "solutions": "5. solutions written by the model in each target, kept if they pass the tests",
    "dedupe": "6. drop exact and near-duplicate solutions; write dataset.jsonl and dataset/",
}

DESCRIPTION = """\
Turn Python functions into tested programs in other languages (MultiPL-T, Cassano et al. 2024),
as training data for `multipl-moe train`:

""" + "\n".join(f"  {v}" for v in STAGE_HELP.values()) + """

`run` runs the stages in order (or those given by --stages); `extract`, `tests`, ... run one.
Every stage keeps a journal in OUT ({i}-{stage}.jsonl): rerun the same command after a crash or
Ctrl-C and only what was in flight is redone; rerunning a finished stage redoes nothing, and
changing a setting redoes only what it affects. Each stage prints what it kept and why it
dropped the rest (also in OUT/{i}-{stage}.summary.json).

The generator is any local Hugging Face checkpoint (--model DIR) or an OpenAI-compatible server
(--server URL --model NAME). Programs run in the bubblewrap sandbox.

The result, OUT/dataset.jsonl and the saved dataset OUT/dataset (fields content, lang,
source_id, test_count, coverage, generator), is a data source for `multipl-moe train` as is:
  data.sources=[OUT/dataset]
"""

EXAMPLES = """\
examples:
  multipl-moe synth run --corpus py-functions.jsonl --server http://localhost:8000 \\
      --model bigcode/starcoder2-15b --langs lua --out runs/synth-lua
  multipl-moe synth tests --out runs/synth-lua --model runs/my-checkpoint   # stage 2 only
  multipl-moe synth status runs/synth-lua
"""


def _stages(text: str) -> list[str]:
    from multipl_moe.synth.stage import STAGES

    if text.strip() == "all":
        return list(STAGES)
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if dash and lo.isdigit() and hi.isdigit():
            names = list(STAGES[int(lo) - 1:int(hi)]) if 1 <= int(lo) <= int(hi) <= len(STAGES) else []
        elif part.isdigit() and 1 <= int(part) <= len(STAGES):
            names = [STAGES[int(part) - 1]]
        elif part in STAGES:
            names = [part]
        else:
            names = []
        if not names:
            raise argparse.ArgumentTypeError(
                f"--stages: {part!r} is not a stage; use names ({','.join(STAGES)}), numbers "
                "1-6, ranges like 2-4, or all")
        out += [n for n in names if n not in out]
    return out


def _common(p: argparse.ArgumentParser, stage: str | None) -> None:
    from multipl_moe.synth.pipeline import SynthConfig

    d = SynthConfig(out=Path("."))
    p.add_argument("--out", type=Path, required=True, help="output folder (journals, dataset)")
    if stage is None:
        p.add_argument("--stages", type=_stages, default=None,
                       help="which stages: names or numbers, comma-separated, or a range "
                            "(extract,tests or 1-3); default: all")
    if stage in (None, "extract"):
        g = p.add_argument_group("stage 1: extract")
        g.add_argument("--corpus", nargs="+", default=[], metavar="INPUT",
                       help="Python sources: JSONL/Parquet files or folders, .py folders, saved "
                            "datasets or hub names (owner/name), as `multipl-moe data` reads them")
        g.add_argument("--text-field", default=d.text_field, help="default %(default)s")
        g.add_argument("--lang-field", default=d.lang_field, help="default %(default)s")
        g.add_argument("--path-field", default=None, help="row field with a file path")
        g.add_argument("--max-documents", type=int, default=None,
                       help="read at most N Python documents (smoke runs)")
        g.add_argument("--min-body-lines", type=int, default=d.min_body_lines,
                       help="lines of code a body needs, docstring excluded (default %(default)s)")
        g.add_argument("--decontam-dir", default=None,
                       help="MultiPL-E folder for the overlap check (default: shared/data/multipl-e "
                            "or $MULTIPL_E_DIR)")
        g.add_argument("--no-pyright", action="store_true",
                       help="skip the pyright type check even where pyright is installed")
    if stage in (None, "tests", "solutions"):
        g = p.add_argument_group("generator (stages 2 and 5)")
        g.add_argument("--model", default="",
                       help="checkpoint folder, or with --server the served model's name")
        g.add_argument("--server", default=None, metavar="URL",
                       help="OpenAI-compatible server (/v1/completions; $OPENAI_API_KEY is sent)")
        g.add_argument("--device", default=None, help="local model: cuda / cpu")
        g.add_argument("--dtype", default="auto", choices=("auto", "float16", "bfloat16", "float32"))
        g.add_argument("--batch-size", type=int, default=d.batch_size, help="local model: prompts per batch")
        g.add_argument("--concurrency", type=int, default=d.concurrency, help="server: parallel requests")
        g.add_argument("--top-p", type=float, default=d.top_p, help="default %(default)s")
        g.add_argument("--seed", type=int, default=d.seed)
    if stage in (None, "tests"):
        g = p.add_argument_group("stage 2: tests")
        g.add_argument("--test-samples", type=int, default=d.test_samples,
                       help="samples per function (MultiPL-T: %(default)s)")
        g.add_argument("--test-temperature", type=float, default=d.test_temperature,
                       help="(MultiPL-T: %(default)s)")
        g.add_argument("--test-max-tokens", type=int, default=d.test_max_tokens, help="default %(default)s")
        g.add_argument("--max-tests", type=int, default=d.max_tests,
                       help="distinct tests run per function (default %(default)s)")
        g.add_argument("--functions-per-batch", type=int, default=d.functions_per_batch,
                       help="functions per generation batch; a kill loses at most one "
                            "(default %(default)s)")
    if stage in (None, "coverage"):
        g = p.add_argument_group("stage 3: coverage")
        g.add_argument("--coverage-threshold", type=float, default=d.coverage_threshold,
                       help="minimum line coverage of the function by its tests (default %(default)s)")
    if stage in (None, "translate", "solutions"):
        g = p.add_argument_group("stages 4 and 5: target languages")
        g.add_argument("--langs", default=",".join(d.langs),
                       help="comma-separated: lua,rkt,ml,r,jl (MultiPL-T's), rs,go,rb "
                            "(default %(default)s)")
    if stage in (None, "solutions"):
        g = p.add_argument_group("stage 5: solutions")
        g.add_argument("--solution-samples", type=int, default=d.solution_samples,
                       help="samples per problem (MultiPL-T: %(default)s)")
        g.add_argument("--solution-temperature", type=float, default=d.solution_temperature,
                       help="(MultiPL-T: %(default)s)")
        g.add_argument("--solution-max-tokens", type=int, default=d.solution_max_tokens,
                       help="default %(default)s")
    if stage in (None, "dedupe"):
        g = p.add_argument_group("stage 6: dedupe")
        g.add_argument("--dedupe-method", choices=("minhash", "rouge"), default=d.dedupe_method,
                       help="near duplicates by MinHash LSH over token 5-grams (fast) or by "
                            "ROUGE-L as MultiPL-T (quadratic); default %(default)s")
        g.add_argument("--dedupe-threshold", type=float, default=None,
                       help="Jaccard (minhash, default 0.7) or ROUGE-L F1 (rouge, default 0.8)")
    if stage in (None, "tests", "coverage", "solutions"):
        g = p.add_argument_group("execution (stages 2, 3 and 5)")
        g.add_argument("--workers", type=int, default=d.workers, help="sandboxes at a time")
        g.add_argument("--per-test-timeout", type=float, default=d.per_test_timeout,
                       help="seconds per Python test (default %(default)s)")
        g.add_argument("--unsafe-no-sandbox", action="store_true",
                       help="run model-written code WITHOUT bubblewrap (throw-away machines only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(subparsers) -> None:
    from multipl_moe.synth.stage import STAGES

    p = subparsers.add_parser("synth", help="validated synthetic training data for low-resource "
                              "languages (MultiPL-T)", description=DESCRIPTION, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="synth_command", metavar="SYNTH_COMMAND", required=True)
    q = sub.add_parser("run", help="run the stages in order (all, or --stages)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(q, None)
    q.set_defaults(func=cmd_run, only=None)
    for name in STAGES:
        q = sub.add_parser(name, help=STAGE_HELP[name], description=STAGE_HELP[name] +
                           ". Reads the previous stage's output in --out; resumable.")
        _common(q, name)
        q.set_defaults(func=cmd_run, only=name)
    q = sub.add_parser("status", help="what each stage kept and dropped so far")
    q.add_argument("out", type=Path, help="the synth output folder")
    q.set_defaults(func=cmd_status)
    q = sub.add_parser("compare-dedupe",
                       help="time ROUGE-L vs MinHash near-duplicate search at equal recall",
                       description="On a set of solutions (a JSONL file with a `content` field, "
                       "e.g. OUT/5-solutions.out.jsonl), find the near-duplicate pairs by ROUGE-L "
                       "(all pairs), then the highest MinHash Jaccard threshold that recovers "
                       "--recall of them, and time one dedupe pass of each.")
    q.add_argument("input", type=Path, help="JSONL with a `content` field")
    q.add_argument("--rouge-threshold", type=float, default=0.8)
    q.add_argument("--recall", type=float, default=0.95)
    q.add_argument("--limit", type=int, default=None, help="first N rows only")
    q.set_defaults(func=cmd_compare)


def _config(args):
    from multipl_moe.synth.pipeline import SynthConfig

    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    cfg = SynthConfig(out=args.out, progress=not args.no_progress and sys.stderr.isatty())
    for name in ("text_field", "lang_field", "path_field", "max_documents", "decontam_dir",
                 "min_body_lines", "model", "server", "device", "dtype", "batch_size",
                 "concurrency", "top_p", "seed", "test_samples", "test_temperature",
                 "test_max_tokens", "max_tests", "functions_per_batch", "coverage_threshold",
                 "solution_samples", "solution_temperature", "solution_max_tokens",
                 "dedupe_method", "dedupe_threshold", "workers", "per_test_timeout",
                 "unsafe_no_sandbox"):
        if hasattr(args, name):
            setattr(cfg, name, get(name))
    cfg.corpus = list(get("corpus") or [])
    cfg.pyright = not get("no_pyright", False)
    cfg.api_key = os.environ.get("OPENAI_API_KEY")
    if hasattr(args, "langs"):
        from multipl_moe.synth.translate import TARGETS

        cfg.langs = [x.strip() for x in args.langs.split(",") if x.strip()]
        bad = [x for x in cfg.langs if x not in TARGETS]
        if bad or not cfg.langs:
            raise UserError(f"--langs {args.langs}: choose from {','.join(TARGETS)}")
    return cfg


def _check(cfg, stages: list[str]) -> None:
    if "extract" in stages and not cfg.corpus:
        raise UserError("stage extract needs --corpus")
    if {"tests", "solutions"} & set(stages):
        if not cfg.model:
            raise UserError("stages tests and solutions need a generator: --model DIR, or "
                            "--server URL --model NAME")
        if not cfg.server and not Path(cfg.model).is_dir():
            raise UserError(f"--model {cfg.model}: not a checkpoint directory (to use a server, "
                            "pass --server URL and the served model's name as --model)")
    for name, lo, hi in (("test_samples", 1, None), ("solution_samples", 1, None),
                         ("coverage_threshold", 0, 1), ("workers", 1, None),
                         ("functions_per_batch", 1, None), ("max_tests", 1, None),
                         ("per_test_timeout", 0.001, None), ("test_temperature", 0, None),
                         ("solution_temperature", 0, None), ("min_body_lines", 0, None)):
        v = getattr(cfg, name)
        if v < lo or (hi is not None and v > hi):
            rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise UserError(f"--{name.replace('_', '-')} {v}: must be {rng}")
    if cfg.dedupe_threshold is not None and not 0 < cfg.dedupe_threshold <= 1:
        raise UserError(f"--dedupe-threshold {cfg.dedupe_threshold}: must be in (0, 1]")


def cmd_run(args) -> int:
    from multipl_moe.evaluation.sandbox import SandboxError, UnsafeRunner
    from multipl_moe.synth.pipeline import run
    from multipl_moe.synth.stage import STAGES, StageError

    stages = [args.only] if args.only else (args.stages or list(STAGES))
    cfg = _config(args)
    _check(cfg, stages)
    if cfg.unsafe_no_sandbox:
        print(UnsafeRunner.warning(), file=sys.stderr)
    try:
        results = run(cfg, stages)
    except (StageError, SandboxError) as e:
        raise UserError(str(e)) from None
    except RuntimeError as e:   # the generator server is unreachable or answers errors
        raise UserError(f"{e} (finished items are kept; rerun the same command to resume)") from None
    if results and results[-1].name == "dedupe":
        n = len(results[-1].outputs)
        if n == 0:
            empty = next((r.name for r in results if not r.outputs), "dedupe")
            print(f"synth: kept nothing (the first stage to keep nothing was {empty}); "
                  f"{args.out}/dataset is empty")
        else:
            print(f"synth: {n} solutions in {args.out}/dataset.jsonl and {args.out}/dataset "
                  f"(train on it with data.sources=[{args.out}/dataset])")
    return 0


def cmd_status(args) -> int:
    from multipl_moe.synth.stage import STAGES, StageResult, read_summary

    if not args.out.is_dir():
        raise UserError(f"{args.out}: no such folder")
    for name in STAGES:
        s = read_summary(args.out, name)
        if s is None:
            print(f"{name}: not finished")
            continue
        r = StageResult(name, inputs=s["inputs"], ran=s["ran"], reused=s["reused"],
                        notes=s["notes"])
        r.counts.update(s["counts"])
        print("\n".join(r.lines()))
    return 0


def cmd_compare(args) -> int:
    from multipl_moe.synth.dedupe import compare

    try:
        with open(args.input, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise UserError(f"{args.input}: {e}") from None
    rows = [r for r in rows if isinstance(r, dict) and isinstance(r.get("content"), str)]
    if not rows:
        raise UserError(f"{args.input}: no rows with a `content` field")
    print(json.dumps(compare(rows[: args.limit] if args.limit else rows, args.rouge_threshold,
                             args.recall), indent=2))
    return 0
