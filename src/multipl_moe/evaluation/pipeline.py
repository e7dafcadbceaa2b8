"""The evaluation pipeline as one function: problems -> completions -> sandboxed execution -> pass@k.

`evaluate` is what `multipl-moe eval` runs and what the demo calls; `execute_and_report` is what
`multipl-moe execute` runs. Both take typed options instead of parsed command lines, check every
option before any work (a bad one is a one-line `UserError`, before hours of generation), and
print the same progress lines and table as the commands always have.

The sandbox policy lives here too (`make_runner`): model-written code runs under bubblewrap, or
not at all unless the caller explicitly asks for the unsafe runner.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UserError
from ..languages import PAPER_LANGS
from .generate import Sampling
from .problems import HUB_DATASET
from .sandbox import Limits


@dataclass(frozen=True)
class ModelSource:
    """Where completions come from."""
    model: str
    """A checkpoint directory (Hugging Face format), or with `server` the name the server serves."""
    server: str | None = None
    """An OpenAI-compatible server (`/v1/completions`), e.g. http://localhost:8000."""
    device: str | None = None
    """Local model: cuda / cpu (None: cuda if there is one)."""
    dtype: str = "auto"
    """Local model: auto (bf16 on GPU, fp32 on CPU), float16, bfloat16 or float32."""
    batch_size: int = 16
    """Local model: prompts per batch."""
    concurrency: int = 8
    """Server: parallel requests."""


@dataclass(frozen=True)
class ProblemSource:
    """Which MultiPL-E problems, and where they are read from."""
    benchmarks: tuple[str, ...] = ("humaneval", "mbpp")
    langs: tuple[str, ...] = PAPER_LANGS
    """Registry tags with execution rules (`evaluation.languages.parse_langs` makes them)."""
    data_dir: Path | None = None
    """A folder of `{benchmark}-{lang}.jsonl` files; None: $MULTIPL_E_DIR if set, else the hub."""
    data_version: str = "v3"
    """v3 = what the hub serves and papers report; latest = with upstream fixes (the folder's latest/)."""
    dataset: str = HUB_DATASET
    revision: str | None = None
    limit: int | None = None
    """Only the first N problems of each benchmark x language (smoke runs)."""


@dataclass(frozen=True)
class ExecutionOptions:
    """How programs are run (`multipl-moe execute --help` says why each default is what it is)."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    timeout: float | None = None
    """Run-step time limit for every language instead of MultiPL-E's; compile steps keep theirs."""
    memory_mb: int = Limits.memory_mb
    """Data/address-space limit per process."""
    toolchain_cache: bool = True
    """Build the per-run C++ precompiled header, warm Go cache and javac archive (verdicts are the same)."""
    unsafe_no_sandbox: bool = False
    """Run model-written programs WITHOUT bubblewrap: only on a throw-away machine."""
    progress: bool = True

    def check(self) -> None:
        """The ranges, checked before anything else runs (eval: before hours of generation)."""
        if self.workers < 1:
            raise UserError(f"--workers must be at least 1 (got {self.workers})")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise UserError(f"--timeout must be a positive number of seconds (got {self.timeout})")
        if self.memory_mb < 1:
            raise UserError(f"--memory-mb must be at least 1 (got {self.memory_mb})")


@dataclass(frozen=True)
class EvalResult:
    out: Path
    """The output folder: BENCH-LANG/ completions and results, summary.json, passk.md, passk.png."""
    status: int
    """0, or 1 if some completion or results files could not be used (each was named on stderr)."""
    executed: bool


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def make_runner(options: ExecutionOptions):
    """The sandbox runner: bubblewrap, or a one-line refusal; unsandboxed only when asked."""
    from .sandbox import SandboxError, UnsafeRunner, bwrap_path, make_runner as _make

    limits = replace(Limits(), memory_mb=options.memory_mb)
    if options.unsafe_no_sandbox:
        print(UnsafeRunner.warning(), file=sys.stderr)
        return _make(unsafe=True, limits=limits)
    if bwrap_path() is None:
        raise UserError("bubblewrap (bwrap) is not installed, and model-written code must not run "
                        "unsandboxed by default. Install it (`apt-get install bubblewrap`, or "
                        "`make toolchains` as root), or pass --unsafe-no-sandbox on a throw-away "
                        "machine")
    try:
        return _make(unsafe=False, limits=limits)
    except SandboxError as e:
        raise UserError(str(e)) from e


def execute_and_report(completions: Path, out_dir: Path | None, langs: list[str] | None,
                       options: ExecutionOptions) -> int:
    """Run every completion file under `completions`, then write and print the pass@k report;
    0, or 1 if some files could not be used."""
    from . import report
    from .execute import FolderBusy, execute
    from .sandbox import SandboxError

    runner = make_runner(options)
    try:
        s = execute(completions, out_dir, langs=langs, workers=options.workers, runner=runner,
                    run_timeout=options.timeout, use_cache=options.toolchain_cache,
                    progress=options.progress)
    except (FileNotFoundError, FolderBusy) as e:
        raise UserError(str(e)) from e
    except SandboxError as e:
        raise UserError(f"{e}. Pass --unsafe-no-sandbox only on a throw-away machine") from e
    for path, why in s.skipped.items():
        print(f"skipped {_one_line(path)}: {_one_line(why)}", file=sys.stderr)
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items())) or "none"
    print(f"executed {s.executed} programs in {s.seconds:.1f} s ({s.programs_per_second:.2f}/s, "
          f"{options.workers} workers, {'sandboxed' if s.sandboxed else 'UNSANDBOXED'}); "
          f"reused {s.reused}; statuses: {statuses}")
    root = out_dir or completions
    run = report.collect(root)
    for path, why in run.unreadable.items():
        print(f"left out of the report {_one_line(path)}: {why}", file=sys.stderr)
    paths = report.write_report(run, root)
    print(report.table(run))
    print(f"wrote {paths['summary']}, {paths['table']}, {paths['chart']}")
    if s.skipped:
        print(f"multipl-moe: {len(s.skipped)} of {s.files} completion files were not run (each "
              "is listed above with its reason)", file=sys.stderr)
    if run.unreadable:
        print(f"multipl-moe: {len(run.unreadable)} results files could not be read (listed "
              "above)", file=sys.stderr)
    return 1 if s.skipped or run.unreadable else 0


def load_backend(source: ModelSource):
    """The generation backend (loads a local model; a server is only contacted when generating)."""
    from .generate import HFBackend, OpenAIBackend

    if source.server:
        return OpenAIBackend(source.server, source.model, api_key=os.environ.get("OPENAI_API_KEY"),
                             concurrency=source.concurrency)
    if not Path(source.model).is_dir():
        raise UserError(f"--model {source.model}: not a checkpoint directory (to use a server, "
                        "pass --server URL and the served model's name as --model)")
    if not (Path(source.model) / "config.json").is_file():
        raise UserError(f"--model {source.model}: not a Hugging Face checkpoint directory (no "
                        "config.json)")
    try:
        return HFBackend(source.model, device=source.device, dtype=source.dtype,
                         batch_size=source.batch_size)
    except (OSError, ValueError, KeyError) as e:  # transformers' words for a folder it cannot load
        why = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(f"--model {source.model}: cannot load the checkpoint: {why}") from e


def evaluate(model: ModelSource, problems: ProblemSource = ProblemSource(),
             sampling: Sampling = Sampling(), out: Path | None = None,
             execution: ExecutionOptions | None = ExecutionOptions(), fresh: bool = False,
             progress: bool = True) -> EvalResult:
    """pass@k of `model` on `problems`, written under `out` (default: unique per model).

    Every stage resumes from what `out` holds, but only for the very same run (model files,
    generation settings, problems: `manifest`); `fresh` deletes our earlier files first.
    execution=None only generates (execute later with `execute_and_report`)."""
    from . import manifest
    from . import problems as P
    from .generate import generate, pending
    from .inputs import check_model_arg, no_hub_message, resolve_data_dir
    from .languages import LANGUAGES
    from .toolchains import missing

    for flag, value in (("--limit", problems.limit), ("--batch-size", model.batch_size),
                        ("--concurrency", model.concurrency)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    if execution is not None:
        execution.check()
    for code in problems.langs:
        if code not in LANGUAGES:
            raise UserError(f"language {code!r}: no execution rules (choose from {', '.join(LANGUAGES)})")
    for b in problems.benchmarks:
        if b not in P.BENCHMARKS:
            raise UserError(f"unknown benchmark {b!r} (choose from {', '.join(P.BENCHMARKS)})")
    if problems.data_dir is not None and not Path(problems.data_dir).is_dir():
        raise UserError(f"--data-dir {problems.data_dir} is not a directory")
    # Say what a wrong model is before loading data; problems from $MULTIPL_E_DIR, or from the hub
    # only when it answers (else one line naming --data-dir, not retries).
    check_model_arg(model)
    problems = replace(problems, data_dir=resolve_data_dir(problems))
    out = out or manifest.default_out(model.model, model.server)

    if execution is not None:  # say it before spending hours generating
        for code in problems.langs:
            why = missing(LANGUAGES[code])
            if why:
                print(f"warning: {LANGUAGES[code].name} cannot be executed here ({why}); its "
                      "completions are generated but it will be reported as unavailable",
                      file=sys.stderr)
    work = []
    for bench in problems.benchmarks:
        for code in problems.langs:
            try:
                rows = P.load_problems(bench, code, problems.data_dir, problems.data_version,
                                       problems.dataset, problems.revision)
            except (FileNotFoundError, ValueError) as e:
                raise UserError(str(e)) from e
            except (OSError, ConnectionError) as e:  # the hub (datasets' own words, one line)
                why = " ".join(str(e).split())[:200] or type(e).__name__
                raise UserError(no_hub_message(f"the hub failed ({why})")) from e
            work.append((bench, code, rows[: problems.limit] if problems.limit else rows))

    # Reuse only the very same run (model files, generation settings, problems).
    prepared = manifest.prepare(out, model=model.model, server=model.server, sampling=sampling,
                                dtype=None if model.server else model.dtype,
                                data=manifest.data_record(problems), work=work, fresh=fresh)
    generated = {}
    backend = None  # loaded only if something is left to generate
    for bench, code, rows in work:
        folder = out / f"{bench}-{code}"
        todo = pending(rows, sampling, folder)
        prepared.reused[f"{bench}-{code}"] = len(rows) - len(todo)
        if todo:
            backend = backend or load_backend(model)
            generated[f"{bench}-{code}"] = generate(rows, backend, sampling, folder, progress=progress)
    prepared.finish(generated)
    print(manifest.describe(prepared, generated))   # which figures this run made, which it reused
    if execution is None:
        print(f"completions in {out}; run `multipl-moe execute {out}` to score them")
        return EvalResult(out, 0, executed=False)
    status = execute_and_report(out, None, list(problems.langs), execution)
    return EvalResult(out, status, executed=True)
