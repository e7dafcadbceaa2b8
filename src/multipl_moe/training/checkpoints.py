"""Training checkpoints that prove they are whole: a manifest written last, checked on resume.

A checkpoint directory is written under a temporary name and renamed, so a kill never leaves a
half-written one under its real name. What renaming cannot catch is damage afterwards (a
truncated copy, a failing disk, a user's mistake): the manifest (every file's size and SHA-256,
written atomically after everything else) lets `--resume` tell an intact checkpoint from a
damaged one, and fall back to the newest intact one instead of failing, or worse, resuming
inexactly (Accelerate ignores an unreadable RNG-state file without a word).

Checkpoints written before manifests existed are verified by loading each file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..util.atomic import atomic_file

MANIFEST = "manifest.json"
STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"step-(\d+)")
_CHUNK = 1 << 20


def step_dirs(root: Path) -> list[Path]:
    """`step-NNNNNN` directories under `root`, newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def _files(ckpt: Path) -> list[Path]:
    return sorted(p for p in ckpt.rglob("*") if p.is_file() and p.name != MANIFEST
                  and not p.name.startswith(f".{MANIFEST}"))


def _sha256_and_sync(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
        # The rename that publishes the checkpoint must not reach the disk before its contents.
        os.fsync(f.fileno())
    return h.hexdigest()


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(ckpt: Path) -> None:
    """Record every file of `ckpt` (size, SHA-256); written last and atomically."""
    files = _files(ckpt)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(files)))) as pool:  # hashlib releases the GIL
        digests = list(pool.map(_sha256_and_sync, files))
    manifest = {"format": 1, "files": {p.relative_to(ckpt).as_posix(): {"size": p.stat().st_size, "sha256": d}
                                       for p, d in zip(files, digests)}}
    with atomic_file(ckpt / MANIFEST, fsync=True) as f:
        f.write(json.dumps(manifest, indent=1) + "\n")
    _sync_dir(ckpt)


def _check_state(ckpt: Path) -> str | None:
    try:
        step = json.loads((ckpt / STATE).read_text())["step"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{STATE} unreadable ({type(e).__name__}: {e})"
    if step != int(ckpt.name.split("-")[1]):
        return f"{STATE} says step {step!r}, the directory step {ckpt.name}"
    return None


def _verify_by_manifest(ckpt: Path) -> str | None:
    try:
        files = json.loads((ckpt / MANIFEST).read_text())["files"]
        entries = [(name, int(v["size"]), str(v["sha256"])) for name, v in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST} unreadable ({type(e).__name__})"
    for name, size, _ in entries:  # sizes first: cheap, and what truncation changes
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
    for name, _, digest in entries:
        h = hashlib.sha256()
        with open(ckpt / name, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != digest:
            return f"{name} does not match its checksum"
    return _check_state(ckpt)


def _verify_by_loading(ckpt: Path) -> str | None:
    import torch

    problem = _check_state(ckpt)
    if problem:
        return problem
    names = {p.name for p in ckpt.iterdir()}
    needs = {"model weights": ("model", "pytorch_model"), "optimizer state": ("optimizer",),
             "random state": ("random_states_",)}
    for what, prefixes in needs.items():
        if not any(n.startswith(prefixes) for n in names):
            return f"no {what} file"
    for path in _files(ckpt):
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as st:
                    for key in st.keys():
                        st.get_tensor(key)
            elif path.suffix in (".bin", ".pkl", ".pt", ".pth"):
                # Our own run's files (Accelerate pickles its RNG state): the same trust as resuming.
                torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # every loader has its own error types for a damaged file
            return f"{path.relative_to(ckpt)} cannot be loaded ({type(e).__name__})"
    return None


def verify(ckpt: Path) -> tuple[str | None, bool]:
    """(what is damaged or None, whether a manifest was checked)."""
    if (ckpt / MANIFEST).exists():
        return _verify_by_manifest(ckpt), True
    return _verify_by_loading(ckpt), False


def select(root: Path, warn) -> Path | None:
    """The newest intact checkpoint under `root` (None if there is none at all).

    Damaged newer ones are renamed `damaged-step-N` (kept for inspection, out of the way of
    pruning and of the next resume) and named in a warning. If every checkpoint is damaged this
    raises, rather than silently starting over.
    """
    from .config import TrainConfigError

    damaged = []
    for ckpt in step_dirs(root):
        problem, with_manifest = verify(ckpt)
        if problem is None:
            if not with_manifest:
                warn(f"{ckpt} has no {MANIFEST} (written by an older version): verified by loading every file")
            for bad, why in damaged:
                aside = _set_aside(bad)
                warn(f"checkpoint {bad.name} is damaged ({why}); moved to {aside.name}; resuming from "
                     f"{ckpt.name} instead (the steps after it are redone, exactly)")
            return ckpt
        damaged.append((ckpt, problem))
    if damaged:
        raise TrainConfigError(f"no intact checkpoint under {root}: " + "; ".join(
            f"{p.name}: {why}" for p, why in damaged) + " (remove them, or choose another output_dir, to start over)")
    return None


def _set_aside(ckpt: Path) -> Path:
    target = ckpt.with_name(f"damaged-{ckpt.name}")
    n = 1
    while target.exists():
        n += 1
        target = ckpt.with_name(f"damaged-{ckpt.name}.{n}")
    os.replace(ckpt, target)
    return target


def rng_restored(ckpt: Path, process_index: int) -> str | None:
    """Why this process's RNG state was not restored from `ckpt` (None if it was).

    Accelerate swallows any failure to restore it (a missing file when resuming with more
    processes, a CUDA state absent from a CPU checkpoint): compare the live generator with the file.
    """
    import torch

    path = ckpt / f"random_states_{process_index}.pkl"
    if not path.is_file():
        return f"{ckpt.name} has no {path.name} (was it written by fewer processes?)"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)["torch_manual_seed"]
    except Exception as e:  # noqa: BLE001 (any unpickling failure means the same thing here)
        return f"{path.name} cannot be loaded ({type(e).__name__})"
    if not torch.equal(saved, torch.get_rng_state()):
        return f"Accelerate did not restore the random state in {path.name}"
    return None
