"""Kernels that run `kernels.draft_row` for many rows in one call: a step's drafts (`draft_batch_kernel`) and the
exact replay's plan (`replay_kernel`, for `sim.speculation.ExactReplay.plan`: each row's verify steps drafted from
a frozen index, checked against the recorded output and advanced).

Apart from `kernels`, which holds the index itself and would pass 400 lines. numba's disk cache only notices
changes to a kernel's own file: after changing `kernels.py`, touch this file or clear `__pycache__` (stale kernels
here fail the tests that hold batched drafts and the exact plan to their references).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from seer.policies.speculation.kernels import W_PAR, W_PROB, W_TOK, draft_row, views


@njit(cache=True)
def draft_batch_kernel(heap, ctx, rows, topk, min_prob, min_match, cap):
    """Drafts for many contexts in one call (nothing buffered). rows[r] = (lo, hi, out offset, max_depth,
    max_tokens, n, m): the context of row r is ctx[lo:hi]; n and m are written back."""
    buf, slots, table, ent, _, work = views(heap)
    for r in range(rows.shape[0]):
        rows[r, 5], rows[r, 6] = draft_row(
            buf, slots, table, ent, ctx, rows[r, 0], rows[r, 1], rows[r, 3], rows[r, 4], topk, min_prob, min_match,
            cap, work, rows[r, 2],
        )  # fmt: skip


@njit(cache=True)
def _score(work, n):
    """A draft's score, sum(probs) left to right as `Draft.score` adds them (the same float)."""
    probs, s = work[W_PROB].view(np.float64), 0.0
    for i in range(n):
        s += probs[i]
    return s


@njit(cache=True)
def accepted_kernel(work, n, truth, t0, t1):
    """`suffix.accepted_length` of the draft in work[:, :n] against truth[t0:t1]: the longest root path of the draft
    tree equal to a prefix of the truth (a linear draft: the common prefix)."""
    tok, par = work[W_TOK], work[W_PAR]
    linear = True
    for i in range(n):
        if par[i] != i - 1:
            linear = False
            break
    k = 0
    if linear:
        while k < n and t0 + k < t1 and tok[k] == truth[t0 + k]:
            k += 1
        return k
    front = np.zeros(n + 1, np.bool_)  # front[0]: the root; front[i + 1]: node i is on a matching path
    front[0] = True
    for t in range(t0, t1):
        nxt = np.zeros(n + 1, np.bool_)
        found = False
        for i in range(n):
            if tok[i] == truth[t] and front[par[i] + 1]:
                nxt[i + 1] = True
                found = True
        if not found:
            break
        front = nxt
        k += 1
    return k


@njit(cache=True)
def replay_kernel(heap, gheap, use_global, truth, prompts, rows, horizon, topk, min_prob, min_match, cap, plan):
    """Verify steps replayed against recorded outputs with the index frozen (`sim.speculation.ExactReplay.plan`).
    rows[r] = (start of the request's output in `truth`, its length, start of its group's prompt in `prompts`, the
    prompt's length, tokens generated, tokens left in the chunk, draft budget). Each step drafts min(budget, left - 1)
    tokens from the last max_match tokens of prompt + output so far (from `gheap` too when use_global, the higher
    score winning, as `GroupDrafter.propose`), accepts what the recorded output confirms and advances 1 + accepted.
    Writes plan[0..3][r, s] = budget offered, tokens drafted, accepted, advance."""
    buf, slots, table, ent, _, work = views(heap)
    gbuf, gslots, gtable, gent, _, gwork = views(gheap)
    mm = ent.shape[1] - 2
    ctx = np.empty(mm, np.int64)
    for r in range(rows.shape[0]):
        out0, out_len, p0, p_len = rows[r, 0], rows[r, 1], rows[r, 2], rows[r, 3]
        g, left, gamma = rows[r, 4], rows[r, 5], rows[r, 6]
        for s in range(horizon):
            if left <= 0:
                break
            budget = min(gamma, left - 1)
            acc = 0
            if budget > 0:
                if g >= mm:
                    ctx[:mm] = truth[out0 + g - mm : out0 + g]
                    L = mm
                else:
                    k = min(p_len, mm - g)
                    ctx[:k] = prompts[p0 + p_len - k : p0 + p_len]
                    ctx[k : k + g] = truth[out0 : out0 + g]
                    L = k + g
                n, m = draft_row(
                    buf, slots, table, ent, ctx, 0, L, budget, budget, topk, min_prob, min_match, cap, work, 0
                )  # fmt: skip
                if m == 0:
                    n = 0
                w = work
                if use_global:
                    n2, m2 = draft_row(
                        gbuf, gslots, gtable, gent, ctx, 0, L, budget, budget, topk, min_prob, min_match, cap, gwork, 0
                    )  # fmt: skip
                    if m2 != 0 and _score(gwork, n2) > (_score(work, n) if m != 0 else 0.0):
                        n, w = n2, gwork
                acc = accepted_kernel(w, n, truth, out0 + g, min(out0 + g + budget, out0 + out_len))
                plan[0, r, s], plan[1, r, s], plan[2, r, s] = budget, n, acc
            plan[3, r, s] = 1 + acc
            g += 1 + acc
            left -= 1 + acc
