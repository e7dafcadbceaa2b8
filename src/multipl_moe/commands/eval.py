"""`multipl-moe eval`: checkpoint -> MultiPL-E completions -> sandboxed execution -> pass@k."""

from __future__ import annotations

import argparse
from pathlib import Path

from multipl_moe.errors import UserError
from multipl_moe.commands.execute import add_execution_args, execution_options

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


def _model_source(args: argparse.Namespace):
    from multipl_moe.evaluation.pipeline import ModelSource

    return ModelSource(args.model, server=args.server, device=args.device, dtype=args.dtype,
                       batch_size=args.batch_size, concurrency=args.concurrency)


def _backend(args: argparse.Namespace):
    from multipl_moe.evaluation.pipeline import load_backend

    return load_backend(_model_source(args))


def run(args: argparse.Namespace) -> int:
    from multipl_moe.evaluation.languages import parse_langs
    from multipl_moe.evaluation.pipeline import ProblemSource, evaluate

    execution = execution_options(args)  # checked even with --no-execute: a typo fails now
    problems = ProblemSource(
        benchmarks=tuple(b.strip() for b in args.benchmark.split(",") if b.strip()),
        langs=tuple(parse_langs(args.langs)),  # a UserError names a bad one
        data_dir=args.data_dir, data_version=args.data_version, dataset=args.dataset,
        revision=args.revision, limit=args.limit)
    return evaluate(_model_source(args), problems, _sampling(args), out=args.out,
                    execution=None if args.no_execute else execution, fresh=args.fresh,
                    progress=not args.no_progress).status


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
