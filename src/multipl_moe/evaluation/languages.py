"""Per-language execution rules: how MultiPL-E compiles, runs and judges a program.

Each `Language` says which file the program is written to, the compile and run commands, their
wall-clock limits, and how an exit code plus output become one of MultiPL-E's statuses
(OK / SyntaxError / Exception / Timeout). The commands and limits are MultiPL-E's own
(`evaluation/src/eval_*.py`: 15 s per step, 30 s for `go test`, `java -ea` with javatuples,
`g++ -std=c++17`, plain `rustc`), so our pass@k is comparable with published numbers. Where we
deviate it is for speed or robustness, never changing the verdict on a program that runs
normally (checked: 0 of 360 verdicts differ with and without the speed-ups):

- C++ may use a precompiled `<bits/stdc++.h>` (built per run by `toolchains`), but only when the
  program starts with `#include` lines that include it, so forcing it first changes nothing.
- javac gets C1-only JIT, the serial GC and a class-data-sharing archive of its own classes
  (a shorter JVM start); the program's own `java -ea` run is untouched.
- rustc links the program against the shared libstd (`-C prefer-dynamic`) instead of copying
  the static one with its debug info into every binary: 11.6 MB -> 19 KB, and 0.75 s -> 0.3 s
  per compile here, most of it the linker (issue 18). The code is the same std, so is every
  panic and exit code; the toolchain probe runs this way too, and without the shared libstd the
  run falls back to MultiPL-E's plain `rustc` (`toolchains`). `--no-toolchain-cache` keeps it off.
- Go runs `go test` in a temporary module directory instead of `go test FILE_test.go`: the file
  form buffers the whole test output in memory (gigabytes for a flooding program). The module's
  GOCACHE starts as a copy of one warmed per run: compiling and vetting `testing` and `fmt`
  (the only imports MultiPL-E's Go prompts have) is 1.1 s of a 1.3 s `go test`.
- "exit code 0" is never enough on its own: rackunit reports failures on stderr and exits 0 (so
  Racket needs an empty stderr, as in MultiPL-E), and Go needs no `FAIL` line as well as exit 0.

Nothing here runs anything; `sandbox` runs a `Plan`, `toolchains` checks availability. Names,
aliases and groups come from the registry (`multipl_moe.languages`); this module adds only how to
run each language that MultiPL-E can judge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from .. import languages as registry
from ..languages import PAPER_LANGS  # noqa: F401 (evaluation's default set, named here too)

# The only PATH programs see, sandboxed or not: system toolchains, never a user's ~/.cargo or
# pyenv shims (the sandbox does not mount home directories, and verdicts must not depend on mode).
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
JAVATUPLES_JAR = "/usr/share/java/javatuples.jar"  # Debian's libjavatuples-java

STATUSES = ("OK", "SyntaxError", "Exception", "Timeout", "MemoryExceeded")


@dataclass(frozen=True)
class ToolchainContext:
    """Per-run facts and artefacts some plans use (filled by `toolchains`; paths as programs
    see them). Each artefact only saves time; a plan works the same without it."""
    pch_dir: str | None = None        # folder with bits/stdc++.h.gch (C++ precompiled header)
    go_version: str | None = None     # "1.19": the `go` line of the temporary go.mod
    go_cache: str | None = None       # a GOCACHE warmed with testing + fmt (and their vet facts)
    javac_archive: str | None = None  # a class-data-sharing archive of javac's own classes
    rust_shared_std: bool = False     # link Rust programs against the shared libstd


@dataclass(frozen=True)
class Plan:
    """Everything needed to run one program: files for the work dir, then one or two steps."""
    files: Mapping[str, bytes]
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    compile_timeout: float = 15.0
    run_timeout: float = 15.0
    env: Mapping[str, str] = field(default_factory=dict)
    limit_address_space: bool = True


def _default_status(syntax_markers: tuple[str, ...]) -> Callable[[int, str, str], str]:
    def status(exit_code: int, stdout: str, stderr: str) -> str:
        if exit_code == 0:
            return "OK"
        if any(m in stderr for m in syntax_markers):
            return "SyntaxError"
        return "Exception"
    return status


def _racket_status(exit_code: int, stdout: str, stderr: str) -> str:
    # A failed rackunit check prints to stderr and racket still exits 0.
    if exit_code == 0 and not stderr:
        return "OK"
    return "SyntaxError" if "read-syntax" in stderr else "Exception"


def _go_status(exit_code: int, stdout: str, stderr: str) -> str:
    if "[setup failed]" in stdout or "[build failed]" in stdout:
        return "SyntaxError"
    if exit_code == 0 and "FAIL" not in stdout:
        return "OK"
    return "Exception"


@dataclass(frozen=True)
class Language:
    code: str                                  # MultiPL-E's short name: py, java, cpp, ...
    source: str                                # file the program is written to
    run: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    compile_timeout: float = 15.0
    run_timeout: float = 15.0
    tools: tuple[str, ...] = ()                # executables that must be on SANDBOX_PATH
    required_files: tuple[str, ...] = ()       # other files the programs need
    packages: tuple[str, ...] = ()             # Debian packages that provide all of the above
    env: Mapping[str, str] = field(default_factory=dict)
    limit_address_space: bool = True           # False for the JVM (see sandbox.Limits)
    status_rule: Callable[[int, str, str], str] | None = None
    syntax_markers: tuple[str, ...] = ()
    probe: str = ""                            # a tiny program that must pass if all works
    not_packaged: str = ""                     # why `make toolchains` cannot install it

    @property
    def name(self) -> str:
        """For humans: "C++" (from the registry)."""
        return registry.LANGUAGES[self.code]

    def status(self, exit_code: int, stdout: str, stderr: str) -> str:
        """Status of a run that compiled, finished in time and stayed within its limits."""
        rule = self.status_rule or _default_status(self.syntax_markers)
        return rule(exit_code, stdout, stderr)

    def plan(self, program: str, ctx: ToolchainContext) -> Plan:
        return Plan(files={self.source: program.encode()}, run=self.run, compile=self.compile,
                    compile_timeout=self.compile_timeout, run_timeout=self.run_timeout,
                    env=dict(self.env), limit_address_space=self.limit_address_space)


# `#include` lines only, up to and including <bits/stdc++.h>: then forcing the PCH first is a
# no-op for the program's meaning (every libstdc++ header has an include guard).
_PCH_ELIGIBLE = re.compile(r"\A(?:[ \t]*(?:#[ \t]*include[ \t]*<[^>\n]+>)?[ \t]*\n)*?"
                           r"[ \t]*#[ \t]*include[ \t]*<bits/stdc\+\+\.h>")


class Cpp(Language):
    def plan(self, program: str, ctx: ToolchainContext) -> Plan:
        plan = super().plan(program, ctx)
        if ctx.pch_dir and _PCH_ELIGIBLE.match(program):
            compile = ("g++", "-std=c++17", "-I", ctx.pch_dir, "-include", "bits/stdc++.h",
                       self.source, "-o", "prog")
            return replace(plan, compile=compile)
        return plan


class Java(Language):
    def plan(self, program: str, ctx: ToolchainContext) -> Plan:
        plan = super().plan(program, ctx)
        if ctx.javac_archive and plan.compile:
            compile = (plan.compile[0], f"-J-XX:SharedArchiveFile={ctx.javac_archive}",
                       *plan.compile[1:])
            return replace(plan, compile=compile)
        return plan


class Rust(Language):
    def plan(self, program: str, ctx: ToolchainContext) -> Plan:
        plan = super().plan(program, ctx)
        if ctx.rust_shared_std and plan.compile:
            return replace(plan, compile=(*plan.compile, "-C", "prefer-dynamic"))
        return plan


class Go(Language):
    def plan(self, program: str, ctx: ToolchainContext) -> Plan:
        plan = super().plan(program, ctx)
        gomod = f"module sandbox\n\ngo {ctx.go_version or '1.19'}\n".encode()
        plan = replace(plan, files={**plan.files, "go.mod": gomod})
        if ctx.go_cache:
            run = ("/bin/sh", "-c", f'mkdir -p "$GOCACHE" && cp -R {ctx.go_cache}/. "$GOCACHE" '
                                    f"&& exec {' '.join(plan.run)}")
            plan = replace(plan, run=run)
        return plan


_GO_ENV = {"GOCACHE": "/tmp/.cache/go-build", "GOPATH": "/tmp/go", "GOPROXY": "off",
           "GOTOOLCHAIN": "local", "GO111MODULE": "on", "GOFLAGS": "-count=1"}

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in [
    Language("py", "prog.py", run=("python3", "prog.py"), tools=("python3",),
             packages=("python3",), syntax_markers=("SyntaxError",), probe="import sys\n"),
    Java("java", "Problem.java",
         compile=("javac", "-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC",
                  "-encoding", "UTF8", "-cp", JAVATUPLES_JAR, "-d", ".", "Problem.java"),
         run=("java", "-ea", "-cp", f".:{JAVATUPLES_JAR}", "Problem"),
         tools=("javac", "java"), required_files=(JAVATUPLES_JAR,),
         packages=("openjdk-17-jdk-headless", "libjavatuples-java"), limit_address_space=False,
         probe="import org.javatuples.*;\nclass Problem { public static void main(String[] a)"
               " { assert Pair.with(1l, 2l).getValue1() == 2l; } }\n"),
    Cpp("cpp", "prog.cpp", compile=("g++", "prog.cpp", "-o", "prog", "-std=c++17"),
        run=("./prog",), tools=("g++",), packages=("g++",),
        probe="#include<assert.h>\n#include<bits/stdc++.h>\nint main() { assert(1); }\n"),
    Rust("rs", "prog.rs", compile=("rustc", "prog.rs", "-o", "prog"), run=("./prog",),
         tools=("rustc",), packages=("rustc",), probe="fn main() {}\n"),
    Go("go", "main_test.go", run=("go", "test"), run_timeout=30.0, tools=("go",),
       packages=("golang-go",), env=_GO_ENV, status_rule=_go_status,
       probe='package probe_test\n\nimport "testing"\n\nfunc TestProbe(t *testing.T) {}\n'),
    Language("rb", "prog.rb", run=("ruby", "prog.rb"), tools=("ruby",),
             packages=("ruby", "ruby-test-unit"), syntax_markers=("syntax error", "SyntaxError"),
             probe="require 'test/unit'\n"),
    Language("lua", "prog.lua", run=("lua", "prog.lua"), tools=("lua",),
             packages=("lua5.4", "lua-unit"), probe="lu = require('luaunit')\n"),
    Language("jl", "prog.jl", run=("julia", "prog.jl"), run_timeout=5.0,
             tools=("julia",), syntax_markers=("syntax:", "ParseError"), probe="using Test\n",
             limit_address_space=False,  # like the JVM, Julia reserves address space up front
             not_packaged="Julia is not packaged in Debian; install it from julialang.org "
                          "into /usr/local or /usr"),
    Language("ml", "prog.ml", run=("ocaml", "prog.ml"), tools=("ocaml",),
             packages=("ocaml",), syntax_markers=("Syntax error",), probe="let () = ()\n"),
    Language("r", "prog.r", run=("Rscript", "prog.r"), tools=("Rscript",),
             packages=("r-base-core",), syntax_markers=("unexpected",), probe="invisible(1)\n"),
    Language("rkt", "prog.rkt", run=("racket", "prog.rkt"), tools=("racket",),
             packages=("racket",), status_rule=_racket_status,
             probe="#lang racket\n(require rackunit)\n(check-equal? 1 1)\n"),
]}

ALL_LANGS = tuple(LANGUAGES)
assert set(ALL_LANGS) <= set(registry.LANGUAGES), "execution rules for a language the registry lacks"


def canonical(tag: str) -> str:
    """MultiPL-E `language` field or a user's name for a language -> our code; KeyError if it is
    not one we can run (AttributeError if it is not a string: report.collect counts that file as
    unreadable)."""
    code = registry.normalize_lang(tag.strip())
    if code not in LANGUAGES:
        raise KeyError(tag)
    return code


def parse_langs(text: str, what: str = "--langs") -> list[str]:
    """'py,java,cpp', 'paper', 'low', 'all' ... -> codes we can run (registry.LanguageError, a
    KeyError and a UserError, naming an unknown or unrunnable one)."""
    return registry.parse_langs(text, within=LANGUAGES, what=what)
