"""Hostile programs are contained (issue 5, test 3).

Each program tries one attack in several languages and *succeeds* (exit 0, so status OK) only if
the attack worked; so every case must end non-OK, and the test also checks from outside that
nothing happened: no connection reached our listener, no file appeared, the planted secret was
not printed, the harness did not balloon, and no process of the sandbox's uid is left.

Every program is bounded on its own (at most 2000 forks, 6 GiB, 300 MB of output, 60 s of
spinning) so that even a broken sandbox could not take the machine down, and the only address
any program is aimed at is 127.0.0.1, on a port this test itself listens on.
"""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from multipl_moe.evaluation.execute import judge
from multipl_moe.evaluation.languages import LANGUAGES
from multipl_moe.evaluation.sandbox import BwrapRunner, Limits, bwrap_path
from multipl_moe.evaluation.toolchains import Toolchains

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is not installed")]

TOKEN = uuid.uuid4().hex[:12]
LIMITS = Limits(memory_mb=1024)
REPO = Path(__file__).resolve().parents[1]
LANGS = ["py", "rb", "cpp", "java", "go"]


@pytest.fixture(scope="module")
def sandbox():
    runner = BwrapRunner(LIMITS)
    with Toolchains(runner) as tc:
        unavailable = tc.prepare(LANGS)
        yield runner, tc.context, unavailable


def run(sandbox, lang: str, program: str, timeout: float = 5.0):
    runner, ctx, unavailable = sandbox
    if lang in unavailable:
        pytest.skip(f"{lang} unavailable: {unavailable[lang]}")
    language = LANGUAGES[lang]
    plan = language.plan(program, ctx)
    plan = replace(plan, run_timeout=timeout, env={**plan.env, "HOSTILE_TOKEN": TOKEN})
    out = runner.run(plan)
    return judge(language, out, LIMITS.output_mb)[0], out


def _sandbox_pids() -> list[int]:
    """Live processes started by this test session's programs: they all carry our token in
    their environment (robust to other people's sandboxes running at the same time). Zombies
    have no environment: bwrap's in-sandbox init is reaped by the host's init a bit later."""
    marker = f"HOSTILE_TOKEN={TOKEN}".encode()
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if marker in open(f"/proc/{d}/environ", "rb").read().split(b"\0"):
                    pids.append(int(d))
            except OSError:
                continue
    return pids


def _describe(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline").read().replace("\0", " ") + " | " + \
            open(f"/proc/{pid}/stat").read()[:60]
    except OSError:
        return "gone"


@pytest.fixture(autouse=True)
def nothing_left_behind(sandbox):
    """After each case: no sandboxed process alive, no temp dir of ours left in /tmp."""
    tmp_before = set(os.listdir("/tmp"))
    yield
    deadline = time.monotonic() + 3
    while _sandbox_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {p: _describe(p) for p in _sandbox_pids()}
    assert left == {}, "sandboxed processes survived the run"
    new_tmp = [n for n in set(os.listdir("/tmp")) - tmp_before if n.startswith("multipl-moe")]
    assert new_tmp == []


# -- network ---------------------------------------------------------------------------------

@pytest.fixture
def listener():
    """A TCP server on 127.0.0.1 that records every connection it gets."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    seen, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            seen.append(conn.recv(64))
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], seen
    stop.set()
    t.join()
    srv.close()


NETWORK = {
    "py": """import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
    s.sendall(b"{token}")
    s.close()
    print("CONNECTED")
except OSError as e:
    print("blocked:", e)
    sys.exit(1)
""",
    "rb": """require 'socket'
begin
  s = Socket.tcp("127.0.0.1", {port}, connect_timeout: 2)
  s.write("{token}")
  s.close
  puts "CONNECTED"
rescue => e
  puts "blocked: #{{e}}"
  exit 1
end
""",
    "cpp": """#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cstdio>
int main() {{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{{}};
    a.sin_family = AF_INET;
    a.sin_port = htons({port});
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (sockaddr*)&a, sizeof a) != 0) {{ perror("blocked"); return 1; }}
    write(fd, "{token}", 12);
    puts("CONNECTED");
    return 0;
}}
""",
    "go": """package net_test

import (
    "net"
    "testing"
    "time"
)

func TestNet(t *testing.T) {{
    c, err := net.DialTimeout("tcp", "127.0.0.1:{port}", 2*time.Second)
    if err != nil {{
        t.Fatalf("blocked: %v", err)
    }}
    c.Write([]byte("{token}"))
    c.Close()
}}
""",
}


@pytest.mark.parametrize("lang", list(NETWORK))
def test_no_network(sandbox, listener, lang):
    port, seen = listener
    # The listener is reachable from here, so a refusal inside the sandbox is the sandbox's doing.
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    time.sleep(0.3)
    seen.clear()
    status, out = run(sandbox, lang, NETWORK[lang].format(port=port, token=TOKEN))
    time.sleep(0.3)
    assert status != "OK", out
    assert "CONNECTED" not in out.stdout
    assert seen == [], "a sandboxed program reached the host's loopback listener"


# -- files -----------------------------------------------------------------------------------

def _outside_targets(sandbox) -> list[str]:
    cache = sandbox[1].pch_dir or sandbox[1].go_cache or "/cache/0"
    return [str(Path.home() / f".hostile-{TOKEN}"), str(REPO / f".hostile-{TOKEN}"),
            f"/usr/local/hostile-{TOKEN}", f"/etc/hostile-{TOKEN}", f"/var/tmp/hostile-{TOKEN}",
            f"/hostile-{TOKEN}", f"{cache}/hostile-{TOKEN}"]


WRITE = {
    "py": """import sys
wrote = []
for path in {targets!r}:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        wrote.append(path)
    except OSError as e:
        print("refused", path, e)
print("wrote", wrote)
sys.exit(0 if wrote else 1)
""",
    "rb": """wrote = []
{targets!r}.each do |path|
  begin
    File.write(path, "pwned")
    wrote << path
  rescue SystemCallError => e
    puts "refused #{{path}} #{{e}}"
  end
end
exit(wrote.empty? ? 1 : 0)
""",
    "cpp": """#include <cstdio>
#include <vector>
#include <string>
int main() {{
    std::vector<std::string> targets = {{{targets_c}}};
    int wrote = 0;
    for (auto &t : targets) {{
        FILE *f = fopen(t.c_str(), "w");
        if (f) {{ fputs("pwned", f); fclose(f); wrote++; }} else perror(t.c_str());
    }}
    return wrote ? 0 : 1;
}}
""",
}


@pytest.mark.parametrize("lang", list(WRITE))
def test_cannot_write_outside_its_temp_dir(sandbox, lang):
    targets = _outside_targets(sandbox)
    program = WRITE[lang].format(targets=targets,
                                 targets_c=", ".join(f'"{t}"' for t in targets))
    try:
        status, out = run(sandbox, lang, program)
        assert status != "OK", out
        assert [t for t in targets if os.path.exists(t)] == []
    finally:
        for t in targets:
            if os.path.exists(t) and TOKEN in t:
                os.unlink(t)


READ = {
    "py": """import sys
got = 0
for path in [{secret!r}, "/etc/shadow"]:
    try:
        print(open(path).read())
        got += 1
    except OSError as e:
        print("refused", path, e)
sys.exit(0 if got else 1)
""",
    "rb": """got = 0
[{secret!r}, "/etc/shadow"].each do |path|
  begin
    puts File.read(path)
    got += 1
  rescue SystemCallError => e
    puts "refused #{{path}} #{{e}}"
  end
end
exit(got > 0 ? 0 : 1)
""",
    "cpp": """#include <fstream>
#include <iostream>
int main() {{
    int got = 0;
    for (const char *p : {{"{secret}", "/etc/shadow"}}) {{
        std::ifstream f(p);
        if (f) {{ std::cout << f.rdbuf() << std::endl; got++; }} else std::cout << "refused " << p << std::endl;
    }}
    return got ? 0 : 1;
}}
""",
}


@pytest.mark.parametrize("lang", list(READ))
def test_cannot_read_a_file_in_the_users_home(sandbox, lang):
    secret = Path.home() / f".hostile-secret-{TOKEN}"
    secret.write_text(f"SECRET-{TOKEN}\n")
    try:
        status, out = run(sandbox, lang, READ[lang].format(secret=str(secret)))
    finally:
        secret.unlink()
    assert status != "OK", out
    assert f"SECRET-{TOKEN}" not in out.stdout + out.stderr


# -- processes, memory, time, output ---------------------------------------------------------

FORK_BOMB = {  # at most 2000 children, each gone after 10 s
    "py": """import os, sys, time
n, t0 = 0, time.time()
while n < 2000 and time.time() - t0 < 10:
    try:
        pid = os.fork()
    except OSError as e:
        print("fork refused after", n, e)
        sys.exit(1)
    if pid == 0:
        time.sleep(10)
        os._exit(0)
    n += 1
print("forked", n)
""",
    "cpp": """#include <unistd.h>
#include <cstdio>
int main() {
    for (int n = 0; n < 2000; n++) {
        pid_t pid = fork();
        if (pid < 0) { printf("fork refused after %d\\n", n); return 1; }
        if (pid == 0) { sleep(10); _exit(0); }
    }
    return 0;
}
""",
    # Ruby retries a refused fork forever: only the wall clock ends this one.
    "rb": """2000.times { fork { sleep 10 } }
""",
}


@pytest.mark.parametrize("lang", list(FORK_BOMB))
def test_fork_bomb(sandbox, lang):
    start = time.monotonic()
    status, out = run(sandbox, lang, FORK_BOMB[lang], timeout=5)
    assert status != "OK", out
    assert time.monotonic() - start < 5 + 20  # compile time + the run limit + the kill


MEMORY_BOMB = {  # at most 6 GiB, touched; the sandbox allows 1 GiB
    "py": """chunks = []
for i in range(6):
    b = bytearray(1 << 30)
    for j in range(0, len(b), 4096):
        b[j] = 1
    chunks.append(b)
print("allocated 6 GiB")
""",
    "cpp": """#include <cstring>
#include <vector>
int main() {
    std::vector<char*> chunks;
    for (int i = 0; i < 6; i++) { char *p = new char[1 << 30]; memset(p, 1, 1 << 30); chunks.push_back(p); }
    return 0;
}
""",
    "java": """import java.util.*;
class Problem {
    public static void main(String[] args) {
        List<long[]> chunks = new ArrayList<>();
        for (int i = 0; i < 48; i++) { long[] a = new long[1 << 24]; Arrays.fill(a, 1L); chunks.add(a); }
        System.out.println("allocated 6 GiB");
    }
}
""",
    "go": """package mem_test

import "testing"

func TestMem(t *testing.T) {
    var chunks [][]byte
    for i := 0; i < 6; i++ {
        b := make([]byte, 1<<30)
        for j := 0; j < len(b); j += 4096 {
            b[j] = 1
        }
        chunks = append(chunks, b)
    }
    t.Log(len(chunks))
}
""",
}


@pytest.mark.parametrize("lang", list(MEMORY_BOMB))
def test_memory_bomb(sandbox, lang):
    status, out = run(sandbox, lang, MEMORY_BOMB[lang], timeout=10)
    assert status != "OK", out
    assert "allocated 6 GiB" not in out.stdout


SPIN = {  # ignores SIGTERM where it can; stops by itself after 60 s
    "py": """import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
t = time.time()
while time.time() - t < 60:
    pass
""",
    "rb": """Signal.trap("TERM") {}
t = Time.now
while Time.now - t < 60; end
""",
    "cpp": """#include <csignal>
#include <ctime>
int main() { signal(SIGTERM, SIG_IGN); time_t t = time(0); while (time(0) - t < 60) {} }
""",
    "java": """class Problem {
    public static void main(String[] args) {
        long t = System.currentTimeMillis();
        while (System.currentTimeMillis() - t < 60000) {}
    }
}
""",
    # Killing only `go test` would leave this test binary spinning.
    "go": """package spin_test

import (
    "testing"
    "time"
)

func TestSpin(t *testing.T) {
    start := time.Now()
    for time.Since(start) < 60*time.Second {
    }
}
""",
}


@pytest.mark.parametrize("lang", list(SPIN))
def test_infinite_loop_times_out_and_is_killed(sandbox, lang):
    status, out = run(sandbox, lang, SPIN[lang], timeout=3)
    assert status == "Timeout" and out.exit_code == -1, out
    # The run step had 3 s (the clock restarts when a compile step ends); the kill is immediate.
    assert out.seconds < 3 + 15


FLOOD = {  # at most 300 MB
    "py": """import sys
chunk = "x" * (1 << 20) + "\\n"
for _ in range(300):
    sys.stdout.write(chunk)
""",
    "py-stderr": """import sys
chunk = "e" * (1 << 20) + "\\n"
for _ in range(300):
    sys.stderr.write(chunk)
""",
    "cpp": """#include <cstdio>
#include <cstring>
int main() {
    static char buf[1 << 20];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 300; i++) fwrite(buf, 1, sizeof buf, stdout);
}
""",
    "go": """package flood_test

import (
    "fmt"
    "strings"
    "testing"
)

func TestFlood(t *testing.T) {
    chunk := strings.Repeat("x", 1<<20)
    for i := 0; i < 300; i++ {
        fmt.Println(chunk)
    }
}
""",
}


@pytest.mark.parametrize("case", list(FLOOD))
def test_output_flood_is_cut_off(sandbox, case):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, out = run(sandbox, case.split("-")[0], FLOOD[case], timeout=20)
    assert status == "Exception" and out.output_exceeded, out
    kept = LIMITS.keep_bytes * 2 + 100
    assert len(out.stdout) <= kept and len(out.stderr) <= kept + 100
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"the harness grew by {grown_mb:.0f} MB while reading the flood"


# -- the sandbox itself ----------------------------------------------------------------------

def test_detached_process_does_not_outlive_the_run(sandbox):
    """A double-forked, setsid'd child escapes a process-group kill; the pid namespace gets it."""
    program = """import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(30)
    os._exit(0)
"""
    status, out = run(sandbox, "py", program)
    assert status == "OK", out  # the program itself succeeds; the fixture checks the leftovers


def test_unprivileged_and_limited(sandbox):
    program = """import os, resource
print(os.getuid(), os.getgid(), resource.getrlimit(resource.RLIMIT_NPROC)[0],
      resource.getrlimit(resource.RLIMIT_DATA)[0], os.getcwd(), os.path.exists("/root"),
      os.path.exists({home!r}), os.path.exists("/work"), ",".join(map(str, os.getgroups())) or "-")
""".format(home=str(Path.home()))
    status, out = run(sandbox, "py", program)
    assert status == "OK", out
    uid, gid, nproc, data, cwd, *exists, groups = out.stdout.split()
    assert int(uid) != 0 and int(gid) != 0
    if os.geteuid() == 0:  # dropped to nobody, without root's supplementary groups
        assert int(uid) == 65534 and groups in ("-", gid), (uid, groups)
    assert int(nproc) == LIMITS.nproc and int(data) == LIMITS.memory_mb << 20
    assert cwd == "/tmp/w" and exists == ["False", "False", "False"]


SECRET_SCAN = """import os, sys
needles = [{name!r}.encode(), {value!r}.encode()]
read, found = [], []
for d in os.listdir("/proc"):
    if not d.isdigit() and d not in ("self", "thread-self"):
        continue
    for leaf in ("environ", "cmdline"):
        try:
            data = open(f"/proc/{{d}}/{{leaf}}", "rb").read()
        except OSError:
            continue
        read.append(f"{{d}}/{{leaf}}")
        if any(n in data for n in needles):
            found.append(f"{{d}}/{{leaf}}")
print("read", " ".join(sorted(read)))
print("found", " ".join(found) or "-")
sys.exit(0 if found else 1)
"""


def test_callers_environment_is_invisible_in_proc(sandbox, monkeypatch):
    """Issue 12 item 1: bwrap's init (pid 1 inside) kept the caller's environment, so an API key
    of `eval --server` could be read at /proc/1/environ. No variable of ours may appear in any
    process's environ or cmdline inside the sandbox."""
    name, value = f"MULTIPL_MOE_TEST_SECRET_{TOKEN}", uuid.uuid4().hex
    monkeypatch.setenv(name, value)
    status, out = run(sandbox, "py", SECRET_SCAN.format(name=name, value=value))
    assert status != "OK" and "found -" in out.stdout, out
    read = out.stdout.split("\n")[0].split()[1:]
    assert "1/environ" in read and "self/environ" in read, out.stdout  # the scan could look
    assert value not in out.stdout + out.stderr


def test_harness_still_works_after_the_attacks(sandbox):
    status, out = run(sandbox, "py", "print(sum(range(10)))\n")
    assert (status, out.stdout) == ("OK", "45\n")
