"""Run one untrusted program (a `languages.Plan`) under bubblewrap, with limits, and judge nothing.

Model-written programs are hostile by accident or on purpose, so each one runs in a fresh
bubblewrap sandbox:

- every namespace unshared (`--unshare-all`): no network (the new net namespace has only its own
  loopback), a private pid namespace whose teardown kills every process the program started,
  no IPC or hostname shared with the host; no nested user namespaces (`--disable-userns`);
- read-only system (`/usr`, `/etc`, `/opt` and the `/bin`, `/lib` links) and a read-only root
  and /dev: no home directories, no /root, no /work; size-limited tmpfs mounts at /tmp and
  /dev/shm are the only writable places, gone with the sandbox; the program's files are copied
  in from memfds, never through the host's disk;
- an unprivileged uid: when we are root, bwrap itself runs as `nobody`, because root is exempt
  from RLIMIT_NPROC (and from file permissions). RLIMIT_NPROC is then set *inside* the new user
  namespace (by `prlimit`), so it counts only this sandbox's processes, not every sandbox's;
- rlimits on data and address space, CPU seconds, processes, file size and open files;
- a budget for the whole process tree, counted and enforced by the kernel through a cgroup
  (`cgroup.py`): memory (memfd, tmpfs and every process included), processes, CPU seconds. A
  program killed for memory gets the status MemoryExceeded; one past its CPU seconds a Timeout;
  where no cgroup can be made the runner says so once, loudly, and keeps the rlimits alone;
- a seccomp filter (`seccomp.py`) refusing io_uring, keyctl, bpf, perf events, userfaultfd,
  ptrace, mount and the namespace calls, kernel modules and reboot;
- no environment of ours: bwrap's own init (pid 1 inside, whose /proc/1/environ the program can
  read) starts with an empty environment, so the harness's secrets (API keys) never get in;
- a wall clock per step; on expiry the whole process group of bwrap gets SIGKILL, and
  `--die-with-parent` plus the pid namespace take everything inside down with it (some programs
  ignore SIGTERM; killing only `go test` would leave its test binary running);
- output read as it comes (no polling sleep: `select` on the pipes and a pidfd), at most
  `Limits.output_mb` in all: a program printing gigabytes is killed, not buffered.

Compiled languages run both steps in one sandbox through a tiny `sh` driver: the compile step's
output goes to files; if it succeeds the driver prints a marker on stdout and execs the program.
The harness switches from the compile to the run deadline when it sees the marker, so each step
keeps MultiPL-E's own time limit and a sandbox is started once per program, not twice.

`UnsafeRunner` runs the same commands without bubblewrap (temp dir, rlimits, process-group kill
only) for machines where bubblewrap cannot work; it must be asked for explicitly, and says loudly
what it leaves unprotected (see UNSAFE_WARNING).
"""

from __future__ import annotations

import math
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import cgroup, seccomp
from .languages import SANDBOX_PATH, Plan

RUN_MARKER = b"\x1emultipl-moe:run\x1e"
MEMORY_EXCEEDED = "MemoryExceeded"
_CPU_CHECK_MIN_S = 0.05  # the shortest wait between two reads of a group's CPU counter
_NOBODY = 65534
_GRACE_S = 2.0  # after the program ends or is killed: how long to wait for its pipes to close

UNSAFE_WARNING = """\
!!! UNSAFE MODE: model-written programs run WITHOUT a sandbox, as {user}. !!!
They CAN:
  - reach the network;
  - read every file {user} can read (your home, SSH keys, tokens);
  - write or delete every file {user} can write{root};
  - start processes that detach (setsid) and outlive the run, and fork without limit.
Only rlimits (memory, CPU time, file size), a private temp dir and a process-group kill on
timeout apply. Use this only on a throw-away machine."""


class SandboxError(RuntimeError):
    """The sandbox itself cannot work here (bubblewrap missing or refused)."""


_warned: set[str] = set()


def _warn_once(key: str, text: str) -> None:
    """A loud warning, once per process however many runners are made."""
    if key not in _warned:
        _warned.add(key)
        print(f"!!! multipl-moe sandbox: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (per process where rlimits are per process)."""
    memory_mb: int = 4096     # RLIMIT_DATA, and RLIMIT_AS unless the plan says no (the JVM
    #                           reserves gigabytes of address space it never touches); and the
    #                           cgroup budget of the whole process tree, shared memory included
    # RLIMIT_NPROC inside the sandbox's user namespace. Threads count too, and `go test` or a
    # JVM start a few per core, so it grows with the machine (a fork bomb stops there).
    nproc: int = max(256, 8 * (os.cpu_count() or 1))
    file_size_mb: int = 64    # RLIMIT_FSIZE
    open_files: int = 4096    # RLIMIT_NOFILE
    tmp_mb: int = 512         # size of the /tmp tmpfs (the only writable place)
    output_mb: int = 16       # stdout + stderr beyond this: killed, status Exception
    keep_bytes: int = 2048    # of each stream kept for the results file: this much head + tail
    # CPU seconds of the whole process tree (cgroup); None: twice both steps' time limits + 1,
    # the per-process RLIMIT_CPU's rule applied to the program as a whole.
    cpu_seconds: float | None = None
    cpus: float | None = None  # cores the tree may use at once (cgroup cpu.max); None: all
    # processes and threads of the whole tree (cgroup pids.max); None: nproc plus bwrap's two
    # own processes (its monitor and the sandbox's init)
    tree_pids: int | None = None

    def cpu_budget(self, plan: Plan) -> float:
        if self.cpu_seconds is not None:
            return self.cpu_seconds
        return 2 * (plan.run_timeout + (plan.compile_timeout if plan.compile else 0)) + 1

    def budget(self) -> cgroup.Budget:
        pids = self.tree_pids if self.tree_pids is not None else self.nproc + 2
        return cgroup.Budget(memory_bytes=self.memory_mb << 20, pids=pids, cpus=self.cpus)

    def prlimit_args(self, plan: Plan, nproc: bool = True) -> list[str]:
        """`prlimit ... --`. Without a fresh user namespace RLIMIT_NPROC would count every process
        of the user (a desktop has hundreds), so the unsafe runner leaves it out (`nproc=False`)."""
        # CPU seconds are only a backstop behind the wall clock; twice the step limit, so a
        # legitimately busy multi-threaded step (JIT, GC threads) is never cut short by it.
        cpu = 2 * math.ceil(max(plan.run_timeout, plan.compile_timeout if plan.compile else 0)) + 1
        mem = self.memory_mb << 20
        args = ["prlimit", f"--data={mem}", f"--cpu={cpu}", f"--fsize={self.file_size_mb << 20}",
                f"--nofile={self.open_files}", "--core=0"]
        if nproc:
            args.append(f"--nproc={self.nproc}")
        if plan.limit_address_space:
            args.append(f"--as={mem}")
        return args + ["--"]


@dataclass
class Outcome:
    """What happened, in MultiPL-E's terms but before a language judges it."""
    compiled: bool           # False: the compile step failed or timed out (a SyntaxError)
    exit_code: int           # -1 after a timeout, as MultiPL-E records it
    timed_out: bool
    output_exceeded: bool
    stdout: str
    stderr: str
    seconds: float
    memory_exceeded: bool = False  # the kernel killed it for the memory budget of its tree
    cpu_exceeded: bool = False     # killed when its tree had used its CPU seconds (timed_out too)
    pids_exceeded: bool = False    # a fork failed at the tree's process budget


class _Capture:
    """Counts every byte of a stream, keeps its head and tail for the results file."""

    def __init__(self, keep: int):
        self.keep, self.total = keep, 0
        self.head, self.tail = bytearray(), bytearray()

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            del self.tail[:-self.keep]

    def text(self) -> str:
        omitted = self.total - len(self.head) - len(self.tail)
        gap = f"\n[... {omitted} bytes omitted ...]\n".encode() if omitted > 0 else b""
        return (bytes(self.head) + gap + bytes(self.tail)).decode("utf-8", errors="ignore")


def _driver(plan: Plan) -> list[str]:
    """The command inside the sandbox: the run step, or `sh` doing compile, marker, run."""
    if plan.compile is None:
        return list(plan.run)
    compile_cmd, run_cmd = shlex.join(plan.compile), shlex.join(plan.run)
    marker = "".join(f"\\{b:03o}" for b in RUN_MARKER)
    script = (f"{compile_cmd} >.compile.out 2>.compile.err; rc=$?\n"
              "if [ $rc -ne 0 ]; then cat .compile.out; cat .compile.err >&2; exit $rc; fi\n"
              "rm -f .compile.out .compile.err\n"
              f"printf '{marker}'\n"
              f"exec {run_cmd}\n")
    return ["/bin/sh", "-c", script]


def _base_env(plan: Plan, tmp: str) -> dict[str, str]:
    env = {"PATH": SANDBOX_PATH, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    for k, v in plan.env.items():  # language paths are written for the sandbox's /tmp
        env[k] = tmp + v[len("/tmp"):] if v.startswith("/tmp") else v
    return env


class Runner:
    """Runs plans; subclasses decide how the process is isolated."""

    sandboxed = True

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self._live: dict[subprocess.Popen, cgroup.Group | None] = {}
        self._lock = threading.Lock()

    def kill_all(self) -> None:
        """Kill every program still running (on Ctrl-C or an error in the harness)."""
        with self._lock:
            for proc, group in list(self._live.items()):
                self._kill(proc, group)

    def expose(self, host_dir: str | Path) -> str:
        """Make a host folder readable by programs; returns the path they see it at."""
        raise NotImplementedError

    def run(self, plan: Plan) -> Outcome:
        raise NotImplementedError

    # -- shared supervision ------------------------------------------------------------------
    def _supervise(self, proc: subprocess.Popen, plan: Plan, start: float,
                   group: cgroup.Group | None = None) -> Outcome:
        """Read both pipes and watch the deadline (and the CPU budget of the program's cgroup)
        until the process and its pipes are done."""
        lim = self.limits
        cpu_budget = lim.cpu_budget(plan)
        # The tree cannot use CPU faster than this, so its budget is read only when it could
        # be spent: a program well inside it never wakes the supervisor.
        cpu_rate = lim.cpus or os.cpu_count() or 1
        cpu_check = start + cpu_budget / cpu_rate if group is not None else math.inf
        cpu_exceeded = False
        out, err = _Capture(lim.keep_bytes), _Capture(lim.keep_bytes)
        two_step = plan.compile is not None
        running = not two_step      # has the run step started (marker seen)?
        awaiting = two_step         # still looking for the marker at the start of stdout?
        pending = b""               # stdout bytes held back while looking for the marker
        timed_out = exceeded = False
        deadline = start + (plan.compile_timeout if two_step else plan.run_timeout)
        grace_end = None

        with self._lock:
            self._live[proc] = group
        sel = selectors.DefaultSelector()
        pidfd = os.pidfd_open(proc.pid)
        streams = {proc.stdout.fileno(): "out", proc.stderr.fileno(): "err"}
        for fd in streams:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        sel.register(pidfd, selectors.EVENT_READ)
        try:
            while sel.get_map():
                now = time.monotonic()
                limit = grace_end if grace_end is not None else deadline
                if now >= limit:
                    if grace_end is not None:
                        break  # pipes held open by something we could not kill: give up on them
                    timed_out = True
                    self._kill(proc, group)
                    grace_end = now + _GRACE_S
                    continue
                if grace_end is None and now >= cpu_check:
                    left = cpu_budget - group.cpu_seconds()
                    if left <= 0:
                        timed_out = cpu_exceeded = True
                        self._kill(proc, group)
                        grace_end = now + _GRACE_S
                        continue
                    cpu_check = now + max(_CPU_CHECK_MIN_S, left / cpu_rate)
                wake = min(limit, cpu_check) if grace_end is None else limit
                for key, _ in sel.select(wake - now):
                    fd = key.fd
                    if fd == pidfd:  # the process ended: kill stragglers, then drain the pipes
                        sel.unregister(pidfd)
                        self._kill(proc, group)
                        grace_end = time.monotonic() + _GRACE_S
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(fd)
                        continue
                    if streams[fd] == "err":
                        err.add(data)
                    elif running or not awaiting:
                        out.add(data)
                    else:  # stdout starts with the marker iff the compile step succeeded
                        pending += data
                        if pending.startswith(RUN_MARKER):
                            running, awaiting = True, False
                            out.add(pending[len(RUN_MARKER):])
                            pending = b""
                            deadline = time.monotonic() + plan.run_timeout
                        elif not RUN_MARKER.startswith(pending):
                            awaiting = False  # the compile step failed; this is its output
                            out.add(pending)
                            pending = b""
                    if out.total + err.total + len(pending) > lim.output_mb << 20 and not exceeded:
                        exceeded = True
                        self._kill(proc, group)
                        grace_end = time.monotonic() + _GRACE_S
        finally:
            sel.close()
            os.close(pidfd)
            with self._lock:  # forget it before reaping: its pgid may be reused after wait()
                self._live.pop(proc, None)
                self._kill(proc, group)
            exit_code = proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            seconds = time.monotonic() - start
            memory_exceeded = pids_exceeded = False
            cpu_used = 0.0
            if group is not None:
                memory_exceeded, pids_exceeded = group.memory_exceeded(), group.pids_exceeded()
                cpu_used = group.cpu_seconds()
                group.remove()
        if pending:
            out.add(pending)
        stderr = err.text()
        if exit_code == cgroup.JOIN_EXIT and cgroup.JOIN_FAILED in stderr:
            raise SandboxError(stderr.strip())
        notes = []
        if memory_exceeded:
            notes.append(f"killed: its processes together went past the memory budget of "
                         f"{lim.memory_mb} MiB")
        if cpu_exceeded:
            notes.append(f"killed: its processes together used {cpu_used:.1f} CPU seconds, "
                         f"past the budget of {cpu_budget:g}")
        if pids_exceeded:
            notes.append(f"a fork failed: the process budget ({lim.budget().pids}) was reached")
        stderr += "".join(f"\n[multipl-moe: {n}]" for n in notes)
        return Outcome(compiled=running, exit_code=-1 if timed_out else exit_code,
                       timed_out=timed_out, output_exceeded=exceeded, stdout=out.text(),
                       stderr=stderr, seconds=seconds, memory_exceeded=memory_exceeded,
                       cpu_exceeded=cpu_exceeded, pids_exceeded=pids_exceeded)

    @staticmethod
    def _kill(proc: subprocess.Popen, group: cgroup.Group | None = None) -> None:
        # Safe before `wait()`: the unreaped process keeps its pid and group id reserved.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if group is not None:
            group.kill()


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def bwrap_path() -> str | None:
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)


def bwrap_version(bwrap: str) -> tuple[int, ...]:
    """(0, 8, 0) from `bubblewrap 0.8.0`; (0,) if it cannot be told."""
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=30).stdout
        return tuple(int(x) for x in out.split()[-1].split("."))
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return (0,)


class BwrapRunner(Runner):
    """The real sandbox (see the module docstring for what it guarantees)."""

    def __init__(self, limits: Limits | None = None, bwrap: str | None = None):
        super().__init__(limits)
        self.bwrap = bwrap or bwrap_path()
        if not self.bwrap or not os.access(self.bwrap, os.X_OK):
            raise SandboxError("bubblewrap (bwrap) is not installed")
        self._binds: list[tuple[str, str]] = []
        self._as_root = os.geteuid() == 0
        self._setpriv = next((p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.path.exists(p)),
                             None) if self._as_root else None
        self._system = self._system_mounts()
        self.version = bwrap_version(self.bwrap)
        if self.version < (0, 5, 0):  # no --size: /tmp could fill the host's memory
            raise SandboxError(f"bubblewrap {'.'.join(map(str, self.version))} is too old "
                               "(0.5 or newer is needed to limit the size of /tmp)")
        try:
            self.cgroups: cgroup.Cgroups | None = cgroup.Cgroups.create(
                want_cpu_cap=self.limits.cpus is not None)
        except cgroup.CgroupUnavailable as e:
            self.cgroups = None
            _warn_once("cgroup", "no cgroup can be made here, so programs have NO budget for "
                       "their whole process tree: a program can hold memory through many "
                       "processes or shared memory, up to the per-process limits each. "
                       f"Run as root or in a delegated cgroup to fix this. ({e})")
        # Public so that tests can install a filter with a recognisable error code.
        try:
            self.seccomp_bpf: bytes | None = seccomp.filter_bpf()
        except seccomp.SeccompUnavailable as e:
            self.seccomp_bpf = None
            _warn_once("seccomp", f"no seccomp filter: programs may call io_uring, bpf, "
                       f"keyctl, ptrace and other kernel interfaces they never need. ({e})")

    @property
    def isolation(self) -> str:
        """What protects the programs, for the execution manifest."""
        parts = ["bubblewrap", self.cgroups.description if self.cgroups else "no cgroup budget",
                 "seccomp" if self.seccomp_bpf else "no seccomp filter"]
        return ", ".join(parts)

    @staticmethod
    def _system_mounts() -> list[str]:
        args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        if os.path.isdir("/opt"):
            args += ["--ro-bind", "/opt", "/opt"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):      # merged /usr: keep the symlink, not its target
                args += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                args += ["--ro-bind", top, top]
        return args

    def expose(self, host_dir: str | Path) -> str:
        dest = f"/cache/{len(self._binds)}"
        self._binds.append((str(host_dir), dest))
        return dest

    def command(self, plan: Plan, fds: dict[str, int], seccomp_fd: int | None = None) -> list[str]:
        lim = self.limits
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent",
                "--new-session", "--hostname", "sandbox", *self._system]
        if self.version >= (0, 8, 0):
            args.insert(3, "--disable-userns")
        for host, dest in self._binds:
            args += ["--ro-bind", host, dest]
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(lim.tmp_mb << 20), "--tmpfs", "/tmp",
                 "--size", str(64 << 20), "--tmpfs", "/dev/shm", "--dir", "/tmp/w"]
        for name, fd in fds.items():
            args += ["--file", str(fd), f"/tmp/w/{name}"]
        # bwrap's own root and /dev are unlimited tmpfs mounts: read-only, or a program could
        # fill the host's memory by writing there.
        args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/tmp/w", "--clearenv"]
        if seccomp_fd is not None:   # bwrap loads it last, just before it execs the command
            args += ["--seccomp", str(seccomp_fd)]
        for k, v in _base_env(plan, "/tmp").items():
            args += ["--setenv", k, v]
        return args + ["--", *lim.prlimit_args(plan), *_driver(plan)]

    def run(self, plan: Plan) -> Outcome:
        fds: dict[str, int] = {}
        group = sfd = None
        try:
            for name, data in plan.files.items():
                fds[name] = _memfd(name, data)
            if self.seccomp_bpf is not None:   # bwrap reads it to the end: one per run
                sfd = _memfd("seccomp", self.seccomp_bpf)
            cmd = self.command(plan, fds, sfd)
            # As root, bwrap runs as nobody so that RLIMIT_NPROC and file permissions apply.
            # Dropping the ids with setpriv rather than Popen(user=...) keeps Popen on vfork:
            # with ids to set it forks, copying the page tables of this process, which costs
            # 93 ms per program in a process holding 4 GiB (a loaded model) vs 2.4 ms via setpriv.
            ids = {}
            if self._setpriv:
                cmd = [self._setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", *cmd]
            elif self._as_root:
                ids = dict(user=_NOBODY, group=_NOBODY, extra_groups=[])
            if self.cgroups is not None:
                # Joined by a `sh` that then execs the rest, before anything of the program
                # runs; Popen keeps vfork (a preexec_fn would not). Measured on a loaded 2-core
                # cgroup v1 VM: +5 ms for the extra exec, +8-10 ms for the move into the group
                # (the kernel waits for an RCU grace period), per program; the seccomp filter
                # costs nothing measurable. clone3(CLONE_INTO_CGROUP) would avoid both, on v2.
                try:
                    group = self.cgroups.new_group(self.limits.budget())
                except OSError as e:
                    raise SandboxError(f"cannot create the program's cgroup: {e}") from e
                cmd = ["/bin/sh", "-c", cgroup.JOIN_SCRIPT, "sh", str(len(group.procs_files)),
                       *group.procs_files, *cmd]
            start = time.monotonic()
            # env={}: bwrap's init keeps the environment it was started with, and the program
            # can read it at /proc/1/environ (--clearenv cleans only the program's own).
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE,
                                    pass_fds=(*fds.values(), *([sfd] if sfd is not None else [])),
                                    start_new_session=True, close_fds=True, env={}, **ids)
        except BaseException:
            if group is not None:
                group.remove()
            raise
        finally:
            for fd in [*fds.values(), *([sfd] if sfd is not None else [])]:
                os.close(fd)
        return self._supervise(proc, plan, start, group)


class UnsafeRunner(Runner):
    """No sandbox: a private temp dir, rlimits and a process-group kill. Only on request."""

    sandboxed = False

    def expose(self, host_dir: str | Path) -> str:
        return str(host_dir)

    @staticmethod
    def warning() -> str:
        root = os.geteuid() == 0
        user = "root" if root else os.environ.get("USER", f"uid {os.geteuid()}")
        return UNSAFE_WARNING.format(
            user=user, root=" (as root: anything on this machine)" if root else "")

    def run(self, plan: Plan) -> Outcome:
        tmp = tempfile.mkdtemp(prefix="multipl-moe-unsafe-")
        workdir = os.path.join(tmp, "w")  # as in the sandbox: go ignores a go.mod in $TMPDIR
        try:
            os.mkdir(workdir)
            for name, data in plan.files.items():
                Path(workdir, name).write_bytes(data)
            env = _base_env(plan, tmp)
            start = time.monotonic()
            proc = subprocess.Popen([*self.limits.prlimit_args(plan, nproc=False), *_driver(plan)],
                                    cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True, close_fds=True)
            return self._supervise(proc, plan, start)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def make_runner(unsafe: bool = False, limits: Limits | None = None) -> Runner:
    """The bubblewrap runner, or (only when asked) the unsafe one. Raises SandboxError."""
    return UnsafeRunner(limits) if unsafe else BwrapRunner(limits)
