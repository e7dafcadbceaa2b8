"""Scores from results folders: a table per benchmark x language, a JSON summary, a PNG chart,
and several folders side by side.

What makes a number trustworthy is printed next to it: how many problems and samples it averages
over, the status counts behind it, completion files that have no results yet (a partial run
would otherwise look like a finished one), and languages that could not run here, which are
shown as "unavailable" and never as 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..util.atomic import atomic_file
from ..util.tables import markdown_table
from . import formats
from .languages import LANGUAGES, STATUSES, canonical
from .passk import mean_pass_at_k
from .xlcost import read_scores, scores_table

DEFAULT_KS = (1, 10, 100)


def benchmark_of(name: str) -> str:
    low = name.lower()
    for bench in ("humaneval", "mbpp"):
        if low.startswith(bench):
            return bench
    return "other"


def _lang_of(tag: str) -> str:
    try:
        return canonical(tag)
    except KeyError:
        return tag


@dataclass
class Cell:
    """One benchmark x language of one results folder."""
    benchmark: str
    language: str
    counts: list[tuple[int, int]] = field(default_factory=list)  # (samples, passed) per problem
    statuses: Counter = field(default_factory=Counter)
    missing: int = 0          # completion files without a results file

    def passk(self, k: int) -> float | None:
        return mean_pass_at_k(self.counts, k)

    @property
    def samples(self) -> tuple[int, int]:
        ns = [n for n, _ in self.counts] or [0]
        return min(ns), max(ns)


@dataclass
class Run:
    """Everything scored in one results folder."""
    root: Path
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    unsandboxed: bool = False
    unreadable: dict[str, str] = field(default_factory=dict)  # results file -> why left out

    def cell(self, bench: str, lang: str) -> Cell:
        return self.cells.setdefault((bench, lang), Cell(bench, lang))

    @property
    def keys(self) -> list[tuple[str, str]]:
        return _ordered(self.cells)


def _ordered(keys) -> list[tuple[str, str]]:
    """(benchmark, language) pairs by benchmark, then in LANGUAGES order."""
    order = list(LANGUAGES)
    return sorted(keys, key=lambda bl: (bl[0], order.index(bl[1]) if bl[1] in order
                                        else len(order), bl[1]))


def collect(root: Path) -> Run:
    """Read every results file (and execution.json manifest) under `root`."""
    run = Run(Path(root))
    scored = set()
    for path in formats.results_files(root):
        try:
            data = formats.read_json(path)
            results = data["results"]
            cell = run.cell(benchmark_of(data.get("name", path.name)), _lang_of(data["language"]))
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise TypeError("`results` is not a list of objects")
        except (*formats.READ_ERRORS, KeyError, TypeError, AttributeError) as e:
            # `execute` reruns what it can; this one has no completion file left to rerun.
            run.unreadable[str(path)] = " ".join(f"{type(e).__name__}: {e}".split())
            continue
        # MultiPL-E counts a sample as passing when status is OK *and* exit code is 0.
        passed = sum(r.get("status") == "OK" and r.get("exit_code") == 0 for r in results)
        cell.counts.append((len(results), passed))
        cell.statuses.update(r.get("status", "?") for r in results)
        scored.add((path.parent, formats.stem(path)))
    for path in formats.completion_files(root):
        if (path.parent, formats.stem(path)) in scored:
            continue
        try:
            data = formats.read_json(path)
            run.cell(benchmark_of(data["name"]), _lang_of(data["language"])).missing += 1
        except (*formats.READ_ERRORS, KeyError, TypeError, AttributeError):  # execute lists these
            continue
    for manifest in Path(root).rglob("execution.json"):
        m = formats.read_json(manifest)
        run.unavailable.update(m.get("unavailable", {}))
        run.unsandboxed |= bool(m.get("unsandboxed_runs",
                                      not str(m.get("sandbox", "")).startswith("bubblewrap")))
    return run


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def summary(run: Run, ks=DEFAULT_KS) -> dict:
    rows = []
    for key in run.keys:
        cell = run.cells[key]
        unavailable = cell.language in run.unavailable and not cell.counts
        rows.append({
            "benchmark": cell.benchmark, "language": cell.language,
            "problems": len(cell.counts), "samples_min": cell.samples[0],
            "samples_max": cell.samples[1], "missing_results": cell.missing,
            **{f"pass@{k}": cell.passk(k) for k in ks},
            "statuses": dict(cell.statuses),
            **({"unavailable": run.unavailable[cell.language]} if unavailable else {}),
        })
    return {"root": str(run.root), "sandboxed": not run.unsandboxed, "results": rows,
            "unavailable": run.unavailable, "codebleu": read_scores(run.root)}


def table(run: Run, ks=DEFAULT_KS) -> str:
    """Markdown: one row per benchmark x language, pass@k in percent."""
    head = ["benchmark", "lang", "problems", "samples", *[f"pass@{k}" for k in ks], *STATUSES,
            "no results"]
    rows = []
    for key in run.keys:
        c = run.cells[key]
        if c.language in run.unavailable and not c.counts:
            rows.append([c.benchmark, c.language, "unavailable: " + run.unavailable[c.language]])
            continue
        lo, hi = c.samples
        rows.append([c.benchmark, c.language, len(c.counts), lo if lo == hi else f"{lo}-{hi}",
                     *[_pct(c.passk(k)) for k in ks], *[c.statuses.get(s, 0) for s in STATUSES],
                     c.missing])
    lines = [markdown_table(head, rows)]
    notes = [f"- {lang}: unavailable here ({why}); not scored"
             for lang, why in run.unavailable.items()
             if not any(k[1] == lang for k in run.cells)]
    if run.unsandboxed:
        notes.append("- some results were produced WITHOUT the sandbox (--unsafe-no-sandbox)")
    text_to_code = read_scores(run.root)  # `multipl-moe xlcost` results in the same folder
    if text_to_code:
        lines = (lines if run.cells or run.unavailable else []) + \
            (["", "CodeBLEU (text-to-code)", ""] if run.cells or run.unavailable else []) + \
            [scores_table(text_to_code)]
    return "\n".join(lines + ([""] + notes if notes else []))


def labels(runs: list[Run]) -> list[str]:
    names = [r.root.name or str(r.root) for r in runs]
    return names if len(set(names)) == len(names) else [str(r.root) for r in runs]


def compare_table(runs: list[Run], k: int = 1) -> str:
    """Markdown: one row per benchmark x language, pass@k of each folder side by side."""
    names = labels(runs)
    head = ["benchmark", "lang", *[f"{n} pass@{k}" for n in names]]
    if len(runs) == 2:
        head.append("delta")
    rows = []
    for bench, lang in _ordered({key for r in runs for key in r.cells}):
        cols, vals = [bench, lang], []
        for r in runs:
            cell = r.cells.get((bench, lang))
            vals.append(cell.passk(k) if cell and cell.counts else None)
            cols.append("unavailable" if vals[-1] is None and lang in r.unavailable
                        else _pct(vals[-1]))
        if len(runs) == 2:
            a, b = vals
            cols.append("-" if a is None or b is None else f"{100 * (b - a):+.1f}")
        rows.append(cols)
    return markdown_table(head, rows)


def compare_codebleu(runs: list[Run]) -> str:
    """Markdown: CodeBLEU per text-to-code config of each folder side by side ('' if none)."""
    scores = [{(r.get("task"), r.get("config"), r.get("split")): r["codebleu"]
               for r in read_scores(run.root)} for run in runs]
    keys = sorted({k for s in scores for k in s}, key=lambda k: tuple(map(str, k)))
    if not keys:
        return ""
    names = labels(runs)
    head = ["task", "config", *[f"{n} CodeBLEU" for n in names]]
    if len(runs) == 2:
        head.append("delta")
    rows = []
    for key in keys:
        vals = [s.get(key) for s in scores]
        cols = [key[0], f"{key[1]} {key[2] or ''}".strip(), *[_pct(v) for v in vals]]
        if len(runs) == 2:
            a, b = vals
            cols.append("-" if a is None or b is None else f"{100 * (b - a):+.1f}")
        rows.append(cols)
    return markdown_table(head, rows)


def plot(runs: list[Run], path: Path, k: int = 1) -> Path:
    """Grouped bar chart of pass@k per language, one panel per benchmark, one bar per folder."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = sorted({b for r in runs for b, _ in r.cells}) or ["humaneval"]
    names = labels(runs)
    fig, axes = plt.subplots(len(benches), 1, figsize=(10, 3.6 * len(benches)), squeeze=False)
    width = 0.8 / max(1, len(runs))
    for ax, bench in zip(axes[:, 0], benches):
        langs = [l for l in LANGUAGES if any((bench, l) in r.cells for r in runs)]
        langs += sorted({l for r in runs for b, l in r.cells if b == bench} - set(langs))
        for j, (run, name) in enumerate(zip(runs, names)):
            label = name  # on the first bar drawn for this folder only
            for i, lang in enumerate(langs):
                cell = run.cells.get((bench, lang))
                value = cell.passk(k) if cell else None
                x = i + (j - (len(runs) - 1) / 2) * width
                if value is None:
                    note = "unavail." if lang in run.unavailable else "n/a"
                    ax.text(x, 0.5, note, rotation=90, ha="center", va="bottom", fontsize=7)
                    continue
                ax.bar(x, 100 * value, width, color=f"C{j}", label=label)
                label = None
                ax.text(x, 100 * value + 0.5, f"{100 * value:.1f}", ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks(range(len(langs)), [LANGUAGES[l].name if l in LANGUAGES else l
                                          for l in langs])
        ax.set_ylabel(f"pass@{k} (%)")
        ax.set_title(bench)
        ax.set_ylim(0, 100)
        if len(runs) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(run: Run, out_dir: Path, ks=DEFAULT_KS) -> dict[str, Path]:
    """summary.json, passk.md and passk.png in `out_dir` (each written atomically), only where
    they are ours to write (report_targets.check_writable), each saying what produced it."""
    from .report_targets import check_writable, footer, stamp

    out_dir = Path(out_dir)
    paths = {"summary": out_dir / "summary.json", "table": out_dir / "passk.md",
             "chart": out_dir / "passk.png"}
    check_writable(out_dir, tuple(p.name for p in paths.values()), source=run.root)
    formats.write_json_atomic(paths["summary"], stamp(summary(run, ks), run.root), indent=2)
    formats.write_bytes_atomic(paths["table"], (table(run, ks) + "\n" + footer()).encode())
    plot([run], paths["chart"], k=ks[0])
    return paths
