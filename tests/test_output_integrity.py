"""Issue 14: never a wrong result from reuse, never an overwritten file, one line per user mistake.

- eval reuses completions only for the very same run (model files, generation settings, problems),
  and its default output folder is unique per model;
- report scores each result folder as one model and replaces only files it wrote;
- a training run folder, a dense checkpoint where a MultiPL-MoE one is needed, an unreachable hub
  and a shipped config whose inputs are not built yet are each told in one line;
- every summary and checkpoint says what produced it (versions, git commit).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from multipl_moe import cli
from multipl_moe.evaluation import formats, manifest
from multipl_moe.util.provenance import LIBRARIES, provenance

REPO = Path(__file__).resolve().parents[1]

PROBLEMS = [
    {"name": f"HumanEval_{i}_f{i}", "language": "py", "prompt": f"def f{i}(x):\n",
     "tests": f"\n\nassert f{i}(1) == 1\n", "stop_tokens": ["\ndef", "\nclass", "\nif", "\nprint"],
     "doctests": "", "original": "", "prompt_terminology": ""}
    for i in range(2)
]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "humaneval-py.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return d


@pytest.fixture(scope="module")
def model_a(tiny_base_factory):
    return tiny_base_factory("llama")


@pytest.fixture(scope="module")
def model_b(tiny_base_factory):
    return tiny_base_factory("llama", seed=1)   # same architecture and size, other weights


def eval_args(model, data, out=None, *extra):
    args = ["eval", "--model", str(model), "--data-dir", str(data), "--benchmark", "humaneval",
            "--langs", "py", "--greedy", "--max-new-tokens", "2", "--no-execute", "--no-progress",
            "--device", "cpu"]
    return args + (["--out", str(out)] if out else []) + list(extra)


def one_line_error(capsys, rc) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def no_generation(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded: completions should have been reused")
    monkeypatch.setattr("multipl_moe.evaluation.generate.HFBackend", refuse)


# 1. eval reuse ------------------------------------------------------------------------------------

def test_default_out_is_unique_per_model(tmp_path):
    a = manifest.default_out(str(tmp_path / "runs/dense-seed0/final"))
    b = manifest.default_out(str(tmp_path / "runs/hybrid-causal-seed0/final"))
    c = manifest.default_out(str(tmp_path / "other/dense-seed0/final"))
    assert len({a, b, c}) == 3
    assert a.parent == Path("runs/eval") and a.name.startswith("dense-seed0-final-")
    assert manifest.default_out("m", "http://a:1") != manifest.default_out("m", "http://b:1")


def test_eval_default_out_of_two_final_checkpoints_differ(tmp_path, model_a, model_b, data_dir,
                                                          monkeypatch, capsys):
    for name, src in (("dense-seed0", model_a), ("hybrid-seed0", model_b)):
        shutil.copytree(src, tmp_path / "runs" / name / "final")
    monkeypatch.chdir(tmp_path)
    assert cli.main(eval_args("runs/dense-seed0/final", data_dir)) == 0
    assert cli.main(eval_args("runs/hybrid-seed0/final", data_dir)) == 0
    outs = sorted((tmp_path / "runs/eval").iterdir())
    assert len(outs) == 2, outs
    keys = {formats.read_json(o / manifest.MANIFEST)["key"]["model"]["sha256"] for o in outs}
    assert len(keys) == 2


def test_eval_refuses_another_models_completions(tmp_path, model_a, model_b, data_dir, capsys):
    out = tmp_path / "out"
    assert cli.main(eval_args(model_a, data_dir, out)) == 0
    first = formats.read_json(out / "humaneval-py" / f"{PROBLEMS[0]['name']}.json.gz")
    capsys.readouterr()
    err = one_line_error(capsys, cli.main(eval_args(model_b, data_dir, out)))
    assert "model files" in err and str(model_b) in err and "--fresh" in err and "--out" in err
    assert formats.read_json(out / "humaneval-py" / f"{PROBLEMS[0]['name']}.json.gz") == first
    # --fresh starts over with the new model
    assert cli.main(eval_args(model_b, data_dir, out, "--fresh")) == 0
    rec = formats.read_json(out / manifest.MANIFEST)
    assert rec["model"]["path"] == str(Path(model_b).resolve())
    assert len(rec["runs"]) == 1 and rec["runs"][0]["generated"] == {"humaneval-py": 2}


@pytest.mark.parametrize("change,field", [
    (["--max-new-tokens", "3"], "max_new_tokens"),
    (["--seed", "1"], "seed"),
    (["--dtype", "bfloat16"], "dtype"),
])
def test_eval_refuses_changed_generation_settings(tmp_path, model_a, data_dir, capsys, change, field):
    out = tmp_path / "out"
    assert cli.main(eval_args(model_a, data_dir, out)) == 0
    capsys.readouterr()
    args = eval_args(model_a, data_dir, out)
    i = args.index(change[0]) if change[0] in args else None
    if i is not None:
        args[i + 1] = change[1]
    else:
        args += change
    err = one_line_error(capsys, cli.main(args))
    assert field in err and "--fresh" in err


def test_eval_refuses_sampling_instead_of_greedy(tmp_path, model_a, data_dir, capsys):
    out = tmp_path / "out"
    assert cli.main(eval_args(model_a, data_dir, out)) == 0
    capsys.readouterr()
    args = [a for a in eval_args(model_a, data_dir, out) if a != "--greedy"]
    err = one_line_error(capsys, cli.main(args + ["--n", "2", "--temperature", "0.8"]))
    assert "temperature 0.0 -> 0.8" in err and "n 1 -> 2" in err


def test_eval_reuses_the_very_same_run_even_rewritten(tmp_path, model_a, data_dir, capsys,
                                                      monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(model_a, model)
    out = tmp_path / "out"
    assert cli.main(eval_args(model, data_dir, out)) == 0
    # the same bytes written again (a rerun of a deterministic training): new times, same hash
    for f in model.iterdir():
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data)
        os.utime(f, ns=(1, 1))
    no_generation(monkeypatch)
    capsys.readouterr()
    assert cli.main(eval_args(model, data_dir, out)) == 0
    rec = formats.read_json(out / manifest.MANIFEST)
    said = capsys.readouterr().out
    assert "0 problems generated now, 2 reused" in said and rec["runs"][0]["started"] in said
    assert [r.get("generated") for r in rec["runs"]] == [{"humaneval-py": 2}, {}]
    # one byte of the weights changed: not the same model any more
    st = model / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[-1] ^= 1
    st.write_bytes(bytes(data))
    assert "model files" in one_line_error(capsys, cli.main(eval_args(model, data_dir, out)))


def test_eval_refuses_completions_of_other_problem_versions(tmp_path, model_a, data_dir, capsys):
    out = tmp_path / "out"
    assert cli.main(eval_args(model_a, data_dir, out)) == 0
    changed = [dict(p, tests=p["tests"] + "assert True\n") for p in PROBLEMS]
    (data_dir / "humaneval-py.jsonl").write_text("".join(json.dumps(p) + "\n" for p in changed))
    capsys.readouterr()
    err = one_line_error(capsys, cli.main(eval_args(model_a, data_dir, out)))
    assert "other versions of their problems" in err and "--fresh" in err


def test_eval_refuses_a_folder_without_a_record(tmp_path, model_a, data_dir, capsys):
    out = tmp_path / "out"
    formats.write_json_atomic(out / "humaneval-py" / f"{PROBLEMS[0]['name']}.json.gz",
                              {**PROBLEMS[0], "completions": ["    return x\n"]})
    err = one_line_error(capsys, cli.main(eval_args(model_a, data_dir, out)))
    assert "do not say what produced them" in err and "--fresh" in err


def test_fresh_removes_only_what_eval_wrote(tmp_path, model_a, model_b, data_dir):
    out = tmp_path / "out"
    assert cli.main(eval_args(model_a, data_dir, out)) == 0
    (out / "notes.txt").write_text("mine")
    (out / "mine.json").write_text("{}")
    (out / "humaneval-py" / "keep.txt").write_text("mine too")
    assert cli.main(eval_args(model_b, data_dir, out, "--fresh")) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine.json").read_text() == "{}"
    assert (out / "humaneval-py" / "keep.txt").read_text() == "mine too"


# 2. report writes only its own files, one model per result folder --------------------------------

def _result_folder(root: Path, passed: list[bool], mark: str = "execution.json"):
    for i, ok in enumerate(passed):
        results = [{"program": "p", "status": "OK" if ok else "Exception", "exit_code": 0 if ok else 1,
                    "stdout": "", "stderr": ""}]
        formats.write_json_atomic(root / "humaneval-py" / f"HumanEval_{i}_f.results.json",
                                  {"name": f"HumanEval_{i}_f", "language": "py", "results": results})
    formats.write_json_atomic(root / mark, {"sandbox": "bubblewrap", "unavailable": {}}
                              if mark == "execution.json" else {"kind": manifest.KIND, "key": {}})


def test_report_on_a_folder_of_models_compares_them_and_keeps_foreign_files(tmp_path, capsys):
    root = tmp_path / "demo"
    _result_folder(root / "eval" / "dense", [True, True])
    _result_folder(root / "eval" / "hybrid", [False, True], mark=manifest.MANIFEST)
    foreign = {"base_test": 1.5, "best_lr": {"dense": 0.001}}
    (root / "summary.json").write_text(json.dumps(foreign))
    (root / "report.md").write_text("# the demo's report\n")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert cli.main(["report", str(root)]) == 0
    out = capsys.readouterr().out
    assert "dense pass@1" in out and "hybrid pass@1" in out   # two models, side by side
    assert "| humaneval | py | 100.0 | 50.0 | -50.0 |" in out   # not one merged 4-problem row
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before   # no --out: nothing written anywhere


def test_report_does_not_replace_a_summary_it_did_not_write(tmp_path, capsys):
    folder = tmp_path / "results"
    _result_folder(folder, [True])
    (folder / "execution.json").unlink()   # MultiPL-E's own results folder: no mark of ours
    (folder / "summary.json").write_text('{"held_out_loss": 2.0}')
    err = one_line_error(capsys, cli.main(["report", str(folder)]))
    assert "summary.json" in err and "--out" in err
    assert (folder / "summary.json").read_text() == '{"held_out_loss": 2.0}'
    assert not (folder / "passk.md").exists()
    # into a folder of its own it writes, and says what produced the figures
    assert cli.main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 0
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["written_by"] == "multipl-moe report"
    assert set(summary["provenance"]["libraries"]) == set(LIBRARIES)
    assert "multipl-moe report" in (tmp_path / "rep" / "passk.md").read_text()
    assert cli.main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 0   # its own: replaced


def test_report_compare_out_keeps_a_foreign_compare_md(tmp_path, capsys):
    a, b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "dest"
    _result_folder(a, [True])
    _result_folder(b, [False])
    dest.mkdir()
    (dest / "compare.md").write_text("my notes\n")
    err = one_line_error(capsys, cli.main(["report", str(a), str(b), "--out", str(dest)]))
    assert "compare.md" in err
    assert (dest / "compare.md").read_text() == "my notes\n" and not (dest / "compare.png").exists()


def test_eval_summary_says_what_produced_it_and_what_was_reused(tmp_path, model_a, data_dir):
    from multipl_moe.evaluation import report

    out = tmp_path / "out"
    assert cli.main(eval_args(model_a, data_dir, out)) == 0
    assert cli.main(eval_args(model_a, data_dir, out)) == 0
    # the summary eval writes after execution, built here without running the sandbox
    summary = report_targets_stamp(report, out)
    assert summary["model"]["sha256"] == formats.read_json(out / manifest.MANIFEST)["key"]["model"]["sha256"]
    assert [r.get("generated") for r in summary["eval_runs"]] == [{"humaneval-py": 2}, {}]
    assert all(r["provenance"]["libraries"]["torch"] for r in summary["eval_runs"])


def report_targets_stamp(report, out):
    from multipl_moe.evaluation.report_targets import stamp

    return stamp(report.summary(report.collect(out)), out)


# 3. one line where a traceback was ------------------------------------------------------------

@pytest.fixture
def run_folder(tmp_path, model_a):
    run = tmp_path / "runs" / "token-only-seed0"
    shutil.copytree(model_a, run / "final")
    (run / "config.json").write_text(json.dumps({"output_dir": str(run), "steps": 10,
                                                 "model": {"base": "x", "variant": "token-only"}}))
    (run / "metrics.jsonl").write_text("")
    return run


def test_eval_on_a_training_run_folder_names_its_final(run_folder, data_dir, capsys):
    err = one_line_error(capsys, cli.main(eval_args(run_folder, data_dir)))
    assert "training run folder" in err and str(run_folder / "final") in err


def test_info_on_a_training_run_folder_names_its_final(run_folder, capsys):
    err = one_line_error(capsys, cli.main(["info", str(run_folder)]))
    assert "training run folder" in err and str(run_folder / "final") in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eval_without_data_dir_and_without_hub_is_one_line(model_a, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MULTIPL_E_DIR", raising=False)
    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY",
              "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")   # nothing listens

    def no_retries(*a, **k):
        raise AssertionError("the hub was asked for the dataset")
    monkeypatch.setattr("datasets.load_dataset", no_retries)
    err = one_line_error(capsys, cli.main(["eval", "--model", str(model_a), "--langs", "rs",
                                           "--out", str(tmp_path / "o"), "--no-execute"]))
    assert "--data-dir" in err and "MULTIPL_E_DIR" in err and "cannot be reached" in err
    assert not (tmp_path / "o").exists()


def test_eval_honours_multipl_e_dir(model_a, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MULTIPL_E_DIR", str(data_dir))
    out = tmp_path / "o"
    assert cli.main(["eval", "--model", str(model_a), "--langs", "py", "--benchmark", "humaneval",
                     "--greedy", "--max-new-tokens", "2", "--no-execute", "--no-progress",
                     "--out", str(out)]) == 0
    assert formats.read_json(out / manifest.MANIFEST)["data"]["source"] == str(data_dir.resolve())


def test_export_of_a_dense_checkpoint_says_so(model_a, tmp_path, capfd):
    rc = cli.main(["export", str(model_a), "--out", str(tmp_path / "q")])
    err = capfd.readouterr().err
    assert rc == 2 and "not a MultiPL-MoE checkpoint" in err and "UNEXPECTED" not in err
    assert "segment.num_experts" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "q").exists()


def test_info_on_a_dense_checkpoint_says_it_shows_upcycling(model_a, capsys):
    assert cli.main(["info", str(model_a), "--preset", "paper"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{model_a} is a dense llama checkpoint")
    assert "--preset paper` would give" in out
    assert cli.main(["info", str(model_a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["upcycled_with_preset"] == "paper"


def test_shipped_tiny_cpu_config_names_the_commands_it_needs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)   # a fresh clone: no runs/ yet
    shutil.copy(REPO / "configs" / "tiny-cpu.yaml", tmp_path / "tiny-cpu.yaml")
    rc = cli.main(["train", "tiny-cpu.yaml"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    first = err.splitlines()[0]
    assert "runs/corpus.jsonl" in first or "runs/tiny-base" in first
    assert "multipl-moe data local-corpus --out runs/corpus.jsonl" in err
    assert "multipl-moe data tokenizer" in err


def test_check_train_inputs_base_without_hub_retries(tmp_path, monkeypatch):
    from multipl_moe.errors import UserError
    from multipl_moe.util.checkpoints import check_train_inputs

    cfg = tmp_path / "c.yaml"
    cfg.write_text("# first:\n#   multipl-moe data tokenizer --corpus c.jsonl --out runs/base\nmodel: {}\n")
    (tmp_path / "c.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="model.base runs/base: no such folder; make it first"):
        check_train_inputs(cfg, "runs/base", ["c.jsonl"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(UserError, match="hub is off"):
        check_train_inputs(cfg, "someone/not-cached-model", ["c.jsonl"])


# 4. provenance, quieter logs, help texts --------------------------------------------------------

def test_provenance_names_versions_and_commit():
    from multipl_moe.util.provenance import git_commit

    git_commit.cache_clear()   # other sessions may have committed since it was first asked
    p = provenance()
    assert set(p["libraries"]) == {"torch", "transformers", "accelerate", "peft"}
    import torch
    import transformers

    assert p["libraries"]["torch"] == torch.__version__.split("+")[0] or \
        p["libraries"]["torch"] == torch.__version__
    assert p["libraries"]["transformers"] == transformers.__version__
    if (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert p["git"]["commit"] == head


def test_no_transformers_loading_bars_in_our_commands(tmp_path, model_a, data_dir):
    # a fresh interpreter: the switch must work when transformers is first imported by a command
    r = subprocess.run([sys.executable, "-m", "multipl_moe.cli", *eval_args(model_a, data_dir,
                                                                            tmp_path / "o")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TQDM_DISABLE": ""})
    assert r.returncode == 0, r.stderr
    assert "Loading weights" not in r.stderr and "FutureWarning" not in r.stderr, r.stderr


def test_data_options_have_help_texts():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["data"]
    subs = next(a for a in sub._actions if getattr(a, "choices", None) and isinstance(a.choices, dict))
    missing = [f"data {name} {'/'.join(act.option_strings) or act.dest}"
               for name, p in subs.choices.items() for act in p._actions
               if act.help is None and act.dest != "help"]
    assert not missing, missing


# training: resolved config and provenance at the start, W&B beside TensorBoard --------------------

class StandInWandb:
    """Records what the trainer asks of `wandb` (the real one is an optional dependency)."""

    def __init__(self):
        import types

        self.inits, self.logged, self.finished = [], [], 0
        self.module = types.ModuleType("wandb")
        self.module.init = self.init

    def init(self, **kwargs):
        self.inits.append(kwargs)
        outer = self

        class Run:
            def log(self, data, step=None):
                outer.logged.append((step, data))

            def finish(self):
                outer.finished += 1
        return Run()


@pytest.fixture
def train_inputs(tmp_path, tiny_base_factory):
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"content": f"def f{i}(x):\n    return x + {i}\n" * 6, "lang": "py"} for i in range(40)]
    rows += [{"content": f"func g{i}(x int) int {{\n\treturn x * {i}\n}}\n" * 6, "lang": "go"}
             for i in range(40)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return corpus, tiny_base_factory("qwen2")


def train_args(inputs, out, *extra):
    corpus, base = inputs
    return ["train", str(REPO / "configs" / "tiny-cpu.yaml"), f"model.base={base}", "model.variant=dense",
            f"data.sources=[{corpus}]", f"output_dir={out}", "data.seq_len=32", "data.val_fraction=0.2",
            "micro_batch_size=2", "steps=2", "log_every=1", "eval_every=1000", "save_every=1000", *extra]


def test_train_writes_resolved_config_and_provenance_and_logs_to_wandb(train_inputs, tmp_path,
                                                                      monkeypatch):
    from multipl_moe.training import load_config

    wb = StandInWandb()
    monkeypatch.setitem(sys.modules, "wandb", wb.module)
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    out = tmp_path / "run"
    assert cli.main(train_args(train_inputs, out, "report_to=[tensorboard,wandb]")) == 0
    # the resolved config reads back as the very config that ran
    args = train_args(train_inputs, out, "report_to=[tensorboard,wandb]")
    ran = load_config(args[1], args[2:])
    ran.data.shuffle_seed = ran.seed   # resolved by the trainer: the run's seed picks the order
    again = load_config(out / "config.yaml")
    assert again.to_dict() == ran.to_dict()
    assert again.output_dir == str(out) and again.steps == 2 and again.model.variant == "dense"
    record = json.loads((out / "run.json").read_text())["runs"]
    assert len(record) == 1 and record[0]["resumed_from"] is None
    assert set(record[0]["provenance"]["libraries"]) == set(LIBRARIES)
    final = json.loads((out / "final" / "multipl_moe_provenance.json").read_text())
    assert final["libraries"]["transformers"] and "git" in final
    state = json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())
    assert state["step"] == 2 and set(state["provenance"]["libraries"]) == set(LIBRARIES)
    # W&B got the run, the same scalars as TensorBoard, and was closed
    (init,) = wb.inits
    assert init["project"] == "proj" and init["resume"] == "allow" and init["config"]["steps"] == 2
    assert (out / "wandb-run-id").read_text().strip() == init["id"]   # a --resume continues it
    tags = {tag for _, d in wb.logged for tag in d}
    assert "train/loss" in tags and {s for s, _ in wb.logged} == {1, 2} and wb.finished == 1
    assert any((out / "tensorboard").iterdir())


def test_train_asking_for_wandb_without_it_is_one_line(train_inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)   # `import wandb` raises ImportError
    out = tmp_path / "run"
    err = one_line_error(capsys, cli.main(train_args(train_inputs, out, "report_to=[wandb]")))
    assert "pip install 'multipl-moe[wandb]'" in err
    assert not out.exists()   # told before anything was written


def test_upcycled_checkpoint_says_what_wrote_it(tiny_base_factory, tmp_path):
    out = tmp_path / "moe"
    assert cli.main(["upcycle", "--base", str(tiny_base_factory("qwen2")), "--out", str(out)]) == 0
    p = json.loads((out / "multipl_moe_provenance.json").read_text())
    assert set(p["libraries"]) == set(LIBRARIES) and p["multipl_moe"]


def test_the_data_table_is_printed_once_for_runs_on_the_same_data(train_inputs, tmp_path, capsys):
    from multipl_moe.training import run_record

    run_record._printed_tables.clear()
    for name in ("a", "b"):
        assert cli.main(train_args(train_inputs, tmp_path / name, "steps=1", "report_to=[]")) == 0
    out = capsys.readouterr().out
    assert out.count("train tokens") == 1 and "the same blocks as in the table above" in out
    assert not (tmp_path / "a" / "tensorboard").exists()   # report_to: [] writes no event files


def test_lora_training_shows_no_future_warning(train_inputs, tmp_path, recwarn):
    assert cli.main(train_args(train_inputs, tmp_path / "r", "model.variant=lora", "steps=1",
                               "report_to=[]")) == 0
    future = [str(w.message) for w in recwarn if issubclass(w.category, FutureWarning)]
    assert not future, future


def test_codebleu_scores_say_what_computed_them(tmp_path):
    from multipl_moe.evaluation.xlcost import SCORES, read_scores, write_scores

    write_scores(tmp_path, {"task": "xlcost", "config": "x", "codebleu": 0.5})
    (row,) = read_scores(tmp_path)
    assert row["codebleu"] == 0.5 and set(row["provenance"]["libraries"]) == set(LIBRARIES)
    assert (tmp_path / SCORES).is_file()


def test_benchmark_results_say_what_produced_them(tmp_path):
    from multipl_moe.bench.common import write_report

    json_path, _ = write_report(tmp_path, "b", {"rows": []}, "| a |")
    p = json.loads(json_path.read_text())["provenance"]
    assert set(p["libraries"]) == set(LIBRARIES) and "git" in p


def test_output_into_a_closed_pipe_is_not_a_traceback(model_a):
    # `multipl-moe info DIR | head -1`: the reader is gone before the command prints
    p = subprocess.Popen([sys.executable, "-m", "multipl_moe.cli", "info", str(model_a)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141 and "Traceback" not in err, err


def test_report_out_into_another_models_result_folder_is_refused(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _result_folder(a, [True])
    _result_folder(b, [False])
    assert cli.main(["report", str(b)]) == 0
    before = (b / "summary.json").read_bytes()
    capsys.readouterr()
    err = one_line_error(capsys, cli.main(["report", str(a), "--out", str(b)]))
    assert "another eval/execute run" in err and (b / "summary.json").read_bytes() == before
