"""Install the MultiPL-E toolchains and the sandbox from Debian packages (`make toolchains`).

As root (CI, containers) the missing packages are installed with
`apt-get install -y --no-install-recommends`, after an `apt-get update` only when the package
lists are missing or do not know a package. Otherwise nothing is changed and the one apt command
that would install them is printed. When everything is present it only runs `dpkg-query`, so
it is quick and idempotent. Julia is not packaged in Debian: it is reported, never installed.

Exit status: non-zero only when running as root and apt-get fails (so CI shows the failure).
Only the standard library and `multipl_moe.evaluation.languages` are imported, so this runs
before the virtual environment exists.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from multipl_moe.evaluation.languages import LANGUAGES
from multipl_moe.evaluation.toolchains import missing as language_missing

# Every language's packages, plus cargo (the brief's set of Rust tools), the sandbox (bubblewrap,
# and libseccomp, which compiles its seccomp filter), and the standard-library sources that the
# built-in demo corpus reads (`multipl-moe data local-corpus`).
CORPUS_SOURCES = ["golang-src", "rust-src", "openjdk-17-source"]
PACKAGES = tuple(dict.fromkeys([p for lang in LANGUAGES.values() for p in lang.packages]
                               + ["cargo", "bubblewrap", "libseccomp2"] + CORPUS_SOURCES))
_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                       text=True)
    return r.returncode == 0 and r.stdout.strip().endswith("install ok installed")


def known_to_apt(package: str) -> bool:
    r = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    return r.returncode == 0 and "Candidate:" in r.stdout and "Candidate: (none)" not in r.stdout


def _run(cmd: list[str]) -> int:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=_ENV).returncode


def _report() -> None:
    for code, lang in LANGUAGES.items():
        why = language_missing(lang)
        print(f"  {code:4s} {lang.name:7s} {'ok' if why is None else 'UNAVAILABLE: ' + why}")


def main() -> int:
    if not (shutil.which("dpkg-query") and shutil.which("apt-get")):
        print("toolchains: not a Debian/Ubuntu system; install these (Debian names) with your "
              f"package manager: {' '.join(PACKAGES)}")
        _report()
        return 0
    todo = [p for p in PACKAGES if not installed(p)]
    if not todo:
        print(f"toolchains: all {len(PACKAGES)} Debian packages present")
        _report()
        return 0
    install = ["apt-get", "install", "-y", "--no-install-recommends", *todo]
    if os.geteuid() != 0:
        print(f"toolchains: missing Debian packages: {' '.join(todo)}\n"
              f"  install them with: sudo apt-get update && sudo {' '.join(install)}")
        _report()
        return 0
    print(f"toolchains: installing {' '.join(todo)}")
    have_lists = bool(glob.glob("/var/lib/apt/lists/*_Packages*"))
    if not have_lists or not all(known_to_apt(p) for p in todo):
        if _run(["apt-get", "update"]) != 0:
            print("toolchains: apt-get update failed", file=sys.stderr)
            return 1
    rc = _run(install)
    if rc != 0:
        print(f"toolchains: apt-get install failed (exit {rc})", file=sys.stderr)
    _report()
    return rc


if __name__ == "__main__":
    sys.exit(main())
