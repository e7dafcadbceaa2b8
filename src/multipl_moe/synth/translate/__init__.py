"""Stage 4 of `multipl-moe synth`: rule-based translation of a typed Python problem into a
MultiPL-E-style prompt and test suite (issue 16).

A problem is a Python function (signature with type annotations and a docstring; the body is
ignored) plus `assert f(args) == value` tests. `translate(problem, lang)` returns either a
`TranslatedProblem`, whose fields are exactly a MultiPL-E row (so `evaluation.execute` runs
`prompt + completion + "\\n" + tests` unchanged), or a `Dropped` with a short, countable reason.

The conventions (program layout, stop tokens, the way a test is written, how Python values and
types are spelled) follow the rows of MultiPL-E v3 (`../shared/data/multipl-e`), the same
"reworded" terminology and "transform" doctests: `>>> f(1, [2])` lines in the docstring are
rewritten into target-language calls and values.

Usage (the rest of the synth pipeline needs only this):

    from multipl_moe.synth.translate import PyProblem, translate, Dropped, TARGETS
    problem = PyProblem(name="synth_12_add", source=src, tests=["assert add(1, 2) == 3"])
    result = translate(problem, "lua")
    if isinstance(result, Dropped):
        counts[result.reason] += 1          # e.g. "unsupported type"
    else:
        row = result.to_row()               # a MultiPL-E jsonl row
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# MultiPL-E's file-name codes of the targets, in the order.
TARGETS = ("lua", "rkt", "ml", "r", "jl", "rs", "go", "rb")

# Every `Dropped.reason` the translator can give (so callers can pre-fill their counters).
DROP_REASONS = (
    "unparsable python",      # the source or a test does not parse
    "no function",            # no top-level `def` named like the entry point
    "unsupported signature",  # *args, **kwargs, keyword-only or defaulted parameters
    "missing annotation",     # a typed target and a parameter or the return lacks a type
    "unsupported type",       # an annotation with no target spelling (Any, Callable, sets, ...)
    "no valid tests",         # no test survived (not `assert f(...) == v`, or values don't fit)
    "unsupported language",   # `lang` is not in TARGETS
)


@dataclass(frozen=True)
class PyProblem:
    """One Python problem to translate.

    name:    problem id, used for the row's `name` (e.g. "synth_000123_add").
    source:  Python source holding the function: optional imports (`from typing import List`),
             then `def f(a: int, b: List[str]) -> bool:` with a docstring; a body is allowed and
             ignored (the prompt is signature + docstring only).
    tests:   `assert f(args) == value` statements, one per string (the form stage 2 keeps);
             `assert f(args)` and `assert not f(args)` are read as `== True` / `== False`.
    entry_point: the function under test; None means the last top-level `def` in `source`.
    original: free text stored in the row's `original` field (e.g. where the function came from).
    """
    name: str
    source: str
    tests: list[str]
    entry_point: str | None = None
    original: str = ""


@dataclass(frozen=True)
class TranslatedProblem:
    """A MultiPL-E row (field names as in the jsonl files); the executor runs
    prompt + completion + "\\n" + tests.

    language: the row's language tag, as MultiPL-E spells it ("go_test.go" for Go, else the code).
    skipped_tests: the input tests that could not be translated, with why (not part of the row).
    """
    name: str
    language: str
    prompt: str
    tests: str
    stop_tokens: list[str]
    doctests: str = "transform"
    original: str = ""
    prompt_terminology: str = "reworded"
    skipped_tests: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def to_row(self) -> dict:
        """The MultiPL-E jsonl row (without `skipped_tests`)."""
        row = asdict(self)
        del row["skipped_tests"]
        return row


@dataclass(frozen=True)
class Dropped:
    """A problem that cannot be translated to one language: `reason` is one of DROP_REASONS
    (count these), `detail` says exactly what (e.g. "Callable[[int], int]")."""
    reason: str
    detail: str = ""


def translate(problem: PyProblem, lang: str) -> TranslatedProblem | Dropped:
    """Translate `problem` into `lang` (one of TARGETS). Never raises for bad input problems:
    anything untranslatable comes back as `Dropped`. Tests that cannot be translated are
    skipped (listed in `skipped_tests`); with none left the problem is Dropped("no valid tests")."""
    from .core import translate as _translate
    return _translate(problem, lang)


__all__ = ["TARGETS", "DROP_REASONS", "PyProblem", "TranslatedProblem", "Dropped", "translate"]
