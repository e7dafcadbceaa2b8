"""pass@k against the closed form on hand-made counts (issue 5, test 4), and the report built on
it: MultiPL-E's counting rule, tables, JSON summary, PNG chart, side-by-side comparison."""

from __future__ import annotations

import json
from math import comb

import pytest

from multipl_moe import cli
from multipl_moe.evaluation import formats, report
from multipl_moe.evaluation.passk import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (20, 5, 1), (20, 5, 10), (20, 1, 20),
                                   (200, 37, 10), (200, 37, 100), (10, 9, 2), (7, 0, 3)])
def test_pass_at_k_is_the_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_hand_values():
    assert pass_at_k(20, 5, 1) == pytest.approx(0.25)     # pass@1 = c / n
    assert pass_at_k(5, 3, 2) == pytest.approx(0.9)       # 1 - C(2,2)/C(5,2) = 1 - 1/10
    assert pass_at_k(20, 0, 10) == 0.0
    assert pass_at_k(10, 1, 10) == 1.0                    # n - c < k: every draw has the pass
    assert mean_pass_at_k([(20, 5), (20, 0), (20, 20)], 1) == pytest.approx(1.25 / 3)
    assert mean_pass_at_k([(20, 5), (5, 5)], 10) is None  # a problem with too few samples
    assert mean_pass_at_k([], 1) is None
    for bad in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def results_folder(root, lang, statuses_per_problem, bench="HumanEval", missing=0):
    for i, statuses in enumerate(statuses_per_problem):
        results = [{"program": "p", "status": s, "exit_code": 0 if s == "OK" else 1,
                    "stdout": "", "stderr": ""} for s in statuses]
        formats.write_json_atomic(root / f"{bench}_{i}_x_{lang}.results.json.gz",
                                  {"name": f"{bench}_{i}_x", "language": lang, "results": results})
    for i in range(missing):  # completion files nobody executed yet
        formats.write_json_atomic(root / f"{bench}_{100 + i}_y_{lang}.json.gz",
                                  {"name": f"{bench}_{100 + i}_y", "language": lang,
                                   "prompt": "", "tests": "", "completions": ["x"]})


def test_report_counts_like_multiple(tmp_path):
    results_folder(tmp_path, "cpp", [["OK", "OK", "Exception", "SyntaxError"], ["Timeout"] * 4])
    results_folder(tmp_path, "go_test.go", [["OK"] * 4, ["Exception"] * 4], bench="mbpp", missing=2)
    # status OK with a non-zero exit code does not count (MultiPL-E needs both)
    odd = formats.read_json(tmp_path / "HumanEval_0_x_cpp.results.json.gz")
    odd["results"][0]["exit_code"] = 1
    formats.write_json_atomic(tmp_path / "HumanEval_0_x_cpp.results.json.gz", odd)

    run = report.collect(tmp_path)
    s = {(r["benchmark"], r["language"]): r for r in report.summary(run, ks=(1, 2))["results"]}
    cpp, go = s[("humaneval", "cpp")], s[("mbpp", "go")]
    assert cpp["problems"] == 2 and cpp["samples_min"] == cpp["samples_max"] == 4
    assert cpp["pass@1"] == pytest.approx((1 / 4 + 0) / 2)
    assert cpp["pass@2"] == pytest.approx((pass_at_k(4, 1, 2) + 0) / 2)
    assert cpp["statuses"] == {"OK": 2, "Exception": 1, "SyntaxError": 1, "Timeout": 4}
    assert go["pass@1"] == pytest.approx(0.5) and go["missing_results"] == 2
    table = report.table(run, ks=(1, 2))
    # statuses in STATUSES order (MemoryExceeded: the whole-tree memory budget), then missing results
    assert "| humaneval | cpp | 2 | 4 | 12.5 | 25.0 | 2 | 1 | 1 | 4 | 0 | 0 |" in table
    assert "| mbpp | go | 2 | 4 | 50.0 | 50.0 | 4 | 0 | 4 | 0 | 0 | 2 |" in table


def test_report_files_and_comparison(tmp_path, capsys):
    a, b, out = tmp_path / "base", tmp_path / "moe", tmp_path / "cmp"
    results_folder(a, "py", [["OK", "Exception"], ["Exception", "Exception"]])
    results_folder(b, "py", [["OK", "OK"], ["OK", "Exception"]])
    formats.write_json_atomic(b / "execution.json", {"sandbox": "bubblewrap",
                                                     "unavailable": {"jl": "no julia"}})
    assert cli.main(["report", str(a), "--k", "1"]) == 0
    summary = json.loads((a / "summary.json").read_text())
    assert summary["results"][0]["pass@1"] == pytest.approx(0.25)
    assert (a / "passk.md").read_text().startswith("| benchmark |")
    assert (a / "passk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert cli.main(["report", str(a), str(b), "--k", "1", "--out", str(out)]) == 0
    text = (out / "compare.md").read_text()
    assert "| humaneval | py | 25.0 | 75.0 | +50.0 |" in text
    assert (out / "compare.png").stat().st_size > 5000
    run_b = report.collect(b)
    assert "- jl: unavailable here (no julia); not scored" in report.table(run_b)
    assert cli.main(["report", str(tmp_path / "empty-does-not-exist")]) == 2
