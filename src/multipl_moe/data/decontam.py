"""Decontamination: drop documents that share a long n-gram with a benchmark prompt or test.

The benchmark side is every row of the MultiPL-E JSONL files (and the original HumanEval / MBPP
files) found under a data folder: their `prompt` and `tests` (originals: `prompt`,
`canonical_solution`, `test`, `text`, `code`, `test_list`). A document is contaminated when one of
its n-grams of whitespace-separated tokens (n = 13 by default, the usual choice since GPT-3's
decontamination) occurs in that text. Benchmark n-grams in which fewer than n/4 tokens contain a
letter (runs of numbers in test data, `1 2 3 ... 13`) are not indexed: they flag unrelated files.

Boilerplate shared by many problems (MultiPL-E's Java import header, its Go test scaffold) would
otherwise flag any file that happens to use the same idiom, so an n-gram that occurs in more than
`max_problems` distinct problems is not counted (problems are identified by name, so the same
problem translated into 11 languages counts once).
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

BENCHMARK_FIELDS = ("prompt", "tests", "canonical_solution", "test", "text", "code", "test_list")


def default_multipl_e_dir() -> Path | None:
    """`$MULTIPL_E_DIR`, else the first `shared/data/multipl-e` above the working directory or
    above this package (the layout of the project's checkout), else None."""
    env = os.environ.get("MULTIPL_E_DIR")
    if env:
        return Path(env)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "shared" / "data" / "multipl-e"
            if candidate.is_dir():
                return candidate
    return None


def _ngrams(text: str, n: int, min_alpha: int = 0) -> Iterator[int]:
    """Hashes of the n-grams of whitespace tokens; with `min_alpha`, only those having at least
    that many tokens with a letter (a run of numbers such as `1 2 3 ... 13` is no evidence)."""
    words = text.split()
    hashes = [hash(w) for w in words]
    alpha = [0]
    for w in words:
        alpha.append(alpha[-1] + any(c.isalpha() for c in w))
    for i in range(len(hashes) - n + 1):
        if alpha[i + n] - alpha[i] >= min_alpha:
            yield hash(tuple(hashes[i:i + n]))


def _benchmark_rows(data_dir: Path) -> Iterator[tuple[str, str]]:
    """(problem name, text) for every benchmark text field of every JSONL row under data_dir."""
    files = sorted(p for p in data_dir.rglob("*") if p.name.endswith((".jsonl", ".jsonl.gz")))
    for path in files:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                row = json.loads(line)
                name = str(row.get("name") or row.get("task_id") or f"{path.name}:{i}")
                if "task_id" in row and "text" in row and "name" not in row:
                    name = f"mbpp_{row['task_id']}"
                for key in BENCHMARK_FIELDS:
                    value = row.get(key)
                    if isinstance(value, list):
                        value = "\n".join(str(v) for v in value)
                    if isinstance(value, str) and value:
                        yield _problem_id(name), value


def _problem_id(name: str) -> str:
    """`HumanEval_53_add` and `HumanEval/53` -> `humaneval_53`; `mbpp_3_is_not_prime` -> `mbpp_3`."""
    parts = name.replace("/", "_").lower().split("_")
    return "_".join(parts[:2]) if len(parts) >= 2 and parts[1].isdigit() else name.lower()


@dataclass
class DecontamReport:
    checked: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    examples: list[tuple[str, str]] = field(default_factory=list)
    """(document id, benchmark problem) of the first few drops."""

    def lines(self) -> list[str]:
        from multipl_moe.languages import sort_langs

        out = [f"decontamination: dropped {sum(self.dropped.values())} of "
               f"{sum(self.checked.values())} documents"]
        for lang in sort_langs(self.checked):
            out.append(f"  {lang:<5} dropped {self.dropped[lang]:>6} of {self.checked[lang]:>8}")
        for doc_id, problem in self.examples:
            out.append(f"  e.g. {doc_id} matches {problem}")
        return out


class Decontaminator:
    """Membership test of a document's n-grams against the benchmark's."""

    def __init__(self, texts: Iterable[tuple[str, str]], n: int = 13, max_problems: int = 10):
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        by_problem: dict[str, set[int]] = {}
        for problem, text in texts:
            by_problem.setdefault(problem, set()).update(_ngrams(text, n, max(1, n // 4)))
        owner: dict[int, str] = {}
        count: Counter = Counter()
        for problem in sorted(by_problem):
            for h in by_problem[problem]:
                owner.setdefault(h, problem)
                count[h] += 1
        self.index = {h: p for h, p in owner.items() if count[h] <= max_problems}
        self.num_problems = len(by_problem)
        self.num_boilerplate = len(owner) - len(self.index)

    @classmethod
    def from_dir(cls, data_dir: str | Path | None = None, n: int = 13,
                 max_problems: int = 10) -> "Decontaminator":
        path = Path(data_dir) if data_dir else default_multipl_e_dir()
        if path is None or not path.is_dir():
            from multipl_moe.data.config import DataError

            where = path or "set data.decontam_dir or $MULTIPL_E_DIR"
            raise DataError(f"decontamination: MultiPL-E data folder not found ({where})")
        return cls(_benchmark_rows(path), n=n, max_problems=max_problems)

    def match(self, text: str) -> str | None:
        """The benchmark problem one of whose n-grams `text` contains, or None."""
        index = self.index
        for h in _ngrams(text, self.n):
            problem = index.get(h)
            if problem is not None:
                return problem
        return None

    def filter(self, docs: Iterable, report: DecontamReport | None = None,
               max_examples: int = 5) -> Iterator:
        """The documents (`sources.Document`s) that match nothing; drops counted in `report`."""
        report = report if report is not None else DecontamReport()
        for doc in docs:
            report.checked[doc.lang] += 1
            problem = self.match(doc.text)
            if problem is None:
                yield doc
                continue
            report.dropped[doc.lang] += 1
            if len(report.examples) < max_examples:
                report.examples.append((doc.id, problem))
