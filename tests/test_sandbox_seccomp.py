"""The sandbox's seccomp filter refuses what no benchmark program needs (issue 12, item 10).

One probe program calls every refused syscall with arguments that are harmless if the call got
through (bad pointers, bad descriptors, a nonexistent pid, contradictory clone flags), and prints
the errno of each. It runs twice: under a filter whose refusals carry an errno the kernel does not
return for these calls (ENOTRECOVERABLE), which tells a refusal by the filter from the kernel's own
EPERM, one test per call; and under the real filter, which must answer EPERM (clone3: ENOSYS
under both, where the kernel itself would say EINVAL).
That correct programs of every language still pass under the filter is shown by
tests/test_eval_languages.py and tests/test_eval_execute.py, which run with it.
"""

from __future__ import annotations

import errno
import json
from dataclasses import replace

import pytest

from multipl_moe.evaluation import seccomp
from multipl_moe.evaluation.languages import LANGUAGES
from multipl_moe.evaluation.sandbox import BwrapRunner, Limits, bwrap_path

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")]

MARK = errno.ENOTRECOVERABLE   # "state not recoverable": no syscall here returns it
CLONE_SIGHAND = 0x800   # without CLONE_VM: EINVAL, so an unfiltered clone creates nothing

# (name, syscall, arguments); missing arguments are 0.
CALLS = [(name, name, ()) for name in seccomp.DENIED if name != "ptrace"]
CALLS += [("ptrace", "ptrace", (2, 999_999))]   # PTRACE_PEEKDATA of a pid that does not exist
CALLS += [("clone3", "clone3", ())]
CALLS += [(f"clone-{flag}", "clone", (bit | CLONE_SIGHAND,))
          for flag, bit in seccomp.CLONE_NEW_FLAGS.items()]

PROBE = """import ctypes, json, os, threading
libc = ctypes.CDLL(None, use_errno=True)
calls = {calls}
result = {{}}
for name, nr, args in calls:
    args = [ctypes.c_long(a) for a in args] + [ctypes.c_long(0)] * (6 - len(args))
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *args)
    result[name] = ctypes.get_errno() if rc == -1 else "returned %d" % rc
pid = os.fork()                       # plain fork and threads are still allowed
if pid == 0:
    os._exit(7)
result["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
t = threading.Thread(target=lambda: result.__setitem__("thread", "ran"))
t.start(); t.join()
print(json.dumps(result))
"""


def _probe(runner: BwrapRunner) -> dict:
    calls = [(name, seccomp.syscall_number(sc), list(args)) for name, sc, args in CALLS
             if seccomp.syscall_number(sc) is not None]
    py = LANGUAGES["py"]
    out = runner.run(replace(py.plan(PROBE.format(calls=calls), None), run_timeout=20.0))
    assert out.exit_code == 0, out
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def marked():
    runner = BwrapRunner(Limits())
    runner.seccomp_bpf = seccomp.filter_bpf(errno=MARK)
    return _probe(runner)


@pytest.fixture(scope="module")
def real():
    runner = BwrapRunner(Limits())
    assert runner.seccomp_bpf is not None, "the runner built no seccomp filter"
    return _probe(runner)


@pytest.mark.parametrize("name", [c[0] for c in CALLS])
def test_call_is_refused_by_the_filter(marked, real, name):
    sc = next(s for n, s, _ in CALLS if n == name)
    if seccomp.syscall_number(sc) is None:
        pytest.skip(f"{sc} is not a syscall of this architecture")
    if name in seccomp.ENOSYS_CALLS:   # the kernel's own answer to these arguments: EINVAL
        assert marked[name] == real[name] == errno.ENOSYS, f"{name}: {real[name]}"
        return
    assert marked[name] == MARK, f"{name}: {marked[name]} (the filter did not catch it)"
    assert real[name] == errno.EPERM, f"{name}: {real[name]}"


def test_fork_and_threads_still_work(marked, real):
    for result in (marked, real):
        assert result["fork"] == 7 and result["thread"] == "ran"


def test_filter_is_installed_in_the_program():
    runner = BwrapRunner(Limits())
    py = LANGUAGES["py"]
    out = runner.run(py.plan("print(open('/proc/self/status').read())", None))
    status = dict(line.split(":\t", 1) for line in out.stdout.splitlines() if ":\t" in line)
    assert status["Seccomp"].strip() == "2", out.stdout   # 2: filter mode
