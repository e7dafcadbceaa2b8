"""Stage 1: Python functions with docstrings, from any corpus `multipl-moe data` reads.

MultiPL-T's filters (Cassano et al. 2024, section 3.1): a top-level function that parses, has a
docstring in ASCII, returns a value, has no TODO, has a body beyond a one-liner, and passes a
type check (pyright, 0 errors) where pyright is installed. On top of that:

- self-contained: every name the function reads is a parameter, a local, a builtin, the
  function itself, or bound by one of its file's top-level imports (which travel with it). A
  function calling a helper from its file cannot run alone in the sandbox, so it would only
  cost a round of test generation before failing every test;
- no overlap with MultiPL-E HumanEval/MBPP: the training-data decontamination (13-gram match
  against prompts and tests) applied to the function's text;
- exact copies are kept once (the first in corpus order), before any model time is spent.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import shutil
import subprocess
import symtable
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .journal import fingerprint

_BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__doc__"}


@dataclass(frozen=True)
class ExtractSettings:
    min_body_lines: int = 3
    """Lines of code in the body, docstring and comments not counted (MultiPL-T drops
    one-liners such as `return a + b`)."""
    max_function_chars: int = 4000
    """Longer functions are dropped: their tests and solutions rarely fit a context window."""
    decontaminate: bool = True
    pyright: bool = True
    """Type-check with pyright when it is installed (0 errors), as MultiPL-T does."""


@dataclass
class PyFunction:
    """A kept function: `code` is its imports, a blank line and its source; `start`/`end` are
    the 1-based lines of the `def` statement within `code` (what coverage measures)."""
    id: str
    name: str
    code: str
    start: int
    end: int
    annotated: bool

    def to_dict(self) -> dict:
        return asdict(self)


def pyright_path() -> str | None:
    return shutil.which("pyright")


def _imports(tree: ast.Module) -> list[tuple[ast.stmt, set[str]]]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out.append((node, {(a.asname or a.name).split(".")[0] for a in node.names}))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and all(a.name != "*" for a in node.names):
            out.append((node, {a.asname or a.name for a in node.names}))
    return out


def _free_names(source: str, name: str) -> set[str] | None:
    """Global names the function reads (symtable sees through nested scopes), or None."""
    try:
        top = symtable.symtable(source, "<fn>", "exec")
    except SyntaxError:
        return None
    found: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for sym in table.get_symbols():
            # Free (closure) names are bound by an enclosing function, hence inside ours.
            if sym.is_referenced() and sym.is_global() and not sym.is_declared_global():
                found.add(sym.get_name())
        for child in table.get_children():
            walk(child)

    for child in top.get_children():
        if child.get_name() == name:
            walk(child)
    return found


def _code_lines(node: ast.FunctionDef, lines: list[str]) -> int:
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    if not body:
        return 0
    first, last = body[0].lineno, node.end_lineno or body[-1].lineno
    return sum(1 for ln in lines[first - 1:last] if ln.strip() and not ln.strip().startswith("#"))


def _has_return_value(node: ast.FunctionDef) -> bool:
    for sub in ast.walk(node):
        if isinstance(sub, (ast.Yield, ast.YieldFrom)):
            return False   # a generator's result is never `== value`
        if isinstance(sub, ast.Return) and sub.value is not None:
            return True
    return False


def _annotated(node: ast.FunctionDef) -> bool:
    args = node.args
    params = args.posonlyargs + args.args + args.kwonlyargs
    return node.returns is not None and all(a.annotation is not None for a in params)


def functions_of(doc_id: str, text: str, settings: ExtractSettings, decontaminator=None
                 ) -> tuple[Counter, list[PyFunction]]:
    """The functions of one Python document that pass every filter but the type check, and the
    reasons the others were dropped (one count per top-level function, or per document for a
    document that does not parse)."""
    counts: Counter = Counter()
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return Counter({"file does not parse": 1}), []
    lines = text.splitlines()
    imports = _imports(tree)
    kept = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            if isinstance(node, ast.AsyncFunctionDef):
                counts["async function"] += 1
            continue
        src = "\n".join(lines[node.lineno - 1:node.end_lineno])
        if node.decorator_list:
            reason = "decorated"
        elif ast.get_docstring(node) is None:
            reason = "no docstring"
        elif not ast.get_docstring(node).isascii():
            reason = "docstring not ASCII"
        elif "TODO" in src:
            reason = "TODO"
        elif not _has_return_value(node):
            reason = "no return value"
        elif _code_lines(node, lines) < settings.min_body_lines:
            reason = "trivial body"
        elif len(src) > settings.max_function_chars:
            reason = "too long"
        else:
            reason = None
        if reason:
            counts[reason] += 1
            continue
        free = _free_names(src, node.name)
        if free is not None:   # annotations and defaults are evaluated in the module's scope
            a = node.args
            outer = [p.annotation for p in a.posonlyargs + a.args + a.kwonlyargs]
            outer += [a.vararg and a.vararg.annotation, a.kwarg and a.kwarg.annotation,
                      node.returns, *a.defaults, *a.kw_defaults]
            free |= {n.id for e in outer if e is not None for n in ast.walk(e)
                     if isinstance(n, ast.Name)}
        needed = [(imp, names) for imp, names in imports if names & (free or set())]
        bound = set().union(*(names for _, names in needed)) if needed else set()
        unbound = (free or set()) - bound - _BUILTINS - {node.name}
        if free is None or unbound:
            counts["not self-contained"] += 1
            continue
        head = "\n".join(ast.get_source_segment(text, imp) or ast.unparse(imp) for imp, _ in needed)
        code = (head + "\n\n\n" if head else "") + src + "\n"
        if decontaminator is not None:
            hit = decontaminator.match(src)
            if hit:
                counts["overlaps MultiPL-E"] += 1
                continue
        start = code.count("\n", 0, len(code) - len(src) - 1) + 1
        fid = f"{doc_id}::{node.name}"
        if any(k.id == fid for k in kept):   # the name defined twice in one file
            fid = f"{fid}@{node.lineno}"
        kept.append(PyFunction(fid, node.name, code, start,
                               start + (node.end_lineno - node.lineno), _annotated(node)))
    return counts, kept


def pyright_errors(functions: list[PyFunction], pyright: str, timeout: float = 600) -> list[int]:
    """pyright's error count for each function (checked as a file of its own), or -1 when
    pyright produced no verdict for it."""
    with tempfile.TemporaryDirectory(prefix="synth-pyright-") as tmp:
        names = []
        for i, fn in enumerate(functions):
            name = f"f{i}.py"
            Path(tmp, name).write_text(fn.code, encoding="utf-8")
            names.append(name)
        proc = subprocess.run([pyright, "--outputjson", *names], cwd=tmp, capture_output=True,
                              text=True, timeout=timeout)
        try:
            report = json.loads(proc.stdout)
        except ValueError:
            return [-1] * len(functions)
        errors = Counter(os.path.basename(d.get("file", "")) for d in report.get("generalDiagnostics", [])
                         if d.get("severity") == "error")
        return [errors.get(n, 0) for n in names]


def document_input(doc_text: str, settings: ExtractSettings, checker: str | None) -> str:
    return fingerprint(doc_text, asdict(settings), checker is not None)
