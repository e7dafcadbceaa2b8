"""Per-run toolchain cache folders that a killed run does not leave behind for good.

`Toolchains` builds its artefacts (C++ precompiled header, warm Go cache, javac archive: tens of
MB) in a fresh folder per run and removes it when the run ends; a `kill -9` skips that. So each
folder is named `multipl-moe-cache-<pid>-<random>` and holds `.lock`, flock'ed by its run for
as long as the folder is in use. The next run (`execute`, or any new cache) removes the folders
whose lock nobody holds and whose pid is dead:

- the flock is the real test: the kernel drops it when its holder dies, however it dies, and
  it is seen across pid namespaces (containers sharing /tmp), where a pid alone would lie;
- the pid covers the instant between creating the folder and locking it (the lock file only
  gets its name once locked), and an old pid that now belongs to someone else only delays the
  clean-up, never removes a live folder;
- only directories owned by our uid are touched (as root the parent is the shared /tmp), and
  folders of older versions (no pid in the name) are left alone: their owner cannot be known.

Why not one persistent cache folder: the artefacts depend on the exact compiler, headers and JDK
of the run (g++ silently ignores a precompiled header that no longer matches, and java one
CDS archive of another JDK), so reuse would need a key over all of them and a lock of its own;
a per-run folder is always right, and its build overlaps the other languages' programs anyway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
import tempfile
import threading
from pathlib import Path

PREFIX = "multipl-moe-cache-"
LOCK = ".lock"
_PID = re.compile(re.escape(PREFIX) + r"(\d+)-")
_held: dict[Path, int] = {}   # cache folder -> fd of its locked lock file
_mu = threading.Lock()


def parent() -> str:
    """Where cache folders go. As root, programs run as nobody: the cache must not sit under a
    private TMPDIR they cannot enter."""
    if os.geteuid() == 0 and os.path.isdir("/tmp"):
        return "/tmp"
    return tempfile.gettempdir()


def make(parent_dir: str | os.PathLike) -> Path:
    """A new, locked cache folder under `parent_dir` (stale ones there are removed first)."""
    sweep(parent_dir)
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent_dir))
    fd, tmp = tempfile.mkstemp(prefix=".lock-", dir=path)   # close-on-exec: children never hold it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, path / LOCK)   # a sweep only ever sees `.lock` already locked
    except BaseException:
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        raise
    with _mu:
        _held[path] = fd
    return path


def remove(path: Path) -> None:
    """Delete a folder from `make`, then let go of its lock."""
    shutil.rmtree(path, ignore_errors=True)
    with _mu:
        fd = _held.pop(Path(path), None)
    if fd is not None:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(parent_dir: str | os.PathLike) -> list[Path]:
    """Remove the cache folders under `parent_dir` left by dead runs; returns them."""
    removed = []
    try:
        entries = list(os.scandir(parent_dir))
    except OSError:
        return removed
    for entry in entries:
        m = _PID.match(entry.name)
        if not m or pid_alive(int(m.group(1))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            continue
        path = Path(entry.path)
        try:
            fd = os.open(path / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1   # its run died before locking it
        except OSError:
            continue
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue   # alive in another pid namespace
            shutil.rmtree(path, ignore_errors=True)   # fd-based: a planted symlink is not followed
            removed.append(path)
        finally:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    return removed
