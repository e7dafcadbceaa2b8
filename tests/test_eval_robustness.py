"""Hostile and clumsy inputs to `execute`, `eval` and `upcycle` (issue 12, items 3-6 and 9):
planted symlinks and hard links among the outputs, problem names that are not file names, bad
completion files next to good ones, leftovers of a `kill -9`, two runs on one folder, and
arguments out of range. Every hostile test is bounded: subprocesses are killed by the test,
and anything that could block (a FIFO) runs under an alarm."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multipl_moe import cli
from multipl_moe.evaluation import formats
from multipl_moe.evaluation.sandbox import bwrap_path

from test_eval_execute import problem, quiet_execute, write_completions

needs_bwrap = pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
DATA = Path(__file__).resolve().parents[2] / "shared/data/multipl-e"
SRC = Path(__file__).resolve().parents[1] / "src"
NAME = "HumanEval_900_tiny"


class Hung(BaseException):
    """Not an OSError (as TimeoutError is), so no `except OSError` on the way can swallow it."""


@contextlib.contextmanager
def alarm(seconds: int):
    """Fail instead of hanging: an open() of a FIFO blocks until the alarm interrupts it."""
    def fire(signum, frame):
        raise Hung(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC)}


# --- item 3: outputs never go through a planted link ---------------------------------------

@needs_bwrap
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_planted_partial_journal_link_is_not_written_through(tmp_path, link):
    folder, outside = tmp_path / "untrusted", tmp_path / "outside"
    folder.mkdir(), outside.mkdir()
    write_completions(folder, files=1, n=2)
    victim = outside / "victim.txt"
    victim.write_text("precious\n")
    planted = folder / f"{NAME}{formats.PARTIAL_SUFFIX}"
    (os.symlink if link == "symlink" else os.link)(victim, planted)

    s = quiet_execute(folder)

    assert s.executed == 2
    assert victim.read_text() == "precious\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    assert not planted.exists() and not planted.is_symlink()
    results = folder / f"{NAME}.results.json"
    assert not results.is_symlink() and len(formats.read_json(results)["results"]) == 2


@needs_bwrap
def test_planted_output_symlinks_are_replaced_not_followed(tmp_path):
    """Results, manifest and report files: each is renamed into place over the link."""
    folder, outside = tmp_path / "untrusted", tmp_path / "outside"
    folder.mkdir(), outside.mkdir()
    write_completions(folder, files=1, n=2)
    victim = outside / "victim.json"
    victim.write_text('{"results": []}')
    os.symlink(victim, folder / f"{NAME}.results.json")
    outputs = ["execution.json", "summary.json", "passk.md", "passk.png"]
    for name in outputs:
        os.symlink(outside / name, folder / name)

    assert cli.main(["execute", str(folder), "--no-progress", "--workers", "2"]) == 0

    assert victim.read_text() == '{"results": []}'
    assert sorted(p.name for p in outside.iterdir()) == ["victim.json"]
    for name in [f"{NAME}.results.json", *outputs]:
        assert (folder / name).is_file() and not (folder / name).is_symlink(), name


@needs_bwrap
@pytest.mark.parametrize("planted", [f"{NAME}.results.json", f"{NAME}{formats.PARTIAL_SUFFIX}",
                                     "execution.json"])
def test_a_planted_fifo_among_the_outputs_does_not_hang(tmp_path, planted):
    write_completions(tmp_path, files=1, n=1)
    os.mkfifo(tmp_path / planted)
    with alarm(60):
        s = quiet_execute(tmp_path)
    assert s.executed == 1
    assert (tmp_path / planted).is_file() or not (tmp_path / planted).exists()


# --- item 4: problem names are checked before they touch a path ------------------------------

@pytest.mark.parametrize("name", ["../../../x", "/tmp/x", "a/b", "..", ".", "", "x\0y", 7, None])
def test_problem_names_that_are_not_file_names_are_refused(tmp_path, name):
    from multipl_moe.evaluation.generate import completion_path
    from multipl_moe.evaluation.problems import load_jsonl

    row = {**problem(0), "name": name}
    path = tmp_path / "humaneval-py.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="name"):
        load_jsonl(path)
    with pytest.raises(ValueError, match="name"):
        completion_path(tmp_path, row)


def test_real_multipl_e_names_are_accepted():
    from multipl_moe.evaluation.problems import load_problems

    if not DATA.is_dir():
        pytest.skip(f"no MultiPL-E data at {DATA}")
    assert len(load_problems("mbpp", "rb", DATA, "latest")) > 0


def test_eval_does_not_write_outside_out_for_a_hostile_name(tmp_path, tiny_base_factory, capsys):
    data, out = tmp_path / "data", tmp_path / "a" / "b" / "out"
    data.mkdir()
    rows = [problem(0), {**problem(1), "name": "../../../../escaped"}]
    (data / "humaneval-py.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = tiny_base_factory("qwen2")
    capsys.readouterr()  # the fixture's own progress output
    rc = cli.main(["eval", "--model", str(model), "--data-dir", str(data),
                   "--benchmark", "humaneval", "--langs", "py", "--greedy", "--max-new-tokens", "2",
                   "--out", str(out), "--no-execute", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "escaped" in err[0] and "name" in err[0], err
    assert not list(tmp_path.rglob("escaped*"))


# --- item 5: one bad file does not stop the run --------------------------------------------

def _bad_files(root: Path) -> dict[str, str]:
    """file name -> a word its one-line complaint must contain."""
    good = {**problem(0), "completions": ["    return 1\n"]}
    data = json.dumps({**good, "name": "t"}).encode()
    (root / "truncated.json.gz").write_bytes(gzip.compress(data)[:-12])
    corrupt = bytearray(gzip.compress(data))
    corrupt[12:20] = b"\xff" * 8
    (root / "corrupt.json.gz").write_bytes(bytes(corrupt))
    (root / "notjson.json").write_text("{not json")
    (root / "list.json").write_text("[1, 2]")
    cases = {
        "null_completion.json": ({**good, "completions": ["    return 1\n", None]}, "completions"),
        "null_prompt.json": ({**good, "prompt": None}, "prompt"),
        "int_language.json": ({**good, "language": 3}, "language"),
        "string_completions.json": ({**good, "completions": "    return 1\n"}, "completions"),
        "missing_tests.json": ({k: v for k, v in good.items() if k != "tests"}, "tests"),
        "cobol.json": ({**good, "language": "cobol"}, "cobol"),
    }
    for name, (row, _) in cases.items():
        (root / name).write_text(json.dumps(row))
    return {"truncated.json.gz": "truncated.json.gz", "corrupt.json.gz": "corrupt.json.gz",
            "notjson.json": "notjson.json", "list.json": "list.json",
            **{name: word for name, (_, word) in cases.items()}}


@needs_bwrap
def test_bad_files_are_reported_one_line_each_and_the_good_ones_run(tmp_path, capsys):
    write_completions(tmp_path, files=2, n=2)
    bad = _bad_files(tmp_path)

    rc = cli.main(["execute", str(tmp_path), "--no-progress", "--workers", "2"])

    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    for name, word in bad.items():
        mine = [ln for ln in lines if f"/{name}:" in ln]
        assert len(mine) == 1 and word in mine[0], (name, lines)
    assert any(f"{len(bad)} of {len(bad) + 2} completion files were not run" in ln for ln in lines)
    for i in range(2):
        results = formats.read_json(tmp_path / f"HumanEval_{900 + i}_tiny.results.json")["results"]
        assert [r["status"] for r in results] == ["Exception", "OK"]
    assert sorted(p.name for p in tmp_path.glob("*.results.json")) == \
        [f"HumanEval_{900 + i}_tiny.results.json" for i in range(2)]
    assert (tmp_path / "summary.json").is_file()


# --- item 6: leftovers of a kill, and two runs on one folder -------------------------------

def _caches() -> set[Path]:
    """Toolchain cache folders (as root they go to /tmp, where programs running as nobody can
    read them)."""
    import tempfile

    parent = "/tmp" if os.geteuid() == 0 else tempfile.gettempdir()
    return set(Path(parent).glob("multipl-moe-cache-*"))


@needs_bwrap
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("go") is None, reason="Go (the language with a cache) is missing")
def test_cache_folder_of_a_killed_run_is_removed_by_the_next_run(tmp_path):
    go = {"name": "HumanEval_900_go", "language": "go_test.go",
          "prompt": "package main\n\nimport \"testing\"\n\nfunc f() int {\n",
          "tests": "}\n\nfunc TestF(t *testing.T) { if f() != 1 { t.Fatal(\"no\") } }\n",
          "stop_tokens": ["\nfunc"], "completions": ["    return 1\n"]}
    formats.write_json_atomic(tmp_path / "go" / "HumanEval_900_go.json", go)
    proc = subprocess.Popen([sys.executable, "-m", "multipl_moe.cli", "execute", str(tmp_path / "go"),
                             "--workers", "1", "--no-progress"], env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def mine() -> set[Path]:   # named after the run's pid: other runs may be going on beside
        return {p for p in _caches() if p.name.startswith(f"multipl-moe-cache-{proc.pid}-")}

    try:
        deadline = time.monotonic() + 120
        while not mine() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(0.5)  # into the Go cache build
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a kill of a terminal would
        proc.wait()
    left = mine()
    assert len(left) == 1, "the killed run should have left its cache folder"

    write_completions(tmp_path / "py", files=1, n=1)
    quiet_execute(tmp_path / "py")
    assert not any(p.exists() for p in left)

    from multipl_moe.evaluation import runcache

    live = runcache.make(runcache.parent())  # a run still going: its folder must stay
    try:
        quiet_execute(tmp_path / "py")
        assert live.is_dir()
    finally:
        runcache.remove(live)
    assert not live.exists()


@needs_bwrap
def test_stale_partial_after_complete_results_is_removed_on_rerun(tmp_path):
    write_completions(tmp_path, files=1, n=2)
    quiet_execute(tmp_path)
    results = formats.read_json(tmp_path / f"{NAME}.results.json")["results"]
    partial = tmp_path / f"{NAME}{formats.PARTIAL_SUFFIX}"
    # A kill between the results write and the partial delete leaves this behind:
    with open(partial, "w") as f:
        for i, r in enumerate(results):
            formats.append_partial(f, i, r)

    s = quiet_execute(tmp_path)

    assert (s.executed, s.reused) == (0, 2)
    assert not partial.exists()


@needs_bwrap
def test_a_second_run_on_the_same_folder_says_so_and_runs_nothing(tmp_path, capsys):
    write_completions(tmp_path, files=2, n=4, sleep=0.5)
    first = subprocess.Popen([sys.executable, "-m", "multipl_moe.cli", "execute", str(tmp_path),
                              "--workers", "1", "--no-progress"], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*.partial.jsonl")) and time.monotonic() < deadline \
                and first.poll() is None:
            time.sleep(0.05)
        assert first.poll() is None, "the first run should still be running"
        recorded = len(list(formats.read_partial(next(tmp_path.glob("*.partial.jsonl")))))
        assert recorded < 8

        rc = cli.main(["execute", str(tmp_path), "--no-progress"])

        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert "another" in err[0] and "running" in err[0] and str(tmp_path) in err[0], err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kill released the folder: the next run goes ahead and finishes the work.
    s = quiet_execute(tmp_path)
    assert s.executed + s.reused == 8


# --- item 9: arguments out of range ---------------------------------------------------------

@pytest.mark.parametrize("extra,word", [
    (["--limit", "-1"], "--limit"), (["--limit", "0"], "--limit"),
    (["--max-new-tokens", "-5"], "max_new_tokens"), (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--temperature", "nan"], "temperature"), (["--batch-size", "0"], "--batch-size"),
    (["--concurrency", "0"], "--concurrency"), (["--workers", "0"], "--workers"),
    (["--timeout", "-1"], "--timeout"), (["--memory-mb", "0"], "--memory-mb"),
])
def test_eval_rejects_out_of_range_numbers(tmp_path, capsys, extra, word):
    rc = cli.main(["eval", "--model", str(tmp_path), "--data-dir", str(tmp_path), "--langs", "py",
                   "--out", str(tmp_path / "out"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("multipl-moe eval: error:"), err
    assert word in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not DATA.is_dir(), reason=f"no MultiPL-E data at {DATA}")
@pytest.mark.parametrize("content", ["empty", "junk_config"])
def test_eval_on_a_folder_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys, content):
    model = tmp_path / "model"
    model.mkdir()
    if content == "junk_config":
        (model / "config.json").write_text("{\"model_type\": \"no-such-model\"}")
    rc = cli.main(["eval", "--model", str(model), "--data-dir", str(DATA), "--benchmark", "humaneval",
                   "--langs", "py", "--limit", "1", "--greedy", "--out", str(tmp_path / "out"),
                   "--no-execute", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "checkpoint" in err[0] and str(model) in err[0], err


@pytest.mark.parametrize("std", ["-1", "nan", "inf"])
def test_upcycle_rejects_a_bad_noise_std(tmp_path, tiny_base_factory, capsys, std):
    out, base = tmp_path / "moe", tiny_base_factory("qwen2")
    capsys.readouterr()
    rc = cli.main(["upcycle", "--base", str(base), "--out", str(out),
                   "--noise-std", std])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--noise-std" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("content", [b"\x1f\x8b\x08\x00corrupt" * 4, b"[1, 2]", b'{"completions": 5}',
                                     "fifo"])
def test_a_damaged_completion_file_is_generated_again(tmp_path, content):
    """eval's resume check reads what an earlier (killed, or tampered) run left: anything
    damaged means "generate again", never a traceback or a hang."""
    from multipl_moe.evaluation.generate import Sampling, generate

    class Backend:
        def complete(self, prompts, stops, s, on_batch=None):
            return ["    return 1\n" for _ in prompts]

    path = tmp_path / f"{NAME}.json.gz"
    if content == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes(content if content.startswith(b"\x1f\x8b") else gzip.compress(content))
    with alarm(60):
        assert generate([problem(0)], Backend(), Sampling(n=1, temperature=0), tmp_path,
                        progress=False) == 1
    assert formats.read_json(path)["completions"] == ["    return 1\n"]


@needs_bwrap
@pytest.mark.parametrize("planted", ["garbage", "fifo", "list"])
def test_a_damaged_results_file_without_its_completions_is_reported_not_fatal(tmp_path, capsys,
                                                                             planted):
    """A results file whose completion file is gone cannot be rerun: the report leaves it out,
    says so on one line, and the exit status says something was wrong."""
    write_completions(tmp_path, files=1, n=2)
    orphan = tmp_path / "HumanEval_7_orphan.results.json"
    if planted == "fifo":
        os.mkfifo(orphan)
    else:
        orphan.write_text("{garbage" if planted == "garbage" else "[1, 2]")
    with alarm(60):
        rc = cli.main(["execute", str(tmp_path), "--no-progress", "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if str(orphan) in ln]) == 1, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["language"], r["pass@1"]) for r in summary["results"]] == [("py", 0.5)]


@needs_bwrap
@pytest.mark.parametrize("planted", ["symlink", "fifo"])
def test_a_planted_lock_file_is_replaced_not_followed(tmp_path, planted):
    from multipl_moe.evaluation.execute import LOCK_NAME

    folder, victim = tmp_path / "untrusted", tmp_path / "victim"
    folder.mkdir()
    write_completions(folder, files=1, n=1)
    if planted == "symlink":
        os.symlink(victim, folder / LOCK_NAME)
    else:
        os.mkfifo(folder / LOCK_NAME)
    with alarm(60):
        assert quiet_execute(folder).executed == 1
    assert not victim.exists() and (folder / LOCK_NAME).is_file()
