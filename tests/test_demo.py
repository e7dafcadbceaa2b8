"""`multipl-moe demo --quick` end to end: a report whose numbers come from the run itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from multipl_moe.cli import main as cli


@pytest.mark.slow
def test_demo_quick_runs_end_to_end_and_reports_its_own_numbers(tmp_path):
    out = tmp_path / "demo"
    assert cli(["demo", "--quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())

    # the base row of the loss table is the base model's measured held-out loss
    base_row = next(line for line in report.splitlines() if line.startswith("| base"))
    langs = re.findall(r"\| ([a-z]+)", next(line for line in report.splitlines() if line.startswith("| model |")))[1:]
    base_cells = [c.strip() for c in base_row.strip("|").split("|")[1:]]
    for lang, cell in zip(langs, base_cells):
        assert float(cell) == pytest.approx(summary["base_val"][lang], abs=5e-4)

    # each variant's entry is the mean over seeds of the final validation record of its runs
    for variant in ("dense", "lora", "token-only", "hybrid-batch", "hybrid-causal"):
        finals = []
        for seed in (0, 1):
            rows = [json.loads(l) for l in (out / "runs" / f"{variant}-seed{seed}" / "metrics.jsonl").read_text().splitlines()]
            finals.append([r for r in rows if "val_loss_by_lang" in r][-1]["val_loss_by_lang"])
            assert summary["val"][variant][str(seed)] == finals[-1]
        row = next(line for line in report.splitlines() if line.startswith(f"| {variant} |"))
        mean = float(row.split("|")[2].split("±")[0])
        assert mean == pytest.approx((finals[0][langs[0]] + finals[1][langs[0]]) / 2, abs=5e-4)

    assert "seed-to-seed spread" in report
    for png in ("loss_curves.png", "load_hybrid-batch_token.png", "load_hybrid-causal_segment.png"):
        assert (out / png).stat().st_size > 1000
    # stage 5 ran the real pipeline: results files exist for the hybrid model, or it says why not
    if "(skipped)" not in report:
        assert list((out / "eval" / "hybrid-causal").rglob("*.results.json"))
        assert "| hybrid-causal |" in report.split("MultiPL-E slice")[1]


def test_demo_reuses_only_results_made_with_the_same_settings_and_code(tmp_path, capsys):
    """Fast: every case is decided before any work starts."""
    from multipl_moe.demo import QUICK, STAMP, claim_output, fingerprint

    out = tmp_path / "demo"
    stamp = fingerprint(QUICK)
    claim_output(out, stamp, fresh=False)                      # new folder: claimed
    (out / "pretrain").mkdir()
    claim_output(out, stamp, fresh=False)                      # same settings and code: reused
    assert "reusing the finished stages" in capsys.readouterr().out

    other = json.loads((out / STAMP).read_text())
    other["code"] = "0" * 16
    (out / STAMP).write_text(json.dumps(other))
    assert cli(["demo", "--quick", "--out", str(out)]) == 2   # other code: refused, nothing touched
    assert "other multipl-moe code" in capsys.readouterr().err and (out / "pretrain").is_dir()
    claim_output(out, stamp, fresh=True)                       # --fresh: the old results are gone
    assert not (out / "pretrain").exists() and json.loads((out / STAMP).read_text()) == stamp

    stranger = tmp_path / "not-a-demo"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("precious")
    assert cli(["demo", "--quick", "--fresh", "--out", str(stranger)]) == 2
    assert "not written by `multipl-moe demo`" in capsys.readouterr().err
    assert (stranger / "thesis.tex").read_text() == "precious"
