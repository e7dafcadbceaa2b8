"""The README stays true: every subcommand is in its table, the config reference is current."""

from __future__ import annotations

import re
from pathlib import Path

from multipl_moe.cli import COMMAND_MODULES, build_parser
from multipl_moe.config.reference import BEGIN, END, reference

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(text: str, name: str) -> str:
    return text[text.index(f"<!-- {name}:begin"):text.index(f"<!-- {name}:end -->")]


def test_readme_command_table_lists_every_subcommand():
    table = _section(README.read_text(), "command-table")
    listed = set(re.findall(r"`multipl-moe ([a-z-]+)`", table))
    registered = set(build_parser()._subparsers._group_actions[0].choices)
    assert registered == set(COMMAND_MODULES)
    assert registered <= listed, f"missing from the README's command table: {sorted(registered - listed)}"


def test_readme_configuration_reference_is_generated_from_the_dataclasses():
    text = README.read_text()
    current = text[text.index(BEGIN):text.index(END) + len(END)]
    assert current == reference(), "run: python -m multipl_moe.config.reference --write README.md"


def test_readme_opens_with_the_two_commands():
    head = README.read_text()[:1500]
    assert "make demo" in head and "make test" in head


def test_readme_gives_the_demos_own_run_time_estimate():
    from multipl_moe.commands.demo import ESTIMATE

    assert ESTIMATE in README.read_text()[:1500], "the README's make demo line must say: " + ESTIMATE
