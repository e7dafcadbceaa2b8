"""pass@k by the unbiased estimator of Chen et al. (2021), as MultiPL-E computes it.

For a problem with n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance that
k samples drawn without replacement contain at least one that passes. Using it (rather than the
fraction of passing samples, or k fresh samples) is what makes pass@1 from 20 samples at
temperature 0.2 comparable with published MultiPL-E numbers. A benchmark's score is the mean
over its problems; it is undefined when some problem has fewer than k samples.
"""

from __future__ import annotations

from typing import Iterable


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k), as a product (no huge binomials)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    fail = 1.0
    for i in range(k):  # C(n-c, k) / C(n, k) = prod_{i<k} (n-c-i) / (n-i)
        fail *= (n - c - i) / (n - i)
    return 1.0 - fail


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float | None:
    """Mean pass@k over problems given (n, c) per problem; None if empty or some n < k."""
    counts = list(counts)
    if not counts or any(n < k for n, _ in counts):
        return None
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
