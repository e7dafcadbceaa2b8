"""Every available language, through the real toolchains and the real sandbox (issue 5, test 1):
three MultiPL-E HumanEval problems with a hand-written correct completion (must be OK), a wrong
one (must fail *at run time*: compiled fine, then a test caught it) and one that does not parse.

A language whose toolchain is missing here is skipped with the reason the executor gives; the
test also checks that such a language is reported unavailable, not scored.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from multipl_moe.evaluation import formats, toolchains
from multipl_moe.evaluation.execute import execute, program_text
from multipl_moe.evaluation.languages import LANGUAGES
from multipl_moe.evaluation.sandbox import bwrap_path

DATA = Path(__file__).resolve().parents[2] / "shared/data/multipl-e"
PROBLEMS = ("HumanEval_53_add", "HumanEval_23_strlen", "HumanEval_13_greatest_common_divisor")

# (correct, wrong) completion for add, strlen, gcd; each continues the language's prompt and
# stops where MultiPL-E's stop tokens would cut it (the tests close what the prompt opened).
SOLUTIONS = {
    "py": [("    return x + y\n", "    return x - y\n"),
           ("    return len(string)\n", "    return 0\n"),
           ("    while b:\n        a, b = b, a % b\n    return a\n", "    return 1\n")],
    "java": [("        return x + y;\n", "        return x - y;\n"),
             ("        return string.length();\n", "        return 0l;\n"),
             ("        while (b != 0) { long t = a % b; a = b; b = t; }\n        return a;\n",
              "        return 1l;\n")],
    "cpp": [("    return x + y;\n", "    return x - y;\n"),
            ("    return string.size();\n", "    return 0;\n"),
            ("    while (b != 0) { long t = a % b; a = b; b = t; }\n    return a;\n",
             "    return 1;\n")],
    "rs": [("    x + y\n", "    x - y\n"),
           ("    string.len() as isize\n", "    0\n"),
           ("    let (mut a, mut b) = (a, b);\n    while b != 0 { let t = a % b; a = b; b = t; }\n"
            "    a\n", "    1\n")],
    "go": [("    return x + y\n}\n\n", "    return x - y\n}\n\n"),
           ("    return len(myString)\n}\n\n", "    return 0\n}\n\n"),
           ("    for b != 0 {\n        a, b = b, a%b\n    }\n    return a\n}\n\n",
            "    return 1\n}\n\n")],
    "rb": [("  x + y\nend\n", "  x - y\nend\n"),
           ("  string.length\nend\n", "  0\nend\n"),
           ("  b == 0 ? a : greatest_common_divisor(b, a % b)\nend\n", "  1\nend\n")],
    "lua": [("    return x + y\nend\n", "    return x - y\nend\n"),
            ("    return #string\nend\n", "    return 0\nend\n"),
            ("    while b ~= 0 do a, b = b, a % b end\n    return a\nend\n", "    return 1\nend\n")],
    "jl": [("    return x + y\nend\n", "    return x - y\nend\n"),
           ("    return length(string)\nend\n", "    return 0\nend\n"),
           ("    return gcd(a, b)\nend\n", "    return 1\nend\n")],
    "ml": [(" x + y\n", " x - y\n"),
           (" String.length string\n", " 0\n"),
           (" let rec g a b = if b = 0 then a else g b (a mod b) in g a b\n", " 1\n")],
    "r": [("\n    x + y\n}\n", "\n    x - y\n}\n"),
          ("\n    nchar(string)\n}\n", "\n    0\n}\n"),
          ("\n    while (b != 0) { t <- a %% b; a <- b; b <- t }\n    a\n}\n", "\n    1\n}\n")],
    "rkt": [("  (+ x y))\n", "  (- x y))\n"),
            ("  (string-length string))\n", "  0)\n"),
            ("  (gcd a b))\n", "  1)\n")],
}
# Unbalanced brackets and junk: no language can parse it. MultiPL-E calls that a SyntaxError
# everywhere except Lua, whose executor has no syntax-error rule (any failure is an Exception).
GARBAGE = "    ((( @@@ ]]] }}} \"\n"
GARBAGE_STATUS = {code: "Exception" if code == "lua" else "SyntaxError" for code in LANGUAGES}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"MultiPL-E data not found at {DATA}"),
    pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed (make toolchains)"),
]


def _rows(lang: str) -> dict[str, dict]:
    rows = {}
    with open(DATA / f"humaneval-{lang}.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if row["name"] in PROBLEMS:
                rows[row["name"]] = row
    return rows


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """One run of the executor over every language (parallel across files and languages)."""
    root = tmp_path_factory.mktemp("languages")
    for lang, sols in SOLUTIONS.items():
        rows = _rows(lang)
        for name, (good, bad) in zip(PROBLEMS, sols):
            row = dict(rows[name], completions=[good, bad, GARBAGE])
            (root / lang).mkdir(exist_ok=True)
            with gzip.open(root / lang / f"{name}.json.gz", "wt") as f:
                json.dump(row, f)
    summary = execute(root, workers=2, progress=False, log=lambda s: None)
    yield root, summary
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("lang", list(SOLUTIONS))
def test_language_correct_passes_wrong_fails(executed, lang):
    root, summary = executed
    if lang in summary.unavailable:
        results = list((root / lang).glob("*.results.json*"))
        assert not results, "an unavailable language must not get results (it would score 0)"
        manifest = formats.read_json(root / "execution.json")
        assert lang in manifest["unavailable"]
        pytest.skip(f"{LANGUAGES[lang].name} unavailable here: {summary.unavailable[lang]}")
    rows = _rows(lang)
    for name, (good, bad) in zip(PROBLEMS, SOLUTIONS[lang]):
        data = formats.read_json(root / lang / f"{name}.results.json")
        assert data["name"] == name and "completions" not in data
        ok, wrong, garbage = data["results"]
        assert ok["program"] == program_text(rows[name], good)
        assert (ok["status"], ok["exit_code"]) == ("OK", 0), f"{lang} {name}: {ok['stderr'][-800:]}"
        # Wrong answers must compile and then be caught by the tests: an Exception, not a
        # SyntaxError (which would also appear if the toolchain itself were broken).
        assert wrong["status"] == "Exception", f"{lang} {name}: {wrong}"
        assert garbage["status"] == GARBAGE_STATUS[lang], f"{lang} {name}: {garbage}"


def test_racket_failure_with_exit_code_zero_is_not_ok(executed):
    """rackunit prints failures to stderr and racket exits 0: exit code 0 is not enough."""
    root, summary = executed
    if "rkt" in summary.unavailable:
        pytest.skip("Racket unavailable here")
    wrong = formats.read_json(root / "rkt" / "HumanEval_53_add.results.json")["results"][1]
    assert wrong["exit_code"] == 0 and "FAILURE" in wrong["stderr"]
    assert wrong["status"] == "Exception"


def test_artefact_languages_run_last_with_their_caches(executed):
    """C++, Go and Java wait for their per-run artefacts, which build on a side thread while the
    other languages run. An installed toolchain must come out available (a probe killed between
    the two phases would mark it unavailable) and use its artefact."""
    root, summary = executed
    late = {"java": "javac_archive", "cpp": "cpp_precompiled_header", "go": "go_build_cache"}
    installed = [c for c in late if toolchains.missing(LANGUAGES[c]) is None]
    if not installed:
        pytest.skip("none of java, cpp, go is installed")
    manifest = formats.read_json(root / "execution.json")
    for code in installed:
        assert code not in summary.unavailable, summary.unavailable
        assert manifest["toolchain_cache"][late[code]] is True, manifest
    stamps = {lang: [r["timestamp"] for p in (root / lang).glob("*.results.json")
                     for r in formats.read_json(p)["results"]]
              for lang in SOLUTIONS if lang not in summary.unavailable}
    early = [t for lang, ts in stamps.items() if lang not in late for t in ts]
    after = [t for lang, ts in stamps.items() if lang in late for t in ts]
    assert early and after and max(early) <= min(after)
