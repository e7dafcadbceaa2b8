"""What produced an output: this project's version and git commit, and the versions of the
libraries whose behaviour the numbers depend on.

Every report, summary and checkpoint the project writes carries `provenance()`, so that a figure
can be traced to the code that computed it. Reading versions goes through package metadata, not
imports: asking does not load torch. The git commit is that of the checkout the package is
imported from (an editable install); an installed wheel has none, and says so (None), rather
than reporting the commit of whatever repository the user happens to be standing in.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "accelerate", "peft")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> dict | None:
    """{"commit": sha, "dirty": bool} of the checkout holding this package, or None."""
    root = Path(__file__).resolve().parents[3]   # src/multipl_moe/util -> the repository
    if not (root / ".git").exists():
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}   # reading must not take the index lock
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, env=env, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no", "--", "src"], capture_output=True,
                                text=True, timeout=10, env=env, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # Only the package's own sources decide "dirty": edited notes or outputs change no figure.
    return {"commit": sha, "dirty": bool(status.strip())}


def provenance() -> dict:
    """{"multipl_moe": version, "git": {...} | None, "libraries": {name: version}, "python",
    "created": UTC time}: JSON-ready."""
    from multipl_moe import __version__

    return {
        "multipl_moe": __version__,
        "git": git_commit(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "python": platform.python_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def one_line(p: dict | None = None) -> str:
    """`multipl-moe 0.1.0 (git 1a2b3c4d, dirty); torch 2.x, transformers 5.x, ...` for Markdown."""
    p = p or provenance()
    git = p.get("git")
    where = (f"git {git['commit'][:10]}{', uncommitted changes' if git.get('dirty') else ''}"
             if git else "no git checkout")
    libs = ", ".join(f"{k} {v or 'not installed'}" for k, v in p.get("libraries", {}).items())
    return f"multipl-moe {p.get('multipl_moe')} ({where}); {libs}; python {p.get('python')}"


CHECKPOINT_FILE = "multipl_moe_provenance.json"


def write_beside(folder, **extra) -> None:
    """`folder/multipl_moe_provenance.json`: what wrote this checkpoint. A file of its own, not a
    key in config.json: the time in it would otherwise make two byte-identical models differ
    (eval's reuse key hashes the checkpoint and leaves this file out)."""
    import json

    (Path(folder) / CHECKPOINT_FILE).write_text(
        json.dumps({**provenance(), **extra}, indent=2) + "\n", encoding="utf-8")
