"""The evaluation pipeline as a library function (what `eval` and the demo call), typed options."""

from __future__ import annotations

import json

import pytest
from test_eval_generate import DATA, FakeServer, server  # noqa: F401 (server is a fixture)

from multipl_moe.errors import UserError
from multipl_moe.evaluation.generate import Sampling
from multipl_moe.evaluation.pipeline import (ExecutionOptions, ModelSource, ProblemSource,
                                             evaluate)
from multipl_moe.evaluation.sandbox import bwrap_path

SERVED = ModelSource("served", server="http://127.0.0.1:9")  # never contacted by these checks


@pytest.mark.parametrize("kwargs,message", [
    ({"execution": ExecutionOptions(workers=0)}, "--workers must be at least 1"),
    ({"execution": ExecutionOptions(timeout=float("nan"))}, "--timeout must be a positive"),
    ({"problems": ProblemSource(langs=("js",))}, "language 'js': no execution rules"),
    ({"problems": ProblemSource(benchmarks=("humaneval", "apps"))}, "unknown benchmark 'apps'"),
    ({"problems": ProblemSource(limit=0)}, "--limit must be at least 1"),
])
def test_bad_options_fail_in_one_line_before_any_work(tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        evaluate(SERVED, out=out, **kwargs)
    assert not out.exists()


@pytest.mark.skipif(not DATA.is_dir(), reason=f"no MultiPL-E data at {DATA}")
@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")
def test_evaluate_generates_executes_and_reports_without_the_cli(tmp_path, server, capsys):  # noqa: F811
    FakeServer.fail_first = False
    out = tmp_path / "out"
    result = evaluate(ModelSource("served", server=server),
                      ProblemSource(benchmarks=("humaneval",), langs=("py",), data_dir=DATA, limit=2),
                      Sampling(n=2, temperature=0.2, max_new_tokens=8), out=out,
                      execution=ExecutionOptions(workers=2, progress=False), progress=False)
    assert (result.out, result.status, result.executed) == (out, 0, True)
    (row,) = json.loads((out / "summary.json").read_text())["results"]
    assert (row["benchmark"], row["language"], row["problems"], row["samples_min"]) == ("humaneval", "py", 2, 2)
    assert "executed 4 programs" in capsys.readouterr().out
    # execution=None only generates; everything is reused, so nothing is generated or run again
    again = evaluate(ModelSource("served", server=server),
                     ProblemSource(benchmarks=("humaneval",), langs=("py",), data_dir=DATA, limit=2),
                     Sampling(n=2, temperature=0.2, max_new_tokens=8), out=out, execution=None,
                     progress=False)
    assert not again.executed and "multipl-moe execute" in capsys.readouterr().out
