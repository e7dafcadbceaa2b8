"""The whole process tree of a program has a memory, process and CPU budget (issue 12, item 2).

Each hostile program succeeds (exit 0, status OK) only if it got past the budget. Sizes are
scaled down from the issue's 6 GiB so that nothing here holds more than 512 MiB: the budget is
256 MiB, and the programs try 512 MiB through memfds (each under RLIMIT_FSIZE) or through four
processes (each under the per-process limits).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from multipl_moe.evaluation import cgroup, sandbox
from multipl_moe.evaluation.execute import judge
from multipl_moe.evaluation.languages import LANGUAGES
from multipl_moe.evaluation.sandbox import BwrapRunner, Limits, bwrap_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")]

PY = LANGUAGES["py"]
BUDGET = Limits(memory_mb=256)

MEMFDS = """import os
fds, chunk = [], b"x" * (1 << 20)
for i in range(16):            # 16 x 32 MiB: each memfd stays under RLIMIT_FSIZE (64 MiB)
    fds.append(os.memfd_create("m"))
    for _ in range(32):
        os.write(fds[-1], chunk)
print("held 512 MiB in memfds")
"""

PROCESSES = """import os, time
kids = []
for i in range(4):             # 4 x 128 MiB: each process stays under its own 256 MiB
    pid = os.fork()
    if pid == 0:
        b = bytearray(128 << 20)
        for j in range(0, len(b), 4096):
            b[j] = 1
        time.sleep(2)
        os._exit(0)
    kids.append(pid)
ok = all(os.waitpid(p, 0)[1] == 0 for p in kids)
print("held 4 x 128 MiB" if ok else "a child died")
raise SystemExit(0 if ok else 1)
"""

FORKS = """import os, time
kids = []
try:
    for i in range(100):
        pid = os.fork()
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        kids.append(pid)
except OSError as e:
    print("fork failed after", len(kids), e)
    raise SystemExit(1)
print("forked", len(kids))
"""

SPIN = """import os
for _ in range(3):             # 4 spinning processes; each far below its own RLIMIT_CPU
    os.fork()
while True:
    pass
"""


@pytest.fixture
def make_runner():
    made = []

    def make(limits: Limits) -> BwrapRunner:
        r = BwrapRunner(limits)
        if r.cgroups is None:
            pytest.skip("no cgroup can be made on this machine (the runner warned)")
        made.append(r)
        return r
    yield make
    for r in made:
        parents = list(dict.fromkeys(r.cgroups.parents.values()))
        leftovers = [c for p in parents for c in p.iterdir() if c.is_dir()]
        assert leftovers == [], "a program's cgroup was not removed after its run"
        r.cgroups.close()
        assert not any(p.exists() for p in parents)


def run(runner: BwrapRunner, program: str, timeout: float = 10.0):
    plan = replace(PY.plan(program, None), run_timeout=timeout)
    out = runner.run(plan)
    return judge(PY, out, runner.limits.output_mb)[0], out


@pytest.mark.parametrize("program", [MEMFDS, PROCESSES], ids=["memfds", "processes"])
def test_memory_of_the_whole_tree_is_capped(make_runner, program):
    status, out = run(make_runner(BUDGET), program)
    assert status == "MemoryExceeded" and out.memory_exceeded, out
    assert "memory budget of 256 MiB" in out.stderr
    assert "held" not in out.stdout


def test_memory_budget_is_what_stops_them(make_runner):
    """The same program passes with room: the budget, not something else, stopped it above."""
    status, out = run(make_runner(replace(BUDGET, memory_mb=1024)), MEMFDS)
    assert status == "OK" and "held 512 MiB" in out.stdout, out


def test_process_budget(make_runner):
    # RLIMIT_NPROC stays at 256, so only the tree's budget can stop the 100 forks.
    status, out = run(make_runner(replace(BUDGET, tree_pids=32)), FORKS)
    assert status == "Exception" and out.pids_exceeded, out
    assert "fork failed after" in out.stdout and "process budget (32)" in out.stderr


def test_cpu_seconds_of_the_whole_tree(make_runner):
    status, out = run(make_runner(replace(BUDGET, cpu_seconds=1.0)), SPIN, timeout=30.0)
    assert out.cpu_exceeded and status == "Timeout" and out.exit_code == -1, out
    assert out.seconds < 20, "stopped by the wall clock, not by the CPU budget"
    assert "CPU seconds" in out.stderr


def test_without_cgroups_it_warns_once_and_still_runs(monkeypatch, capsys):
    def refuse(cls, want_cpu_cap=False):
        raise cgroup.CgroupUnavailable("test: cgroups refused")
    monkeypatch.setattr(cgroup.Cgroups, "create", classmethod(refuse))
    monkeypatch.setattr(sandbox, "_warned", set())
    runners = [BwrapRunner(BUDGET), BwrapRunner(BUDGET)]
    err = capsys.readouterr().err
    assert err.count("NO budget for their whole process tree") == 1
    assert "test: cgroups refused" in err
    assert all(r.cgroups is None for r in runners)
    assert "no cgroup budget" in runners[0].isolation
    status, out = run(runners[0], "print('still runs')")
    assert status == "OK" and "still runs" in out.stdout


def test_stale_groups_of_dead_runners_are_swept(make_runner):
    runner = make_runner(BUDGET)
    parent = next(iter(runner.cgroups.parents.values()))
    dead = parent.parent / f"multipl-moe-{_dead_pid()}-0123abcd"
    dead.mkdir()
    (dead / "p1").mkdir()
    make_runner(BUDGET)
    assert not dead.exists()


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_cgroup_paths_follow_the_mount_root():
    assert cgroup._under(Path("/sys/fs/cgroup"), "/", "/a/b") == Path("/sys/fs/cgroup/a/b")
    assert cgroup._under(Path("/sys/fs/cgroup"), "/docker/x", "/docker/x/a") == Path("/sys/fs/cgroup/a")


def test_v2_moves_a_busy_groups_processes_into_a_leaf(tmp_path, monkeypatch):
    """Machines whose controllers are bound to cgroup v1 (as where this was written) cannot run
    the v2 path for real, so it runs here on a stand-in folder whose writes behave like the
    kernel's: a group that still has processes cannot hand controllers to children."""
    base = tmp_path / "ctr"
    base.mkdir()
    (base / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (base / "cgroup.subtree_control").write_text("\n")
    (base / "cgroup.procs").write_text("101\n102\n")
    real_write = cgroup._write

    def kernel_like_write(path: Path, value: str) -> None:
        if path.name == "cgroup.subtree_control" and path.parent == base \
                and (base / "cgroup.procs").read_text().split():
            raise OSError(16, "Device or resource busy")
        if path.name == "cgroup.procs":   # a migration: the pid leaves the group it was in
            left = [p for p in (base / "cgroup.procs").read_text().split() if p != value]
            (base / "cgroup.procs").write_text("\n".join(left))
            with open(path, "a") as f:
                f.write(value + "\n")
            return
        real_write(path, value)
    monkeypatch.setattr(cgroup, "_write", kernel_like_write)

    cg = cgroup.Cgroups._create_v2(base)
    assert (base / "multipl-moe-host" / "cgroup.procs").read_text().split() == ["101", "102"]
    assert (base / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    parent = cg.parents["memory"]
    assert parent.parent == base and (parent / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"

    group = cg.new_group(cgroup.Budget(memory_bytes=256 << 20, pids=32, cpus=1.5))
    d = group.dirs["memory"]
    assert (d / "memory.max").read_text() == str(256 << 20)
    assert (d / "pids.max").read_text() == "32"
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert (d / "memory.oom.group").read_text() == "1"
    assert group.procs_files == [str(d / "cgroup.procs")]
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n")
    (d / "pids.events").write_text("max 0\n")
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    assert group.memory_exceeded() and not group.pids_exceeded()
    assert group.cpu_seconds() == 2.5
    # A second runner of the same process, which now sits in the leaf, makes its folder beside
    # the first, not in a leaf of the leaf.
    second = cgroup.Cgroups._create_v2(base / "multipl-moe-host")
    assert second.parents["memory"].parent == base
    assert not (base / "multipl-moe-host" / "multipl-moe-host").exists()
    for c in (cg, second):
        c._finalizer.detach()   # plain files: nothing to remove like a cgroup
