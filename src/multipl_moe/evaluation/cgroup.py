"""A memory, process and CPU budget for each sandboxed program's whole process tree (cgroups).

rlimits are per process and do not count shared memory: a program could hold gigabytes through
memfds, or as many processes just under the limit each. A control group counts the way the
kernel does (every process of the tree, page cache, tmpfs and memfd pages included) and the
kernel enforces it: past `memory.max` it kills inside the group (reported as an OOM kill),
past `pids.max` fork fails. The kernel has no total-CPU-time limit for a group, only a rate
(`cpu.max`), so the CPU budget is read from the group's counter by the supervisor, which kills
the program when its whole tree has used it up (`Group.cpu_seconds`).

cgroup v2 is used where its controllers are available (the unified hierarchy, or a delegated
subtree when not root), v1 otherwise (one directory per controller hierarchy). Each runner makes
one folder `multipl-moe-PID-RANDOM` under this process's own cgroup, and one leaf per program
inside it. With v2, controllers can be handed to children only by a group with no processes of
its own ("no internal processes"), so when this process sits in such a group (a container's
root group) every process of it is first moved into a leaf `multipl-moe-host` beside ours:
they stay under the same ancestors, so every limit that applied to them still applies.

A program joins its group before it runs anything: the sandbox's command line starts with a
`sh` that writes its own pid into the group's `cgroup.procs` and then execs bubblewrap, so
that `subprocess` can still spawn with vfork (a `preexec_fn` would force a full fork).
Where no group can be made, `Cgroups.create` says why and the runner keeps the rlimits alone.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

from .runcache import pid_alive

# Joins every cgroup named by the first N arguments, then runs the rest. Exit 125 with this
# marker on failure, so that the runner can tell it from the program's own failure.
JOIN_FAILED = "multipl-moe: cannot join the program's cgroup"
# `sh` exports PWD of its own accord: unset, so the sandbox starts with an empty environment.
JOIN_SCRIPT = ('unset PWD OLDPWD; n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ >"$1" || '
               f'{{ echo "{JOIN_FAILED}: $1" >&2; exit 125; }}; shift; n=$((n-1)); done; exec "$@"')
JOIN_EXIT = 125

_PREFIX = "multipl-moe-"
_HOST_LEAF = "multipl-moe-host"


class CgroupUnavailable(RuntimeError):
    """No cgroup with the needed controllers can be made here."""


@dataclass(frozen=True)
class Budget:
    memory_bytes: int
    pids: int
    cpus: float | None = None   # a rate cap (cpu.max) in cores; None: no cap


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.events, pids.events, cpu.stat, memory.oom_control)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _mounts() -> tuple[Path | None, dict[str, tuple[Path, str]]]:
    """(cgroup2 mount point, {v1 controller: (mount point, mount root)})."""
    v2, v1 = None, {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) < 3:
                continue
            fstype, root, mnt = rfields[0], fields[3], Path(fields[4].replace("\\040", " "))
            if fstype == "cgroup2" and v2 is None:
                v2 = (mnt, root)
            elif fstype == "cgroup":
                for opt in rfields[2].split(","):
                    if opt in ("memory", "pids", "cpu", "cpuacct"):
                        v1.setdefault(opt, (mnt, root))
    return v2, v1


def _own_paths() -> dict[str, str]:
    """{controller or "": path} from /proc/self/cgroup ("" is the v2 entry)."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in (controllers.split(",") if controllers else [""]):
                paths[c] = path
    return paths


def _under(mount: Path, root: str, path: str) -> Path:
    """The folder of cgroup `path` in a hierarchy mounted at `mount` whose mount shows `root`."""
    rel = path[len(root):] if root != "/" and path.startswith(root) else path
    return mount / rel.lstrip("/")


def _rmdir_tree(path: Path) -> None:
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        _rmdir_tree(child)
    path.rmdir()


def _sweep_stale(base: Path) -> None:
    """Remove the folders of runners that died without cleaning up (kill -9)."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for p in entries:
        m = re.fullmatch(_PREFIX + r"(\d+)-[0-9a-f]+", p.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            try:
                _rmdir_tree(p)
            except OSError:
                pass   # still has processes (a pid reused by a live runner?): leave it


class Group:
    """One program's cgroup (one folder per hierarchy with v1)."""

    def __init__(self, dirs: dict[str, Path], version: int):
        self.dirs, self.version = dirs, version
        self.procs_files = list(dict.fromkeys(str(d / "cgroup.procs") for d in dirs.values()))

    def _file(self, controller: str, name: str) -> Path:
        return self.dirs[controller] / name

    def memory_exceeded(self) -> bool:
        """The kernel killed a process of the group for going past the memory budget."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            return _keyed(_read(self._file("memory", name))).get("oom_kill", 0) > 0
        except OSError:
            return False

    def pids_exceeded(self) -> bool:
        """A fork or clone failed because the group was at its process budget."""
        try:
            return _keyed(_read(self._file("pids", "pids.events"))).get("max", 0) > 0
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        try:
            if self.version == 2:
                return _keyed(_read(self._file("cpu", "cpu.stat")))["usage_usec"] / 1e6
            return int(_read(self._file("cpuacct", "cpuacct.usage"))) / 1e9
        except (OSError, KeyError, ValueError):
            return 0.0

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in _read(Path(self.procs_files[0])).split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL every process in the group (cgroup.kill where the kernel has it)."""
        if self.version == 2 and (self.dirs["memory"] / "cgroup.kill").exists():
            try:
                _write(self.dirs["memory"] / "cgroup.kill", "1")
                return
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def remove(self, wait_s: float = 2.0) -> bool:
        """Kill what is left and remove the group; False if processes outlived `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            self.kill()
            try:
                for d in dict.fromkeys(self.dirs.values()):
                    if d.exists():
                        d.rmdir()
                return True
            except OSError:   # EBUSY: killed processes not yet gone
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)


class Cgroups:
    """Makes a group per program under one folder per runner; see the module docstring."""

    _lock = threading.Lock()

    def __init__(self, version: int, parents: dict[str, Path]):
        self.version, self.parents = version, parents
        self._count = 0
        self._count_lock = threading.Lock()
        # Removed when the runner goes away or the interpreter exits; after a kill -9 the next
        # runner on this machine sweeps it (`_sweep_stale`).
        self._finalizer = weakref.finalize(self, _remove_parents, list(dict.fromkeys(parents.values())))

    @property
    def description(self) -> str:
        return f"cgroup v{self.version}"

    @classmethod
    def create(cls, want_cpu_cap: bool = False) -> "Cgroups":
        """Set up a runner's folder, v2 first, then v1. Raises CgroupUnavailable (with why)."""
        v2, v1 = _mounts()
        own = _own_paths()
        errors = []
        if v2 is not None and "" in own:
            try:
                return cls._create_v2(_under(v2[0], v2[1], own[""]))
            except (OSError, CgroupUnavailable) as e:
                errors.append(f"v2: {e}")
        if v1:
            try:
                return cls._create_v1(v1, own, want_cpu_cap)
            except (OSError, CgroupUnavailable) as e:
                errors.append(f"v1: {e}")
        if not errors:
            errors.append("no cgroup file system is mounted")
        raise CgroupUnavailable("; ".join(errors))

    @classmethod
    def _create_v2(cls, base: Path) -> "Cgroups":
        if base.name == _HOST_LEAF:   # moved there by an earlier runner: make ours beside it
            base = base.parent
        needed = {"memory", "pids", "cpu"}
        available = set(_read(base / "cgroup.controllers").split())
        if not needed <= available:
            raise CgroupUnavailable(f"controllers {sorted(needed - available)} are not available "
                                    f"in {base} (bound to v1, or not delegated)")
        with cls._lock:
            _sweep_stale(base)
            enabled = set(_read(base / "cgroup.subtree_control").split())
            if not needed <= enabled:
                try:
                    _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(needed)))
                except OSError:
                    # "No internal processes": move this group's processes into a leaf first.
                    leaf = base / _HOST_LEAF
                    leaf.mkdir(exist_ok=True)
                    for pid in _read(base / "cgroup.procs").split():
                        try:
                            _write(leaf / "cgroup.procs", pid)
                        except OSError:
                            pass   # exited meanwhile, or a kernel thread
                    _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(needed)))
            parent = base / f"{_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            parent.mkdir()
        try:
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(needed)))
        except OSError:
            parent.rmdir()
            raise
        return cls(2, {c: parent for c in needed})

    @classmethod
    def _create_v1(cls, mounts: dict[str, tuple[Path, str]], own: dict[str, str],
                   want_cpu_cap: bool) -> "Cgroups":
        needed = ["memory", "pids", "cpuacct"] + (["cpu"] if want_cpu_cap else [])
        missing = [c for c in needed if c not in mounts or c not in own]
        if missing:
            raise CgroupUnavailable(f"v1 hierarchies {missing} are not mounted")
        name = f"{_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        parents: dict[str, Path] = {}
        made: list[Path] = []
        try:
            for c in needed:
                mnt, root = mounts[c]
                base = _under(mnt, root, own[c])
                parent = base / name
                if parent not in made:   # cpu and cpuacct often share one hierarchy
                    _sweep_stale(base)
                    parent.mkdir()
                    made.append(parent)
                parents[c] = parent
        except OSError:
            for p in made:
                p.rmdir()
            raise
        return cls(1, parents)

    def new_group(self, budget: Budget) -> Group:
        """A fresh group for one program with `budget` set. Raises OSError."""
        with self._count_lock:
            self._count += 1
            n = self._count
        dirs = {c: p / f"p{n}" for c, p in self.parents.items()}
        made = []
        try:
            for d in dict.fromkeys(dirs.values()):
                d.mkdir()
                made.append(d)
            mem = str(budget.memory_bytes)
            if self.version == 2:
                d = dirs["memory"]
                _write(d / "memory.max", mem)
                if (d / "memory.swap.max").exists():
                    _write(d / "memory.swap.max", "0")
                _write(d / "memory.oom.group", "1")   # one OOM kill ends the whole program
                _write(d / "pids.max", str(budget.pids))
                if budget.cpus:
                    _write(d / "cpu.max", f"{round(budget.cpus * 100_000)} 100000")
            else:
                _write(dirs["memory"] / "memory.limit_in_bytes", mem)
                memsw = dirs["memory"] / "memory.memsw.limit_in_bytes"
                if memsw.exists():   # memory + swap: no escaping the budget into swap
                    _write(memsw, mem)
                _write(dirs["pids"] / "pids.max", str(budget.pids))
                if budget.cpus and "cpu" in dirs:
                    _write(dirs["cpu"] / "cpu.cfs_period_us", "100000")
                    _write(dirs["cpu"] / "cpu.cfs_quota_us", str(round(budget.cpus * 100_000)))
        except OSError:
            for d in reversed(made):
                try:
                    d.rmdir()
                except OSError:
                    pass
            raise
        return Group(dirs, self.version)

    def close(self) -> None:
        self._finalizer()


def _remove_parents(parents: list[Path]) -> None:
    for p in parents:
        try:
            _rmdir_tree(p)
        except OSError:
            pass
