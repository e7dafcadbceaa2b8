"""Per-seed metrics of the demo and paired comparisons between variants.

A difference between two variants is computed seed by seed (both trained from the same base on the
same data order with the same seed) and called out only when every seed's difference has the same
sign, i.e. when the range of the paired differences excludes zero; otherwise it is within the spread.
"""

from __future__ import annotations

import statistics

GAIN = "low-resource gain"
FORGET = "high-resource forgetting"


def per_seed(base: dict[str, float], test: dict[int, dict[str, float]], high: list[str], low: list[str]
             ) -> dict[int, dict[str, float]]:
    """seed -> {GAIN: mean over low-resource languages of (base - variant) test loss (+ = learned),
                FORGET: mean over high-resource languages of (variant - base) (+ = forgot)}."""
    out = {}
    for seed, losses in test.items():
        out[seed] = {GAIN: statistics.fmean(base[lang] - losses[lang] for lang in low),
                     FORGET: statistics.fmean(losses[lang] - base[lang] for lang in high)}
    return out


def spread(values: list[float]) -> tuple[float, float, float]:
    """(mean, min, max)."""
    return statistics.fmean(values), min(values), max(values)


def paired(a: dict[int, float], b: dict[int, float]) -> dict:
    """a - b seed by seed over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    mean, lo, hi = spread(diffs)
    return {"mean": mean, "min": lo, "max": hi, "seeds": len(seeds),
            "called": len(seeds) > 1 and (lo > 0 or hi < 0)}


def fmt_spread(mean: float, lo: float, hi: float) -> str:
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
