"""What a drafter could at best have accepted, for a strict lower bound on speculative rollouts.

With exact replay, a draft token is accepted only when it equals the recorded next token, and every draft is a
continuation copied from the drafter's index: the group's prompt, the responses of the group (of every group for
scope "global"; none for scope "own") and the request's own tokens so far. So at output position g at most
A(g) tokens can be accepted, A(g) being the longest k <= gamma_max such that out[g:g+k] occurs in that text (the
siblings counted whole, as if they had all finished; the request's own text only before g). Each verify step at
g advances at most 1 + A(g) tokens, which gives the fewest steps any schedule needs (a shortest path over
positions) and a least KV-read sum over them. k-grams are compared by 64-bit hashes: a collision can only make
A larger, so the bound stays a lower bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

_BASE = np.uint64(0x9E3779B97F4A7C15)


def _gram_hashes(tokens: np.ndarray, k_max: int) -> list[np.ndarray]:
    """hashes[k-1][i] identifies tokens[i:i+k] (k = 1..k_max)."""
    out, h = [], np.zeros(len(tokens), np.uint64)
    t = tokens.astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        for k in range(1, k_max + 1):
            n = len(tokens) - k + 1
            if n <= 0:
                out.append(np.zeros(0, np.uint64))
                continue
            h = h[:n] * _BASE + t[k - 1 : k - 1 + n]
            out.append(h.copy())
    return out


def _count(sorted_keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
    """How often each query hash occurs (0 when absent), from np.unique's keys and counts."""
    if not len(sorted_keys):
        return np.zeros(len(query), np.int64)
    i = np.clip(np.searchsorted(sorted_keys, query), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[i] == query, counts[i], 0)


def acceptance_ceiling(
    out: np.ndarray,
    text: list[tuple[np.ndarray, np.ndarray]],
    own: list[np.ndarray],
    gamma: int,
    own_in_text: bool = True,
) -> np.ndarray:
    """A(g) for g = 0..L-1. `text[k-1]` = (unique hashes, counts) of the k-grams available whole (prompt,
    siblings, ...; when `own_in_text`, including this request's own output, which is subtracted again);
    `own[k-1]` = this request's k-gram hashes by position."""
    L = len(out)
    ok = np.ones(L, bool)
    ceiling = np.zeros(L, np.int64)
    for k in range(1, gamma + 1):
        h = own[k - 1]
        n = len(h)
        if n == 0:
            break
        keys, first, mine = np.unique(h, return_index=True, return_counts=True)
        elsewhere = _count(*text[k - 1], h) - (_count(keys, mine, h) if own_in_text else 0) > 0
        # the request's own earlier text: an occurrence that ends at or before position g
        earlier = first[np.searchsorted(keys, h)] + k <= np.arange(n)
        ok = ok[:n] & (elsewhere | earlier)
        ceiling[:n] += ok
    budget = np.maximum(0, np.minimum(gamma, L - 1 - np.arange(L)))
    return np.minimum(ceiling, budget)


def least_steps(prompt_len: int, ceiling: np.ndarray, gamma: int) -> tuple[int, int]:
    """(fewest decode/verify steps, a lower bound on the sum over them of context + 1) to produce tokens 2..L,
    when a step at generated count g advances 1 to 1 + ceiling[g] tokens (the first token is the prefill's)."""
    L = len(ceiling)
    if L <= 1:
        return 0, 0
    reach = np.maximum.accumulate(np.arange(L) + 1 + ceiling)  # farthest position from any g' <= g
    steps, end = 0, 1
    while end < L:  # breadth-first layers: the fewest jumps from position 1 to L
        steps += 1
        end = int(reach[end])
    # step j (0-based) happens at a position >= 1 + j and >= L - (steps - j) * (1 + gamma)
    j = np.arange(steps)
    g = np.maximum(1 + j, L - (steps - j) * (1 + gamma))
    return steps, int((prompt_len + g).sum())


def speculative_minimums(
    outputs: Mapping[int, Sequence[int]],
    prompt_len: Mapping[int, int],
    group_of: Mapping[int, int],
    prompts: Mapping[int, Sequence[int]],
    scope: str,
    gamma: int,
) -> tuple[dict[int, int], dict[int, int]]:
    """Per request id: (fewest steps, least KV-read sum) with the best acceptance the drafter's text allows."""
    members: dict[int, list[int]] = {}
    for rid, gid in group_of.items():
        members.setdefault(gid, []).append(rid)
    arrays = {rid: np.asarray(outputs[rid], np.int64) for rid in outputs}
    own = {rid: _gram_hashes(a, gamma) for rid, a in arrays.items()}

    def pooled(rids, extra=()) -> list[tuple[np.ndarray, np.ndarray]]:
        parts = [[own[r][k] for r in rids] + [e[k] for e in extra] for k in range(gamma)]
        return [np.unique(np.concatenate(p) if p else np.zeros(0, np.uint64), return_counts=True) for p in parts]

    everyone = list(outputs) if scope == "global" else []
    steps, kv = {}, {}
    for gid, rids in members.items():
        prompt = [_gram_hashes(np.asarray(prompts.get(gid, ()), np.int64), gamma)]
        text = pooled((rids if scope == "group" else []) + everyone, prompt)
        for rid in rids:
            ceiling = acceptance_ceiling(arrays[rid], text, own[rid], gamma, own_in_text=scope != "own")
            steps[rid], kv[rid] = least_steps(prompt_len[rid], ceiling, gamma)
    return steps, kv
