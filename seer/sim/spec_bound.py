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
    return acceptance_ceilings([len(out)], [own], [[t] for t in text], gamma, own_in_text)[0]


def acceptance_ceilings(
    lengths: Sequence[int],
    own: Sequence[list[np.ndarray]],
    text: list[list[tuple[np.ndarray, np.ndarray]]],
    gamma: int,
    own_in_text: bool = True,
) -> list[np.ndarray]:
    """`acceptance_ceiling` for several requests that read the same text (a group) at once, a few numpy passes per
    k for all of them instead of per request. Request r has `lengths[r]` tokens and k-gram hashes `own[r]`; the
    text's k-gram counts are the sum over the tables of `text[k-1]` (unique hashes, counts)."""
    lens = np.asarray(lengths, np.int64)
    base = np.concatenate([[0], np.cumsum(lens)])
    owner_of = np.repeat(np.arange(len(lens)), lens)
    pos_of = np.arange(base[-1]) - base[owner_of]
    ok = np.ones(base[-1], bool)  # position still copyable for every k so far
    ceiling = np.zeros(base[-1], np.int64)
    for k in range(1, gamma + 1):
        n = np.maximum(lens - k + 1, 0)  # k-grams of each request
        if not n.any():
            break
        h = np.concatenate([own[r][k - 1] for r in range(len(lens))])
        owner = np.repeat(np.arange(len(lens)), n)
        pos = np.arange(len(h)) - np.repeat(np.cumsum(n) - n, n)
        in_text = sum(_count(keys, counts, h) for keys, counts in text[k - 1])
        # per (request, k-gram): how often it occurs in the request's own output, and where first
        order = np.lexsort((h, owner))  # stable: a k-gram's positions stay in order
        ho, oo = h[order], owner[order]
        starts = np.flatnonzero(np.concatenate([[True], (ho[1:] != ho[:-1]) | (oo[1:] != oo[:-1])]))
        run = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(h))))
        mine, first = np.empty(len(h), np.int64), np.empty(len(h), np.int64)
        mine[order] = np.diff(np.append(starts, len(h)))[run]
        first[order] = pos[order][starts][run]
        elsewhere = in_text - (mine if own_in_text else 0) > 0
        # the request's own earlier text: an occurrence that ends at or before position g
        earlier = first + k <= pos
        step = np.zeros(base[-1], bool)  # positions past the last k-gram stay False: nothing longer fits there
        step[base[owner] + pos] = elsewhere | earlier
        ok &= step
        ceiling += ok
    budget = np.maximum(0, np.minimum(gamma, lens[owner_of] - 1 - pos_of))
    ceiling = np.minimum(ceiling, budget)
    return [ceiling[base[r] : base[r + 1]] for r in range(len(lens))]


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


def ceilings_by_request(
    outputs: Mapping[int, Sequence[int]],
    group_of: Mapping[int, int],
    prompts: Mapping[int, Sequence[int]],
    scope: str,
    gamma: int,
) -> dict[int, np.ndarray]:
    """Per request id, A(g): what the drafter could copy under `scope` (own: the group's prompt; group: it and the
    group's responses; global: it and every response), a group's requests in one `acceptance_ceilings` call."""
    members: dict[int, list[int]] = {}
    for rid, gid in group_of.items():
        members.setdefault(gid, []).append(rid)
    arrays = {rid: np.asarray(outputs[rid], np.int64) for rid in outputs}
    own = {rid: _gram_hashes(a, gamma) for rid, a in arrays.items()}

    def pooled(parts: list[list[np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(unique hashes, counts) per k of the k-gram hash lists `parts` (one list of per-k arrays each)."""
        return [
            np.unique(np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, np.uint64), return_counts=True)
            for k in range(gamma)
        ]

    # every group reads the same responses under scope global: pooled once, not once per group
    everyone = pooled([own[r] for r in outputs]) if scope == "global" else None
    found = {}
    for gid, rids in members.items():
        prompt = _gram_hashes(np.asarray(prompts.get(gid, ()), np.int64), gamma)
        group = pooled([own[r] for r in rids] + [prompt] if scope == "group" else [prompt])
        text = [[group[k]] + ([everyone[k]] if everyone else []) for k in range(gamma)]
        ceilings = acceptance_ceilings(
            [len(arrays[r]) for r in rids], [own[r] for r in rids], text, gamma, own_in_text=scope != "own"
        )
        found.update(zip(rids, ceilings))
    return found


def speculative_minimums(
    outputs: Mapping[int, Sequence[int]],
    prompt_len: Mapping[int, int],
    group_of: Mapping[int, int],
    prompts: Mapping[int, Sequence[int]],
    scope: str,
    gamma: int,
) -> tuple[dict[int, int], dict[int, int]]:
    """Per request id: (fewest steps, least KV-read sum) with the best acceptance the drafter's text allows."""
    steps, kv = {}, {}
    for rid, ceiling in ceilings_by_request(outputs, group_of, prompts, scope, gamma).items():
        steps[rid], kv[rid] = least_steps(prompt_len[rid], ceiling, gamma)
    return steps, kv
