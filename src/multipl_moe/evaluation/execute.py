"""Execute MultiPL-E completion files: program = prompt + completion + "\\n" + tests, in a sandbox.

Why it is shaped like this:

- Parallel across files *and* completions: one flat queue of programs feeds `workers` threads
  (each thread just waits on its sandboxed process), so greedy runs with one completion per
  problem keep every core busy too. MultiPL-E's executor only parallelises within one file.
- Resumable: each finished program is appended to `NAME.results.partial.jsonl` right away; a
  rerun after a crash or Ctrl-C reuses those (and any complete `.results.json` whose programs
  still match) and runs only what is missing. Each completion ends up exactly once, in order.
- Toolchains are checked before their programs run (`toolchains.Toolchains`): files of a language
  that cannot run here are skipped and listed as unavailable in `execution.json`, so a report
  shows "unavailable", not 0. Languages with a per-run artefact (C++, Go, Java) run last: their
  artefacts build on a side thread, niced, while the other languages' programs run.
- One bad completion file (truncated, not JSON, a field of the wrong type, an unknown
  language) is skipped with its reason in `ExecutionSummary.skipped`; the others still run.
- One run per folder: a second `execute` on the same output folder stops at once
  (`FolderBusy`) instead of running everything again beside the first. The lock is an
  `fcntl.flock` on `.multipl-moe-execute.lock`, so the kernel drops it when its holder dies,
  even by `kill -9`; the file stays (deleting it would race with a run about to lock it).
- Nothing is written through a link planted in an untrusted folder: results are renamed into
  place, and the partial journal starts as a fresh file renamed over whatever sat there.
- Verdicts follow MultiPL-E: a failed (or timed-out) compile step is a SyntaxError, a run past
  its limit is a Timeout (exit code -1), otherwise the language's own rule decides; a program
  killed for flooding its output is an Exception.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

from . import formats, runcache
from .languages import LANGUAGES, Language, canonical
from .sandbox import MEMORY_EXCEEDED, Outcome, Runner, make_runner
from .toolchains import Toolchains

REQUIRED_KEYS = ("name", "language", "prompt", "tests", "completions")
LOCK_NAME = ".multipl-moe-execute.lock"


class FolderBusy(RuntimeError):
    """Another `execute` holds the folder's lock."""


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Hold `folder`'s execute lock for the block, or raise FolderBusy at once."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    for attempt in range(2):
        try:
            # Read-only: a hard link planted here is never modified, only locked.
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            fd = -1   # a symlink
        if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
            break
        if fd >= 0:
            os.close(fd)
        # Not a regular file, so no run of ours locks it: replace it.
        if attempt == 1:
            raise FolderBusy(f"{path} is not a regular file and cannot be replaced; remove it")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(
                f"another `multipl-moe execute` is running on {folder} (it holds {path}); let "
                "it finish (or stop it) and run again: finished results are reused") from None
        yield
    finally:
        os.close(fd)


def check_file(problem) -> str | None:
    """Why `problem` (a completion file's content) cannot be run, or None."""
    if not isinstance(problem, dict):
        return f"not a MultiPL-E completion file ({_kind(problem)}, not an object)"
    missing = [k for k in REQUIRED_KEYS if k not in problem]
    if missing:
        return f"not a MultiPL-E completion file (missing {', '.join(missing)})"
    for key in ("name", "language", "prompt", "tests"):
        if not isinstance(problem[key], str):
            return f"`{key}` is {_kind(problem[key])}, not a string"
    completions = problem["completions"]
    if not isinstance(completions, list):
        return f"`completions` is {_kind(completions)}, not a list of strings"
    bad = [i for i, c in enumerate(completions) if not isinstance(c, str)]
    if bad:
        return (f"`completions` holds {len(bad)} non-string(s) (first: #{bad[0]}, "
                f"{_kind(completions[bad[0]])})")
    try:
        canonical(problem["language"])
    except KeyError:
        return f"unsupported language {problem['language'][:40]!r}"
    return None


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number"}


def _kind(value) -> str:
    return "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)


def program_text(problem: dict, completion: str) -> str:
    """MultiPL-E's rule: prompt + completion + newline + tests."""
    return problem["prompt"] + completion + "\n" + problem["tests"]


def judge(lang: Language, out: Outcome, output_mb: int) -> tuple[str, str]:
    """(status, stderr) from an outcome, with MultiPL-E's precedence."""
    if out.memory_exceeded:   # the tree's cgroup budget, in either step (the note is in stderr)
        return MEMORY_EXCEEDED, out.stderr
    if not out.compiled:
        return "SyntaxError", out.stderr
    if out.timed_out:
        return "Timeout", out.stderr
    if out.output_exceeded:
        return "Exception", out.stderr + f"\n[multipl-moe: killed after {output_mb} MiB of output]"
    return lang.status(out.exit_code, out.stdout, out.stderr), out.stderr


@dataclass
class _File:
    """One completion file being executed."""
    path: Path
    results_path: Path
    problem: dict
    lang: Language
    programs: list[str]
    results: list[dict | None]
    journal: object = None  # open append handle of the partial file, once something finishes

    @property
    def pending(self) -> list[int]:
        return [i for i, r in enumerate(self.results) if r is None]

    def record(self, index: int, result: dict) -> None:
        if self.journal is None:
            known = [(i, r) for i, r in enumerate(self.results) if r is not None]
            self.journal = formats.start_partial(formats.partial_path(self.results_path), known)
        formats.append_partial(self.journal, index, result)
        self.results[index] = result

    def finish(self) -> None:
        """Write the complete results file atomically, then drop the partial file."""
        data = {k: v for k, v in self.problem.items() if k != "completions"}
        data["results"] = self.results
        formats.write_json_atomic(self.results_path, data)
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        formats.partial_path(self.results_path).unlink(missing_ok=True)


@dataclass
class ExecutionSummary:
    files: int = 0                      # completion files considered
    executed: int = 0                   # programs run now
    reused: int = 0                     # programs whose result was already on disk
    statuses: Counter = field(default_factory=Counter)
    unavailable: dict[str, str] = field(default_factory=dict)   # lang -> why
    skipped: dict[str, str] = field(default_factory=dict)       # file -> why
    seconds: float = 0.0
    sandboxed: bool = True

    @property
    def programs_per_second(self) -> float:
        return self.executed / self.seconds if self.seconds > 0 else 0.0


def _load(paths: Iterable[Path], root: Path, out_root: Path | None, langs: set[str] | None,
          summary: ExecutionSummary) -> list[_File]:
    files = []
    for path in paths:
        try:
            problem = formats.read_json(path)
        except formats.READ_ERRORS as e:
            why = str(e) or type(e).__name__
            summary.skipped[str(path)] = f"unreadable ({type(e).__name__}: {why})"
            continue
        why = check_file(problem)
        if why:
            summary.skipped[str(path)] = why
            continue
        code = canonical(problem["language"])
        if langs is not None and code not in langs:
            continue
        programs = [program_text(problem, c) for c in problem["completions"]]
        rpath = formats.results_path(path, root, out_root)
        results: list[dict | None] = [None] * len(programs)
        try:
            old = formats.read_json(rpath, follow=False).get("results", [])
            old = old if isinstance(old, list) else []
        except (*formats.READ_ERRORS, AttributeError):  # unreadable: its programs run again
            old = []
        ppath = formats.partial_path(rpath)
        earlier = list(enumerate(old)) + list(formats.read_partial(ppath))
        for i, r in earlier:  # reuse a result only for the very same program
            if (0 <= i < len(programs) and results[i] is None and isinstance(r, dict)
                    and r.get("program") == programs[i]):
                results[i] = r
        summary.reused += sum(r is not None for r in results)
        f = _File(path, rpath, problem, LANGUAGES[code], programs, results)
        complete_on_disk = len(old) == len(programs) and not f.pending
        if not complete_on_disk:
            files.append(f)
        elif os.path.lexists(ppath):  # a kill landed between the results write and this delete
            ppath.unlink()
    return files


def execute(completions_dir: Path, out_dir: Path | None = None, langs: Iterable[str] | None = None,
            workers: int = 2, runner: Runner | None = None, run_timeout: float | None = None,
            use_cache: bool = True, progress: bool = True,
            log: Callable[[str], None] = print) -> ExecutionSummary:
    """Execute every completion file under `completions_dir`; see the module docstring."""
    root = Path(completions_dir)
    out_root = Path(out_dir) if out_dir else None
    paths = formats.completion_files(root)
    if not paths:
        raise FileNotFoundError(f"no MultiPL-E completion files (*.json, *.json.gz) in {root}")
    with folder_lock(out_root or root):
        runcache.sweep(runcache.parent())  # cache folders of runs killed before their cleanup
        return _execute(root, out_root, paths, langs, workers, runner, run_timeout, use_cache,
                        progress, log)


def _execute(root: Path, out_root: Path | None, paths: list[Path], langs, workers: int,
             runner: Runner | None, run_timeout: float | None, use_cache: bool, progress: bool,
             log: Callable[[str], None]) -> ExecutionSummary:
    runner = runner or make_runner()
    summary = ExecutionSummary(sandboxed=runner.sandboxed)
    files = _load(paths, root, out_root, set(langs) if langs else None, summary)
    summary.files = len(paths)

    needed = sorted({f.lang.code for f in files if f.pending}, key=list(LANGUAGES).index)

    with Toolchains(runner, use_cache=use_cache) as tc, ThreadPoolExecutor(1) as side:
        # Languages with a per-run artefact (C++ header, Go cache, javac archive: ~5 s in all)
        # run last; their artefacts build on a side thread while the others' programs run.
        late = [c for c in needed if tc.builds_artefact(c)]
        early = [c for c in needed if c not in late]
        if early:
            summary.unavailable = tc.prepare(early, workers=workers)
        building = side.submit(tc.prepare, late, 1) if late else None

        def runnable(codes: list[str]) -> list[_File]:
            for code in codes:
                if code in summary.unavailable:
                    log(f"unavailable: {LANGUAGES[code].name} ({code}): {summary.unavailable[code]}"
                        " -- its files are skipped")
            keep = [f for f in files if f.lang.code in codes and f.lang.code not in summary.unavailable]
            for f in keep:
                if not f.pending:   # everything already in the partial file: just finish it
                    f.finish()
            return keep

        for f in files:
            if f.lang.code not in needed:   # nothing pending: finish from the partial file
                f.finish()
        phase1 = runnable(early)
        jobs1 = [(f, i) for f in phase1 for i in f.pending]
        _write_manifest(out_root or root, summary, set(early), runner, tc, ran=bool(jobs1))
        n_late = sum(len(f.pending) for f in files if f.lang.code in late)
        bar = tqdm(total=len(jobs1) + n_late, unit="prog", desc="execute",
                   disable=not progress or not (jobs1 or n_late), dynamic_ncols=True)
        phase2: list[_File] = []
        try:
            _run_jobs(jobs1, runner, tc, workers, run_timeout, summary, bar)
            if building is not None:
                summary.unavailable.update(building.result())
            phase2 = runnable(late)
            jobs2 = [(f, i) for f in phase2 for i in f.pending]
            bar.total = len(jobs1) + len(jobs2)
            bar.refresh()
            _write_manifest(out_root or root, summary, set(needed), runner, tc, ran=bool(jobs1 or jobs2))
            _run_jobs(jobs2, runner, tc, workers, run_timeout, summary, bar)
        except BaseException:
            tc.cancelled.set()   # the side thread starts no new build or probe ...
            runner.kill_all()    # ... and a probe it is running ends now
            raise
        finally:
            bar.close()
            for f in phase1 + phase2:
                if f.journal is not None:
                    f.journal.close()
    return summary


def _run_jobs(jobs: list[tuple[_File, int]], runner: Runner, tc: Toolchains, workers: int,
              run_timeout: float | None, summary: ExecutionSummary, bar) -> None:
    output_mb = runner.limits.output_mb
    start = time.monotonic()

    def run_one(f: _File, i: int) -> dict:
        plan = f.lang.plan(f.programs[i], tc.context)
        if run_timeout is not None:
            plan = replace(plan, run_timeout=run_timeout)
        out = runner.run(plan)
        status, stderr = judge(f.lang, out, output_mb)
        return {"program": f.programs[i], "status": status, "exit_code": out.exit_code,
                "stdout": out.stdout, "stderr": stderr, "timestamp": int(time.time())}

    left = Counter(id(f) for f, _ in jobs)
    queue = iter(jobs)
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="execute")
    running: dict[Future, tuple[_File, int]] = {}
    try:
        while True:
            while len(running) < 2 * max(1, workers):  # a short queue: Ctrl-C stops quickly
                job = next(queue, None)
                if job is None:
                    break
                running[pool.submit(run_one, *job)] = job
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                f, i = running.pop(fut)
                result = fut.result()
                f.record(i, result)
                summary.executed += 1
                summary.statuses[result["status"]] += 1
                bar.update(1)
                left[id(f)] -= 1
                if left[id(f)] == 0:
                    f.finish()
    except BaseException:
        for fut in running:
            fut.cancel()
        # Only on the way out: between the two phases a toolchain probe may be running.
        runner.kill_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        summary.seconds += time.monotonic() - start  # programs only: no toolchain set-up


def _write_manifest(root: Path, summary: ExecutionSummary, checked: set[str], runner: Runner,
                    tc: Toolchains, ran: bool) -> None:
    """execution.json: how results were produced, and which languages could not run (merged
    with an earlier manifest: languages not checked this time keep what was known of them, and
    one unsandboxed run marks the folder for good)."""
    path = root / "execution.json"
    try:
        old = formats.read_json(path, follow=False)
    except formats.READ_ERRORS:
        old = {}
    old = old if isinstance(old, dict) else {}
    old_unavailable = old.get("unavailable") if isinstance(old.get("unavailable"), dict) else {}
    unavailable = {k: v for k, v in old_unavailable.items() if k not in checked}
    unavailable.update(summary.unavailable)
    ctx = tc.context
    manifest = {
        "sandbox": "bubblewrap" if runner.sandboxed else "NONE (--unsafe-no-sandbox)",
        "unsandboxed_runs": bool(old.get("unsandboxed_runs")) or (not runner.sandboxed and ran),
        "limits": runner.limits.__dict__,
        "toolchain_cache": {"cpp_precompiled_header": ctx.pch_dir is not None,
                            "go_build_cache": ctx.go_cache is not None,
                            "javac_archive": ctx.javac_archive is not None,
                            "rust_shared_std": ctx.rust_shared_std},
        "unavailable": unavailable,
    }
    formats.write_json_atomic(path, manifest, indent=2)
