"""The executor's bookkeeping (issue 5, test 4 and the file formats): MultiPL-E results files,
resume after a kill (nothing lost, nothing run twice), unavailable languages reported instead of
scored, and the refusal to run unsandboxed unless asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multipl_moe import cli
from multipl_moe.evaluation import formats, report
from multipl_moe.evaluation.execute import execute, program_text
from multipl_moe.evaluation.sandbox import bwrap_path

pytestmark = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
RESULT_KEYS = {"program", "status", "exit_code", "stdout", "stderr", "timestamp"}


def problem(i: int, lang: str = "py") -> dict:
    if lang == "rb":
        return {"name": f"HumanEval_{900 + i}_tiny", "language": "rb", "prompt": "def f()\n",
                "tests": "raise 'wrong' unless f == 1\n", "stop_tokens": ["\ndef"]}
    return {"name": f"HumanEval_{900 + i}_tiny", "language": "py",
            "prompt": "import time\n\ndef f():\n", "tests": "assert f() == 1\n",
            "stop_tokens": ["\ndef"]}


def py_completion(j: int, sleep: float = 0.0) -> str:
    """Odd j passes, even j fails (a wrong answer, so an Exception)."""
    return f"    time.sleep({sleep})\n    return {j % 2}\n"


def write_completions(root: Path, files: int, n: int, sleep: float = 0.0, gz: bool = True,
                      lang: str = "py") -> list[Path]:
    paths = []
    for i in range(files):
        row = problem(i, lang)
        row["completions"] = ([py_completion(j, sleep) for j in range(n)] if lang == "py"
                              else [f"  {j % 2}\nend\n" for j in range(n)])
        path = root / f"{row['name']}{'_' + lang if lang != 'py' else ''}.json{'.gz' if gz else ''}"
        formats.write_json_atomic(path, row)
        paths.append(path)
    return paths


def quiet_execute(root, **kw):
    return execute(root, workers=2, progress=False, log=lambda s: None, **kw)


def test_results_files_have_multiple_format(tmp_path):
    (path,) = write_completions(tmp_path, files=1, n=2, gz=False)
    s = quiet_execute(tmp_path)
    assert (s.executed, s.reused) == (2, 0)
    data = json.loads((tmp_path / "HumanEval_900_tiny.results.json").read_text())
    source = formats.read_json(path)
    assert {k: v for k, v in data.items() if k != "results"} == \
        {k: v for k, v in source.items() if k != "completions"}
    assert [set(r) for r in data["results"]] == [RESULT_KEYS] * 2
    assert [r["program"] for r in data["results"]] == \
        [program_text(source, c) for c in source["completions"]]
    assert [(r["status"], r["exit_code"]) for r in data["results"]] == [("Exception", 1), ("OK", 0)]
    assert "AssertionError" in data["results"][0]["stderr"]
    assert not list(tmp_path.glob("*.partial.jsonl"))


def test_rerun_reuses_results_and_redoes_only_changed_programs(tmp_path):
    (path,) = write_completions(tmp_path, files=1, n=3)
    quiet_execute(tmp_path)
    again = quiet_execute(tmp_path)
    assert (again.executed, again.reused) == (0, 3)
    row = formats.read_json(path)
    row["completions"][1] = "    return 1 + 0\n"
    formats.write_json_atomic(path, row)
    changed = quiet_execute(tmp_path)
    assert (changed.executed, changed.reused) == (1, 2)
    results = formats.read_json(tmp_path / "HumanEval_900_tiny.results.json")["results"]
    assert results[1]["program"].endswith("    return 1 + 0\n\nassert f() == 1\n")


def test_output_dir_mirrors_the_layout(tmp_path):
    src, out = tmp_path / "completions", tmp_path / "results"
    (src / "humaneval-py").mkdir(parents=True)
    write_completions(src / "humaneval-py", files=1, n=1)
    quiet_execute(src, out_dir=out)
    assert (out / "humaneval-py" / "HumanEval_900_tiny.results.json").exists()
    assert not list(src.rglob("*.results.json*"))


@pytest.mark.slow
def test_resume_after_kill_loses_nothing_and_duplicates_nothing(tmp_path):
    files, n = 3, 8
    write_completions(tmp_path, files=files, n=n, sleep=0.3)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "multipl_moe.cli", "execute", str(tmp_path),
                             "--workers", "2", "--no-progress"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def recorded() -> int:
        done = sum(len(formats.read_json(p)["results"]) for p in formats.results_files(tmp_path))
        return done + sum(len(list(formats.read_partial(p))) for p in tmp_path.glob("*.partial.jsonl"))

    deadline = time.monotonic() + 120
    while recorded() < 5 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # a crash: no cleanup of any kind
    proc.wait()
    before = recorded()
    assert 5 <= before < files * n, "the kill should land in the middle of the run"
    # A crash in the middle of writing a line leaves half a line: it must be ignored.
    partial = next(tmp_path.glob("*.partial.jsonl"))
    with open(partial, "a") as f:
        f.write('{"index": 7, "program": "half a li')

    s = quiet_execute(tmp_path)

    assert s.reused == before and s.executed == files * n - before
    assert not list(tmp_path.glob("*.partial.jsonl"))
    for i in range(files):
        path = tmp_path / f"HumanEval_{900 + i}_tiny.json.gz"
        row = formats.read_json(path)
        results = formats.read_json(tmp_path / f"HumanEval_{900 + i}_tiny.results.json")["results"]
        assert [r["program"] for r in results] == [program_text(row, c) for c in row["completions"]]
        assert [r["status"] for r in results] == ["Exception", "OK"] * (n // 2)


def test_unavailable_language_is_reported_not_scored(tmp_path, monkeypatch):
    from multipl_moe.evaluation import toolchains

    real = toolchains.missing
    monkeypatch.setattr(toolchains, "missing",
                        lambda lang: "pretend it is missing" if lang.code == "rb" else real(lang))
    write_completions(tmp_path, files=1, n=2)
    write_completions(tmp_path, files=1, n=2, lang="rb")
    s = quiet_execute(tmp_path)
    assert s.unavailable == {"rb": "pretend it is missing"} and s.executed == 2
    assert not list(tmp_path.glob("*_rb.results.json*"))
    run = report.collect(tmp_path)
    rows = {r["language"]: r for r in report.summary(run)["results"]}
    assert rows["rb"]["unavailable"] == "pretend it is missing" and rows["rb"]["pass@1"] is None
    assert rows["py"]["pass@1"] == 0.5
    assert "| humaneval | rb | unavailable: pretend it is missing" in report.table(run)


def test_refuses_to_run_without_bubblewrap_unless_asked(tmp_path, monkeypatch, capsys):
    from multipl_moe.evaluation import sandbox

    write_completions(tmp_path, files=1, n=2)
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    assert cli.main(["execute", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bubblewrap" in err and "--unsafe-no-sandbox" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.results.json*"))

    assert cli.main(["execute", str(tmp_path), "--no-progress", "--unsafe-no-sandbox"]) == 0
    captured = capsys.readouterr()
    assert "UNSAFE MODE" in captured.err and "network" in captured.err
    assert "WITHOUT the sandbox" in captured.out  # the report says so next to the numbers
    assert formats.read_json(tmp_path / "execution.json")["sandbox"].startswith("NONE")
    results = formats.read_json(tmp_path / "HumanEval_900_tiny.results.json")["results"]
    assert [r["status"] for r in results] == ["Exception", "OK"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["execute", str(tmp_path / "nope")]) == 2
    assert cli.main(["execute", str(tmp_path)]) == 2  # empty: no completion files
    assert cli.main(["execute", str(tmp_path), "--langs", "cobol"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("multipl-moe execute: error:") for line in err)


def test_ctrl_c_stops_the_side_thread_from_starting_probes(tmp_path, monkeypatch):
    """Ctrl-C during the first phase: the artefact thread finishes its build but starts no probe
    (without the cancel flag it would probe, then the run would wait for it)."""
    from multipl_moe.evaluation import toolchains
    from multipl_moe.evaluation.sandbox import BwrapRunner

    monkeypatch.setattr(toolchains.Toolchains, "builds_artefact", lambda self, code: code == "rb")
    monkeypatch.setattr(toolchains.Toolchains, "_build", lambda self, code: time.sleep(1.0) or {})

    class InterruptedRunner(BwrapRunner):
        seen: list[str] = []

        def run(self, plan):
            name = next(iter(plan.files), "")
            self.seen.append(name)
            if name == "prog.py" and b"time.sleep" in plan.files[name]:
                raise KeyboardInterrupt
            return super().run(plan)

    write_completions(tmp_path, files=1, n=2)
    write_completions(tmp_path, files=1, n=2, lang="rb")
    runner = InterruptedRunner()
    with pytest.raises(KeyboardInterrupt):
        execute(tmp_path, workers=1, runner=runner, progress=False, log=lambda s: None)
    assert "prog.py" in runner.seen and "prog.rb" not in runner.seen, runner.seen
