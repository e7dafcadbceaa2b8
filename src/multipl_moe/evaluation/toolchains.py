"""Which languages can run here, checked before any program runs, and per-run build artefacts.

A language whose toolchain is missing (Julia on Debian, say) must be reported as unavailable and
skipped, never scored 0: a missing compiler would otherwise turn into a column of SyntaxErrors
that looks like a terrible model. So before executing, for each language needed:

1. static check: its executables are on the sandbox PATH and its support files exist;
2. probe: a tiny program using the language's test library (javatuples, test-unit, luaunit,
   rackunit, ...) must come back OK *through the same runner*, so a toolchain that exists but
   cannot work inside the sandbox is caught too.

Before the probes, one trivial sandbox run checks the sandbox itself; if that fails the whole
run stops (SandboxError) instead of marking every language unavailable.

Per run, a private cache folder (read-only for programs, removed by `close()`) gets what makes
the slow toolchains fast without changing a verdict (measured on a MultiPL-E program):
- C++: `<bits/stdc++.h>` precompiled once (about 4 s): parsing it is ~1 s of g++'s 1.2 s;
- Go: a GOCACHE warmed with testing + fmt: 1.3 s -> 0.25 s per `go test`;
- Java: a class-data-sharing archive of javac's classes: about 0.2 s off each javac;
- Rust: no artefact, but programs link against the shared libstd (`languages.Rust`), if the
  probe passes that way; otherwise the probe is repeated with MultiPL-E's plain `rustc`.
The artefacts are built on the host from trusted inputs only (system headers, a fixed file).
`execute` builds them while the programs of the other languages run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from . import runcache
from .languages import LANGUAGES, SANDBOX_PATH, Language, Plan, ToolchainContext
from .sandbox import Runner, SandboxError

_HOST_ENV = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "HOME": "/nonexistent"}


def missing(lang: Language) -> str | None:
    """Why `lang` cannot run here (static check), or None."""
    if lang.not_packaged and not all(shutil.which(t, path=SANDBOX_PATH) for t in lang.tools):
        return lang.not_packaged
    for tool in lang.tools:
        if not shutil.which(tool, path=SANDBOX_PATH):
            pkgs = " ".join(lang.packages)
            return f"`{tool}` not found on {SANDBOX_PATH}" + (f" (Debian: {pkgs})" if pkgs else "")
    for f in lang.required_files:
        if not os.path.exists(f):
            return f"{f} not found (Debian: {' '.join(lang.packages)})"
    return None


def _host(cmd: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    # Niced: builds run beside timed programs of other languages (`execute`), which must not
    # lose their CPU to them.
    nice = shutil.which("nice")
    return subprocess.run([nice, "-n", "10", *cmd] if nice else cmd, env=env or _HOST_ENV,
                          capture_output=True, text=True, errors="replace", **kw)


def go_version() -> str | None:
    """'1.19' for go1.19.8: the `go` line of the per-program go.mod."""
    try:
        out = _host(["go", "env", "GOVERSION"], timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"go(\d+)\.(\d+)", out.strip())
    return f"{m.group(1)}.{m.group(2)}" if m else None


def build_pch(cache: Path) -> bool:
    """Precompile <bits/stdc++.h> with MultiPL-E's flags into cache/bits/.

    The header itself is linked next to the .gch: the program's own `#include<bits/stdc++.h>`
    (after the forced one) must find a header in the same folder as the precompiled one.
    """
    probe = _host(["g++", "-std=c++17", "-x", "c++", "-E", "-H", "-o", os.devnull, "-"],
                  input="#include <bits/stdc++.h>\n", timeout=120)
    header = next((ln[2:].strip() for ln in probe.stderr.splitlines() if ln.startswith(". ")
                   and ln.rstrip().endswith("bits/stdc++.h")), None)
    if probe.returncode != 0 or header is None:
        return False
    bits = cache / "bits"
    bits.mkdir(parents=True, exist_ok=True)
    os.symlink(header, bits / "stdc++.h")
    gch = bits / "stdc++.h.gch"
    if _host(["g++", "-std=c++17", "-x", "c++-header", header, "-o", str(gch)],
             timeout=300).returncode != 0:
        return False
    # g++ silently ignores an unusable PCH: check that it is used (-H marks it with "!").
    src = cache / "check.cpp"
    src.write_text("#include<assert.h>\n#include<bits/stdc++.h>\nint main() {}\n")
    check = _host(["g++", "-std=c++17", "-I", str(cache), "-include", "bits/stdc++.h",
                   "-Winvalid-pch", "-H", "-fsyntax-only", str(src)], timeout=120)
    src.unlink()
    return check.returncode == 0 and f"! {gch}" in check.stderr


_GO_WARMUP = ('package warm_test\n\nimport (\n    "testing"\n    "fmt"\n)\n\n'
              'func TestWarm(t *testing.T) { _ = fmt.Sprintf("%v", t) }\n')


def warm_go_cache(cache: Path, version: str) -> bool:
    """Fill cache/ as a GOCACHE by testing a trusted file that imports testing and fmt."""
    work = cache.parent / "go-warmup"
    work.mkdir()
    (work / "go.mod").write_text(f"module sandbox\n\ngo {version}\n")
    (work / "main_test.go").write_text(_GO_WARMUP)
    env = {**_HOST_ENV, "GOCACHE": str(cache), "GOPATH": str(work / "gopath"),
           **{k: v for k, v in LANGUAGES["go"].env.items() if k not in ("GOCACHE", "GOPATH")}}
    ok = _host(["go", "test"], env=env, cwd=work, timeout=300).returncode == 0
    shutil.rmtree(work, ignore_errors=True)
    return ok


def build_javac_archive(archive: Path) -> bool:
    """A class-data-sharing archive of the classes javac loads (about 0.2 s off each javac)."""
    java = LANGUAGES["java"]
    work = archive.parent / "javac-warmup"
    work.mkdir()
    (work / "Problem.java").write_text(java.probe)
    cmd = [java.compile[0], f"-J-XX:ArchiveClassesAtExit={archive}", *java.compile[1:]]
    ok = _host(cmd, cwd=work, timeout=300).returncode == 0
    shutil.rmtree(work, ignore_errors=True)
    return ok and archive.exists()


class Toolchains:
    """Per-run toolchain state: availability, build artefacts. Use as a context manager."""

    def __init__(self, runner: Runner, use_cache: bool = True):
        self.runner = runner
        self.use_cache = use_cache
        # Without the cache (--no-toolchain-cache) every plan is MultiPL-E's reference command.
        self.context = ToolchainContext(rust_shared_std=use_cache)
        self.unavailable: dict[str, str] = {}
        self._cache: Path | None = None
        self._visible = ""  # the cache folder as programs see it
        self.cancelled = threading.Event()  # set by `execute` on Ctrl-C: start nothing more

    def __enter__(self) -> "Toolchains":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._cache is not None:
            runcache.remove(self._cache)
            self._cache = None

    def self_test(self) -> None:
        """One trivial run: the sandbox itself must work, or nothing can be judged."""
        out = self.runner.run(Plan(files={}, run=("true",), run_timeout=30))
        if out.exit_code != 0:
            raise SandboxError("the sandbox does not work here: " + (out.stderr.strip()[-500:] or
                                                                    f"exit code {out.exit_code}"))

    def _build(self, code: str) -> dict[str, str]:
        """Build `code`'s per-run artefact; returns the ToolchainContext fields it fills."""
        if self.cancelled.is_set():
            return {}
        if code == "go":
            version = go_version()
            fields = {"go_version": version} if version else {}
            if version and self.use_cache and warm_go_cache(self._cache / "go-build", version):
                fields["go_cache"] = f"{self._visible}/go-build"
            return fields
        if code == "cpp" and build_pch(self._cache / "pch"):
            return {"pch_dir": f"{self._visible}/pch"}
        if code == "java" and build_javac_archive(self._cache / "javac.jsa"):
            return {"javac_archive": f"{self._visible}/javac.jsa"}
        return {}

    def _probe(self, code: str) -> str | None:
        if self.cancelled.is_set():
            return "cancelled"
        lang = LANGUAGES[code]
        out = self.runner.run(lang.plan(lang.probe, self.context))
        if out.compiled and not out.timed_out and lang.status(
                out.exit_code, out.stdout, out.stderr) == "OK":
            return None
        if code == "rs" and self.context.rust_shared_std:
            # No shared libstd where programs run: link statically, as MultiPL-E does.
            self.context = replace(self.context, rust_shared_std=False)
            return self._probe(code)
        tail = (out.stderr.strip() or out.stdout.strip())[-300:]
        return f"probe program failed: {tail or f'exit code {out.exit_code}'}"

    def builds_artefact(self, code: str) -> bool:
        """Whether `prepare` builds a per-run artefact for `code` (seconds, not milliseconds)."""
        return code == "go" or (self.use_cache and code in ("cpp", "java"))

    def prepare(self, codes: list[str], workers: int = 2) -> dict[str, str]:
        """Check `codes` and build their artefacts; returns {code: why unavailable}.

        Artefacts are built while the other languages' probes run; a language is probed once
        its artefact exists, so the probe also checks the artefact works inside the runner.
        """
        self.self_test()
        todo = []
        for code in codes:
            why = missing(LANGUAGES[code])
            if why:
                self.unavailable[code] = why
            else:
                todo.append(code)
        built = [c for c in todo if self.builds_artefact(c)]
        if built and self._cache is None:
            self._cache = runcache.make(runcache.parent())  # locked: a later run cleans up after a kill
            self._visible = self.runner.expose(self._cache)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            builds = {c: pool.submit(self._build, c) for c in built}
            probes = {c: pool.submit(self._probe, c) for c in todo if c not in builds}
            for c, fut in builds.items():
                self.context = replace(self.context, **fut.result())
            if self._cache is not None:  # readable by the sandbox's unprivileged uid
                _make_world_readable(self._cache)
            probes.update({c: pool.submit(self._probe, c) for c in builds})
            for c in todo:
                why = probes[c].result()
                if why:
                    self.unavailable[c] = why
        return {c: self.unavailable[c] for c in codes if c in self.unavailable}


def _make_world_readable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
