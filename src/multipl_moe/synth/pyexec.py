"""Run a Python function's tests in the bubblewrap sandbox, optionally under coverage.py.

Model-written tests call a function taken from the internet, so both run in the same sandbox as
every other program (`evaluation.sandbox`, through its public `Runner.run(Plan)` only).

One sandbox per function, not per test: a harness imports the function's module, runs each
`assert` with its own time limit (SIGALRM), and prints a verdict per test after a random marker
that no test can have printed before the marker existed. A test that takes the whole process
down (a segfault, `os._exit`, a flood of output, an endless C loop) leaves no verdict line; then
each test runs again in a sandbox of its own, so one bad test never sinks its siblings.

Coverage (stage 3) uses coverage.py inside the sandbox: a copy of the installed `coverage`
package is mounted read-only and put on `PYTHONPATH`. Only the lines of the `def` count, not
the imports above it. The sandbox's python is the system's; coverage's C tracer is built for
the interpreter's minor version (it falls back to its Python tracer otherwise).
"""

from __future__ import annotations

import compileall
import json
import os
import secrets
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from multipl_moe.evaluation.languages import Plan
from multipl_moe.evaluation.sandbox import Runner

MODULE = "synth_fn"

_HARNESS = r'''
import json, os, signal, sys
MARK = {mark!r}
TESTS = {tests!r}
PER_TEST = {per_test!r}
SPAN = {span!r}
_out = os.fdopen(os.dup(1), "w")
sys.stdout = open(os.devnull, "w")

def _alarm(signum, frame):
    raise TimeoutError("test timed out")

signal.signal(signal.SIGALRM, _alarm)
cov = None
if SPAN is not None:
    import coverage
    cov = coverage.Coverage(data_file=None, include=[os.path.abspath("{module}.py")])
    cov.start()
sys.path.insert(0, os.getcwd())
import {module} as _m
verdicts = []
for t in TESTS:
    ns = dict(vars(_m))
    signal.setitimer(signal.ITIMER_REAL, PER_TEST)
    try:
        exec(compile(t, "<test>", "exec"), ns)
        verdicts.append(True)
    except BaseException:
        verdicts.append(False)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
report = {{"verdicts": verdicts}}
if cov is not None:
    cov.stop()
    _, statements, _, missing, _ = cov.analysis2(os.path.abspath("{module}.py"))
    lo, hi = SPAN
    body = [s for s in statements if lo < s <= hi]
    report["statements"] = len(body)
    report["missing"] = sorted(s for s in missing if lo < s <= hi)
_out.write(MARK + json.dumps(report) + "\n")
_out.flush()
'''


@dataclass
class TestRun:
    passed: list[bool]
    coverage: float | None = None   # fraction of the function's statements the tests ran
    missing_lines: list[int] | None = None
    fell_back: bool = False         # the batch died; tests ran one per sandbox


class PyTestRunner:
    """Runs functions' tests in the sandbox; `workers` sandboxes at a time."""

    def __init__(self, runner: Runner, per_test_timeout: float = 5.0, workers: int = 2):
        self.runner = runner
        self.per_test = per_test_timeout
        self.workers = max(1, workers)
        self.max_hangs = 2
        self.startup_s = 10.0   # python and coverage.py start-up, on a loaded machine
        self._cov_path: str | None = None
        self._cov_tmp: str | None = None

    def _coverage_mount(self) -> str:
        """Mount a copy of the installed coverage package once; its path inside the sandbox."""
        if self._cov_path is None:
            try:
                import coverage
            except ImportError as e:
                raise RuntimeError("the coverage stage needs coverage.py (pip install coverage)") from e
            tmp = tempfile.mkdtemp(prefix="synth-coverage-")
            shutil.copytree(Path(coverage.__file__).parent, Path(tmp, "coverage"),
                            ignore=shutil.ignore_patterns("__pycache__", "htmlfiles"))
            # Byte-compiled here: in the read-only mount python would recompile coverage's
            # sources on every run (measured: most of a run's time). Same minor version only.
            compileall.compile_dir(tmp, quiet=1, workers=1)
            for root, dirs, files in os.walk(tmp):   # the sandbox runs as `nobody`
                os.chmod(root, 0o755)
                for f in files:
                    os.chmod(os.path.join(root, f), 0o644)
            self._cov_tmp = tmp
            self._cov_path = self.runner.expose(tmp)
        return self._cov_path

    def close(self) -> None:
        if self._cov_tmp:
            shutil.rmtree(self._cov_tmp, ignore_errors=True)

    def _plan(self, code: str, tests: list[str], span: tuple[int, int] | None, mark: str) -> Plan:
        harness = _HARNESS.format(mark=mark, tests=tests, per_test=float(self.per_test),
                                  span=span, module=MODULE)
        env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        if span is not None:
            env["PYTHONPATH"] = self._coverage_mount()
        # The whole batch gets each test's limit plus start-up time, within a fixed ceiling.
        timeout = min(600.0, self.startup_s + self.per_test * len(tests) * 1.5)
        return Plan(files={"prog.py": harness.encode(), f"{MODULE}.py": code.encode()},
                    run=("python3", "prog.py"), run_timeout=timeout, env=env)

    def _run_batch(self, code: str, tests: list[str], span) -> dict | None:
        """The harness's report, None if it gave none, or {"timed_out": True}."""
        mark = f"@@synth-{secrets.token_hex(8)}@@"
        out = self.runner.run(self._plan(code, tests, span, mark))
        if out.timed_out:
            return {"timed_out": True}
        if out.output_exceeded:
            return None
        for line in out.stdout.splitlines():
            if line.startswith(mark):
                try:
                    report = json.loads(line[len(mark):])
                except ValueError:
                    return None
                if len(report.get("verdicts", ())) == len(tests):
                    return report
        return None

    def run(self, code: str, tests: list[str], span: tuple[int, int] | None = None) -> TestRun:
        """Verdict per test; with `span` (the def's first and last line in `code`) also the
        line coverage of the def by all the tests together."""
        if not tests:
            return TestRun([], 0.0 if span else None)
        report = self._run_batch(code, tests, span)
        if report is None or "timed_out" in report:
            if span is not None:   # coverage needs every test in one process
                return TestRun([False] * len(tests), None, fell_back=True)
            passed, hangs = [], 0
            for t in tests:
                # A function that hangs where SIGALRM cannot interrupt it (a long C loop) would
                # cost a full sandbox time limit per test: after two such hangs the rest fail.
                one = self._run_batch(code, [t], None) if hangs < self.max_hangs else None
                hangs += bool(one and "timed_out" in one)
                passed.append(bool(one and "verdicts" in one and one["verdicts"][0]))
            return TestRun(passed, fell_back=True)
        result = TestRun([bool(v) for v in report["verdicts"]])
        if span is not None:
            n = report["statements"]
            result.missing_lines = report["missing"]
            result.coverage = (n - len(report["missing"])) / n if n else 0.0
        return result

    def run_many(self, jobs: list[tuple[str, list[str], tuple[int, int] | None]]) -> list[TestRun]:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="synth-py") as pool:
            try:
                return list(pool.map(lambda j: self.run(*j), jobs))
            except BaseException:
                self.runner.kill_all()
                raise
