"""Cost of starting one program from a process that holds a lot of memory (issue 6, executor).

    python benchmarks/spawn_cost.py [--gib 0 4] [--out runs/bench]

`multipl-moe eval` starts every sandboxed program from the process that loaded the model. As root
the sandbox runs programs as nobody; asking `subprocess.Popen` to change ids (user=, group=) makes
CPython fork instead of vfork, copying the page tables of the whole process for every program.
Dropping ids with `setpriv` in the child keeps vfork. This times `/bin/true` started the three ways
from a process holding N GiB of touched memory, and writes JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

NOBODY = 65534


def per_spawn_ms(cmd: list[str], repeats: int = 20, **popen_kw) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        subprocess.run(cmd, start_new_session=True, close_fds=True, check=True, **popen_kw)
    return (time.perf_counter() - t0) / repeats * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, nargs="+", default=[0, 4], help="memory held while spawning")
    ap.add_argument("--out", default="runs/bench")
    args = ap.parse_args()
    root = os.geteuid() == 0
    setpriv = shutil.which("setpriv")
    rows = []
    for gib in args.gib:
        held = bytearray(int(gib * (1 << 30)))
        for i in range(0, len(held), 4096):   # touch every page, as a loaded model has
            held[i] = 1
        row = {"held_gib": gib, "plain_ms": round(per_spawn_ms(["/bin/true"]), 2)}
        if root:
            row["popen_user_ms"] = round(per_spawn_ms(["/bin/true"], user=NOBODY, group=NOBODY, extra_groups=[]), 2)
            if setpriv:
                row["setpriv_ms"] = round(per_spawn_ms([setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                                         "--clear-groups", "/bin/true"]), 2)
        rows.append(row)
        del held
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spawn_cost.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                                     "root": root, "rows": rows}, indent=2) + "\n")
    md = ["| memory held (GiB) | plain Popen (ms) | Popen(user=nobody) (ms) | setpriv (ms) |", "|---|---|---|---|"]
    md += [f"| {r['held_gib']} | {r['plain_ms']} | {r.get('popen_user_ms', '- (not root)')} | "
           f"{r.get('setpriv_ms', '-')} |" for r in rows]
    (out / "spawn_cost.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
