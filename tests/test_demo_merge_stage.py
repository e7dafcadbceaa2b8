"""The demo's merge stage on a tiny corpus: per-language fine-tunes, three merges, held-out loss and
CodeBLEU for every model, a Markdown table, and reuse of a finished stage."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from multipl_moe.demo import merge_stage as M
from multipl_moe.demo.settings import QUICK

PY_FUNCS = [
    'def add_{i}(a, b):\n    """Add two numbers, case {i}."""\n    total = a + b\n    return total * {i}\n',
    'def scale_{i}(xs, k):\n    """Scale every item by k, variant {i}."""\n    out = []\n    for x in xs:\n'
    '        out.append(x * k + {i})\n    return out\n',
]
RS = 'fn add_{i}(a: i32, b: i32) -> i32 {{\n    let total = a + b;\n    total * {i}\n}}\n'


def _corpus(tmp_path):
    rows = {"train": [], "test": []}
    for i in range(24):
        split = "test" if i % 4 == 0 else "train"
        # A document cut mid-function (as the demo cuts files): only its whole functions are used.
        py = "import os\n\n" + "".join(f.format(i=i) + "\n" for f in PY_FUNCS) + "    dangling = (\n"
        rows[split].append({"id": f"py{i}", "lang": "py", "content": py})
        rows[split].append({"id": f"rs{i}", "lang": "rs", "content": RS.format(i=i) * 2})
    files = {}
    for split, docs in rows.items():
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(d) + "\n" for d in docs))
    return files["train"], files["test"]


def test_python_functions_are_taken_whole_from_a_document_that_does_not_parse():
    text = ("x = 1\nclass K:\n    def f(self, v):\n        '''Double v.'''\n        return v * 2\n\n"
            "def g(a):\n    return a\n    if (\n")
    assert M.python_functions([text]) == ["def f(self, v):\n    '''Double v.'''\n    return v * 2\n"]


def test_a_llama_base_is_merged_as_mixtral_and_a_qwen2_base_as_qwen2_moe():
    assert [o["architecture"] for o in M.merge_plan("llama").values()] == ["mixtral", "mixtral", "multipl-moe"]
    assert [o["architecture"] for o in M.merge_plan("qwen2").values()] == ["qwen", "qwen", "multipl-moe"]


def test_merge_stage_table_has_every_model_and_language_with_finite_numbers(tiny_base_factory, tmp_path):
    base = tiny_base_factory("qwen2", max_position_embeddings=256)
    train_file, test_file = _corpus(tmp_path)
    size = dataclasses.replace(QUICK, seq_len=32, batch=4, heldout_blocks=2, evals=1, val_fraction=0.3)
    kw = dict(langs=["py", "rs"], size=size, steps=2, lr=3e-3, problems=3, max_new_tokens=8)
    result = M.run_merge_stage(tmp_path / "merge", base, train_file, test_file, **kw)

    merges = list(M.merge_plan("qwen2"))
    assert result["models"] == ["base", "fine-tune py", "fine-tune rs", *merges]
    assert M.check_finite(result) == []
    assert result["problems"] == 3
    assert set(result["codebleu"]) == {"base", "fine-tune py", *merges}
    assert all(0 <= v <= 1 for v in result["codebleu"].values())
    kept = M.own_gain_kept(result)
    assert set(kept) == set(merges) and all(math.isfinite(v) for v in kept.values())
    section = "\n".join(M.report_lines(result))
    assert "cannot be a Mixtral" in section and f"keeps {max(kept.values()):.0%}" in section
    table = (tmp_path / "merge" / M.SECTION).read_text()
    for name in result["models"]:
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert len(cells) == 4  # py, rs, mean, CodeBLEU
        assert all(math.isfinite(float(c)) for c in cells[:3])
    # The fine-tunes moved: each differs from the base on its own language.
    for lang in ("py", "rs"):
        assert result["loss"][f"fine-tune {lang}"][lang] != pytest.approx(result["loss"]["base"][lang], abs=1e-6)

    # A finished stage with the same settings is returned as it is; other settings start over.
    stamp = (tmp_path / "merge" / "finetune" / "py" / "final" / "config.json").stat().st_mtime_ns
    assert M.run_merge_stage(tmp_path / "merge", base, train_file, test_file, **kw) == result
    assert (tmp_path / "merge" / "finetune" / "py" / "final" / "config.json").stat().st_mtime_ns == stamp
    again = M.run_merge_stage(tmp_path / "merge", base, train_file, test_file, **{**kw, "steps": 3})
    assert again["key"]["steps"] == 3
    assert (tmp_path / "merge" / "finetune" / "py" / "final" / "config.json").stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_the_demo_runs_the_stage_and_reports_its_table(tmp_path):
    from multipl_moe.cli import main as cli

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"size": "quick", "lr_grid": [1e-2], "seeds": [0], "steps": 4, "pretrain_steps": 8,
                                  "merge_steps": 2, "merge_problems": 2, "merge_max_new_tokens": 8}))
    out = tmp_path / "demo"
    assert cli(["demo", "--recipe", str(recipe), "--out", str(out), "--eval-langs", "py"]) == 0
    merged = json.loads((out / "summary.json").read_text())["merge"]
    assert merged["langs"] == ["py", "rs", "go", "rb"] and merged["key"]["steps"] == 2
    assert merged["key"]["lr"] == 1e-2 and M.check_finite(merged) == []
    report = (out / "report.md").read_text()
    assert "## Merging per-language fine-tunes" in report
    for line in M.markdown(merged):
        assert line in report
