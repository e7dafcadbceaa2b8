"""The built-in corpus: source code that the installed toolchains ship, with language labels.

No dataset can be downloaded on the machines this project runs on, yet every one of them has
compilers and interpreters, and those ship their standard libraries as source: Python's stdlib,
the C++ standard headers, Go's `src`, Ruby's stdlib, the JDK's `src.zip` (read in place), Rust's
`library`, and Lua, Julia, OCaml, R or Racket sources where installed. That is real, idiomatic
code in the paper's high-resource (py, java, cpp) and low-resource (rs, go, rb, ...) languages.

The build is deterministic for a given machine: each language takes the first root found in a
fixed list; files are visited in the order of a hash of their path (so a byte cap samples the
whole library rather than its alphabetically first folders); huge, binary and generated files
are skipped, and exact duplicates are kept once. Rows: `id`, `lang`, `group`, `source`, `path`,
`content`; the `id` (`lang/source/path`) is stable across builds.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from multipl_moe.languages import LANGUAGES, resource_group, sort_langs
from multipl_moe.util.atomic import write_jsonl_atomic

# Debian packages that provide each language's sources (named in the "missing" report).
APT_PACKAGES = {"py": "python3", "java": "openjdk-17-source", "cpp": "libstdc++-12-dev",
                "rs": "rust-src", "go": "golang-src", "rb": "ruby", "lua": "lua5.4 (+ lua libs)",
                "jl": "julia", "ml": "ocaml", "r": "r-base", "rkt": "racket"}
SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages", "node_modules", "testdata",
             "test_data"}
_GENERATED = re.compile(rb"(?i)(do not edit|@generated|auto-?generated|"
                        rb"this file (is|was|has been) (automatically |mechanically )?generated)")


@dataclass(frozen=True)
class CorpusSource:
    """One language's root: a folder, or a zip read in place (the JDK's src.zip)."""

    lang: str
    name: str
    root: Path
    exts: tuple[str, ...] | None
    """File suffixes taken (lower case, with the dot); None: every file (C++ headers)."""
    prefix: str = ""
    """Only zip members under this prefix."""


@dataclass
class CorpusReport:
    sources: dict[str, CorpusSource] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    files: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    """Reason (`too_large`, `binary`, `generated`, `duplicate`, `over_cap`) -> files."""

    def table(self) -> str:
        rows = [f"{'lang':<5} {'group':<6} {'files':>6} {'bytes':>12}  source"]
        for lang in sort_langs(self.sources):
            src = self.sources[lang]
            rows.append(f"{lang:<5} {resource_group(lang):<6} {self.files[lang]:>6} "
                        f"{self.bytes[lang]:>12,}  {src.name} ({src.root})")
        rows.append(f"{'total':<5} {'':<6} {sum(self.files.values()):>6} "
                    f"{sum(self.bytes.values()):>12,}")
        rows.append("found: " + (" ".join(sort_langs(self.sources)) or "none"))
        if self.missing:
            hints = ", ".join(f"{m} ({APT_PACKAGES.get(m, '?')})" for m in self.missing)
            rows.append(f"missing: {hints}")
        if self.skipped:
            rows.append("skipped files: " + ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())))
        return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# where each toolchain keeps its sources

def _version_key(p: str) -> list:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", p)]


def _newest(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern), key=_version_key, reverse=True)


def _run(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _javac_home() -> list[str]:
    javac = shutil.which("javac")
    return [str(Path(os.path.realpath(javac)).parent.parent)] if javac else []


def _candidates() -> dict[str, list[tuple[str, Callable[[], list[str]], tuple | None, str]]]:
    """lang -> [(source name, () -> candidate paths, suffixes, zip prefix)]; tried in order."""
    home = str(Path.home())
    return {
        "py": [("python-stdlib", lambda: [sysconfig.get_paths()["stdlib"]], (".py",), "")],
        "java": [("jdk-src", lambda: [f"{h}/lib/src.zip" for h in
                                      [os.environ.get("JAVA_HOME", ""), *_javac_home(),
                                       *_newest("/usr/lib/jvm/*")] if h], (".java",), "")],
        "cpp": [("libstdc++", lambda: _newest("/usr/include/c++/[0-9]*")
                 + _newest("/usr/local/include/c++/[0-9]*"), None, "")],
        "rs": [("rust-library", lambda: ["/usr/lib/rustlib/src/rust/library",
                                         "/usr/local/lib/rustlib/src/rust/library"]
                + [f"{s}/lib/rustlib/src/rust/library"
                   for s in [_run(["rustc", "--print", "sysroot"])] if s], (".rs",), "")],
        "go": [("go-src", lambda: [f"{g}/src" for g in
                                   [os.environ.get("GOROOT", ""), "/usr/lib/go", "/usr/share/go",
                                    *_newest("/usr/lib/go-*"), *_newest("/usr/share/go-*"),
                                    "/usr/local/go", _run(["go", "env", "GOROOT"]) or ""] if g],
                (".go",), "")],
        "rb": [("ruby-stdlib", lambda: _newest("/usr/lib/ruby/[0-9]*")
                + _newest("/usr/local/lib/ruby/[0-9]*")
                + [_run(["ruby", "-e", "print RbConfig::CONFIG['rubylibdir']"]) or ""],
                (".rb",), "")],
        "lua": [("lua-libs", lambda: _newest("/usr/share/lua/5.*")
                 + _newest("/usr/local/share/lua/5.*"), (".lua",), "")],
        "jl": [("julia-base", lambda: ["/usr/share/julia/base", "/usr/local/share/julia/base"]
                + _newest("/opt/julia*/share/julia/base")
                + _newest(f"{home}/.julia/juliaup/*/share/julia/base"), (".jl",), "")],
        "ml": [("ocaml-stdlib", lambda: _newest(f"{home}/.opam/*/lib/ocaml")
                + ["/usr/lib/ocaml", "/usr/local/lib/ocaml"], (".ml", ".mli"), "")],
        "r": [("r-library", lambda: ["/usr/lib/R/library", "/usr/local/lib/R/library",
                                     "/usr/lib/R/site-library"], (".r",), "")],
        "rkt": [("racket-collects", lambda: ["/usr/share/racket/collects",
                                             "/usr/local/share/racket/collects",
                                             "/usr/racket/collects"], (".rkt",), "")],
    }


def find_sources(langs: list[str] | None = None) -> tuple[dict[str, CorpusSource], list[str]]:
    """(lang -> the first source root found, languages with none) for `langs` (default: all)."""
    found: dict[str, CorpusSource] = {}
    missing: list[str] = []
    for lang, options in _candidates().items():
        if langs is not None and lang not in langs:
            continue
        for name, paths, exts, prefix in options:
            for p in paths():
                if p and (os.path.isdir(p) or (p.endswith(".zip") and os.path.isfile(p))):
                    root = Path(os.path.realpath(p))
                    if _list_files(CorpusSource(lang, name, root, exts, prefix), 1 << 62, limit=1):
                        found[lang] = CorpusSource(lang, name, root, exts, prefix)
                        break
            if lang in found:
                break
        else:
            missing.append(lang)
    return found, missing


# ---------------------------------------------------------------------------------------------
# reading

def _list_files(src: CorpusSource, max_file_bytes: int, limit: int | None = None,
                skipped: Counter | None = None) -> list[tuple[str, int]]:
    """(relative path, size) of the source's candidate files."""
    out: list[tuple[str, int]] = []

    def take(rel: str, size: int) -> bool:
        name = rel.rsplit("/", 1)[-1]
        if name.startswith(".") or (src.exts is not None and not name.lower().endswith(src.exts)):
            return False
        if size <= 0 or size > max_file_bytes:
            if skipped is not None and size > max_file_bytes:
                skipped["too_large"] += 1
            return False
        out.append((rel, size))
        return limit is not None and len(out) >= limit

    if src.root.suffix == ".zip":
        with zipfile.ZipFile(src.root) as z:
            for info in z.infolist():
                if not info.is_dir() and info.filename.startswith(src.prefix):
                    parts = info.filename.split("/")
                    if not any(p in SKIP_DIRS for p in parts[:-1]) and take(info.filename, info.file_size):
                        break
        return out
    for dirpath, dirnames, filenames in os.walk(src.root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(src.root).as_posix()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if take(rel, os.path.getsize(path)):
                return out
    return out


def _why_not_code(raw: bytes) -> str | None:
    """`binary`, `generated`, or None for a file that looks like hand-written source."""
    if b"\x00" in raw:
        return "binary"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    if _GENERATED.search(raw[:2048]):
        return "generated"
    lines = text.splitlines() or [""]
    if max(map(len, lines)) > 1000 or len(text) / len(lines) > 200:
        return "generated"  # minified code or embedded data tables
    alnum = sum(c.isalnum() for c in text)
    if alnum < 0.25 * len(text):
        return "generated"
    return None


def iter_corpus(sources: dict[str, CorpusSource], *, max_bytes_per_lang: int | None = None,
                max_file_bytes: int = 256 * 1024, report: CorpusReport | None = None,
                progress: bool = False) -> Iterator[dict]:
    """The corpus rows, language by language (report order), files in path-hash order."""
    from tqdm import tqdm

    report = report if report is not None else CorpusReport()
    seen: set[bytes] = set()
    for lang in sort_langs(sources):
        src = sources[lang]
        report.sources[lang] = src
        files = _list_files(src, max_file_bytes, skipped=report.skipped)
        files.sort(key=lambda f: hashlib.sha1(f"{lang}/{f[0]}".encode()).digest())
        cap = max_bytes_per_lang if max_bytes_per_lang else float("inf")
        zf = zipfile.ZipFile(src.root) if src.root.suffix == ".zip" else None
        try:
            bar = tqdm(files, desc=f"local-corpus {lang}", unit="file", disable=not progress,
                       leave=False, file=sys.stderr)
            for rel, size in bar:
                if report.bytes[lang] + size > cap:
                    report.skipped["over_cap"] += 1
                    if cap - report.bytes[lang] < 512:
                        break
                    continue
                raw = zf.read(rel) if zf is not None else (src.root / rel).read_bytes()
                why = _why_not_code(raw)
                if why is None:
                    digest = hashlib.sha256(raw).digest()
                    why = "duplicate" if digest in seen else None
                    seen.add(digest)
                if why:
                    report.skipped[why] += 1
                    continue
                report.files[lang] += 1
                report.bytes[lang] += len(raw)
                yield {"id": f"{lang}/{src.name}/{rel}", "lang": lang,
                       "group": resource_group(lang), "source": src.name, "path": rel,
                       "content": raw.decode("utf-8")}
        finally:
            if zf is not None:
                zf.close()


def build_local_corpus(out: Path, *, langs: list[str] | None = None,
                       max_bytes_per_lang: int | None = None, max_file_bytes: int = 256 * 1024,
                       progress: bool = False) -> CorpusReport:
    """Write the built-in corpus to `out` (JSONL, atomically) and return what went into it."""
    for lang in langs or []:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language tag {lang!r}")
    sources, missing = find_sources(langs)
    report = CorpusReport(missing=missing)
    write_jsonl_atomic(iter_corpus(sources, max_bytes_per_lang=max_bytes_per_lang,
                                   max_file_bytes=max_file_bytes, report=report,
                                   progress=progress), out)
    return report
