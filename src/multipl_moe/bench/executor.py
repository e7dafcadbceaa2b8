"""Evaluation-executor benchmark: ours against MultiPL-E's own executor, side by side (issue 18).

The completions are the hand-written ones of the language tests (tests/test_eval_languages.py)
on MultiPL-E's HumanEval prompts: per language, 3 problems x 5 completions (a correct one, the
same with a blank line added, a wrong one that compiles and fails a test, the same with a blank
line, and one that does not parse): 6 correct and 9 wrong or broken programs per language, all
distinct. Distinct matters: MultiPL-E's executor runs a program text only once per process (its
`CACHE`), so repeated completions would time its cache, not its executor.

Every executor run is a separate process started here and reaped with `os.wait4`, so its wall
time and its CPU time (its own plus every descendant it waited for: compilers, JVMs, and, for
ours, bubblewrap and the sandboxed programs inside it, whose pid-1 reaps them) are measured the
same way for both executors. CPU per program is that total divided by the programs run.

Two measurements:

- per language, one worker: ours sandboxed, ours unsandboxed and MultiPL-E's (when given), the
  order rotating from round to round so that slow drift of a shared machine cancels;
- the whole set (every language in one run) with 1 and 2 workers, ours sandboxed against
  MultiPL-E's, interleaved; the ratio is taken within each round (their time / ours).

Verdicts: every run's statuses are compared with the first run of the same executor (stable),
with each other (agreement: exact status, and pass/fail, which is what pass@k reads) and with
what the completion is (correct -> OK, wrong or unparsable -> not OK).

The unsandboxed runs (ours and MultiPL-E's) write their temporary files to a folder in /dev/shm
when there is one: the sandbox's /tmp is a tmpfs, and on this machine's disk Go alone ran 8-10 s
instead of 5 s for the same programs; a disk would show the sandbox as faster than none.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[3]
QUICK_LANGS = ("py", "cpp", "rs")
TARGET_RATIO = 3.0


def _solutions():
    spec = importlib.util.spec_from_file_location("_lang_solutions", REPO / "tests" / "test_eval_languages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_set(out: Path, langs: list[str] | None = None) -> dict[str, list[bool]]:
    """Write MultiPL-E completion files under out/<lang>/; returns {lang: [completion is correct]}."""
    sol = _solutions()
    expected: dict[str, list[bool]] = {}
    for lang, pairs in sol.SOLUTIONS.items():
        if langs and lang not in langs:
            continue
        path = sol.DATA / f"humaneval-{lang}.jsonl"
        if not path.is_file():
            continue
        rows = {json.loads(line)["name"]: json.loads(line) for line in path.read_text().splitlines()}
        (out / lang).mkdir(parents=True, exist_ok=True)
        for name, (good, bad) in zip(sol.PROBLEMS, pairs):
            # A blank line after the completion changes the program text, not its meaning.
            completions = [good, good + "\n", bad, bad + "\n", sol.GARBAGE]
            with gzip.open(out / lang / f"{name}_{lang}.json.gz", "wt") as f:
                json.dump(dict(rows[name], completions=completions), f)
            expected.setdefault(lang, []).extend([True, True, False, False, False])
    return expected


def find_peer(path: str | Path) -> Path:
    """MultiPL-E's `main.py` in a checkout of its `evaluation/` folder (or of the whole
    repository); ValueError with a one-line reason when it is not there."""
    root = Path(path).expanduser()
    for main in (root / "src" / "main.py", root / "evaluation" / "src" / "main.py", root / "main.py"):
        if main.is_file() and (main.parent / "containerized_eval.py").is_file():
            return main.resolve()
    raise ValueError(f"--peer-multipl-e {path}: no MultiPL-E executor there (expected "
                     "src/main.py beside src/containerized_eval.py in a checkout of MultiPL-E's "
                     "evaluation/ folder)")


@contextlib.contextmanager
def _shm_tmpdir():
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 1 << 30:
        with tempfile.TemporaryDirectory(prefix="executor-bench-", dir=shm) as d:
            yield d
    else:
        with tempfile.TemporaryDirectory(prefix="executor-bench-") as d:
            yield d


class CpuGroup:
    """A fresh cgroup for one executor run, so that its CPU time counts every process it started.

    `wait4`'s rusage misses what ran in bubblewrap's PID namespace (its processes are reaped
    there, or killed with their namespace, not by a parent that reports them), so the sandboxed
    executor would look cheaper than it is. The kernel charges CPU time to a cgroup and to its
    ancestors, including groups removed meanwhile, so a group made for the run (the sandbox then
    makes its own folders inside it) counts everything. v1 `cpuacct` or v2 `cpu.stat`; None when
    neither can be made here (then the rusage figure is reported, and marked so).
    """

    def __init__(self, path: Path, v2: bool):
        self.path, self.v2 = path, v2

    @classmethod
    def make(cls, tag: str) -> "CpuGroup | None":
        own = {}
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, controllers, rel = line.split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    own[c] = rel
        candidates = []
        if "cpuacct" in own:
            for mount in ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"):
                candidates.append((Path(mount) / own["cpuacct"].lstrip("/"), False))
        if "" in own:
            for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                candidates.append((Path(mount) / own[""].lstrip("/"), True))
        for base, v2 in candidates:
            if base.name == "multipl-moe-host":
                base = base.parent
            probe = base / ("cpu.stat" if v2 else "cpuacct.usage")
            if not probe.is_file():
                continue
            path = base / f"executor-bench-{os.getpid()}-{tag}"
            try:
                path.mkdir()
            except OSError:
                continue
            return cls(path, v2)
        return None

    def wrap(self, cmd: list[str]) -> list[str]:
        return ["/bin/sh", "-c", 'echo $$ >"$1/cgroup.procs" || exit 125; shift; exec "$@"', "sh",
                str(self.path), *cmd]

    def cpu_seconds(self) -> float:
        if self.v2:
            stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
            return int(stat["usage_usec"]) / 1e6
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def remove(self) -> None:
        for _ in range(50):   # the sandbox's own folders inside go when their runner exits
            for dirpath, _, _ in sorted(os.walk(self.path), key=lambda t: -len(t[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
            if not self.path.exists():
                return
            time.sleep(0.1)


def _timed(cmd: list[str], env: dict, cwd: Path | None = None, tag: str = "run") -> dict:
    """Run `cmd` to completion: wall seconds, CPU seconds of its cgroup (every process it
    started) and of its reaped tree (rusage)."""
    group = CpuGroup.make(tag)
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(group.wrap(cmd) if group else cmd, env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        cgroup_cpu = group.cpu_seconds() if group else None
    finally:
        if group:
            group.remove()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: "
                           + out.decode(errors="replace").strip()[-800:])
    rusage_cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": wall, "cpu_s": cgroup_cpu if cgroup_cpu is not None else rusage_cpu,
            "cpu_from": "cgroup" if cgroup_cpu is not None else "rusage", "rusage_cpu_s": rusage_cpu}


def _read_results(out: Path) -> dict[str, list[str]]:
    verdicts = {}
    for p in sorted(out.rglob("*.results.json*")):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt") as f:
            key = p.relative_to(out).as_posix().replace(".results.json.gz", "").replace(".results.json", "")
            verdicts[key] = [r["status"] for r in json.load(f)["results"]]
    return verdicts


class Executors:
    """Starts one executor run on a completion folder, in a fresh output folder."""

    def __init__(self, tmp: Path, peer_main: Path | None):
        self.tmp = tmp
        self.peer_main = peer_main
        self.n = 0

    def names(self, per_language: bool) -> list[str]:
        names = ["ours"] + (["ours-unsandboxed"] if per_language else [])
        return names + (["multipl-e"] if self.peer_main else [])

    def run(self, name: str, src: Path, workers: int, shm: str) -> tuple[dict, dict[str, list[str]]]:
        from ..evaluation.languages import SANDBOX_PATH

        self.n += 1
        out = self.tmp / f"out-{self.n}"
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if name == "multipl-e":
            cmd = [sys.executable, str(self.peer_main), "--dir", str(src), "--output-dir", str(out),
                   "--max-workers", str(workers), "--recursive"]
            # The same toolchains as ours (the sandbox's PATH), not a user's ~/.cargo or pyenv.
            env.update(TMPDIR=shm, PATH=SANDBOX_PATH)
            cwd = self.peer_main.parent
        else:
            cmd = [sys.executable, "-m", "multipl_moe", "execute", str(src), "--output-dir", str(out),
                   "--workers", str(workers), "--no-progress"]
            if name == "ours-unsandboxed":
                cmd.append("--unsafe-no-sandbox")
                env["TMPDIR"] = shm
            cwd = None
        try:
            timing = _timed(cmd, env, cwd, tag=str(self.n))
            verdicts = _read_results(out)
            manifest = out / "execution.json"
            if manifest.is_file():
                timing["unavailable"] = json.loads(manifest.read_text()).get("unavailable", {})
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return timing, verdicts


def _median_round(rates: list[float]) -> int:
    return sorted(range(len(rates)), key=lambda i: rates[i])[len(rates) // 2]


def run_executor_bench(quick: bool = False, rounds: int | None = None,
                       workers: tuple[int, ...] = (1, 2), peer: str | Path | None = None,
                       progress: Callable[[str], None] = print) -> tuple[dict, str]:
    """Run both measurements; returns (JSON-able result, Markdown section)."""
    from ..evaluation.languages import LANGUAGES
    from ..evaluation.sandbox import bwrap_path
    from ..evaluation.toolchains import missing

    if bwrap_path() is None:
        md = "### Executor\n\nnot run: bubblewrap is not installed here (make toolchains)\n"
        return {"part": "executor", "skipped": "no bubblewrap"}, md
    peer_main = find_peer(peer) if peer else None
    rounds = rounds or (1 if quick else 3)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_start = os.getloadavg()[0]
    runs: list[dict] = []   # every run: {set, lang, executor, workers, round, wall_s, cpu_s, verdicts}
    with tempfile.TemporaryDirectory(prefix="executor-bench-") as tmp, _shm_tmpdir() as shm:
        tmp = Path(tmp)
        src = tmp / "completions"
        # Only languages that can run here: MultiPL-E's executor has no availability check.
        wanted = [c for c in (QUICK_LANGS if quick else LANGUAGES)]
        unavailable = {c: why for c in wanted if (why := missing(LANGUAGES[c]))}
        expected = build_set(src, [c for c in wanted if c not in unavailable])
        ex = Executors(tmp, peer_main)
        langs = list(expected)
        for lang, why in unavailable.items():
            progress(f"executor: {lang}: unavailable: {why}")

        # Warm-up (untimed): file caches of every toolchain, for every executor alike. Ours
        # first: a language whose probe fails here is left out of the timed runs.
        for name in ex.names(per_language=False):
            timing, _ = ex.run(name, src, 1, shm)
            for lang, why in timing.get("unavailable", {}).items():
                if lang in langs:
                    langs.remove(lang)
                    unavailable[lang] = why
                    shutil.rmtree(src / lang)
                    progress(f"executor: {lang}: unavailable: {why}")
        for r in range(rounds):
            for k, lang in enumerate(langs):
                names = ex.names(per_language=True)
                shift = (r + k) % len(names)
                for name in names[shift:] + names[:shift]:
                    timing, verdicts = ex.run(name, src / lang, 1, shm)
                    runs.append({"set": "per-language", "lang": lang, "executor": name, "workers": 1,
                                 "round": r, "wall_s": timing["wall_s"], "cpu_s": timing["cpu_s"],
                                 "cpu_from": timing["cpu_from"], "rusage_cpu_s": timing["rusage_cpu_s"],
                                 "verdicts": verdicts})
                progress(f"executor: round {r + 1}/{rounds}: {lang} done")
        whole = tmp / "whole"
        whole.mkdir()
        for lang in langs:
            shutil.copytree(src / lang, whole / lang)
        for r in range(rounds):
            for w in workers:
                names = ex.names(per_language=False)
                for name in (names if r % 2 == 0 else names[::-1]):
                    timing, verdicts = ex.run(name, whole, w, shm)
                    runs.append({"set": "whole", "lang": None, "executor": name, "workers": w,
                                 "round": r, "wall_s": timing["wall_s"], "cpu_s": timing["cpu_s"],
                                 "cpu_from": timing["cpu_from"], "rusage_cpu_s": timing["rusage_cpu_s"],
                                 "verdicts": verdicts})
                    progress(f"executor: round {r + 1}/{rounds}: all languages, {w} worker(s), "
                             f"{name}: {timing['wall_s']:.1f} s")

    result = summarise(runs, expected, langs, unavailable, rounds, workers, peer_main is not None)
    result.update({"part": "executor", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                   "started": started, "quick": quick, "rounds": rounds,
                   "loadavg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                   "cpus": os.cpu_count(),
                   "peer": str(peer_main) if peer_main else None})
    result["cpu_from"] = sorted({run["cpu_from"] for run in runs})
    result["targets"] = executor_targets(result)
    for run in runs:
        run.pop("verdicts")
    result["runs"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in run.items()} for run in runs]
    names = {code: LANGUAGES[code].name for code in expected}
    return result, executor_markdown(result, names)


def _status_of(verdicts: dict[str, list[str]]) -> dict[str, list[str]]:
    """Results keyed by problem name alone (the folder layout differs between the sets)."""
    return {key.rsplit("/", 1)[-1]: v for key, v in verdicts.items()}


def summarise(runs: list[dict], expected: dict[str, list[bool]], langs: list[str],
              unavailable: dict[str, str], rounds: int, workers: tuple[int, ...],
              with_peer: bool) -> dict:
    executors = sorted({r["executor"] for r in runs}, key=["ours", "ours-unsandboxed", "multipl-e"].index)
    per_lang = []
    for lang in langs:
        row = {"lang": lang, "programs": len(expected[lang])}
        for name in executors:
            mine = [r for r in runs if r["set"] == "per-language" and r["lang"] == lang and r["executor"] == name]
            if not mine:
                continue
            wall = statistics.median(r["wall_s"] for r in mine)
            cpu = statistics.median(r["cpu_s"] for r in mine)
            row[name] = {"wall_s": round(wall, 3), "per_s": round(row["programs"] / wall, 2),
                         "cpu_s": round(cpu, 3), "cpu_ms_per_program": round(1000 * cpu / row["programs"], 1),
                         "wall_s_rounds": [round(r["wall_s"], 3) for r in mine]}
        if with_peer and "ours" in row and "multipl-e" in row:
            ours = {r["round"]: r["wall_s"] for r in runs if r["set"] == "per-language" and r["lang"] == lang and r["executor"] == "ours"}
            ratios = [r["wall_s"] / ours[r["round"]] for r in runs if r["set"] == "per-language"
                      and r["lang"] == lang and r["executor"] == "multipl-e"]
            row["vs_multipl_e"] = round(statistics.median(ratios), 2)
        per_lang.append(row)
    per_lang += [{"lang": lang, "unavailable": why} for lang, why in unavailable.items()]

    whole = []
    for w in workers:
        row = {"workers": w, "programs": sum(len(expected[lang]) for lang in langs)}
        for name in executors:
            mine = [r for r in runs if r["set"] == "whole" and r["workers"] == w and r["executor"] == name]
            if not mine:
                continue
            rates = [row["programs"] / r["wall_s"] for r in mine]
            mid = mine[_median_round(rates)]
            row[name] = {"wall_s": round(mid["wall_s"], 2), "per_s": round(row["programs"] / mid["wall_s"], 2),
                         "per_s_range": [round(min(rates), 2), round(max(rates), 2)],
                         "cpu_s": round(mid["cpu_s"], 2),
                         "cpu_ms_per_program": round(1000 * mid["cpu_s"] / row["programs"], 1)}
        if with_peer:
            ours = {r["round"]: r["wall_s"] for r in runs if r["set"] == "whole" and r["workers"] == w and r["executor"] == "ours"}
            ratios = [r["wall_s"] / ours[r["round"]] for r in runs if r["set"] == "whole"
                      and r["workers"] == w and r["executor"] == "multipl-e"]
            row["ratio_per_round"] = [round(x, 2) for x in ratios]
            row["vs_multipl_e"] = round(statistics.median(ratios), 2)
        whole.append(row)

    # Verdicts: stable within an executor, agreement between executors, and against expectations.
    first: dict[tuple[str, str], dict[str, list[str]]] = {}
    stable = {name: True for name in executors}
    for r in runs:
        v = _status_of(r["verdicts"])
        for key, statuses in v.items():
            prev = first.setdefault((r["executor"], key), statuses)
            stable[r["executor"]] &= prev == statuses
    wanted = {}
    for lang in langs:
        sol_names = sorted({k for (_, k) in first if k.endswith(f"_{lang}")})
        n_each = len(expected[lang]) // max(1, len(sol_names))
        for i, key in enumerate(sol_names):
            wanted[key] = expected[lang][i * n_each:(i + 1) * n_each]
    verdicts: dict[str, dict] = {}
    for name in executors:
        got = {key: s for (ex, key), s in first.items() if ex == name}
        right = sum(sum((s == "OK") == ok for s, ok in zip(got.get(key, []), oks)) for key, oks in wanted.items())
        verdicts[name] = {"stable_across_runs": stable[name], "as_expected": right,
                          "programs": sum(len(v) for v in wanted.values()),
                          "statuses": dict(Counter(s for key in wanted for s in got.get(key, [])))}
    agreement = {}
    if "multipl-e" in executors:
        exact, passfail, total, differ = 0, 0, 0, []
        for key in wanted:
            a, b = first.get(("ours", key), []), first.get(("multipl-e", key), [])
            for i, (x, y) in enumerate(zip(a, b)):
                total += 1
                exact += x == y
                passfail += (x == "OK") == (y == "OK")
                if x != y:
                    differ.append(f"{key}[{i}]: ours {x}, MultiPL-E {y}")
        agreement = {"programs": total, "same_status": exact, "same_pass_fail": passfail,
                     "different_status": differ}
    return {"per_language": per_lang, "whole_set": whole, "verdicts": verdicts,
            "agreement": agreement, "executors": executors}


def executor_targets(result: dict) -> list[dict]:
    targets = []
    if not result.get("peer"):
        targets.append({"target": f">= {TARGET_RATIO:g}x MultiPL-E's executor (programs/s), sandboxed, same verdicts",
                        "met": None, "figure": "MultiPL-E's executor was not run (give --peer-multipl-e DIR)"})
        return targets
    agree = result["agreement"]
    same = agree["programs"] > 0 and agree["same_pass_fail"] == agree["programs"]
    for row in result["whole_set"]:
        ratio = row.get("vs_multipl_e")
        targets.append({"target": f">= {TARGET_RATIO:g}x MultiPL-E's executor, {row['workers']} worker(s), "
                                  "sandboxed, same pass/fail verdicts",
                        "met": bool(ratio and ratio >= TARGET_RATIO and same),
                        "figure": f"{row['ours']['per_s']}/s vs {row['multipl-e']['per_s']}/s: median per-round "
                                  f"ratio {ratio}x (rounds {', '.join(f'{x:g}' for x in row['ratio_per_round'])}); "
                                  f"pass/fail agree on {agree['same_pass_fail']}/{agree['programs']}"})
    return targets


_LABEL = {"ours": "ours (sandboxed)", "ours-unsandboxed": "ours (no sandbox)", "multipl-e": "MultiPL-E"}


def executor_markdown(result: dict, names: dict[str, str] | None = None) -> str:
    names = names or {}
    ex = result["executors"]
    md = ["### Executor", "", f"Started {result['started']}, finished {result['date']}; "
          f"{result['cpus']} CPUs, 1-minute load average {result['loadavg_1m'][0]} at the start, "
          f"{result['loadavg_1m'][1]} at the end.", ""]
    md.append(f"MultiPL-E's executor: `{result['peer']}`." if result["peer"] else
              "MultiPL-E's executor was **not run** (give `--peer-multipl-e DIR`, a checkout of "
              "MultiPL-E's `evaluation/`): no comparison with it is claimed.")
    md += ["", f"Per language, 1 worker, whole process (start to exit), median of {result['rounds']} "
           "interleaved round(s); CPU = CPU time of the executor and every process it started ("
           + ("counted by a cgroup made for each run" if result.get("cpu_from") == ["cgroup"] else
              f"from {', '.join(result.get('cpu_from', []))}: rusage misses what runs inside bubblewrap")
           + "), per program:", ""]
    head = "| language | programs | " + " | ".join(f"{_LABEL[n]} programs/s | {_LABEL[n]} CPU ms/program" for n in ex)
    head += " | MultiPL-E time / ours |" if "multipl-e" in ex else " |"
    md += [head, "|" + "---|" * (2 + 2 * len(ex) + ("multipl-e" in ex))]
    for r in result["per_language"]:
        if "unavailable" in r:
            md.append(f"| {names.get(r['lang'], r['lang'])} | unavailable: {r['unavailable']} |")
            continue
        cells = [f"{r[n]['per_s']} | {r[n]['cpu_ms_per_program']}" if n in r else "- | -" for n in ex]
        md.append(f"| {names.get(r['lang'], r['lang'])} | {r['programs']} | " + " | ".join(cells)
                  + (f" | {r.get('vs_multipl_e', '-')}x |" if "multipl-e" in ex else " |"))
    whole_ex = [n for n in ex if n != "ours-unsandboxed"]
    md += ["", f"Every language in one run, median round of {result['rounds']} (range over rounds):", "",
           "| workers | programs | " + " | ".join(f"{_LABEL[n]} programs/s | {_LABEL[n]} CPU ms/program"
                                                   for n in whole_ex)
           + (" | ratio per round | median ratio |" if "multipl-e" in whole_ex else " |"),
           "|" + "---|" * (2 + 2 * len(whole_ex) + 2 * ("multipl-e" in whole_ex))]
    for r in result["whole_set"]:
        cells = [f"{r[n]['per_s']} ({r[n]['per_s_range'][0]}-{r[n]['per_s_range'][1]}) | {r[n]['cpu_ms_per_program']}"
                 for n in whole_ex]
        tail = (f" | {', '.join(f'{x:g}' for x in r['ratio_per_round'])} | {r['vs_multipl_e']}x |"
                if "multipl-e" in whole_ex else " |")
        md.append(f"| {r['workers']} | {r['programs']} | " + " | ".join(cells) + tail)
    md += ["", "Verdicts (correct completion -> OK, wrong or unparsable -> not OK):", ""]
    for n, v in result["verdicts"].items():
        md.append(f"- {_LABEL[n]}: {v['as_expected']}/{v['programs']} as expected, "
                  f"{'identical' if v['stable_across_runs'] else 'DIFFERENT'} across its runs; "
                  + ", ".join(f"{k} {c}" for k, c in sorted(v["statuses"].items())))
    if result["agreement"]:
        a = result["agreement"]
        md.append(f"- ours vs MultiPL-E: same status on {a['same_status']}/{a['programs']}, same pass/fail "
                  f"on {a['same_pass_fail']}/{a['programs']}"
                  + (": " + "; ".join(a["different_status"][:12]) if a["different_status"] else ""))
    md += ["", "| target | met | figure |", "|---|---|---|"]
    md += [f"| {t['target']} | {'-' if t['met'] is None else ('yes' if t['met'] else 'no')} | {t['figure']} |"
           for t in result["targets"]]
    return "\n".join(md) + "\n"
