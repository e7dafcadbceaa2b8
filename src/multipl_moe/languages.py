"""The language registry: tags, names, file extensions, aliases and groups, for every layer.

Tags are MultiPL-E's short names where MultiPL-E has the language (py, java, cpp, rs, go, rb, lua,
jl, ml, r, rkt, and js, ts, php, pl, sh, swift, scala, cs, d), so per-language training figures
line up with per-language benchmark figures without a mapping table; a few others (c, hs, kt) are
added for corpora such as The Stack. Data uses all of them; evaluation can run the ones that
`evaluation.languages` has execution rules for, and passes those as `within` to `parse_langs`.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Collection, Iterable

from .errors import UserError

# tag -> human name (also the order in which reports list languages)
LANGUAGES: dict[str, str] = {
    "py": "Python", "java": "Java", "cpp": "C++",
    "rs": "Rust", "go": "Go", "rb": "Ruby", "lua": "Lua", "jl": "Julia", "ml": "OCaml",
    "r": "R", "rkt": "Racket",
    "js": "JavaScript", "ts": "TypeScript", "php": "PHP", "pl": "Perl", "sh": "Shell",
    "swift": "Swift", "scala": "Scala", "cs": "C#", "d": "D",
    "c": "C", "hs": "Haskell", "kt": "Kotlin",
}

# The paper's split (METHOD.md section 1): the model should gain on the low-resource languages
# without forgetting the high-resource ones.
HIGH_RESOURCE: tuple[str, ...] = ("py", "java", "cpp")
LOW_RESOURCE: tuple[str, ...] = ("rs", "go", "rb", "lua", "jl", "ml", "r", "rkt")
# The languages the paper evaluates on (its tables); MultiPL-T's other low-resource ones come on top.
PAPER_LANGS: tuple[str, ...] = ("py", "java", "cpp", "rs", "go", "rb")

# Lower-case extension (without the dot) -> tag. `.h` is C, as in The Stack; C++ headers are
# recognised by their C++-only extensions (the local corpus labels libstdc++'s by where they live).
EXTENSIONS: dict[str, str] = {
    "py": "py", "pyi": "py",
    "java": "java",
    "cpp": "cpp", "cc": "cpp", "cxx": "cpp", "c++": "cpp", "hpp": "cpp", "hh": "cpp",
    "hxx": "cpp", "h++": "cpp", "tcc": "cpp", "ipp": "cpp", "inl": "cpp",
    "rs": "rs",
    "go": "go",
    "rb": "rb", "rake": "rb", "gemspec": "rb",
    "lua": "lua",
    "jl": "jl",
    "ml": "ml", "mli": "ml",
    "r": "r",
    "rkt": "rkt",
    "js": "js", "mjs": "js", "cjs": "js",
    "ts": "ts",
    "php": "php",
    "pl": "pl", "pm": "pl",
    "sh": "sh", "bash": "sh",
    "swift": "swift",
    "scala": "scala",
    "cs": "cs",
    "d": "d",
    "c": "c", "h": "c",
    "hs": "hs",
    "kt": "kt", "kts": "kt",
}

# Lower-case language names (The Stack's `lang` values, GitHub linguist names, MultiPL-E's
# `language` values such as "go_test.go") -> tag.
_ALIASES: dict[str, str] = {
    "python": "py", "python3": "py", "java": "java", "c++": "cpp", "cplusplus": "cpp",
    "rust": "rs", "golang": "go", "go_test.go": "go", "ruby": "rb", "julia": "jl",
    "ocaml": "ml", "racket": "rkt", "javascript": "js", "typescript": "ts", "perl": "pl",
    "shell": "sh", "bash": "sh", "c#": "cs", "csharp": "cs", "c-sharp": "cs", "c_sharp": "cs", "haskell": "hs",
    "kotlin": "kt",
}

# Names that stand for several tags in `parse_langs` ("all": every language it may choose from).
GROUPS: dict[str, tuple[str, ...]] = {"high": HIGH_RESOURCE, "low": LOW_RESOURCE, "paper": PAPER_LANGS}
_ALL = ("all", "*")


class LanguageError(UserError, ValueError, KeyError):
    """An unknown language, or one the caller cannot use. A ValueError for the data config and a
    KeyError for evaluation, as the two registries this one replaces raised."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def normalize_lang(name: object) -> str | None:
    """The tag for a language name or tag (case-insensitive), or None if it is not one we know."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    if key in LANGUAGES:
        return key
    return _ALIASES.get(key)


def lang_from_path(path: object) -> str | None:
    """The tag implied by a file path's extension, or None (no extension, or one we do not know)."""
    if not isinstance(path, str) or not path:
        return None
    suffix = PurePosixPath(path.replace("\\", "/")).suffix
    return EXTENSIONS.get(suffix[1:].lower()) if suffix else None


def parse_langs(values: str | Iterable[str], within: Collection[str] | None = None,
                what: str = "") -> list[str]:
    """Tags from names, tags and groups (`high`, `low`, `paper`, `all`), comma- or space-separated,
    in order, without repeats. `within`: the tags the caller can use (evaluation: those with
    execution rules), in the order `all` lists them; a known language outside them is refused.
    LanguageError naming the first bad entry; `what` (e.g. "--langs") prefixes the message."""
    usable = tuple(LANGUAGES) if within is None else tuple(t for t in within if t in LANGUAGES)
    prefix = f"{what}: " if what else ""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        for name in str(value).replace(",", " ").split():
            key = name.lower()
            tags = usable if key in _ALL else GROUPS.get(key)
            if tags is None:
                tag = normalize_lang(name)
                if tag is None:
                    raise LanguageError(f"{prefix}unknown language {name!r}; known: "
                                        + ", ".join([*GROUPS, "all", *usable]))
                if tag not in usable:
                    raise LanguageError(f"{prefix}{LANGUAGES[tag]} ({name!r}) cannot be used here; "
                                        "choose from: " + ", ".join(usable))
                tags = (tag,)
            out.extend(t for t in tags if t in usable and t not in out)
    return out


def resource_group(tag: str) -> str:
    """`high`, `low` or `other`, following the paper's grouping."""
    if tag in HIGH_RESOURCE:
        return "high"
    if tag in LOW_RESOURCE:
        return "low"
    return "other"


def sort_langs(tags) -> list[str]:
    """Tags in report order: the table above first, then anything else alphabetically."""
    order = {t: i for i, t in enumerate(LANGUAGES)}
    return sorted(set(tags), key=lambda t: (order.get(t, len(order)), t))
