"""Stage 6: drop exact and near-duplicate solutions, then write the dataset `train` reads.

Order matters and is fixed: exact copies first (after trimming trailing spaces), then near
duplicates, greedily in input order: a solution is dropped when it is near an earlier kept one,
of the same problem (50 samples of one problem are often the same program respelled) or of
another (the corpus holds the same function under many names). Two detectors:

- `rouge`: ROUGE-L F1 over code tokens, MultiPL-T's measure. The longest common subsequence is
  computed bit-parallel (Hyyrö 2004: one big-integer add per token of the other sequence), and
  pairs whose length ratio bounds the score below the threshold are never compared. Still
  quadratic in the number of kept solutions.
- `minhash`: MinHash signatures of token 5-grams in a banded LSH index (datasketch), so a lookup
  touches only candidates; the Jaccard estimate of a candidate decides.

`compare` measures both on one set: ROUGE-L's pairs are the reference, and MinHash runs at the
highest Jaccard threshold that reaches a target recall of them.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

_TOKEN = re.compile(r"\w+|[^\w\s]")
DEFAULT_THRESHOLD = {"minhash": 0.7, "rouge": 0.8}
FIELDS = ("content", "lang", "source_id", "test_count", "coverage", "generator")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def exact_key(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _masks(a: list[str]) -> dict[str, int]:
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def lcs_length(masks_a: dict[str, int], len_a: int, b: list[str]) -> int:
    """Length of the longest common subsequence of `a` (given by `_masks(a)`) and `b`."""
    full = (1 << len_a) - 1
    v = full
    for tok in b:
        m = masks_a.get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len_a - bin(v).count("1")


def rouge_l(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 0.0
    lcs = lcs_length(_masks(a), len(a), b)
    return 2 * lcs / (len(a) + len(b))


class RougeIndex:
    def __init__(self, threshold: float):
        self.t = threshold
        self.entries: list[tuple[dict[str, int], int, str]] = []

    def _hit(self, b: list[str], entry) -> bool:
        masks, n, _ = entry
        # F1 = 2 lcs / (n + m) <= 2 min(n, m) / (n + m): skip pairs that cannot reach t.
        if not b or 2 * min(n, len(b)) < self.t * (n + len(b)):
            return False
        return 2 * lcs_length(masks, n, b) >= self.t * (n + len(b))

    def query(self, b: list[str], problem: str) -> str | None:
        """The problem of an earlier entry near `b` (its own problem checked first), or None."""
        same = [e for e in self.entries if e[2] == problem]
        for e in same + [e for e in self.entries if e[2] != problem]:
            if self._hit(b, e):
                return e[2]
        return None

    def add(self, b: list[str], problem: str) -> None:
        self.entries.append((_masks(b), len(b), problem))


def _shingles(toks: list[str], k: int = 5) -> set[bytes]:
    if len(toks) < k:
        return {" ".join(toks).encode()}
    return {" ".join(toks[i:i + k]).encode() for i in range(len(toks) - k + 1)}


class MinHashIndex:
    def __init__(self, threshold: float, num_perm: int = 256):
        from datasketch import MinHashLSH

        self.t, self.num_perm = threshold, num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.sigs: dict[str, tuple] = {}

    def signature(self, toks: list[str]):
        from datasketch import MinHash

        m = MinHash(num_perm=self.num_perm, seed=1)
        m.update_batch(list(_shingles(toks)))
        return m

    def query(self, toks: list[str], problem: str, sig=None) -> str | None:
        sig = sig or self.signature(toks)
        hits = [self.sigs[k] for k in self.lsh.query(sig)]
        hits = [(p, s) for p, s in hits if s.jaccard(sig) >= self.t]
        if not hits:
            return None
        return problem if any(p == problem for p, _ in hits) else hits[0][0]

    def add(self, toks: list[str], problem: str, sig=None) -> None:
        key = str(len(self.sigs))
        sig = sig or self.signature(toks)
        self.lsh.insert(key, sig)
        self.sigs[key] = (problem, sig)


def make_index(method: str, threshold: float | None):
    if method not in DEFAULT_THRESHOLD:
        raise ValueError(f"unknown dedupe method {method!r} (minhash or rouge)")
    t = DEFAULT_THRESHOLD[method] if threshold is None else threshold
    if not 0 < t <= 1:
        raise ValueError(f"dedupe threshold {t}: must be in (0, 1]")
    return MinHashIndex(t) if method == "minhash" else RougeIndex(t)


def dedupe(rows: list[dict], method: str = "minhash", threshold: float | None = None
           ) -> tuple[list[dict], Counter, float]:
    """(kept rows, counts, seconds spent on near-duplicates); see the module docstring."""
    counts: Counter = Counter()
    seen: set[str] = set()
    unique = []
    for row in rows:
        key = exact_key(row["content"])
        if key in seen:
            counts["exact copy"] += 1
        else:
            seen.add(key)
            unique.append(row)
    index = make_index(method, threshold)
    kept = []
    start = time.perf_counter()
    for row in unique:
        toks = tokens(row["content"])
        problem = row.get("problem", row["source_id"])
        near = index.query(toks, problem)
        if near is None:
            index.add(toks, problem)
            kept.append(row)
        elif near == problem:
            counts["near-duplicate within its problem"] += 1
        else:
            counts["near-duplicate across problems"] += 1
    counts["kept"] = len(kept)
    return kept, counts, time.perf_counter() - start


def write_dataset(rows: list[dict], out: Path) -> None:
    """`out/dataset.jsonl` and the saved dataset `out/dataset`, each replaced atomically."""
    import datasets

    from multipl_moe.util.atomic import atomic_dir, atomic_file

    out = Path(out)
    records = [{k: r[k] for k in FIELDS} for r in rows]
    with atomic_file(out / "dataset.jsonl", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    features = datasets.Features({"content": datasets.Value("string"), "lang": datasets.Value("string"),
                                  "source_id": datasets.Value("string"),
                                  "test_count": datasets.Value("int32"),
                                  "coverage": datasets.Value("float32"),
                                  "generator": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({k: [r[k] for r in records] for k in FIELDS}, features=features)
    with atomic_dir(out / "dataset", force=True) as tmp:
        # datasets writes no shard at all for 0 rows unless told (and then cannot load it back).
        ds.save_to_disk(str(tmp), num_shards=1 if not records else None)


def compare(rows: list[dict], rouge_threshold: float = DEFAULT_THRESHOLD["rouge"],
            target_recall: float = 0.95,
            jaccard_grid: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)) -> dict:
    """Near-duplicate pairs by ROUGE-L (all pairs: the reference) vs MinHash LSH; the time of
    a dedupe pass of each, MinHash at the highest Jaccard threshold reaching `target_recall`."""
    texts = [tokens(r["content"]) for r in {exact_key(r["content"]): r for r in rows}.values()]
    n = len(texts)
    reference = set()
    masks = [(_masks(t), len(t)) for t in texts]
    t0 = time.perf_counter()
    for j in range(n):
        for i in range(j):
            m, la = masks[i]
            lb = len(texts[j])
            if lb and la and 2 * min(la, lb) >= rouge_threshold * (la + lb) and \
                    2 * lcs_length(m, la, texts[j]) >= rouge_threshold * (la + lb):
                reference.add((i, j))
    all_pairs_s = time.perf_counter() - t0
    fake = [{"content": " ".join(t), "source_id": str(k)} for k, t in enumerate(texts)]
    kept, _, rouge_s = dedupe(fake, "rouge", rouge_threshold)
    report = {"items": n, "rouge_threshold": rouge_threshold, "reference_pairs": len(reference),
              "rouge_all_pairs_s": all_pairs_s, "rouge_dedupe_s": rouge_s,
              "rouge_dropped": n - len(kept), "minhash": []}
    for jt in jaccard_grid:
        idx = MinHashIndex(jt)
        sigs = [idx.signature(t) for t in texts]
        for k, s in enumerate(sigs):
            idx.lsh.insert(str(k), s)
        found = set()
        for i, j in reference:
            if str(i) in idx.lsh.query(sigs[j]) and sigs[i].jaccard(sigs[j]) >= jt:
                found.add((i, j))
        recall = len(found) / len(reference) if reference else 1.0
        kept, _, mh_s = dedupe(fake, "minhash", jt)
        row = {"jaccard": jt, "recall": recall, "dedupe_s": mh_s, "dropped": n - len(kept)}
        report["minhash"].append(row)
        if recall >= target_recall:
            report["chosen"] = row
            break
    return report
