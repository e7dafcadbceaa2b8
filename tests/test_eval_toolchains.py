"""Toolchain bookkeeping without running programs: `make toolchains` (python -m
multipl_moe.evaluation.toolchains_setup), language names, and when the C++ precompiled header may be used."""

from __future__ import annotations

import shutil

import pytest

from multipl_moe.evaluation import toolchains_setup
from multipl_moe.evaluation.languages import (LANGUAGES, PAPER_LANGS, ToolchainContext, canonical,
                                              parse_langs)
from multipl_moe.evaluation.toolchains import missing


def test_setup_covers_every_language_and_the_sandbox():
    for lang in LANGUAGES.values():
        assert set(lang.packages) <= set(toolchains_setup.PACKAGES)
    assert {"bubblewrap", "g++", "openjdk-17-jdk-headless", "libjavatuples-java", "rustc",
            "golang-go", "ruby-test-unit", "lua-unit", "ocaml", "r-base-core", "racket"} \
        <= set(toolchains_setup.PACKAGES)


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian system")
def test_setup_as_non_root_only_prints_the_apt_command(monkeypatch, capsys):
    monkeypatch.setattr(toolchains_setup, "PACKAGES",
                        toolchains_setup.PACKAGES + ("no-such-package-for-multipl-moe",))
    monkeypatch.setattr(toolchains_setup.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(toolchains_setup, "_run", lambda cmd: pytest.fail(f"ran {cmd}"))
    assert toolchains_setup.main() == 0
    out = capsys.readouterr().out
    assert "sudo apt-get install -y --no-install-recommends" in out
    assert "no-such-package-for-multipl-moe" in out.splitlines()[1]


def test_julia_is_reported_as_not_packaged():
    if shutil.which("julia", path="/usr/local/bin:/usr/bin:/bin"):
        pytest.skip("Julia is installed here")
    assert "not packaged in Debian" in missing(LANGUAGES["jl"])


def test_language_names():
    assert canonical("go_test.go") == "go" and canonical("Python") == "py"
    assert parse_langs("paper") == list(PAPER_LANGS)
    assert parse_langs("rust, ruby,rs") == ["rs", "rb"]
    assert len(parse_langs("all")) == 11
    with pytest.raises(KeyError):
        parse_langs("py,cobol")


@pytest.mark.parametrize("program,uses_pch", [
    ("#include<assert.h>\n#include<bits/stdc++.h>\nint main() {}\n", True),  # MultiPL-E's
    ("#include <bits/stdc++.h>\nint main() {}\n", True),
    ("\n#include <vector>\n\n#  include <bits/stdc++.h>\n", True),
    ("#define int long\n#include<bits/stdc++.h>\n", False),  # a macro first: meaning may change
    ("int x;\n#include<bits/stdc++.h>\n", False),
    ("#include<vector>\nint main() {}\n", False),
])
def test_precompiled_header_only_when_it_cannot_change_the_program(program, uses_pch):
    plan = LANGUAGES["cpp"].plan(program, ToolchainContext(pch_dir="/cache/0/pch"))
    assert ("-include" in plan.compile) == uses_pch
    assert "-std=c++17" in plan.compile and "prog.cpp" in plan.compile
    plain = LANGUAGES["cpp"].plan(program, ToolchainContext())
    assert plain.compile == ("g++", "prog.cpp", "-o", "prog", "-std=c++17")  # MultiPL-E's
