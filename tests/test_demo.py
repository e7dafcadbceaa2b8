"""`multipl-moe demo`: options checked before any work, the output folder claimed and locked, a
failed stage failing the command, a report whose numbers come from the run itself, and the GPU
size's code path run offline with local stand-ins for its hub names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from multipl_moe.cli import main as cli

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "multipl-e"


def _row(report: str, first_cell: str, after: str | None = None) -> list[str]:
    text = report.split(after, 1)[1] if after else report
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")[1:]]


@pytest.mark.slow
def test_demo_quick_reports_its_own_numbers_and_fails_over_a_failed_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--quick", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    langs = re.findall(r"\| ([a-z]+)", next(line for line in report.splitlines()
                                            if line.startswith("| model | py")))[1:]

    # the base row is the base model's measured test loss; each variant's cell is the mean over
    # seeds of its runs' test losses, at the learning rate the sweep chose on the validation split
    base = json.loads((out / "base_test_loss.json").read_text())
    assert [float(c) for c in _row(report, "base")] == pytest.approx([base[lang] for lang in langs], abs=5e-4)
    for variant in ("dense", "lora", "token-only", "hybrid-batch", "hybrid-causal"):
        sweep = {float(lr): loss for lr, loss in summary["sweep"][variant].items()}
        best = min(sweep, key=sweep.get)
        assert summary["best_lr"][variant] == best
        rows = [json.loads(line) for line in (out / "runs" / f"{variant}-lr{best:g}-seed0" / "metrics.jsonl")
                .read_text().splitlines()]
        val = [r for r in rows if "val_loss_by_lang" in r][-1]["val_loss_by_lang"]
        assert sweep[best] == pytest.approx(sum(val[lang] for lang in langs) / len(langs))
        tests = [json.loads((out / "runs" / f"{variant}-lr{best:g}-seed{s}" / "test_loss.json").read_text())
                 for s in (0, 1)]
        mean = float(_row(report, variant, "## Held-out test loss")[0].split("±")[0])
        assert mean == pytest.approx((tests[0][langs[0]] + tests[1][langs[0]]) / 2, abs=5e-4)
        assert _row(report, variant, "## Tuning and cost")[1].split(" (")[0] == f"{best:g}"
        cost = json.loads((out / "cost.json").read_text())[variant]
        assert f"{cost['trainable_params']:,} of {cost['total_params']:,}" in _row(report, variant, "## Tuning")[2]
    # every pair of variants is compared, paired by seed
    assert len(re.findall(r"^\| [a-z-]+ − [a-z-]+ \|", report, re.M)) == 10
    assert "forgetting: variant − base, + = forgot" in report
    for png in ("curves.png", "routing.png"):
        assert (out / png).stat().st_size > 5000
    if "(skipped)" in report:
        return
    assert list((out / "eval" / "hybrid-causal").rglob("*.results.json"))
    assert "ran end to end" in report and "Every stage succeeded" in report

    # the same demo again, but with a broken MultiPL-E file: training is reused, the evaluation
    # stage fails, and the command fails with a report that says so instead of claiming success
    broken = tmp_path / "multipl-e"
    broken.mkdir()
    for f in SHARED.glob("humaneval-*.jsonl"):
        shutil.copy(f, broken / f.name)
    (broken / "humaneval-rs.jsonl").write_text("{not json\n")
    from multipl_moe.demo import QUICK, STAMP, fingerprint

    # the package's code as it is now: in a checkout others edit meanwhile, it may have changed
    (out / STAMP).write_text(json.dumps(fingerprint(QUICK), indent=2) + "\n")
    capsys.readouterr()
    assert cli(["demo", "--quick", "--out", str(out), "--data-dir", str(broken)]) != 0
    err = capsys.readouterr().err
    assert "stage 5 failed" in err and len(err.strip().splitlines()[-1]) < 300
    report = (out / "report.md").read_text()
    assert "FAILED" in report and "ran end to end" not in report and "Every stage succeeded" not in report
    assert json.loads((out / "summary.json").read_text())["failures"]


@pytest.mark.parametrize("argv, message", [
    (["--eval-langs", "rust,pyhton"], "--eval-langs: unknown language 'pyhton'"),
    (["--seeds", "0,one"], "--seeds must be comma-separated integers"),
    (["--seeds", "1,1"], "each seed once"),
    (["--data-dir", "/nonexistent/multipl-e"], "--data-dir /nonexistent/multipl-e: not a folder"),
    (["--quick", "--size", "gpu"], "contradict"),
    (["--recipe", "/nonexistent.yaml"], "no such file"),
    pytest.param(["--size", "gpu"], "none is visible", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="a GPU is visible here")),
])
def test_demo_checks_every_option_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "demo"
    argv = argv if "--size" in argv else ["--quick", *argv]
    assert cli(["demo", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_demo_recipe_and_data_dir_are_checked_too(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: gpu\nsteps: 3\nlearning_rate: 1\n")
    assert cli(["demo", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "unknown setting(s) learning_rate" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["demo", "--quick", "--data-dir", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no humaneval-py.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_second_demo_into_the_same_folder_stops_in_one_line(tmp_path, capsys):
    out = tmp_path / "demo"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from multipl_moe.demo import locked_output
            with locked_output(Path({str(out)!r})):
                print("locked", flush=True)
                sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli(["demo", "--quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert f"another `multipl-moe demo` (pid {holder.pid}) is writing to {out}" in err
        assert len(err.splitlines()) == 1 and not (out / "demo-settings.json").exists()
    finally:
        holder.communicate("", timeout=30)
    from multipl_moe.demo import locked_output

    with locked_output(out):   # released when its holder ends
        pass


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
    assert sorted(p.name for p in stranger.iterdir()) == ["thesis.tex"]


def test_progress_line_counts_runs_and_estimates_time_left_from_measured_rates(capsys):
    from multipl_moe.demo.run import Progress

    p = Progress([("dense", 100), ("dense", 10), ("hybrid-batch", 10), ("lora", 20)])
    p.start("pre-training")
    assert "run 1 of 4: pre-training" in capsys.readouterr().out   # nothing measured yet: no estimate
    p.finish(50.0, reused=False)                                   # 0.5 s per dense step
    p.start("dense")
    assert "run 2 of 4: dense; about 20 s of training left" in capsys.readouterr().out  # (10 + 10 + 20) x 0.5
    p.finish(5.0, reused=False)
    p.finish(30.0, reused=False)                                   # hybrid-batch: 3 s per step
    p.start("lora")
    assert "run 4 of 4: lora; about 1.0 min of training left" in capsys.readouterr().out  # unmeasured: slowest rate


def test_paired_differences_are_called_only_when_every_seed_agrees():
    from multipl_moe.demo.stats import paired

    assert paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.9, 2: 2.0})["called"]
    mixed = paired({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 1.9, 2: 2.0})
    assert not mixed["called"] and mixed["min"] == pytest.approx(-0.5) and mixed["max"] == pytest.approx(1.0)
    assert not paired({0: 1.0}, {0: 0.0})["called"]             # one seed has no spread to exceed


def test_one_run_time_estimate_in_both_help_texts(capsys):
    from multipl_moe.commands.demo import ESTIMATE

    with pytest.raises(SystemExit):
        cli(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        cli(["demo", "--help"])
    sub = " ".join(capsys.readouterr().out.split())
    assert ESTIMATE in top and ESTIMATE in sub and "minutes" in ESTIMATE


@pytest.mark.slow
def test_gpu_size_runs_offline_with_local_stand_ins_for_its_hub_names(tmp_path, tiny_base_factory):
    """`--size gpu` names Qwen/Qwen2.5-0.5B, The Stack and MultiPL-E on the hub; a recipe over it
    swaps in a saved tiny model, local JSONL folders in The Stack's row layout and a local MultiPL-E
    folder, which the same code reads the way it reads the hub's."""
    from multipl_moe.data.local_corpus import build_local_corpus
    from multipl_moe.demo import GPU

    assert GPU.base == "Qwen/Qwen2.5-0.5B" and all("the-stack" in s for s in GPU.sources.values())
    names = {"py": "Python", "java": "Java", "cpp": "C++", "rs": "Rust", "go": "Go", "rb": "Ruby"}
    corpus = tmp_path / "corpus.jsonl"
    build_local_corpus(corpus, langs=list(names), max_bytes_per_lang=60_000)
    folders = {}
    for row in map(json.loads, corpus.read_text().splitlines()):
        folder = folders.setdefault(row["lang"], tmp_path / "stack" / names[row["lang"]].lower())
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "data.jsonl", "a") as f:   # The Stack's fields: content, lang (a name), path
            f.write(json.dumps({"content": row["content"], "lang": names[row["lang"]], "path": row["path"]}) + "\n")
    base = tiny_base_factory("qwen2", hidden_size=32, intermediate_size=64, num_layers=2, max_positions=256)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "size": "gpu", "base": str(base), "sources": {lang: str(f) for lang, f in folders.items()},
        "eval_data": str(SHARED), "bytes_per_lang": 60_000, "seq_len": 32, "batch": 4, "steps": 4,
        "lr_grid": [1e-3], "seeds": [0, 1], "segment_length": 8, "eval_problems": 1, "max_new_tokens": 8,
        "heldout_blocks": 2, "evals": 2, "precision": "fp32", "device": "cpu", "doc_bytes": 1000,
        "test_fraction": 0.2, "val_fraction": 0.2}))
    out = tmp_path / "demo"
    assert cli(["demo", "--recipe", str(recipe), "--out", str(out), "--eval-langs", "py"]) == 0
    report = (out / "report.md").read_text()
    assert f"Base: `{base}`" in report and "size `gpu`" in report
    cfg = json.loads((out / "runs" / "hybrid-batch-lr0.001-seed1" / "config.json").read_text())
    assert cfg["model"]["base"] == str(base) and cfg["data"]["sampling_weights"]["rs"] == pytest.approx(0.3)
    assert not (out / "pretrain").exists()   # a real base is not pre-trained again


def test_the_demo_gives_the_callers_torch_thread_count_back(tmp_path, monkeypatch):
    # The CPU sizes train on one thread; left set, later work in the same process ran with other
    # GEMM kernels (seen: the SIGKILL-resume test after the quick demo differed by 5e-7).
    import torch

    from multipl_moe.demo import run as demo_run

    def one_thread_then_fail(opts):
        torch.set_num_threads(1)
        raise RuntimeError("stage failed")

    monkeypatch.setattr(demo_run, "_run", one_thread_then_fail)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError):
            demo_run.run_demo(type("Opts", (), {"out": tmp_path / "demo"})())
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
