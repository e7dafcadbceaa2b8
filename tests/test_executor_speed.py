"""Speed paths of the executor (issue 18): each one is selectable off (`--no-toolchain-cache`, the
reference: MultiPL-E's own commands) and gives the same verdicts as the reference, through the
real toolchains and the real sandbox."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from multipl_moe.evaluation import languages
from multipl_moe.evaluation.execute import execute
from multipl_moe.evaluation.languages import LANGUAGES, ToolchainContext
from multipl_moe.evaluation.sandbox import bwrap_path, make_runner
from multipl_moe.evaluation.toolchains import Toolchains, missing

TESTS = Path(__file__).resolve().parent


def _solutions():
    spec = importlib.util.spec_from_file_location("_lang_solutions", TESTS / "test_eval_languages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rust_links_the_shared_std_only_on_the_fast_path():
    rust = LANGUAGES["rs"]
    fast = rust.plan("fn main() {}\n", ToolchainContext(rust_shared_std=True))
    reference = rust.plan("fn main() {}\n", ToolchainContext())
    assert reference.compile == ("rustc", "prog.rs", "-o", "prog")   # MultiPL-E's command
    assert fast.compile == (*reference.compile, "-C", "prefer-dynamic")
    assert fast.run == reference.run and fast.files == reference.files


@pytest.mark.slow
@pytest.mark.parametrize("use_cache", [True, False])
def test_rust_fast_path_is_used_only_when_asked(use_cache):
    if bwrap_path() is None or missing(LANGUAGES["rs"]):
        pytest.skip("needs bubblewrap and rustc")
    with Toolchains(make_runner(), use_cache=use_cache) as tc:
        assert tc.prepare(["rs"]) == {}
        assert tc.context.rust_shared_std is use_cache


@pytest.mark.slow
def test_rust_falls_back_to_the_static_std_when_the_shared_one_fails(monkeypatch):
    """A sandbox where the shared-std binary cannot link or load must not lose the language."""
    if bwrap_path() is None or missing(LANGUAGES["rs"]):
        pytest.skip("needs bubblewrap and rustc")
    plan = languages.Rust.plan

    def broken(self, program, ctx):
        p = plan(self, program, ctx)
        if ctx.rust_shared_std:   # a link that cannot succeed, standing for a missing libstd.so
            from dataclasses import replace
            p = replace(p, compile=(*p.compile, "-C", "link-arg=-lmultipl_moe_no_such_library"))
        return p

    monkeypatch.setattr(languages.Rust, "plan", broken)
    with Toolchains(make_runner()) as tc:
        assert tc.prepare(["rs"]) == {}
        assert tc.context.rust_shared_std is False


@pytest.mark.slow
def test_rust_verdicts_identical_on_the_fast_and_reference_paths(tmp_path):
    if bwrap_path() is None or missing(LANGUAGES["rs"]):
        pytest.skip("needs bubblewrap and rustc")
    sol = _solutions()
    if not (sol.DATA / "humaneval-rs.jsonl").is_file():
        pytest.skip(f"MultiPL-E data not found at {sol.DATA}")
    rows = {json.loads(line)["name"]: json.loads(line)
            for line in (sol.DATA / "humaneval-rs.jsonl").read_text().splitlines()}
    src = tmp_path / "src"
    src.mkdir()
    for name, (good, bad) in zip(sol.PROBLEMS, sol.SOLUTIONS["rs"]):
        with gzip.open(src / f"{name}.json.gz", "wt") as f:
            # a panic with a message, and one in a helper thread, beside the tests' own asserts
            json.dump(dict(rows[name], completions=[good, bad, sol.GARBAGE,
                                                    '    panic!("boom");\n',
                                                    "    std::thread::spawn(|| panic!()).join().unwrap();\n"
                                                    "    unreachable!()\n"]), f)
    verdicts = {}
    for use_cache in (True, False):
        out = tmp_path / f"out-{use_cache}"
        summary = execute(src, out, workers=2, use_cache=use_cache, progress=False, log=lambda s: None)
        assert summary.unavailable == {}
        verdicts[use_cache] = {p.name: [(r["status"], r["exit_code"]) for r in json.loads(p.read_text())["results"]]
                               for p in sorted(out.glob("*.results.json"))}
        manifest = json.loads((out / "execution.json").read_text())
        assert manifest["toolchain_cache"]["rust_shared_std"] is use_cache
        shutil.rmtree(out)
    assert verdicts[True] == verdicts[False]
    statuses = [s for v in verdicts[True].values() for s, _ in v]
    assert statuses.count("OK") == 3 and statuses.count("SyntaxError") == 3 and statuses.count("Exception") == 9
