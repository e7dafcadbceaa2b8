"""The one language registry: every layer accepts the same names and groups, and says no in one line."""

from __future__ import annotations

import pytest

from multipl_moe import languages as registry
from multipl_moe.cli import main as cli
from multipl_moe.errors import UserError
from multipl_moe.evaluation import languages as execution
from multipl_moe.evaluation import xlcost


def test_every_group_is_accepted_by_data_and_evaluation_alike():
    for spec, tags in [("high", ["py", "java", "cpp"]), ("low", list(registry.LOW_RESOURCE)),
                       ("paper", ["py", "java", "cpp", "rs", "go", "rb"]),
                       ("Python, rust,RS", ["py", "rs"]), ("high low", ["py", "java", "cpp", *registry.LOW_RESOURCE])]:
        assert registry.parse_langs(spec) == tags, spec
        assert execution.parse_langs(spec) == tags, spec
    assert registry.parse_langs("all") == list(registry.LANGUAGES)  # data: every tag it can label
    assert execution.parse_langs("*") == list(execution.LANGUAGES)  # evaluation: every one it can run
    assert registry.parse_langs(["high", "c#"]) == ["py", "java", "cpp", "cs"]


def test_execution_rules_and_xlcost_names_are_keyed_on_registry_tags():
    assert set(execution.LANGUAGES) <= set(registry.LANGUAGES)
    for code, lang in execution.LANGUAGES.items():
        assert lang.name == registry.LANGUAGES[code]
        assert registry.lang_from_path(lang.source) == code, lang.source
    assert set(xlcost.XLCOST_NAMES) <= set(registry.LANGUAGES)
    assert xlcost.parse_langs("all") == list(xlcost.LANGUAGES)


@pytest.mark.parametrize("parse,spec,message", [
    (registry.parse_langs, "py,cobol", "unknown language 'cobol'; known: high, low, paper, all, py"),
    (execution.parse_langs, "js", "--langs: JavaScript ('js') cannot be used here; choose from: py, java"),
    (xlcost.parse_langs, "python,go", "--langs: Go ('go') cannot be used here; choose from: py, java, js"),
])
def test_a_bad_name_is_one_line_naming_it(parse, spec, message):
    with pytest.raises(UserError) as err:
        parse(spec)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    # the exception types the two former registries raised, so their callers still catch it
    assert isinstance(err.value, (ValueError)) and isinstance(err.value, KeyError)


def test_the_cli_prints_the_registry_error_as_one_line(capsys):
    assert cli(["xlcost", "--model", "m", "--langs", "py,rust"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("multipl-moe xlcost: error: --langs: Rust ('rust') cannot be used here; "
                   "choose from: py, java, js, cpp, c, cs, php")
