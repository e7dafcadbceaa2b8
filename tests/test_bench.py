"""`multipl-moe bench` (issue 6): smoke tests on the quick shape. No timing assertions."""

from __future__ import annotations

import json

import pytest

from multipl_moe.cli import main as cli


def test_bench_quick_block_writes_json_and_markdown(tmp_path, capsys):
    assert cli(["bench", "--quick", "--parts", "block", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "block.json").read_text())
    names = [r["variant"] for r in result["rows"]]
    assert names[0].startswith("dense SwiGLU FFN")
    for backend in ("eager", "grouped_mm", "batched_mm"):
        assert f"transformers Qwen2MoeSparseMoeBlock [{backend}]" in names
    for name in ("ours: token level (renorm gating)", "ours: token level (qwen2_moe gating)",
                 "ours: segment level (batch)", "ours: segment level (causal)",
                 "ours: hybrid block (batch)", "ours: hybrid block (causal)"):
        assert name in names
    for row in result["rows"]:
        assert ("skipped" in row) or {"time_ms", "peak_mib", "ratio_to_ideal", "ideal_ms"} <= set(row)
    # our token level with Qwen2-MoE gating computes exactly what transformers' block computes
    assert result["checks"]["ours_qwen2_moe_gating_vs_transformers_max_abs_diff"] < 1e-5
    md = (tmp_path / "block.md").read_text()
    assert "| variant | time (ms) | min (ms) | peak (MiB) |" in md and "ours: hybrid block (causal)" in md
    assert (tmp_path / "bench.md").is_file()


@pytest.mark.slow
def test_bench_quick_executor_runs_the_same_programs_sandboxed_and_not(tmp_path):
    from multipl_moe.evaluation.sandbox import bwrap_path

    assert cli(["bench", "--quick", "--parts", "executor", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "executor.json").read_text())
    rows = {r["lang"]: r for r in result["per_language"]}
    assert set(rows) == {"py", "cpp", "rs"}
    assert result["verdicts_identical"] is True
    for lang, row in rows.items():
        if "unavailable" in row:
            continue
        # 3 problems x (2 correct, 1 wrong, 1 unparsable): the verdicts are the real ones
        assert row["programs"] == 12 and row["statuses"]["OK"] == 6, row
        assert row["unsandboxed_per_s"] > 0
        if bwrap_path():
            assert row["sandboxed_per_s"] > 0 and "sandbox_overhead_pct" in row
    live = [r for r in rows.values() if "unavailable" not in r]
    assert [w["workers"] for w in result["whole_set"]] == [1, 2]
    assert all(w["programs"] == 12 * len(live) for w in result["whole_set"])
    md = (tmp_path / "executor.md").read_text()
    assert "| language | programs | sandboxed (programs/s)" in md and "Verdicts across every run" in md


def test_bench_quick_model_writes_json_and_markdown(tmp_path):
    assert cli(["bench", "--quick", "--parts", "model", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "model.json").read_text())
    assert [r["model"] for r in result["train"]] == ["dense", "token-only MoE", "hybrid (batch routing)",
                                                      "hybrid (causal routing)"]
    assert all(r["tokens_per_s"] > 0 and r["peak_mib"] is not None for r in result["train"])
    decode = {(r["model"], r["batch"]): r for r in result["decode"]}
    assert set(b for _, b in decode) == {1, 8}
    assert decode[("hybrid (causal routing)", 1)]["kv_cache"] is True
    assert decode[("hybrid (batch routing)", 1)]["kv_cache"] is False
    assert "Greedy generation" in (tmp_path / "model.md").read_text()


def test_bench_cuda_without_cuda_is_a_one_line_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("multipl-moe bench: error:") and "CUDA" in err and "\n" not in err
    assert cli(["bench", "--repeats", "0", "--out", str(tmp_path)]) == 2
