"""Continued pretraining (issue 4, training half): learning, freezing, exact resume, data parallelism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multipl_moe.cli import main as cli
from multipl_moe.training import TrainConfigError, load_config
from multipl_moe.training.trainer import train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The built-in corpus (small), a tokenizer trained on it, and a tiny dense base model."""
    from transformers import AutoTokenizer

    from multipl_moe.data.local_corpus import build_local_corpus
    from multipl_moe.modeling.tiny import make_tiny_dense

    root = tmp_path_factory.mktemp("train-inputs")
    corpus = root / "corpus.jsonl"
    build_local_corpus(corpus, langs=["py", "go", "rb", "cpp"], max_bytes_per_lang=120_000)
    assert cli(["data", "tokenizer", "--corpus", str(corpus), "--out", str(root / "base"),
                "--vocab-size", "512"]) == 0
    make_tiny_dense(root / "base", tokenizer=AutoTokenizer.from_pretrained(root / "base"), hidden_size=64,
                    intermediate_size=128)
    return corpus, root / "base"


def config(inputs, out, *overrides):
    corpus, base = inputs
    return load_config(REPO / "configs" / "tiny-cpu.yaml", [
        f"model.base={base}", f"data.sources=[{corpus}]", f"output_dir={out}", "data.seq_len=64",
        "data.val_fraction=0.2", "micro_batch_size=4", "log_every=1", "eval_every=1000", "save_every=1000",
        "tensorboard=false", "model.moe_overrides.segment.segment_length=16", *overrides])


def metrics(out: Path, key="loss"):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


# ------------------------------------------------------------------------ 1. it learns
@pytest.mark.slow
def test_loss_goes_down_on_the_built_in_corpus(inputs, tmp_path):
    # 40 steps of the tiny model: about 7 s on 2 cores, well inside the "within a minute";
    # the time is printed, not asserted (speed lives in benchmarks, not in unit tests).
    t0 = time.time()
    cfg = config(inputs, tmp_path / "run", "steps=40", "eval_every=40", "optim.lr=3e-3", "model.freeze=all")
    last = train(cfg)
    print(f"40 training steps in {time.time() - t0:.1f} s")
    losses = metrics(tmp_path / "run")
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    val = metrics(tmp_path / "run", "val_loss_by_lang")[-1]
    assert set(val) <= {"py", "go", "rb", "cpp"} and max(val.values()) < losses[0]
    assert "token_load_by_lang" in last and "segment_load_by_lang" in last
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


# ------------------------------------------------------------------------ 2. freezing
def test_paper_recipe_leaves_frozen_parameters_bit_identical(inputs, tmp_path):
    from multipl_moe.training.model_setup import build_model

    cfg = config(inputs, tmp_path / "run", "steps=4", "optim.lr=1e-2", "optim.warmup_steps=0")
    before, _ = build_model(cfg)
    before = {k: v.clone() for k, v in before.state_dict().items()}
    train(cfg)
    after = load_file(tmp_path / "run" / "final" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = ("token_moe.experts.", "token_moe.router.", "segment_moe.")
    assert changed and all(any(t in k for t in trainable) for k in changed), sorted(changed)[:5]
    assert any("shared_expert" in k for k in before) and not any("shared_expert" in k for k in changed)
    assert "model.embed_tokens.weight" not in changed and "lm_head.weight" not in changed


# ------------------------------------------------------------------------ 3. kill -9 and resume
@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_losses_step_for_step(inputs, tmp_path):
    steps = 24
    args = ["steps=24", "save_every=4", "optim.warmup_steps=3", "model.variant=hybrid-batch",
            "model.upcycle_noise_std=0.01"]
    straight = tmp_path / "straight"
    train(config(inputs, straight, *args))

    killed = tmp_path / "killed"
    cfg_path = tmp_path / "killed.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(config(inputs, killed, *args).to_dict()))
    cmd = [sys.executable, "-m", "multipl_moe.cli", "train", str(cfg_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-000008").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its second checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()  # it really died mid-run
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    assert metrics(killed) == metrics(straight)
    assert len(metrics(killed)) == steps


# ------------------------------------------------------------------------ 4. two processes
@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(inputs, tmp_path):
    import yaml

    args = ["steps=6", "optim.warmup_steps=0", "model.variant=hybrid-causal", "balance_over_global_batch=true"]
    one = tmp_path / "one"
    train(config(inputs, one, *args, "micro_batch_size=4"))
    two = tmp_path / "two"
    cfg_path = tmp_path / "two.yaml"
    cfg_path.write_text(yaml.safe_dump(config(inputs, two, *args, "micro_batch_size=2").to_dict()))
    accelerate = Path(sys.executable).parent / "accelerate"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT="29517")
    proc = subprocess.run([str(accelerate), "launch", "--config_file", str(REPO / "configs/accelerate/cpu-2proc.yaml"),
                           "--main_process_port", "29517",
                           "-m", "multipl_moe.cli", "train", str(cfg_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = metrics(one), metrics(two)
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, rel=1e-5, abs=1e-5)
    aux_a, aux_b = metrics(one, "aux_loss"), metrics(two, "aux_loss")
    assert aux_a == pytest.approx(aux_b, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_fsdp2_two_cpu_processes_match_one_process():
    """The model under torch's FSDP2 (gloo, 2 processes) trains like one process: same losses."""
    worker = Path(__file__).parent / "fsdp2_worker.py"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))

    def run(*launcher: str) -> list[float]:
        proc = subprocess.run([*launcher, str(worker)], capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["stats_layers"] == [0, 1]
        return result["losses"]

    one = run(sys.executable)
    torchrun = Path(sys.executable).parent / "torchrun"
    two = run(str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", "29531")
    assert len(one) == len(two) == 4
    assert one == pytest.approx(two, rel=1e-5, abs=1e-5)
    assert one[-1] < one[0]


# ------------------------------------------------------------------------ variants and errors
@pytest.mark.parametrize("variant", ["dense", "lora", "token-only"])
def test_baselines_train_from_the_same_command(variant, inputs, tmp_path):
    cfg = config(inputs, tmp_path / variant, "steps=2", f"model.variant={variant}")
    train(cfg)
    from transformers import AutoModelForCausalLM

    import multipl_moe.modeling  # noqa: F401 (registers the MoE class)

    model = AutoModelForCausalLM.from_pretrained(tmp_path / variant / "final")
    expected = {"dense": "Qwen2ForCausalLM", "lora": "Qwen2ForCausalLM", "token-only": "MultiplMoEForCausalLM"}
    assert type(model).__name__ == expected[variant]


def test_existing_run_needs_resume(inputs, tmp_path):
    cfg = config(inputs, tmp_path / "run", "steps=2", "save_every=1")
    train(cfg)
    with pytest.raises(TrainConfigError, match="--resume"):
        train(cfg)


def test_config_errors_name_the_key(inputs, tmp_path, capsys):
    with pytest.raises(TrainConfigError, match="optim.lrr"):
        load_config(REPO / "configs" / "tiny-cpu.yaml", ["optim.lrr=1"])
    with pytest.raises(TrainConfigError, match="micro_batch_size"):
        load_config(REPO / "configs" / "tiny-cpu.yaml", ["micro_batch_size=0"])
    with pytest.raises(TrainConfigError, match="model.variant"):
        load_config(REPO / "configs" / "tiny-cpu.yaml", ["model.variant=moe"])
    with pytest.raises(TrainConfigError, match="bogus"):
        load_config(REPO / "configs" / "tiny-cpu.yaml", ["bogus=1"])
    assert cli(["train", str(REPO / "configs" / "tiny-cpu.yaml"), "data.seq_len=0"]) == 2
    assert "data.seq_len" in capsys.readouterr().err


def test_multipl_e_is_refused_as_training_data(inputs, tmp_path, capsys):
    shared = REPO.parent / "shared" / "data" / "multipl-e"
    if not shared.is_dir():
        pytest.skip("shared MultiPL-E data not present")
    corpus, base = inputs
    rc = cli(["train", str(REPO / "configs" / "tiny-cpu.yaml"), f"model.base={base}",
              f"data.sources=[{shared / 'humaneval-rs.jsonl'}]", f"output_dir={tmp_path / 'run'}", "steps=1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "MultiPL-E" in err and "Traceback" not in err


def test_tokenizer_model_mismatch_is_reported(inputs, tmp_path):
    from transformers import AutoTokenizer

    from multipl_moe.modeling.tiny import make_tiny_dense

    corpus, base = inputs
    small = tmp_path / "small"
    tok = AutoTokenizer.from_pretrained(base)
    make_tiny_dense(small, vocab_size=300)
    tok.save_pretrained(small)
    cfg = load_config(REPO / "configs" / "tiny-cpu.yaml", [f"model.base={small}", f"data.sources=[{corpus}]",
                                                          f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(TrainConfigError, match="tokenizer/model mismatch"):
        train(cfg)


def test_gradient_checkpointing_gives_the_same_losses(inputs, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(config(inputs, a, "steps=3", "model.variant=hybrid-batch"))
    train(config(inputs, b, "steps=3", "model.variant=hybrid-batch", "model.gradient_checkpointing=true"))
    assert metrics(a) == pytest.approx(metrics(b), rel=1e-6)


def test_run_seed_changes_the_data_order_but_not_the_validation_split(inputs):
    from transformers import AutoTokenizer

    from multipl_moe.data import DataConfig, build_train_val

    corpus, base = inputs
    tok = AutoTokenizer.from_pretrained(base)
    firsts, vals = [], []
    for shuffle_seed in (0, 1):
        cfg = DataConfig(sources=[str(corpus)], seq_len=64, val_fraction=0.2, shuffle_seed=shuffle_seed)
        train_stream, val = build_train_val(cfg, tok)
        it = iter(train_stream)
        firsts.append(torch.stack([next(it)["input_ids"] for _ in range(8)]))
        vals.append({lang: torch.stack([b["input_ids"] for b in blocks]) for lang, blocks in val.items()})
    assert not torch.equal(firsts[0], firsts[1])
    assert vals[0].keys() == vals[1].keys() and all(torch.equal(vals[0][k], vals[1][k]) for k in vals[0])


def test_a_corpus_with_no_usable_rows_is_a_clear_error(inputs, tmp_path, capsys):
    corpus, base = inputs
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "", "lang": "py"}\n{"content": "x = 1", "lang": "klingon"}\n')
    rc = cli(["train", str(REPO / "configs" / "tiny-cpu.yaml"), f"model.base={base}", f"data.sources=[{bad}]",
              f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "no usable document" in err and "klingon" in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["output_dir", "parent"])
def test_output_dir_naming_a_file_is_a_one_line_error(where, inputs, tmp_path, capsys):
    corpus, base = inputs
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me\n")
    out = a_file if where == "output_dir" else a_file / "run"
    rc = cli(["train", str(REPO / "configs" / "tiny-cpu.yaml"), f"model.base={base}", f"data.sources=[{corpus}]",
              f"output_dir={out}", "steps=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    assert f"output_dir = '{out}': not a directory" in err
    assert a_file.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
