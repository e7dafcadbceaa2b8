"""Outputs that appear whole or not at all: write to a temporary sibling, then rename.

A crash, a Ctrl-C or an error half-way through leaves no half-written checkpoint, corpus or
results file behind, and an existing output is only replaced on request (`force`). A full disk
is reported as one line naming the output and its filesystem (`DiskFullError`), not as the
writer library's traceback.

This is the one place that writes through a temporary sibling: `atomic_dir`, `atomic_file` and the
whole-file writers below (`write_bytes_atomic`, `write_json_atomic`, `write_jsonl_atomic`), plus
`replace_then_append` for a journal that must start whole and then grow.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from ..errors import UserError


class OutputExistsError(FileExistsError):
    pass


class DiskFullError(UserError, OSError):
    """A write ran out of space (or quota); what was half-written has been removed."""

    def __str__(self) -> str:  # the CLI prints one line: no "[Errno 28]" prefix
        return self.strerror or super().__str__()


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How the writers we use report ENOSPC without an errno: safetensors (Rust) puts the OS error in
# the message; torch.save's C++ zip writer says only "unexpected pos" / "iostream error".
_FULL_MESSAGES = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


def _mount_point(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def _free_bytes(path: Path) -> int | None:
    try:
        s = os.statvfs(_mount_point(path))
    except OSError:
        return None
    return s.f_bavail * s.f_frsize


def is_disk_full(exc: BaseException, path: str | os.PathLike) -> bool:
    """Did `exc`, raised while writing under `path`, come from a full disk?

    Call it before removing the partial output: torch.save's C++ writer raises a bare
    RuntimeError, and the only sign of ENOSPC left then is a filesystem with nothing free (a
    write that does not fit fills the disk to the last block before it fails).
    """
    if not isinstance(exc, Exception):
        return False
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if any(m in str(e).lower() for m in _FULL_MESSAGES):
            return True
        e = e.__cause__ or e.__context__
    return isinstance(exc, (OSError, RuntimeError)) and _free_bytes(Path(path)) == 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def disk_full_error(path: str | os.PathLike, removed: str, then: str = "") -> DiskFullError:
    """The one-line error for a write to `path` that ran out of space; call it after removing the
    partial output (`removed` names it), so that the free space it reports is what is left."""
    path = Path(path)
    mount = _mount_point(path)
    try:
        s = os.statvfs(mount)
        size, free = f", size {_size(s.f_blocks * s.f_frsize)}", f" ({_size(s.f_bavail * s.f_frsize)} free now)"
    except OSError:
        size = free = ""
    tail = f"; {then}" if then else ""
    return DiskFullError(errno.ENOSPC, f"no space left on device writing {path} (filesystem {mount}{size}); "
                                      f"removed {removed}{free}{tail}")


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes `out` when the block exits without error."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException as e:
        full = is_disk_full(e, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            kept = "the previous one is unchanged" if out.exists() else ""
            raise disk_full_error(out, "the partial output", kept) from None
        raise


def _open_temp(path: Path, mode: str, **open_kwargs) -> tuple[IO, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        return os.fdopen(fd, mode, **open_kwargs), tmp
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise


def _discard(e: BaseException, f: IO, tmp: str, path: Path) -> None:
    """Remove the temporary file after `e`; re-raise a full disk as one line."""
    full = is_disk_full(e, tmp)
    with contextlib.suppress(OSError):
        f.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    if full:
        kept = "the previous one is unchanged" if path.exists() else ""
        raise disk_full_error(path, "the partial file", kept) from None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", fsync: bool = False, **open_kwargs) -> Iterator:
    """Open a temporary sibling of `path` for writing; it replaces `path` on success.

    fsync=True flushes it to the disk before the rename (a manifest that vouches for other files
    must not reach the disk before them)."""
    path = Path(path)
    f, tmp = _open_temp(path, mode, **open_kwargs)
    try:
        with f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _discard(e, f, tmp, path)
        raise


def replace_then_append(path: str | os.PathLike, fill: Callable[[IO], None], mode: str = "w",
                        **open_kwargs) -> IO:
    """A fresh file holding what `fill` writes, renamed over `path` and returned open for
    appending: a symlink or hard link planted at `path` is replaced, never written through."""
    path = Path(path)
    f, tmp = _open_temp(path, mode, **open_kwargs)
    try:
        fill(f)
        f.flush()
        os.replace(tmp, path)
    except BaseException as e:
        _discard(e, f, tmp, path)
        raise
    return f


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """JSON, gzipped if the name ends in .gz (with a fixed mtime, so equal data gives equal bytes)."""
    data = json.dumps(obj, indent=indent).encode()
    write_bytes_atomic(path, gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def write_jsonl_atomic(rows: Iterable[Any], path: str | os.PathLike) -> int:
    """One JSON line per row (UTF-8 kept as is); the number of rows written."""
    n = 0
    with atomic_file(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
