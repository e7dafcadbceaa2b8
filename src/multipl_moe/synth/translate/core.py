"""translate(): read the Python problem with `ast`, then let the target spell it."""

from __future__ import annotations

import ast
import re

from . import Dropped, PyProblem, TARGETS, TranslatedProblem
from .pytypes import Untranslatable, conform, parse_type
from ...languages import normalize_lang
from .targets import TARGET_CLASSES, Target

_TARGETS: dict[str, Target] = {code: cls() for code, cls in TARGET_CLASSES.items()}


def target(lang: str) -> Target | None:
    return _TARGETS.get(normalize_lang(lang) or lang.strip().lower())


# --- the Python function --------------------------------------------------------------------
class _Function:
    def __init__(self, node: ast.FunctionDef):
        self.name = node.name
        a = node.args
        if a.vararg or a.kwarg or a.kwonlyargs:
            raise Untranslatable("unsupported signature", "*args, **kwargs or keyword-only")
        self.params = [(p.arg, p.annotation) for p in [*a.posonlyargs, *a.args]]
        self.returns = node.returns
        self.doc = ast.get_docstring(node, clean=True) or ""


def _function(problem: PyProblem) -> _Function:
    try:
        module = ast.parse(problem.source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise Untranslatable("unparsable python", str(e)) from None
    defs = [n for n in module.body if isinstance(n, ast.FunctionDef)]
    if problem.entry_point is not None:
        defs = [n for n in defs if n.name == problem.entry_point]
    if not defs:
        raise Untranslatable("no function", problem.entry_point or "no top-level def")
    return _Function(defs[-1])


def _literal(node: ast.expr):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise Untranslatable("not a literal", ast.unparse(node)[:80]) from None


def _read_call(node: ast.expr, fname: str, arity: int) -> list:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == fname):
        raise Untranslatable("not a call of the function", ast.unparse(node)[:80])
    if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
        raise Untranslatable("keyword or starred arguments")
    if len(node.args) != arity:
        raise Untranslatable("wrong number of arguments", f"{len(node.args)} != {arity}")
    return [_literal(a) for a in node.args]


def read_test(test: str, fname: str, arity: int) -> tuple[list, object]:
    """'assert f(1, [2]) == 3' -> ([1, [2]], 3). `assert f(x)` / `assert not f(x)` mean
    `== True` / `== False`; `value == f(x)` and `f(x) is None` are read too."""
    try:
        module = ast.parse(test.strip())
    except (SyntaxError, ValueError) as e:
        raise Untranslatable("unparsable test", str(e)) from None
    if len(module.body) != 1 or not isinstance(module.body[0], ast.Assert):
        raise Untranslatable("not an assert")
    node = module.body[0].test
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right = node.left, node.comparators[0]
        op = node.ops[0]
        if isinstance(op, ast.Is) and isinstance(right, ast.Constant) and right.value is None:
            op = ast.Eq()
        if not isinstance(op, ast.Eq):
            raise Untranslatable("not an equality", ast.unparse(node)[:80])
        if not isinstance(left, ast.Call) and isinstance(right, ast.Call):
            left, right = right, left
        return _read_call(left, fname, arity), _literal(right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return _read_call(node.operand, fname, arity), False
    return _read_call(node, fname, arity), True


# --- the docstring --------------------------------------------------------------------------
_TERM_PATTERNS = {
    "array": r"\barray(s?)\b", "list": r"\blist(s?)\b", "tuple": r"\btuple(s?)\b",
    "dictionary": r"\bdictionar(y|ies)\b", "None": r"\bNone\b", "True": r"\bTrue\b",
    "False": r"\bFalse\b"}


def reword(text: str, tgt: Target) -> str:
    """Python's words for its data types in prose -> the target's (MultiPL-E's "reworded").
    Whole words only (MultiPL-E's substring replacement makes "cppthon" of "python")."""
    for key, pattern in _TERM_PATTERNS.items():
        word = tgt.terms[key]
        if word == key:
            continue

        def sub(m: re.Match, word=word, key=key) -> str:
            plural = bool(m.group(1)) if key not in ("None", "True", "False") else False
            if key == "dictionary":
                plural = m.group(1) == "ies"
            return word + ("s" if plural and not word.startswith("#") else "")
        text = re.sub(pattern, sub, text)
        # a/an before the new word
        text = re.sub(r"\b([Aa])n? (" + re.escape(word) + r")\b",
                      lambda m: m.group(1) + ("n " if m.group(2)[0].lower() in "aeiou" else " ")
                      + m.group(2), text)
    return text


def _doctests(doc: str, fn: _Function, name: str, types, tgt: Target) -> str:
    """Reword the prose and rewrite each `>>> f(args)` + result pair into the target; a pair
    that cannot be translated is left out rather than shown in Python."""
    lines = doc.split("\n")
    out: list[str] = []
    i = 0
    prose: list[str] = []

    def flush():
        if prose:
            out.append(reword("\n".join(prose), tgt))
            prose.clear()

    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            flush()
            call = line.lstrip()[3:].strip()
            result = lines[i + 1].strip() if i + 1 < len(lines) else ""
            i += 2
            try:
                if not result or result.startswith(">>>"):
                    raise Untranslatable("no result")
                args, expected = read_test(f"assert {call} == {result}", fn.name, len(types[0]))
                call_s, expected_s = _render(args, expected, types, tgt, name)
                out.append(f">>> {call_s}\n{expected_s}")
            except (Untranslatable, RecursionError):
                if result.startswith(">>>"):
                    i -= 1
            continue
        prose.append(line)
        i += 1
    flush()
    return "\n".join(out)


# --- putting it together --------------------------------------------------------------------
def _render(args: list, expected, types, tgt: Target, fn: str) -> tuple[str, str]:
    param_types, ret = types
    args = [tgt.value(conform(a, t), t) for a, t in zip(args, param_types)] if tgt.typed else \
        [tgt.value(_soft_conform(a, t), t) for a, t in zip(args, param_types)]
    if tgt.typed:
        exp = tgt.value(conform(expected, ret), ret)
    else:
        exp = tgt.value(_soft_conform(expected, ret), ret)
    return tgt.call(fn, args), exp


def _soft_conform(v, t):
    """Untyped targets: use the annotation where the value fits it (True for a declared bool
    even if the test said 1), else the value as it is."""
    try:
        return conform(v, t)
    except Untranslatable as e:
        if e.reason == "unsupported value":
            raise
        return v


def translate(problem: PyProblem, lang: str) -> TranslatedProblem | Dropped:
    tgt = target(lang)
    if tgt is None:
        return Dropped("unsupported language", f"{lang!r}; targets: {', '.join(TARGETS)}")
    try:
        fn = _function(problem)
        param_types, ret = [], None
        for pname, ann in fn.params:
            try:
                param_types.append(parse_type(ann))
            except Untranslatable:
                if tgt.typed:
                    raise
                param_types.append(None)
        try:
            ret = parse_type(fn.returns)
        except Untranslatable:
            if tgt.typed:
                raise
        tgt.check_signature(list(zip([p for p, _ in fn.params], param_types)), ret)
    except Untranslatable as e:
        return Dropped(e.reason, e.detail)

    if not all(n.isascii() for n in [fn.name, *(p for p, _ in fn.params)]):
        # Lua, OCaml and R identifiers are ASCII only.
        return Dropped("unsupported signature", "a non-ASCII name")
    name = tgt.fname(fn.name)
    params = [tgt.ident(p) for p, _ in fn.params]
    if len(set(params)) != len(params) or name in params:
        return Dropped("unsupported signature", f"names collide in {lang}: {name}({params})")
    types = (param_types, ret)

    cases: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    for test in problem.tests:
        try:
            args, expected = read_test(test, fn.name, len(fn.params))
            cases.append(_render(args, expected, types, tgt, "candidate"))
        except Untranslatable as e:
            skipped.append((test, str(e)))
        except RecursionError:
            skipped.append((test, "too deeply nested"))
    if not cases:
        why = skipped[0][1] if skipped else "no tests given"
        return Dropped("no valid tests", why)

    doc = _doctests(fn.doc, fn, name, types, tgt)
    prompt = tgt.prompt(name, list(zip(params, param_types)), ret, doc)
    return TranslatedProblem(
        name=problem.name, language=tgt.language, prompt=prompt,
        tests=tgt.suite(name, cases), stop_tokens=list(tgt.stop), original=problem.original,
        skipped_tests=tuple(skipped))
