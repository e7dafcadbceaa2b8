"""Language tags: file extension or language name -> tag, and the high/low-resource grouping.

Tags are MultiPL-E's short names where MultiPL-E has the language (py, java, cpp, rs, go, rb, lua,
jl, ml, r, rkt, and js, ts, php, pl, sh, swift, scala, cs, d), so per-language training figures
line up with per-language benchmark figures without a mapping table; a few others (c, hs, kt) are
added for corpora such as The Stack.
"""

from __future__ import annotations

from pathlib import PurePosixPath

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
    "shell": "sh", "bash": "sh", "c#": "cs", "csharp": "cs", "c-sharp": "cs", "haskell": "hs",
    "kotlin": "kt",
}


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


def parse_langs(values) -> list[str]:
    """Tags from names, tags and the groups `high` / `low` (also comma-separated), in order,
    without repeats; ValueError naming the first unknown entry."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        for name in str(value).replace(",", " ").split():
            group = {"high": HIGH_RESOURCE, "low": LOW_RESOURCE}.get(name.lower())
            tag = normalize_lang(name)
            if group is None and tag is None:
                raise ValueError(f"unknown language {name!r}; known: high, low, "
                                 + " ".join(LANGUAGES))
            out.extend(t for t in (group or (tag,)) if t not in out)
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
