"""`multipl-moe bench` (issue 6): smoke tests on the quick shape. No timing assertions."""

from __future__ import annotations

import gzip
import json
import statistics

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
    # every timed variant against the machine's GEMM rate of its own dtype, measured in the same run
    gemm = result["gemm"]
    assert set(gemm["rate_gflops"]) == {"float32", "bfloat16"} and all(g > 0 for g in gemm["rate_gflops"].values())
    assert len(gemm["probes"]) == 4 and gemm["threads"] >= 1
    for row in result["rows"]:
        if "time_ms" in row:
            assert row["gemm_fraction"] > 0 and row["gflops"] > 0
            assert row["gemm_dtype"] == ("bfloat16" if "bf16 autocast" in row["variant"] else "float32")
    md = (tmp_path / "block.md").read_text()
    assert "| variant | time (ms) | min (ms) | peak (MiB) |" in md and "ours: hybrid block (causal)" in md
    assert "of GEMM rate" in md and "GEMM rate of this machine" in md
    assert (tmp_path / "bench.md").is_file()


# A stand-in for MultiPL-E's executor with the same command line (`main.py --dir D --output-dir O
# --max-workers N --recursive`, beside a containerized_eval.py), so that the side-by-side path runs
# without a MultiPL-E checkout. It judges Python programs the way MultiPL-E's eval_python does.
_STAND_IN_PEER = r"""
import argparse, gzip, json, subprocess, sys
from pathlib import Path
a = argparse.ArgumentParser()
a.add_argument("--dir"); a.add_argument("--output-dir"); a.add_argument("--max-workers", type=int)
a.add_argument("--recursive", action="store_true")
args = a.parse_args()
for path in sorted(Path(args.dir).rglob("*.json.gz")):
    problem = json.loads(gzip.open(path, "rt").read())
    results = []
    for c in problem["completions"]:
        program = problem["prompt"] + c + "\n" + problem["tests"]
        r = subprocess.run(["python3", "-c", program], capture_output=True, text=True, timeout=15)
        status = "OK" if r.returncode == 0 else ("SyntaxError" if "SyntaxError" in r.stderr else "Exception")
        results.append({"program": program, "status": status})
    out = Path(args.output_dir) / path.relative_to(args.dir).parent / path.name.replace(".json.gz", ".results.json.gz")
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt") as f:
        json.dump(dict(problem, results=results), f)
"""


def _stand_in_peer(root):
    src = root / "evaluation" / "src"
    src.mkdir(parents=True)
    (src / "main.py").write_text(_STAND_IN_PEER)
    (src / "containerized_eval.py").write_text("")
    return root / "evaluation"


@pytest.mark.slow
def test_bench_executor_runs_the_peer_side_by_side(tmp_path, monkeypatch):
    """--peer-multipl-e: both executors on the same completion files, interleaved, with per-round
    ratios, per-language times and CPU, verdict agreement; wrong and broken completions included."""
    from multipl_moe.bench import executor
    from multipl_moe.evaluation.sandbox import bwrap_path

    if bwrap_path() is None:
        pytest.skip("bubblewrap is not installed")
    monkeypatch.setattr(executor, "QUICK_LANGS", ("py",))
    peer = _stand_in_peer(tmp_path / "peer")
    out = tmp_path / "out"
    assert cli(["bench", "--quick", "--parts", "executor", "--repeats", "2", "--out", str(out),
                "--peer-multipl-e", str(peer)]) == 0
    result = json.loads((out / "executor.json").read_text())
    assert result["peer"] == str(peer / "src" / "main.py")
    assert result["executors"] == ["ours", "ours-unsandboxed", "multipl-e"]
    (row,) = [r for r in result["per_language"] if r["lang"] == "py"]
    assert row["programs"] == 15
    for name in result["executors"]:
        assert len(row[name]["wall_s_rounds"]) == 2 and row[name]["cpu_ms_per_program"] > 0
    assert row["vs_multipl_e"] > 0
    # 6 correct, 9 wrong or unparsable, judged alike by both
    for name in result["executors"]:
        v = result["verdicts"][name]
        assert v["as_expected"] == v["programs"] == 15 and v["stable_across_runs"], v
        assert v["statuses"] == {"OK": 6, "Exception": 6, "SyntaxError": 3}, v
    assert result["agreement"]["same_status"] == result["agreement"]["programs"] == 15
    for w in result["whole_set"]:
        assert len(w["ratio_per_round"]) == 2 and w["vs_multipl_e"] == pytest.approx(
            statistics.median(w["ratio_per_round"]), abs=0.01)
    # every executor run is in the JSON, the two executors alternating within the rounds
    whole = [r["executor"] for r in result["runs"] if r["set"] == "whole" and r["workers"] == 1]
    assert whole == ["ours", "multipl-e", "multipl-e", "ours"]
    # the sandboxed programs' CPU is counted (rusage alone misses what runs inside bubblewrap)
    if result["cpu_from"] == ["cgroup"]:
        sandboxed = [r for r in result["runs"] if r["executor"] == "ours"]
        assert all(r["cpu_s"] > r["rusage_cpu_s"] for r in sandboxed)
    md = (out / "executor.md").read_text()
    assert "MultiPL-E time / ours" in md and "ours vs MultiPL-E: same status on 15/15" in md


def test_bench_executor_peer_errors_are_one_line(tmp_path, capsys):
    assert cli(["bench", "--parts", "executor", "--peer-multipl-e", str(tmp_path / "nothing"),
                "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no MultiPL-E executor there" in err and "\n" not in err
    peer = _stand_in_peer(tmp_path / "peer")
    assert cli(["bench", "--parts", "block", "--peer-multipl-e", str(peer), "--out", str(tmp_path / "o")]) == 2
    assert "add it to --parts" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bench_executor_without_peer_says_it_was_not_run(tmp_path, monkeypatch):
    from multipl_moe.bench import executor
    from multipl_moe.evaluation.sandbox import bwrap_path

    if bwrap_path() is None:
        pytest.skip("bubblewrap is not installed")
    monkeypatch.setattr(executor, "QUICK_LANGS", ("py",))
    assert cli(["bench", "--quick", "--parts", "executor", "--repeats", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "executor.json").read_text())
    assert result["peer"] is None and "multipl-e" not in result["executors"]
    assert result["targets"][0]["met"] is None
    assert "MultiPL-E's executor was **not run**" in (tmp_path / "executor.md").read_text()


def test_executor_set_has_wrong_and_broken_completions_in_every_language(tmp_path):
    from multipl_moe.bench.executor import _solutions, build_set

    expected = build_set(tmp_path)
    assert set(expected) == {lang for lang in _solutions().SOLUTIONS
                             if (_solutions().DATA / f"humaneval-{lang}.jsonl").is_file()}
    for lang, oks in expected.items():
        assert oks.count(True) == 6 and oks.count(False) == 9, lang
        programs = []
        for path in (tmp_path / lang).glob("*.json.gz"):
            problem = json.loads(gzip.open(path, "rt").read())
            programs += [problem["prompt"] + c + "\n" + problem["tests"] for c in problem["completions"]]
        assert len(set(programs)) == len(programs) == 15   # distinct: MultiPL-E caches repeats


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
    # bytes-ideal: weights read per decode step (the experts actually read) at the measured bandwidth
    assert all(b["gb_per_s"] > 0 for b in result["bandwidth"].values())
    for (name, batch), row in decode.items():
        if row["kv_cache"]:
            assert row["bytes_ideal_ms"] > 0 and row["vs_bytes_ideal"] is not None
        else:
            assert "vs_bytes_ideal" not in row
    assert decode[("dense", 1)]["expert_mib_per_step"] == 0
    for batch in (1, 8):
        # the causal hybrid reads a segment expert as well as the token level's experts
        assert decode[("hybrid (causal routing)", batch)]["expert_mib_per_step"] > \
            decode[("token-only MoE", batch)]["expert_mib_per_step"] > 0
    # at batch 8 the sequences' experts differ: more of them are read per step than at batch 1
    assert decode[("token-only MoE", 8)]["expert_mib_per_step"] > decode[("token-only MoE", 1)]["expert_mib_per_step"]
    md = (tmp_path / "model.md").read_text()
    assert "Greedy generation" in md and "step / bytes-ideal" in md and "Read bandwidth" in md


def test_bench_cuda_without_cuda_is_a_one_line_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert cli(["bench", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("multipl-moe bench: error:") and "CUDA" in err and "\n" not in err
    assert cli(["bench", "--repeats", "0", "--out", str(tmp_path)]) == 2
