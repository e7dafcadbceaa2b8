"""The six stages of `multipl-moe synth`, each a function of (config, output folder).

Stage i reads the outputs of stage i-1 (`{i-1}-{name}.out.jsonl`) and writes its own; its
journal (`{i}-{name}.jsonl`) makes it resumable (see `journal` and `stage`). Stages 2 and 5 need
the generator model; it is loaded only if something is left to generate.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .journal import fingerprint
from .stage import STAGES, Item, StageResult, begin, finish, read_outputs, run_stage


@dataclass
class SynthConfig:
    """Everything the stages need; the CLI options map one to one onto these fields."""

    out: Path
    """Output folder: journals, stage outputs, completions, and the final dataset."""
    corpus: list[str] = field(default_factory=list)
    """Stage 1 inputs: anything `multipl-moe data` reads (files, folders, saved datasets, hub)."""
    text_field: str = "content"
    lang_field: str = "lang"
    path_field: str | None = None
    max_documents: int | None = None
    """Read at most this many Python documents (smoke runs)."""
    decontam_dir: str | None = None
    """MultiPL-E folder for the overlap check (default: the project's shared/data/multipl-e)."""
    min_body_lines: int = 3
    pyright: bool = True
    langs: list[str] = field(default_factory=lambda: ["lua"])
    """Target languages of stages 4 and 5 (MultiPL-E codes)."""
    model: str = ""
    """Checkpoint folder, or with `server` the served model's name."""
    server: str | None = None
    api_key: str | None = None
    device: str | None = None
    dtype: str = "auto"
    batch_size: int = 16
    concurrency: int = 8
    test_samples: int = 5
    test_temperature: float = 0.2
    test_max_tokens: int = 256
    max_tests: int = 50
    """At most this many distinct tests per function are run (the first ones written)."""
    coverage_threshold: float = 0.9
    solution_samples: int = 50
    solution_temperature: float = 0.8
    solution_max_tokens: int = 512
    top_p: float = 0.95
    seed: int = 0
    functions_per_batch: int = 32
    """Stage 2: functions per generation batch (a kill loses at most one batch)."""
    per_test_timeout: float = 5.0
    workers: int = 2
    unsafe_no_sandbox: bool = False
    dedupe_method: str = "minhash"
    """minhash (MinHash LSH over token 5-grams, datasketch) or rouge (ROUGE-L, MultiPL-T)."""
    dedupe_threshold: float | None = None
    """Near-duplicate threshold: Jaccard for minhash (default 0.7), ROUGE-L F for rouge (0.8)."""
    progress: bool = True

    def generator(self) -> str:
        return f"{self.model} @ {self.server}" if self.server else Path(self.model).name or self.model

    def generator_id(self) -> str:
        """What identifies the model's outputs: the served name, or the checkpoint's weights'
        path and modification times (a re-trained checkpoint at the same path is another model)."""
        if self.server:
            return f"{self.server}|{self.model}"
        path = Path(self.model)
        stamps = sorted((p.name, p.stat().st_mtime_ns) for p in path.glob("*") if p.is_file()) \
            if path.is_dir() else []
        return fingerprint(str(path.resolve()), stamps)


class Context:
    """What the stages share: the config, the generator (lazily) and the sandbox runner."""

    def __init__(self, cfg: SynthConfig, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log
        self._backend = None
        self._runner = None
        self._py = None

    def backend(self):
        if self._backend is None:
            from multipl_moe.evaluation.generate import HFBackend, OpenAIBackend

            c = self.cfg
            if c.server:
                self._backend = OpenAIBackend(c.server, c.model, api_key=c.api_key,
                                              concurrency=c.concurrency)
            else:
                self._backend = HFBackend(c.model, device=c.device, dtype=c.dtype,
                                          batch_size=c.batch_size)
        return self._backend

    def runner(self):
        if self._runner is None:
            from multipl_moe.evaluation.sandbox import make_runner

            self._runner = make_runner(unsafe=self.cfg.unsafe_no_sandbox)
        return self._runner

    def py(self):
        if self._py is None:
            from .pyexec import PyTestRunner

            self._py = PyTestRunner(self.runner(), self.cfg.per_test_timeout, self.cfg.workers)
        return self._py

    def close(self) -> None:
        if self._py is not None:
            self._py.close()


# ---------------------------------------------------------------------------------------------
# 1. extract

def stage_extract(ctx: Context) -> StageResult:
    from multipl_moe.data.sources import SourceReport, iter_documents

    from .extract import ExtractSettings, document_input, functions_of, pyright_errors, pyright_path

    c = ctx.cfg
    if not c.corpus:
        raise ValueError("stage extract needs a corpus (--corpus)")
    settings = ExtractSettings(min_body_lines=c.min_body_lines, decontaminate=True,
                               pyright=c.pyright)
    checker = pyright_path() if c.pyright else None
    deco = None
    if settings.decontaminate:
        from multipl_moe.data.decontam import Decontaminator

        deco = Decontaminator.from_dir(c.decontam_dir)
    report = SourceReport()

    def items():
        docs = iter_documents(c.corpus, text_field=c.text_field, lang_field=c.lang_field,
                              path_field=c.path_field, languages=["py"], report=report)
        for i, doc in enumerate(docs):
            if c.max_documents is not None and i >= c.max_documents:
                break
            yield Item(doc.id, document_input(doc.text, settings, checker), doc.text)

    def process(batch: list[Item]) -> list[tuple[dict, list[dict]]]:
        out = []
        for item in batch:
            counts, fns = functions_of(item.key, item.data, settings, deco)
            out.append((counts, fns))
        if checker:
            flat = [fn for _, fns in out for fn in fns]
            errors = iter(pyright_errors(flat, checker) if flat else [])
            checked = []
            for counts, fns in out:
                keep = []
                for fn in fns:
                    e = next(errors)
                    if e == 0:
                        keep.append(fn)
                    else:
                        counts["pyright errors" if e > 0 else "pyright gave no verdict"] += 1
                checked.append((counts, keep))
            out = checked
        verdicts = []
        for counts, fns in out:
            counts["kept"] += len(fns)
            verdicts.append((dict(counts), [fn.to_dict() for fn in fns]))
        return verdicts

    result = run_stage(c.out, "extract", items(), process, batch=64, progress=c.progress,
                       unit="doc")
    # Exact copies across the corpus are common (vendored files); keep the first in corpus order.
    seen, ids, kept = set(), Counter(), []
    for fn in result.outputs:
        h = hashlib.sha256(fn["code"].encode()).hexdigest()
        if h in seen:
            result.counts["kept"] -= 1
            result.counts["exact copy of an earlier function"] += 1
            continue
        seen.add(h)
        ids[fn["id"]] += 1
        if ids[fn["id"]] > 1:   # two inputs with the same file name give the same document ids
            fn = {**fn, "id": f"{fn['id']}#{ids[fn['id']]}"}
        kept.append(fn)
    result.outputs = kept
    result.notes.append("type check: " + (f"pyright ({checker}), 0 errors required" if checker else
                                          "SKIPPED, pyright is not installed (npm install -g pyright)"
                                          if c.pyright else "skipped (--no-pyright)"))
    result.notes += [f"corpus: {line}" for line in report.skipped_lines()]
    finish(c.out, result)
    return result


# ---------------------------------------------------------------------------------------------
# 2. tests

def _sampling(n: int, temperature: float, max_tokens: int, cfg: SynthConfig):
    from multipl_moe.evaluation.generate import Sampling

    if temperature == 0:
        n = 1
    return Sampling(n=n, temperature=temperature, top_p=cfg.top_p if temperature else 1.0,
                    max_new_tokens=max_tokens, seed=cfg.seed)


def stage_tests(ctx: Context) -> StageResult:
    from .testgen import STOPS, extract_tests, test_prompt

    c = ctx.cfg
    fns = read_outputs(c.out, "extract")
    s = _sampling(c.test_samples, c.test_temperature, c.test_max_tokens, c)
    settings = (asdict(s), c.generator_id(), c.max_tests, c.per_test_timeout, STOPS)
    items = [Item(fn["id"], fingerprint(fn, settings), fn) for fn in fns]

    def process(batch: list[Item]) -> list[tuple[dict, list[dict]]]:
        prompts = [test_prompt(it.data["code"], it.data["name"]) for it in batch for _ in range(s.n)]
        texts = ctx.backend().complete(prompts, [STOPS] * len(prompts), s)
        jobs, stats = [], []
        for j, it in enumerate(batch):
            counts: Counter = Counter()
            tests: list[str] = []
            for text in texts[j * s.n:(j + 1) * s.n]:
                for t in extract_tests(text, it.data["name"], counts):
                    if t not in tests:
                        tests.append(t)
            tests = tests[:c.max_tests]
            stats.append(counts)
            jobs.append((it.data["code"], tests, None))
        runs = ctx.py().run_many(jobs)
        out = []
        for it, (_, tests, _), run, counts in zip(batch, jobs, runs, stats):
            passing = [t for t, ok in zip(tests, run.passed) if ok]
            verdict: dict = {f"asserts rejected: {k}": v for k, v in counts.items()}
            verdict["tests: passed"] = len(passing)
            verdict["tests: failed"] = len(tests) - len(passing)
            if not tests:
                verdict["no test of the form f(args) == value"] = 1
                out.append((verdict, []))
            elif not passing:
                verdict["no passing test"] = 1
                out.append((verdict, []))
            else:
                verdict["kept"] = 1
                out.append((verdict, [{**it.data, "tests": passing}]))
        return out

    result = run_stage(c.out, "tests", items, process, batch=c.functions_per_batch,
                       total=len(items), progress=c.progress, unit="function")
    finish(c.out, result)
    return result


# ---------------------------------------------------------------------------------------------
# 3. coverage

def stage_coverage(ctx: Context) -> StageResult:
    c = ctx.cfg
    fns = read_outputs(c.out, "tests")
    settings = (c.coverage_threshold, c.per_test_timeout)
    items = [Item(fn["id"], fingerprint(fn, settings), fn) for fn in fns]

    def process(batch: list[Item]) -> list[tuple[dict, list[dict]]]:
        runs = ctx.py().run_many([(it.data["code"], it.data["tests"],
                                   (it.data["start"], it.data["end"])) for it in batch])
        out = []
        for it, run in zip(batch, runs):
            if run.coverage is None or not all(run.passed):
                out.append(({"tests no longer pass (flaky or crashed under coverage)": 1}, []))
            elif run.coverage + 1e-9 < c.coverage_threshold:
                out.append(({f"line coverage below {c.coverage_threshold:.0%}": 1}, []))
            else:
                out.append(({"kept": 1}, [{**it.data, "coverage": round(run.coverage, 4)}]))
        return out

    result = run_stage(c.out, "coverage", items, process, batch=max(1, 4 * c.workers),
                       total=len(items), progress=c.progress, unit="function")
    finish(c.out, result)
    return result


# ---------------------------------------------------------------------------------------------
# 4. translate

def problem_name(fn_id: str, name: str) -> str:
    """A file-name-safe, unique, stable problem name: `synth_<hash>_<function name>`."""
    h = hashlib.sha256(fn_id.encode()).hexdigest()[:10]
    return f"synth_{h}_{re.sub(r'[^A-Za-z0-9_]', '_', name)[:40]}"


def translator_version() -> str:
    """A hash of the translator's source: part of each item's input, so that a fixed translator
    re-translates (the journal would otherwise keep the old translations)."""
    from . import translate as translator

    code = sorted((p.name, p.read_text()) for p in Path(translator.__file__).parent.glob("*.py"))
    return fingerprint(code)


def stage_translate(ctx: Context) -> StageResult:
    from .translate import PyProblem, TranslatedProblem, translate

    c = ctx.cfg
    fns = read_outputs(c.out, "coverage")
    version = translator_version()
    items = [Item(f"{fn['id']}@{lang}", fingerprint(fn, lang, version), (fn, lang))
             for fn in fns for lang in c.langs]

    def process(batch: list[Item]) -> list[tuple[dict, list[dict]]]:
        out = []
        for it in batch:
            fn, lang = it.data
            problem = PyProblem(name=problem_name(fn["id"], fn["name"]), source=fn["code"],
                                tests=fn["tests"], entry_point=fn["name"], original=fn["id"])
            try:
                result = translate(problem, lang)
            except Exception as e:  # a translator bug must not end a long run; count it
                out.append(({f"translator error ({type(e).__name__})": 1}, []))
                continue
            if not isinstance(result, TranslatedProblem):
                out.append(({result.reason: 1}, []))
                continue
            n_tests = len(fn["tests"]) - len(result.skipped_tests)
            out.append(({"kept": 1, "tests: translated": n_tests,
                         "tests: not translatable": len(result.skipped_tests)},
                        [{"row": result.to_row(), "lang": lang, "source_id": fn["id"],
                          "python": fn["code"], "test_count": n_tests,
                          "coverage": fn["coverage"]}]))
        return out

    result = run_stage(c.out, "translate", items, process, batch=64, total=len(items),
                       progress=c.progress, unit="problem")
    finish(c.out, result)
    return result


# ---------------------------------------------------------------------------------------------
# 5. solutions

def solutions_dir(out: Path) -> Path:
    return Path(out) / "5-solutions"


def stage_solutions(ctx: Context) -> StageResult:
    from .solutions import collect, generate_solutions, run_solutions, solution_settings

    c = ctx.cfg
    problems = read_outputs(c.out, "translate")
    s = _sampling(c.solution_samples, c.solution_temperature, c.solution_max_tokens, c)
    folder = solutions_dir(c.out)
    generate_solutions(ctx, problems, s, folder)
    summary = run_solutions(ctx, problems, folder)
    settings = solution_settings(s, c)
    items = [Item(f"{p['row']['name']}@{p['lang']}", fingerprint(p, settings), p) for p in problems]

    def process(batch: list[Item]) -> list[tuple[dict, list[dict]]]:
        return [collect(it.data, folder, c.generator(), summary) for it in batch]

    result = run_stage(c.out, "solutions", items, process, batch=64, total=len(items),
                       progress=c.progress, unit="problem")
    finish(c.out, result)
    return result


# ---------------------------------------------------------------------------------------------
# 6. dedupe

def stage_dedupe(ctx: Context) -> StageResult:
    from .dedupe import dedupe, write_dataset

    c = ctx.cfg
    rows = read_outputs(c.out, "solutions")
    begin(c.out, "dedupe")
    result = StageResult("dedupe", inputs=len(rows), ran=len(rows), unit="solution")
    kept, counts, seconds = dedupe(rows, c.dedupe_method, c.dedupe_threshold)
    result.counts.update(counts)
    result.outputs = kept
    result.notes.append(f"{c.dedupe_method} near-duplicate search took {seconds:.2f} s")
    write_dataset(kept, c.out)
    result.notes.append(f"dataset: {Path(c.out) / 'dataset.jsonl'} and {Path(c.out) / 'dataset'} "
                        f"({len(kept)} rows)")
    finish(c.out, result)
    return result


STAGE_FUNCS = {"extract": stage_extract, "tests": stage_tests, "coverage": stage_coverage,
               "translate": stage_translate, "solutions": stage_solutions, "dedupe": stage_dedupe}
assert tuple(STAGE_FUNCS) == STAGES


def run(cfg: SynthConfig, stages: list[str], log: Callable[[str], None] = print) -> list[StageResult]:
    """Run `stages` (in pipeline order) and log each stage's tally as it finishes."""
    ctx = Context(cfg, log)
    results = []
    try:
        for name in STAGES:
            if name in stages:
                result = STAGE_FUNCS[name](ctx)
                results.append(result)
                for line in result.lines():
                    log(line)
                if not result.outputs and name != STAGES[-1]:
                    log(f"synth: stage {name} kept nothing; the later stages have no input")
    finally:
        ctx.close()
    return results
