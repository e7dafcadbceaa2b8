"""Python side of the translator: type annotations -> a small type tree, and test values
checked (and coerced) against it.

Types are tuples so they hash and compare: ("int",), ("float",), ("bool",), ("str",),
("none",), ("any",), ("list", T), ("tuple", (T, ...)), ("dict", K, V), ("opt", T),
("union", (T, ...)). `Tuple[T, ...]` is a ("list", T): every target spells a tuple of unknown
length as its list type.
"""

from __future__ import annotations

import ast
import math

INT, FLOAT, BOOL, STR, NONE, ANY = ("int",), ("float",), ("bool",), ("str",), ("none",), ("any",)
SCALARS = (INT, FLOAT, BOOL, STR)


class Untranslatable(Exception):
    """Raised with (reason, detail): reason is one of DROP_REASONS or a test-skip reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


_NAMES = {"int": INT, "float": FLOAT, "bool": BOOL, "str": STR, "None": NONE, "Any": ANY,
          "object": ANY, "List": ("list", ANY), "list": ("list", ANY), "Dict": ("dict", ANY, ANY),
          "dict": ("dict", ANY, ANY), "Tuple": ("list", ANY), "tuple": ("list", ANY)}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
            and node.value.id in ("typing", "t"):
        return node.attr
    return None


def _union(members: list[tuple]) -> tuple:
    flat: list[tuple] = []
    for m in members:
        for x in (m[1] if m[0] == "union" else (m,)):
            if x not in flat:
                flat.append(x)
    if NONE in flat and len(flat) > 1:
        rest = [x for x in flat if x != NONE]
        return ("opt", rest[0] if len(rest) == 1 else ("union", tuple(rest)))
    return flat[0] if len(flat) == 1 else ("union", tuple(flat))


def parse_type(node: ast.expr | None) -> tuple | None:
    """Annotation AST -> type tree; None for a missing annotation; Untranslatable otherwise."""
    if node is None:
        return None
    if isinstance(node, ast.Constant):
        if node.value is None:
            return NONE
        if isinstance(node.value, str):  # a quoted (forward-reference) annotation
            try:
                return parse_type(ast.parse(node.value, mode="eval").body)
            except SyntaxError:
                raise Untranslatable("unsupported type", repr(node.value)) from None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([parse_type(node.left), parse_type(node.right)])
    name = _name(node)
    if name is not None:
        if name in _NAMES:
            return _NAMES[name]
        raise Untranslatable("unsupported type", name)
    if isinstance(node, ast.Subscript):
        head = _name(node.value)
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head in ("List", "list", "Sequence") and len(args) == 1:
            return ("list", parse_type(args[0]))
        if head in ("Dict", "dict", "Mapping") and len(args) == 2:
            return ("dict", parse_type(args[0]), parse_type(args[1]))
        if head in ("Tuple", "tuple"):
            if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
                return ("list", parse_type(args[0]))
            if any(isinstance(a, ast.Constant) and a.value is Ellipsis for a in args):
                raise Untranslatable("unsupported type", ast.unparse(node))
            return ("tuple", tuple(parse_type(a) for a in args))
        if head == "Optional" and len(args) == 1:
            return _union([parse_type(args[0]), NONE])
        if head == "Union":
            return _union([parse_type(a) for a in args])
    raise Untranslatable("unsupported type", ast.unparse(node))


def show(t: tuple | None) -> str:
    """Python spelling of a type tree (for messages)."""
    if t is None:
        return "?"
    if len(t) == 1:
        return {"none": "None", "any": "Any"}.get(t[0], t[0])
    if t[0] == "list":
        return f"List[{show(t[1])}]"
    if t[0] == "dict":
        return f"Dict[{show(t[1])}, {show(t[2])}]"
    if t[0] == "opt":
        return f"Optional[{show(t[1])}]"
    inner = ", ".join(show(x) for x in t[1])
    return f"{'Tuple' if t[0] == 'tuple' else 'Union'}[{inner}]"


def contains(t: tuple | None, pred) -> bool:
    """Whether `pred` holds for `t` or any type inside it."""
    if t is None:
        return False
    if pred(t):
        return True
    if t[0] in ("list", "opt"):
        return contains(t[1], pred)
    if t[0] == "dict":
        return contains(t[1], pred) or contains(t[2], pred)
    if t[0] in ("tuple", "union"):
        return any(contains(x, pred) for x in t[1])
    return False


def _bad(v, t):
    return Untranslatable("value does not fit type", f"{v!r} is not a {show(t)}")


def conform(v, t: tuple | None):
    """`v` as a value of type `t`, with Python's own equalities applied (1 == 1.0 == True):
    an int where a float is declared becomes a float, a tuple where a list is declared a list.
    Raises Untranslatable when `v` is not a `t`; `t` None or Any keeps `v` as it is."""
    check_value(v)
    if t is None or t == ANY:
        return v
    kind = t[0]
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(v, t)
        if isinstance(v, float):
            if not v.is_integer():
                raise _bad(v, t)
            return int(v)
        return v
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _bad(v, t)
        return float(v)
    if kind == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise _bad(v, t)
    if kind == "str":
        if not isinstance(v, str):
            raise _bad(v, t)
        return v
    if kind == "none":
        if v is not None:
            raise _bad(v, t)
        return v
    if kind == "list":
        if not isinstance(v, (list, tuple)):
            raise _bad(v, t)
        return [conform(x, t[1]) for x in v]
    if kind == "tuple":
        if not isinstance(v, (list, tuple)) or len(v) != len(t[1]):
            raise _bad(v, t)
        return tuple(conform(x, u) for x, u in zip(v, t[1]))
    if kind == "dict":
        if not isinstance(v, dict):
            raise _bad(v, t)
        return {conform(k, t[1]): conform(x, t[2]) for k, x in v.items()}
    if kind == "opt":
        return None if v is None else conform(v, t[1])
    if kind == "union":
        exact = [u for u in t[1] if u == infer(v)]
        for u in exact + [u for u in t[1] if u not in exact]:
            try:
                return conform(v, u)
            except Untranslatable:
                continue
        raise _bad(v, t)
    raise _bad(v, t)


def check_value(v) -> None:
    """Only the literal kinds every target can spell; NaN never equals itself, so no test
    could pass with one."""
    if v is None or isinstance(v, (bool, int, str)):
        return
    if isinstance(v, float):
        if math.isnan(v):
            raise Untranslatable("unsupported value", "nan")
        return
    if isinstance(v, (list, tuple)):
        for x in v:
            check_value(x)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            check_value(k)
            check_value(x)
        return
    raise Untranslatable("unsupported value", type(v).__name__)


def _join(types: list[tuple]) -> tuple:
    kinds = list(dict.fromkeys(types))
    if not kinds:
        return ANY
    if len(kinds) == 1:
        return kinds[0]
    if set(kinds) <= {INT, FLOAT}:
        return FLOAT
    if NONE in kinds:
        rest = [k for k in kinds if k != NONE]
        if len(rest) == 1:
            return ("opt", rest[0])
    return ANY


def infer(v) -> tuple:
    """The most specific type of a value (Any where the parts disagree)."""
    if v is None:
        return NONE
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return INT
    if isinstance(v, float):
        return FLOAT
    if isinstance(v, str):
        return STR
    if isinstance(v, list):
        return ("list", _join([infer(x) for x in v]))
    if isinstance(v, tuple):
        return ("tuple", tuple(infer(x) for x in v))
    if isinstance(v, dict):
        return ("dict", _join([infer(k) for k in v]), _join([infer(x) for x in v.values()]))
    return ANY
