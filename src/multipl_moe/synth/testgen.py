"""Stage 2: unit tests written by the model, kept only when they pass in the sandbox.

The prompt is MultiPL-T's: the function, then `# Unit tests for f` and `assert f(`, so the
model continues a test. Of what it writes, only statements of the form `assert f(args) == value`
are kept, found with `ast` (never regexes): a call of the function itself, positional arguments
only (keywords and `*args` have no counterpart in most target languages), and arguments and
expected value that are literals (`ast.literal_eval`), since stage 4 must spell them in
another language. Each distinct test runs against the function in the sandbox; functions with
no passing test are dropped.
"""

from __future__ import annotations

import ast
from collections import Counter

# Where a test block ends: the next definition or top-level statement other than an assert.
STOPS = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\n```"]


def test_prompt(code: str, name: str) -> str:
    return f"{code.rstrip()}\n\n# Unit tests for {name}\nassert {name}("


def _literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def classify(stmt: ast.stmt, name: str) -> str:
    """`ok`, or why the statement is not a test stage 2 keeps."""
    if not isinstance(stmt, ast.Assert):
        return "not an assert"
    t = stmt.test
    if not (isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)):
        return "not f(...) == value"
    call = t.left
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == name):
        return "not f(...) == value"
    if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
        return "keyword or starred argument"
    if not all(_literal(a) for a in call.args) or not _literal(t.comparators[0]):
        return "not literal"
    return "ok"


def extract_tests(completion: str, name: str, counts: Counter | None = None) -> list[str]:
    """The kept assert statements in `assert f(` + completion, one per line, in order, without
    repeats (compared after `ast.unparse`, so spacing does not make a new test)."""
    text = f"assert {name}(" + completion
    found: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("assert"):
            continue
        try:
            module = ast.parse(line)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            if counts is not None:
                counts["does not parse"] += 1
            continue
        if len(module.body) != 1:
            continue
        verdict = classify(module.body[0], name)
        if verdict != "ok":
            if counts is not None:
                counts[verdict] += 1
            continue
        test = ast.unparse(module.body[0])
        if test not in seen:
            seen.add(test)
            found.append(test)
    return found
