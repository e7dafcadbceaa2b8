"""The eight target languages: how each spells a type, a value, a prompt and a test suite.

Layouts, stop tokens and test harnesses are those of the MultiPL-E rows in
`../shared/data/multipl-e` (checked by tests/test_synth_translate.py), so the project's executor
runs a translated problem as it runs a benchmark problem. Where MultiPL-E's own compilers emit
something that cannot run (unescaped quotes in strings, OCaml's `(~4)` and `(string, int) list`,
Julia's `Dict{..}>`, list values quoted inside Racket's `#hash`), we emit the working spelling
of the same value instead. Stop tokens are MultiPL-E's `latest` ones (= v3 except Lua, whose
"\\n\\n" cut any function with a blank line; MultiPL-E issue #165).
"""

from __future__ import annotations

import math

from .pytypes import ANY, BOOL, FLOAT, INT, NONE, STR, Untranslatable, contains, infer, show

# MultiPL-E's terms.csv ("reworded" prompts): the target's word for array, list, tuple,
# dictionary, None, True, False.
_TERM_KEYS = ("array", "list", "tuple", "dictionary", "None", "True", "False")


def _terms(*words: str) -> dict[str, str]:
    return dict(zip(_TERM_KEYS, words))


def _escape(s: str, table: dict[str, str], control) -> str:
    out = []
    for ch in s:
        if ch in table:
            out.append(table[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append(control(ord(ch)))
        else:
            out.append(ch)
    return "".join(out)


_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _float(v: float, inf: str, neg_inf: str | None = None) -> str:
    if math.isinf(v):
        return inf if v > 0 else (neg_inf or "-" + inf)
    return repr(v)


def _int_in(v: int, bits: int, lang: str) -> str:
    if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
        raise Untranslatable("unsupported value", f"{v} does not fit a {bits}-bit {lang} int")
    return str(v)


def _lines(text: str, prefix: str) -> str:
    return "\n".join((prefix + line).rstrip() for line in text.split("\n")) + "\n"


class Target:
    code = ""
    language = ""               # the row's `language` field
    stop: list[str] = []
    typed = False               # needs every parameter and the return type translated
    terms: dict[str, str] = {}
    reserved: frozenset[str] = frozenset()   # names a parameter or the function cannot have

    # -- names ------------------------------------------------------------------------------
    def ident(self, name: str) -> str:
        """A parameter's name here."""
        return name + "_" if name in self.reserved or name == "_" else name

    def fname(self, name: str) -> str:
        """The function's name here."""
        return self.ident(name)

    # -- types (typed targets override) -------------------------------------------------------
    def type(self, t: tuple | None) -> str:
        if t is None:
            raise Untranslatable("missing annotation")
        raise Untranslatable("unsupported type", show(t))

    def check_signature(self, params: list[tuple[str, tuple | None]], ret: tuple | None) -> None:
        """Raise Untranslatable if the signature has no spelling here."""
        if self.typed:
            for t in [*(t for _, t in params), ret]:
                try:
                    self.type(t)
                except Untranslatable as e:   # name the whole annotation, not just its part
                    whole = show(t)
                    if e.detail and e.detail != whole:
                        raise Untranslatable(e.reason, f"{e.detail} in {whole}") from None
                    raise

    # -- values -----------------------------------------------------------------------------
    def value(self, v, t: tuple | None) -> str:
        raise NotImplementedError

    def call(self, fn: str, args: list[str]) -> str:
        return f"{fn}({', '.join(args)})"

    # -- program text -----------------------------------------------------------------------
    def doc(self, text: str) -> str:
        raise NotImplementedError

    def header(self, name: str, params: list[tuple[str, tuple | None]], ret: tuple | None) -> str:
        raise NotImplementedError

    def prompt(self, name, params, ret, text: str) -> str:
        return self.doc(text) + self.header(name, params, ret)

    def suite(self, entry: str, cases: list[tuple[str, str]]) -> str:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------
class Lua(Target):
    code = language = "lua"
    stop = ["\nlocal", "\nfunction", "\n--"]
    terms = _terms("table", "table", "table", "table", "nil", "true", "false")
    reserved = frozenset("and break do else elseif end false for function goto if in local nil "
                         "not or repeat return then true until while lu os require".split())

    def value(self, v, t):
        if v is None:
            return "nil"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return _int_in(v, 64, "Lua")
        if isinstance(v, float):
            return _float(v, "math.huge")
        if isinstance(v, str):
            return '"' + _escape(v, _C_ESCAPES, lambda c: f"\\{c:03d}") + '"'
        if isinstance(v, dict):
            k_t, v_t = (t[1], t[2]) if t and t[0] == "dict" else (None, None)
            return "{" + ", ".join(f"[{self.value(k, k_t)}] = {self.value(x, v_t)}"
                                   for k, x in v.items()) + "}"
        return "{" + ", ".join(self.value(x, None) for x in v) + "}"

    def doc(self, text):
        return _lines(text, "-- ") if text else ""

    def header(self, name, params, ret):
        return f"local function {name}({', '.join(p for p, _ in params)})\n"

    def suite(self, entry, cases):
        body = "".join(f"    lu.assertEquals({c}, {e})\n" for c, e in cases)
        return ("lu = require('luaunit')\n\nfunction test_humaneval()\n"
                f"local candidate = {entry}\n{body}end\n\nos.exit(lu.LuaUnit.run())")


# ------------------------------------------------------------------------------------------
class Racket(Target):
    code = language = "rkt"
    stop = ["\n(define ", "\n#|", "\n;", "\n("]
    terms = _terms("list", "list", "list", "hash", "#f", "#t", "#f")
    # Module-level names the tests use: a function called `list` would capture `(list 1 2)`.
    reserved = frozenset("list hash define let require check-within test-humaneval candidate "
                         "lambda if cond else quote".split())

    def _scalar(self, v) -> str | None:
        if v is None or v is False:
            return "#f"
        if v is True:
            return "#t"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return _float(v, "+inf.0", "-inf.0")
        if isinstance(v, str):
            return '"' + _escape(v, _C_ESCAPES, lambda c: f"\\u{c:04x}") + '"'
        return None

    def _datum(self, v) -> str:
        """Inside `#hash(...)` everything is quoted data: a list is `(1 2)`, not `(list 1 2)`."""
        s = self._scalar(v)
        if s is not None:
            return s
        if isinstance(v, dict):
            return "#hash(" + " ".join(f"({self._datum(k)} . {self._datum(x)})"
                                       for k, x in v.items()) + ")"
        return "(" + " ".join(self._datum(x) for x in v) + ")"

    def value(self, v, t):
        s = self._scalar(v)
        if s is not None:
            return s
        if isinstance(v, dict):
            return self._datum(v)
        return "(list" + "".join(" " + self.value(x, None) for x in v) + ")"

    def call(self, fn, args):
        return "(" + " ".join([fn, *args]) + ")"

    def doc(self, text):
        return "#lang racket\n\n" + (_lines(text, ";; ") if text else "")

    def header(self, name, params, ret):
        return "(define (" + " ".join([name, *(p for p, _ in params)]) + ")\n"

    def suite(self, entry, cases):
        body = "".join(f"    (check-within {c} {e} 0.001)\n" for c, e in cases)
        return ("(require rackunit)\n\n(define (test-humaneval) \n\n"
                f"  (let (( candidate {entry}))\n{body}))\n\n(test-humaneval)")


# ------------------------------------------------------------------------------------------
class OCaml(Target):
    code = language = "ml"
    stop = ["\n\n", "\n(*", "\ntype", "\nlet"]
    typed = True
    terms = _terms("list", "list", "tuple", "association list", "None", "true", "false")
    reserved = frozenset(
        "and as assert asr begin class constraint do done downto else end exception external false "
        "for fun function functor if in include inherit initializer land lazy let lor lsl lsr lxor "
        "match method mod module mutable new nonrec object of open or private rec sig struct then "
        "to true try type val virtual when while with candidate assertions".split())

    def ident(self, name):
        # Capitalised names are constructors in OCaml.
        name = name[0].lower() + name[1:] if name[:1].isupper() else name
        return super().ident(name)

    def _atom(self, t) -> str:
        s = self.type(t)
        return f"({s})" if t[0] == "tuple" else s

    def type(self, t):
        if t in (INT, FLOAT, BOOL):
            return t[0]
        if t == STR:
            return "string"
        if t is not None and t[0] == "list":
            return f"{self._atom(t[1])} list"
        if t is not None and t[0] == "opt":
            return f"{self._atom(t[1])} option"
        if t is not None and t[0] == "tuple" and len(t[1]) >= 2:
            return " * ".join(self._atom(x) for x in t[1])
        if t is not None and t[0] == "dict":
            return f"({self._atom(t[1])} * {self._atom(t[2])}) list"
        return super().type(t)

    def value(self, v, t):
        kind = t[0]
        if kind == "opt":
            return "None" if v is None else f"(Some {self.value(v, t[1])})"
        if kind == "bool":
            return "true" if v else "false"
        if kind == "int":
            s = _int_in(v, 63, "OCaml")
            return f"({s})" if v < 0 else s
        if kind == "float":
            s = _float(v, "infinity", "neg_infinity")
            return f"({s})" if s.startswith("-") else s
        if kind == "str":
            return '"' + _escape(v, {**_C_ESCAPES, "\b": "\\b"}, lambda c: f"\\{c:03d}") + '"'
        if kind == "list":
            return "[" + "; ".join(self.value(x, t[1]) for x in v) + "]"
        if kind == "tuple":
            return "(" + ", ".join(self.value(x, u) for x, u in zip(v, t[1])) + ")"
        if kind == "dict":
            return "[" + "; ".join(f"({self.value(k, t[1])}, {self.value(x, t[2])})"
                                   for k, x in v.items()) + "]"
        raise Untranslatable("unsupported type", show(t))

    def call(self, fn, args):
        return " ".join([fn, *(args or ["()"])])

    def doc(self, text):
        if not text:
            return ""
        # Comments nest and lex string literals in OCaml: keep `(*`, `*)` and a lone `"` out.
        text = text.replace("(*", "( *").replace("*)", "* )")
        if text.count('"') % 2:
            text = text.replace('"', "'")
        return "(**" + text.replace("\n", "\n * ") + "\n*)\n"

    def header(self, name, params, ret):
        args = " ".join(f"({p} : {self.type(t)})" for p, t in params) or "()"
        return f"let {name} {args} : {self.type(ret)} ="

    def suite(self, entry, cases):
        body = "".join(f"  (assert (({c}) = {e}));\n" for c, e in cases)
        return f"\nlet assertions =\n let candidate = {entry} in\n{body}  ()\n"


# ------------------------------------------------------------------------------------------
class R(Target):
    code = language = "r"
    stop = ["\n#", "\n```"]
    terms = _terms("vector", "list", "list", "named list", "NULL", "TRUE", "FALSE")
    reserved = frozenset("if else repeat while function for next break TRUE FALSE NULL Inf NaN NA "
                         "in c list stopifnot isTRUE all.equal test_humaneval candidate".split())

    def ident(self, name):
        return "x" + name if name.startswith("_") else super().ident(name)

    def _scalar_kind(self, v) -> str | None:
        if isinstance(v, bool):
            return "logical"
        if isinstance(v, (int, float)):
            return "numeric"
        if isinstance(v, str):
            return "character"
        return None

    def _str(self, s: str) -> str:
        if "\0" in s:
            raise Untranslatable("unsupported value", "NUL in an R string")
        return '"' + _escape(s, _C_ESCAPES, lambda c: f"\\x{c:02x}") + '"'

    def value(self, v, t):
        if v is None:
            return "NULL"
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, int):  # a double in R (all.equal compares with a relative tolerance)
            return str(v)
        if isinstance(v, float):
            return _float(v, "Inf")
        if isinstance(v, str):
            return self._str(v)
        if isinstance(v, dict):  # a named list: names are strings
            if any(isinstance(k, (list, tuple, dict)) for k in v):
                raise Untranslatable("unsupported value", "an R list name must be a string")
            return "list(" + ", ".join(f"{self._str(str(k))} = {self.value(x, None)}"
                                       for k, x in v.items()) + ")"
        # A vector when every element is a scalar of one kind, as MultiPL-E does; else a list.
        kinds = {self._scalar_kind(x) for x in v}
        head = "c(" if len(kinds) <= 1 and None not in kinds else "list("
        return head + ", ".join(self.value(x, None) for x in v) + ")"

    def doc(self, text):
        return _lines(text, "# ") if text else ""

    def header(self, name, params, ret):
        return f"{name} <- function({', '.join(p for p, _ in params)}) {{"

    def suite(self, entry, cases):
        body = "".join(f"    stopifnot(isTRUE(all.equal({c}, {e})))\n" for c, e in cases)
        return (f"test_humaneval <- function() {{\n    candidate <- {entry}\n{body}}}\n"
                "test_humaneval()")


# ------------------------------------------------------------------------------------------
class Julia(Target):
    code = language = "jl"
    stop = ["\nfunction", "\nmacro", "\n\n"]
    typed = True
    terms = _terms("vector", "vector", "tuple", "dictionary", "nothing", "true", "false")
    reserved = frozenset(
        "baremodule begin break catch const continue do else elseif end export false finally for "
        "function global if import let local macro module quote return struct true try using "
        "while abstract mutable primitive type candidate Test Dict Vector Tuple".split())

    def type(self, t):
        simple = {INT: "Int64", FLOAT: "Float64", BOOL: "Bool", STR: "String", ANY: "Any",
                  NONE: "Nothing"}
        if t in simple:
            return simple[t]
        if t is not None and t[0] == "list":
            return f"Vector{{{self.type(t[1])}}}"
        if t is not None and t[0] == "tuple":
            return "Tuple{" + ", ".join(self.type(x) for x in t[1]) + "}"
        if t is not None and t[0] == "dict":
            return f"Dict{{{self.type(t[1])}, {self.type(t[2])}}}"
        if t is not None and t[0] == "opt":
            return f"Union{{{self.type(t[1])}, Nothing}}"
        if t is not None and t[0] == "union":
            return "Union{" + ", ".join(self.type(x) for x in t[1]) + "}"
        return super().type(t)

    def value(self, v, t):
        if v is None:
            return "nothing"
        if t[0] == "opt":
            t = t[1]
        if t == ANY or t[0] == "union":  # spelled by what the value is
            t = infer(v)
        kind = t[0]
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int) and kind != "float":
            return _int_in(v, 64, "Julia")
        if isinstance(v, (int, float)):
            return _float(float(v), "Inf")
        if isinstance(v, str):
            return '"' + _escape(v, {**_C_ESCAPES, "$": "\\$"}, lambda c: f"\\x{c:02x}") + '"'
        if kind == "list":
            items = ", ".join(self.value(x, t[1]) for x in v)
            # `[1, 2]` is a Vector{Int64}; anything less plain needs its element type spelled,
            # or a Vector{Any} argument would not match a Vector{Union{...}} parameter.
            if v and t[1] in (INT, FLOAT, BOOL, STR):
                return f"[{items}]"
            return f"{self.type(t[1])}[{items}]"
        if kind == "tuple":
            items = [self.value(x, u) for x, u in zip(v, t[1])]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if kind == "dict":
            return self.type(t) + "(" + ", ".join(
                f"{self.value(k, t[1])} => {self.value(x, t[2])}" for k, x in v.items()) + ")"
        raise Untranslatable("unsupported type", show(t))

    def doc(self, text):
        if not text:
            return ""
        text = text.replace("\\", "\\\\").replace("$", "\\$").replace('"""', '\\"\\"\\"')
        if text.endswith('"'):
            text = text[:-1] + '\\"'
        return f'"""{text}"""\n'

    def header(self, name, params, ret):
        args = ", ".join(f"{p}::{self.type(t)}" for p, t in params)
        return f"function {name}({args})::{self.type(ret)} \n"

    def suite(self, entry, cases):
        body = "".join(f"\t@test({c} == {e})\n" for c, e in cases)
        return f"using Test\n\n@testset begin\n\ncandidate = {entry};\n{body}end\n"


# ------------------------------------------------------------------------------------------
class Rust(Target):
    code = language = "rs"
    stop = ["\n}"]
    typed = True
    terms = _terms("vector", "vector", "tuple", "HashMap", "None", "true", "false")
    reserved = frozenset(
        "as async await break const continue crate dyn else enum extern false fn for if impl in "
        "let loop match mod move mut pub ref return self Self static struct super trait true type "
        "unsafe use where while abstract become box do final macro override priv typeof unsized "
        "virtual yield try main candidate".split())

    def type(self, t):
        simple = {INT: "isize", FLOAT: "f64", BOOL: "bool", STR: "String"}
        if t in simple:
            return simple[t]
        if t is not None and t[0] == "list":
            return f"Vec<{self.type(t[1])}>"
        if t is not None and t[0] == "tuple":
            items = [self.type(x) for x in t[1]]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if t is not None and t[0] == "dict":
            if contains(t[1], lambda u: u == FLOAT):
                raise Untranslatable("unsupported type", f"{show(t)} (f64 is not a HashMap key)")
            return f"HashMap<{self.type(t[1])}, {self.type(t[2])}>"
        if t is not None and t[0] == "opt":
            return f"Option<{self.type(t[1])}>"
        return super().type(t)

    def value(self, v, t):
        kind = t[0]
        if kind == "opt":
            return "None" if v is None else f"Some({self.value(v, t[1])})"
        if kind == "bool":
            return "true" if v else "false"
        if kind == "int":
            return _int_in(v, 64, "Rust")
        if kind == "float":
            return _float(v, "f64::INFINITY", "f64::NEG_INFINITY")
        if kind == "str":
            s = _escape(v, {**_C_ESCAPES, "\0": "\\0"}, lambda c: f"\\x{c:02x}")
            return f'String::from("{s}")'
        if kind == "list":
            if not v:
                return f"Vec::<{self.type(t[1])}>::new()"
            return "vec![" + ", ".join(self.value(x, t[1]) for x in v) + "]"
        if kind == "tuple":
            items = [self.value(x, u) for x, u in zip(v, t[1])]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if kind == "dict":
            if not v:
                return f"HashMap::<{self.type(t[1])}, {self.type(t[2])}>::new()"
            return "HashMap::from([" + ", ".join(
                f"({self.value(k, t[1])}, {self.value(x, t[2])})" for k, x in v.items()) + "])"
        raise Untranslatable("unsupported type", show(t))

    def doc(self, text):
        return _lines(text, "/// ") if text else ""

    def prompt(self, name, params, ret, text):
        uses_map = any(contains(t, lambda u: u[0] == "dict") for _, t in [*params, ("", ret)])
        imports = "use std::collections::HashMap;\n\n" if uses_map else ""
        return imports + super().prompt(name, params, ret, text)

    def header(self, name, params, ret):
        args = ", ".join(f"{p}: {self.type(t)}" for p, t in params)
        return f"fn {name}({args}) -> {self.type(ret)} {{\n"

    def suite(self, entry, cases):
        body = "".join(f"    assert_eq!({c}, {e});\n" for c, e in cases)
        return f"}}\n\nfn main() {{\n    let candidate = {entry};\n{body}}}\n"


# ------------------------------------------------------------------------------------------
_GO_KEYWORDS = ("break case chan const continue default defer else fallthrough for func go goto "
                "if import interface map package range return select struct switch type var")
_GO_TYPES = "string int float64 bool byte rune error any float int64 uint"


class Go(Target):
    code = "go"
    language = "go_test.go"
    stop = ["\nfunc", "struct", "\n// "]
    typed = True
    terms = _terms("list", "list", "list", "map", "nil", "true", "false")
    reserved = frozenset(f"{_GO_KEYWORDS} {_GO_TYPES} init main candidate testing fmt".split())

    def ident(self, name):
        # MultiPL-E's spelling for names that are Go keywords or types: string -> myString.
        if name in self.reserved:
            return "my" + name[:1].upper() + name[1:]
        return super().ident(name)

    def type(self, t):
        simple = {INT: "int", FLOAT: "float64", BOOL: "bool", STR: "string", ANY: "interface{}"}
        if t in simple:
            return simple[t]
        if t is not None and t[0] == "list":
            return "[]" + self.type(t[1])
        if t is not None and t[0] == "tuple":
            for x in t[1]:  # an element may be None: it is nil in the []interface{}
                self.type(x[1] if x[0] == "opt" else x)
            return "[]interface{}"  # Go has no tuples; MultiPL-E's choice
        if t is not None and t[0] == "dict":
            if t[1] not in (INT, FLOAT, BOOL, STR, ANY):
                raise Untranslatable("unsupported type", f"{show(t)} (not a Go map key)")
            return f"map[{self.type(t[1])}]{self.type(t[2])}"
        return super().type(t)

    def value(self, v, t):
        if t == ANY:
            if v is None:
                return "nil"
            t = infer(v)
            t = _go_any(t)
        kind = t[0]
        if kind == "bool":
            return "true" if v else "false"
        if kind == "int":
            return _int_in(v, 64, "Go")
        if kind == "float":
            if math.isinf(v):  # math.Inf needs an import the prompt does not have
                raise Untranslatable("unsupported value", "inf in Go")
            return repr(float(v))
        if kind == "str":
            return '"' + _escape(v, _C_ESCAPES, lambda c: f"\\x{c:02x}") + '"'
        if kind == "list":
            return self.type(t) + "{" + ", ".join(self.value(x, t[1]) for x in v) + "}"
        if kind == "tuple":
            return "[]interface{}{" + ", ".join(
                "nil" if x is None else self.value(x, u[1] if u[0] == "opt" else u)
                for x, u in zip(v, t[1])) + "}"
        if kind == "dict":
            return self.type(t) + "{" + ", ".join(
                f"{self.value(k, t[1])}: {self.value(x, t[2])}" for k, x in v.items()) + "}"
        raise Untranslatable("unsupported type", show(t))

    def doc(self, text):
        return _lines(text, "// ") if text else ""

    def prompt(self, name, params, ret, text):
        top = f'package {name}_test\n\nimport (\n    "testing"\n    "fmt"\n)\n\n'
        return top + super().prompt(name, params, ret, text)

    def header(self, name, params, ret):
        args = ", ".join(f"{p} {self.type(t)}" for p, t in params)
        return f"func {name}({args}) {self.type(ret)} {{\n"

    def suite(self, entry, cases):
        body = "".join(f"     {{ actual: {c}, expected: {e} }},\n" for c, e in cases)
        return (f"func Test{entry.title()}(t *testing.T) {{\n  candidate := {entry}\n"
                "\ttype test struct {\n\t\tactual   interface{}\n\t\texpected interface{}\n\t}\n"
                f"   tests := []test{{\n{body}   }}\n\n"
                "\tfor i, tc := range tests {\n"
                '\t\tt.Run(fmt.Sprintf("test num % d", i), func(t *testing.T) {\n'
                '\t\t\tif fmt.Sprintf("%v", tc.actual) != fmt.Sprintf("%v", tc.expected) {\n'
                "\t\t\t\tt.Errorf(\"expected '%s', got '%s'\", tc.expected, tc.actual)\n"
                "\t\t\t}\n\t\t})\n\t}\n}\n")


def _go_any(t: tuple) -> tuple:
    """An inferred type where Go needs one it can spell: Optional parts become interface{}."""
    if t[0] == "opt" or t == NONE:
        return ANY
    if t[0] == "list":
        return ("list", _go_any(t[1]))
    if t[0] == "dict":
        k = t[1] if t[1] in (INT, FLOAT, BOOL, STR) else ANY
        return ("dict", k, _go_any(t[2]))
    if t[0] == "tuple":
        return ("tuple", tuple(_go_any(x) for x in t[1]))
    return t


# ------------------------------------------------------------------------------------------
class Ruby(Target):
    code = language = "rb"
    stop = ["\nclass", "\ndef", "\n#", "\n\n"]
    terms = _terms("array", "array", "array", "hash", "nil", "true", "false")
    reserved = frozenset(
        "alias and begin break case class def defined do else elsif end ensure false for if in "
        "module next nil not or redo rescue retry return self super then true undef unless until "
        "when while yield __FILE__ __LINE__ __method__ BEGIN END candidate".split())

    def ident(self, name):
        # A capitalised name is a constant in Ruby, which cannot be a parameter.
        return super().ident(name.lower())

    def fname(self, name):
        return super().ident(name)

    def value(self, v, t):
        if v is None:
            return "nil"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return _float(v, "Float::INFINITY", "-Float::INFINITY")
        if isinstance(v, str):
            # `#` starts interpolation (#{..}, #@x, #$x) in a double-quoted string.
            esc = {**_C_ESCAPES, "#": "\\#", "\x1b": "\\e"}
            return '"' + _escape(v, esc, lambda c: f"\\x{c:02x}") + '"'
        if isinstance(v, dict):
            return "{" + ", ".join(f"{self.value(k, None)} => {self.value(x, None)}"
                                   for k, x in v.items()) + "}"
        return "[" + ", ".join(self.value(x, None) for x in v) + "]"

    def doc(self, text):
        return _lines(text, "# ") if text else ""

    def header(self, name, params, ret):
        return f"def {name}({', '.join(p for p, _ in params)})\n"

    def suite(self, entry, cases):
        body = "".join(f"    assert_equal({e}, {c})\n" for c, e in cases)
        return ("require 'test/unit'\nclass TestHumanEval < Test::Unit::TestCase\n"
                f"  def test_{entry}\n    candidate = method(:{entry})\n{body}  end\nend\n")

    def call(self, fn, args):
        # The tests hold the method in a variable; a doctest calls it by name.
        if fn == "candidate":
            return f"{fn}.call({', '.join(args)})"
        return super().call(fn, args)


TARGET_CLASSES: dict[str, type[Target]] = {c.code: c for c in
                                           (Lua, Racket, OCaml, R, Julia, Rust, Go, Ruby)}
