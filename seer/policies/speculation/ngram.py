"""vLLM-style n-gram drafting (prompt lookup), the per-request baseline: no frequencies, no group.

As vLLM v1's `NgramProposer`: find the longest n in [min_n, max_n] for which the context's last n tokens occur
earlier in the context, take the earliest such occurrence, and propose the (up to) k tokens that followed it.
The earliest occurrence has the most text after it: on a repeated token it drafts k tokens where the most recent
occurrence drafts one.
"""

from __future__ import annotations

from collections.abc import Sequence


def ngram_propose(context: Sequence[int], k: int, min_n: int = 1, max_n: int = 4) -> list[int]:
    """Up to `k` tokens following the earliest earlier occurrence of the longest matching suffix."""
    n_ctx = len(context)
    if k <= 0 or n_ctx < 2:
        return []
    for n in range(min(max_n, n_ctx - 1), min_n - 1, -1):
        pattern = list(context[n_ctx - n :])
        first = pattern[0]
        for start in range(n_ctx - n):  # every start before the suffix itself, the earliest first
            if context[start] == first and list(context[start : start + n]) == pattern:
                return list(context[start + n : start + n + k])
    return []
