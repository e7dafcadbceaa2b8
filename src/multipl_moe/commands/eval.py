"""`multipl-moe eval`: checkpoint -> MultiPL-E completions -> sandboxed execution -> pass@k."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from multipl_moe.errors import UserError
from multipl_moe.commands.execute import (add_execution_args, check_execution_args,
                                          execute_and_report)

DESCRIPTION = """\
Evaluate a model on MultiPL-E (HumanEval and MBPP translated to other languages), the way the
MultiPL-E paper and the MultiPL-MoE paper report it: pass@1 by the unbiased estimator from 20
samples at temperature 0.2, top_p 0.95 (use --greedy for one greedy sample per problem).

  1. problems from --data-dir (MultiPL-E JSONL files, e.g. ../shared/data/multipl-e; add
     --data-version latest for the upstream fixes) or from the hub dataset (--dataset);
  2. completions from a local checkpoint (--model DIR, Hugging Face generate with the KV cache,
     batched) or from an OpenAI-compatible server (--server URL --model NAME: vLLM, TGI,
     llama.cpp), cut at each language's stop tokens, written to OUT/BENCH-LANG/NAME.json.gz;
  3. execution in the bubblewrap sandbox (see `multipl-moe execute --help`), results beside;
  4. a table, OUT/summary.json, OUT/passk.md and OUT/passk.png.

Every stage resumes: problems that already have completions, and programs that already have
results, are not redone. That reuse needs the very same run: OUT/eval-run.json records the
model's files (SHA-256), the generation settings and the MultiPL-E version, and each completion
file its problem; if anything differs, eval stops and says what (start over with --fresh, or
choose another --out). Languages whose toolchain is missing here are reported as unavailable.
"""


def _sampling(args: argparse.Namespace):
    from multipl_moe.evaluation.generate import Sampling

    try:
        if args.greedy:
            return Sampling(n=1, temperature=0.0, top_p=1.0,
                            max_new_tokens=args.max_new_tokens, seed=args.seed)
        return Sampling(n=args.n, temperature=args.temperature, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, seed=args.seed)
    except ValueError as e:
        raise UserError(str(e)) from e


def _backend(args: argparse.Namespace):
    from multipl_moe.evaluation.generate import HFBackend, OpenAIBackend

    if args.server:
        return OpenAIBackend(args.server, args.model, api_key=os.environ.get("OPENAI_API_KEY"),
                             concurrency=args.concurrency)
    if not Path(args.model).is_dir():
        raise UserError(f"--model {args.model}: not a checkpoint directory (to use a server, "
                        "pass --server URL and the served model's name as --model)")
    if not (Path(args.model) / "config.json").is_file():
        raise UserError(f"--model {args.model}: not a Hugging Face checkpoint directory (no "
                        "config.json)")
    try:
        return HFBackend(args.model, device=args.device, dtype=args.dtype,
                         batch_size=args.batch_size)
    except (OSError, ValueError, KeyError) as e:  # transformers' words for a folder it cannot load
        why = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(f"--model {args.model}: cannot load the checkpoint: {why}") from e


def run(args: argparse.Namespace) -> int:
    from multipl_moe.evaluation import problems as P
    from multipl_moe.evaluation.generate import generate, pending
    from multipl_moe.evaluation.languages import LANGUAGES, parse_langs
    from multipl_moe.evaluation.toolchains import missing

    for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size),
                        ("--concurrency", args.concurrency)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    check_execution_args(args)
    langs = parse_langs(args.langs)  # a UserError names a bad one
    benches = [b.strip() for b in args.benchmark.split(",") if b.strip()]
    for b in benches:
        if b not in P.BENCHMARKS:
            raise UserError(f"unknown benchmark {b!r} (choose from {', '.join(P.BENCHMARKS)})")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a directory")
    sampling = _sampling(args)
    # issue 14: say what a wrong --model is before loading data; problems from $MULTIPL_E_DIR,
    # or from the hub only when it answers (else one line naming --data-dir, not retries)
    from multipl_moe.evaluation import manifest
    from multipl_moe.evaluation.inputs import check_model_arg, resolve_data_dir

    check_model_arg(args)
    args.data_dir = resolve_data_dir(args)
    out = args.out or manifest.default_out(args.model, args.server)

    if not args.no_execute:  # say it before spending hours generating
        for code in langs:
            why = missing(LANGUAGES[code])
            if why:
                print(f"warning: {LANGUAGES[code].name} cannot be executed here ({why}); its "
                      "completions are generated but it will be reported as unavailable",
                      file=sys.stderr)
    work = []
    for bench in benches:
        for code in langs:
            try:
                rows = P.load_problems(bench, code, args.data_dir, args.data_version,
                                       args.dataset, args.revision)
            except (FileNotFoundError, ValueError) as e:
                raise UserError(str(e)) from e
            except (OSError, ConnectionError) as e:  # the hub (datasets' own words, one line)
                from multipl_moe.evaluation.inputs import no_hub_message

                why = " ".join(str(e).split())[:200] or type(e).__name__
                raise UserError(no_hub_message(f"the hub failed ({why})")) from e
            work.append((bench, code, rows[: args.limit] if args.limit else rows))

    # issue 14: reuse only the very same run (model files, generation settings, problems)
    prepared = manifest.prepare(out, model=args.model, server=args.server, sampling=sampling,
                                dtype=None if args.server else args.dtype,
                                data=manifest.data_record(args), work=work, fresh=args.fresh)
    generated = {}
    backend = None  # loaded only if something is left to generate
    for bench, code, rows in work:
        folder = out / f"{bench}-{code}"
        todo = pending(rows, sampling, folder)
        prepared.reused[f"{bench}-{code}"] = len(rows) - len(todo)
        if todo:
            backend = backend or _backend(args)
            generated[f"{bench}-{code}"] = generate(rows, backend, sampling, folder,
                                                    progress=not args.no_progress)
    prepared.finish(generated)
    if args.no_execute:
        print(f"completions in {out}; run `multipl-moe execute {out}` to score them")
        return 0
    return execute_and_report(out, None, langs, args)


def add_parser(subparsers) -> None:
    from multipl_moe.evaluation.generate import Sampling
    from multipl_moe.evaluation.problems import HUB_DATASET

    p = subparsers.add_parser("eval", help="pass@k on MultiPL-E HumanEval/MBPP in many languages",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="checkpoint directory (Hugging Face format), or with --server the "
                        "model name the server serves")
    p.add_argument("--server", default=None, metavar="URL",
                   help="OpenAI-compatible server, e.g. http://localhost:8000 (uses "
                        "/v1/completions; $OPENAI_API_KEY is sent if set)")
    p.add_argument("--benchmark", default="humaneval,mbpp", help="default %(default)s")
    p.add_argument("--langs", default="paper",
                   help="comma-separated: py,java,cpp,rs,go,rb,lua,jl,ml,r,rkt; 'paper' = "
                        "py,java,cpp,rs,go,rb (default); 'all' = all eleven")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default runs/eval/<parent>-<name>-<8 hex of the model's "
                        "path>). Completions in it are reused only if the same model files, "
                        "generation settings and problems made them (recorded in eval-run.json)")
    p.add_argument("--fresh", action="store_true",
                   help="delete the completions, results and summary that an earlier eval wrote "
                        "in --out, and start over")
    g = p.add_argument_group("problems")
    g.add_argument("--data-dir", type=Path, default=None,
                   help="folder of MultiPL-E JSONL files {benchmark}-{lang}.jsonl (default: "
                        "$MULTIPL_E_DIR if set, else the hub)")
    g.add_argument("--data-version", default="v3", choices=("v3", "latest"),
                   help="v3 = what the hub serves and papers report (default); latest = with "
                        "upstream fixes (the folder's latest/)")
    g.add_argument("--dataset", default=HUB_DATASET, help="hub dataset (default %(default)s)")
    g.add_argument("--revision", default=None, help="hub dataset revision")
    g.add_argument("--limit", type=int, default=None, help="only the first N problems (smoke runs)")
    g = p.add_argument_group("generation")
    d = Sampling()
    g.add_argument("--n", type=int, default=d.n, help="samples per problem (default %(default)s)")
    g.add_argument("--temperature", type=float, default=d.temperature,
                   help="default %(default)s")
    g.add_argument("--top-p", type=float, default=d.top_p, help="default %(default)s")
    g.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                   help="default %(default)s")
    g.add_argument("--greedy", action="store_true", help="one greedy sample per problem")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=16, help="local model: prompts per batch")
    g.add_argument("--device", default=None, help="local model: cuda / cpu (default: cuda if any)")
    g.add_argument("--dtype", default="auto", choices=("auto", "float16", "bfloat16", "float32"),
                   help="local model: auto = bf16 on GPU, fp32 on CPU (default)")
    g.add_argument("--concurrency", type=int, default=8, help="server: parallel requests")
    g.add_argument("--no-execute", action="store_true",
                   help="only generate (execute later, elsewhere, with `multipl-moe execute`)")
    add_execution_args(p)
    p.set_defaults(func=run)
