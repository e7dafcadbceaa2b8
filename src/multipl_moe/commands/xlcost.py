"""`multipl-moe xlcost`: checkpoint -> XLCoST text-to-code completions -> CodeBLEU per language."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from multipl_moe.errors import UserError
from multipl_moe.commands.eval import _backend, _sampling

DESCRIPTION = """\
Evaluate a model on XLCoST text-to-code (codeparrot/xlcost-text-to-code) with CodeBLEU, per
language, with its four components (n-gram, weighted n-gram, AST match, data-flow match).

  1. problems: config {Language}-{snippet|program}-level, split test by default, from --data-dir
     (the hub repository's layout: data/{config}/{train,valid,test}.json, JSON lines) or the hub;
  2. prompts: --shots examples from the train split, code in the dataset's one-line encoding
     (NEW_LINE / INDENT / DEDENT), then the problem's text; completions from a local checkpoint
     (--model DIR) or an OpenAI-compatible server (--server URL --model NAME), cut at the end of
     the line, journalled in OUT/xlcost-{config}-{split}/generations.jsonl (a rerun resumes);
  3. completions and references decoded into real code and scored: OUT/.../codebleu.jsonl, a
     table printed and in OUT/codebleu.md. `multipl-moe report OUT` shows it beside pass@k.

Data-flow match, when the references have no data-flow edge at all, is 0 as in the original
CodeXGLUE evaluator (--empty-dataflow one gives the `codebleu` package's 1).
"""


def _weights(args: argparse.Namespace) -> tuple[float, ...]:
    from multipl_moe.evaluation.codebleu import PAPER_WEIGHTS, check_weights

    if args.paper_weights:
        return PAPER_WEIGHTS
    try:
        return check_weights([float(w) for w in args.weights.split(",")])
    except ValueError as e:
        raise UserError(f"--weights: {e}") from e


def run(args: argparse.Namespace) -> int:
    from multipl_moe.evaluation import formats
    from multipl_moe.evaluation import xlcost as X

    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size),
                        ("--concurrency", args.concurrency)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    if args.shots < 0:
        raise UserError(f"--shots must be at least 0 (got {args.shots})")
    langs = X.parse_langs(args.langs)  # a UserError names a bad one
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a directory")
    try:
        args.template.format(text="", language="")
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"--template may use only {{text}} and {{language}} ({e})") from e
    weights = _weights(args)
    sampling = _sampling(args)
    out = args.out or Path("runs/xlcost") / Path(args.model).name

    work = []
    for lang in langs:
        config = X.config_name(lang, args.level)
        try:
            rows = X.load_rows(lang, args.level, args.split, args.data_dir, args.dataset,
                               args.revision)
            shots = X.load_rows(lang, args.level, "train", args.data_dir, args.dataset,
                                args.revision)[: args.shots] if args.shots else []
        except (FileNotFoundError, ValueError) as e:
            raise UserError(str(e)) from e
        except Exception as e:  # the hub: no network, a script-based repository, no config
            why = " ".join(str(e).split())[:300] or type(e).__name__
            raise UserError(f"{args.dataset} {config}: cannot load ({why}); a local copy "
                            "works with --data-dir (or try --revision refs/convert/parquet)") from e
        rows = rows[: args.limit] if args.limit else rows
        problems = X.make_problems(rows, lang, shots, args.template)
        settings = {"model": args.model, "server": args.server, "config": config,
                    "split": args.split, "shots": args.shots, "template": args.template,
                    "n": sampling.n, "temperature": sampling.temperature,
                    "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens,
                    "seed": sampling.seed}
        work.append((lang, config, problems, settings, out / f"xlcost-{config}-{args.split}"))

    backend = None  # loaded only if something is left to generate
    records = []
    for lang, config, problems, settings, folder in work:
        try:
            done = X.read_journal(folder / X.JOURNAL, settings)
        except ValueError as e:
            raise UserError(str(e)) from e
        if any(p["id"] not in done for p in problems):
            backend = backend or _backend(args)
        completions = X.generate(problems, backend, sampling, folder, settings,
                                 progress=not args.no_progress)
        if not problems:
            print(f"warning: {config} {args.split} has no problems", file=sys.stderr)
            continue
        record = X.score(problems, completions, lang, weights, args.empty_dataflow)
        record.update(config=config, split=args.split)
        X.write_scores(folder, record)
        records.append(record)
    table = X.scores_table(records)
    print(table)
    from multipl_moe.util.provenance import one_line

    formats.write_bytes_atomic(out / "codebleu.md", (table + f"\n\n_{one_line()}_\n").encode())
    print(f"wrote {out / 'codebleu.md'} and codebleu.jsonl in each xlcost-* folder")
    return 0


def add_parser(subparsers) -> None:
    from multipl_moe.evaluation.codebleu import EMPTY_DATAFLOW
    from multipl_moe.evaluation.xlcost import HUB_DATASET, LEVELS, SPLIT_FILES, TEMPLATE

    p = subparsers.add_parser("xlcost", help="CodeBLEU on XLCoST text-to-code, per language",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="checkpoint directory (Hugging Face format), or with --server the "
                        "model name the server serves")
    p.add_argument("--server", default=None, metavar="URL",
                   help="OpenAI-compatible server (uses /v1/completions; $OPENAI_API_KEY is "
                        "sent if set)")
    p.add_argument("--langs", default="Python,Java,Javascript,C++",
                   help="comma-separated XLCoST languages (Python, Java, Javascript, C++, C, "
                        "Csharp, PHP; py/js/cpp/cs accepted) or 'all' (default %(default)s)")
    p.add_argument("--level", default="program", choices=LEVELS, help="default %(default)s")
    p.add_argument("--split", default="test", choices=tuple(SPLIT_FILES),
                   help="default %(default)s")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default runs/xlcost/<model name>)")
    g = p.add_argument_group("problems")
    g.add_argument("--data-dir", type=Path, default=None,
                   help="local copy of the dataset repository (default: the hub)")
    g.add_argument("--dataset", default=HUB_DATASET, help="hub dataset (default %(default)s)")
    g.add_argument("--revision", default=None,
                   help="hub revision (e.g. refs/convert/parquet where the datasets library "
                        "no longer runs the repository's loading script)")
    g.add_argument("--limit", type=int, default=None, help="only the first N problems")
    g.add_argument("--shots", type=int, default=2,
                   help="examples from the train split in each prompt (default %(default)s)")
    g.add_argument("--template", default=TEMPLATE,
                   help="prompt of one example, with {text} and {language}; an example's code "
                        "follows it after a space (default %(default)r)")
    g = p.add_argument_group("generation (greedy by default)")
    g.add_argument("--n", type=int, default=1, help="samples per problem (default %(default)s)")
    g.add_argument("--temperature", type=float, default=0.2,
                   help="with --sample (default %(default)s)")
    g.add_argument("--top-p", type=float, default=0.95, help="with --sample")
    g.add_argument("--sample", dest="greedy", action="store_false",
                   help="sample --n completions instead of one greedy one")
    g.add_argument("--max-new-tokens", type=int, default=512, help="default %(default)s")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=16, help="local model: prompts per batch")
    g.add_argument("--device", default=None, help="local model: cuda / cpu")
    g.add_argument("--dtype", default="auto", choices=("auto", "float16", "bfloat16", "float32"))
    g.add_argument("--concurrency", type=int, default=8, help="server: parallel requests")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("CodeBLEU")
    g.add_argument("--weights", default="0.25,0.25,0.25,0.25",
                   help="n-gram, weighted n-gram, AST, data-flow (default %(default)s)")
    g.add_argument("--paper-weights", action="store_true",
                   help="0.1,0.1,0.4,0.4 (the CodeBLEU paper's text-to-code weights)")
    g.add_argument("--empty-dataflow", default="zero", choices=EMPTY_DATAFLOW,
                   help="data-flow match when the references have no data-flow edge: zero as "
                        "the original CodeXGLUE evaluator (default), one as the codebleu package")
    p.set_defaults(func=run)
