"""Numba kernels of the simulator's speculative epoch: the parametric acceptance plan, the epoch's cut and step
sums, and the acceptance statistics, each one compiled pass over the batch x horizon arrays instead of dozens of
small numpy calls per epoch. One module because numba's disk cache only notices changes to a kernel's own file.

Each kernel repeats its numpy reference (`ParametricAcceptance.plan_reference`, `plan_spec_epoch_reference`,
`apply_spec_epoch_reference`, `count_spec_steps_reference`) operation for operation: integers are exact, and
the float sums of the step model add rows in the order numpy's axis-0 reduction does, so results are
bit-identical (tests/test_sim_speculation.py checks both on random inputs).
The parametric model's draws are counter-based (a hash of seed, request, position and draft index; `draw`), so the
compiled plan and its reference compute the same numbers without sharing a stream.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# splitmix64's constants: its increment and its finalizer's multipliers (Steele, Lea & Flood 2014)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
UNIT_BITS = 53  # a draw is a 53-bit integer, the uniform draw / 2**53 (as numpy's Generator.random takes them)


@njit(cache=True)
def mix64(z):  # pragma: no cover - compiled
    """splitmix64's finalizer: a bijection of 64-bit words whose every output bit depends on every input bit."""
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def row_key(seed, rid):  # pragma: no cover - compiled
    """Where a request's draws start under one seed (`seed`: the mixed seed, `speculation.draw_seed`)."""
    return mix64(seed ^ mix64(np.uint64(rid) + GOLDEN))


@njit(cache=True)
def draw(row, position, i):  # pragma: no cover - compiled
    """Draft position i's draw in the step that starts at token `position` of the request's response: splitmix64's
    output number (position << 32) + i + 1 from the request's start, as a 53-bit integer."""
    k = (np.uint64(position) << np.uint64(32)) + np.uint64(i + 1)
    return mix64(row + k * GOLDEN) >> np.uint64(64 - UNIT_BITS)


@njit(cache=True)
def parametric_plan(
    seed, rids, generated, slot, width, finished, progress, alpha_of_n, own_only, gammas, remaining, horizon
):  # pragma: no cover - compiled
    """(budget, accepted, advance), rows x horizon, for `ParametricAcceptance.plan`: draft i of a step is accepted
    while its draw is under alpha(others ahead) (a leading run); rows that may reach their chunk end within the
    horizon draft one short of it and stop after it. The others ahead are counted once, as the epoch starts.

    A step's draws are a function of (seed, request, the token the step starts at, draft position), not of the
    order they are taken in: a step draws the same numbers whether it is planned in a long epoch or alone
    (`--exact`), and whatever else the batch holds."""
    B = rids.shape[0]
    b = np.empty((B, horizon), np.int64)
    a = np.empty((B, horizon), np.int64)
    adv = np.empty((B, horizon), np.int64)
    n = np.zeros(B, np.int64) if own_only else ahead_counts(rids, generated, slot, width, finished, progress)
    below = np.empty(B, np.uint64)
    rows = np.empty(B, np.uint64)
    near = np.empty(B, np.bool_)
    left = remaining.copy()
    position = generated.copy()
    for r in range(B):
        # draw / 2**53 < alpha, in integers: draw < ceil(alpha * 2**53) (the product is exact)
        below[r] = np.uint64(np.ceil(alpha_of_n[n[r]] * 2.0**UNIT_BITS))
        rows[r] = row_key(seed, rids[r])
        near[r] = remaining[r] <= horizon * (1 + gammas[r])
    # step by step over the rows: a row's next draw waits on its last (where the step starts), the next row's
    # does not, so the rows' hashes overlap; and no branch on a (random) draw: every draw of the budget is taken
    for s in range(horizon):
        for r in range(B):
            if near[r] and left[r] <= 0:
                b[r, s], a[r, s], adv[r, s] = 0, 0, 0
                continue
            cap = min(gammas[r], max(left[r] - 1, 0)) if near[r] else gammas[r]
            run = np.uint64(1)
            accepted = np.uint64(0)
            for i in range(cap):  # the leading run of draws under alpha; (draw - below) >> 63 is draw < below
                run &= (draw(rows[r], position[r], i) - below[r]) >> np.uint64(63)
                accepted += run
            acc = np.int64(accepted)
            b[r, s], a[r, s], adv[r, s] = cap, acc, 1 + acc
            left[r] -= 1 + acc
            position[r] += 1 + acc
    return b, a, adv


@njit(cache=True)
def epoch_plan(adv, drafted, remaining, computed, blocks0, block_size, avail):  # pragma: no cover - compiled
    """The epoch's cut and per-step sums: (advance_cum, blocks, k, tokens, kv tokens, attention pairs, score
    pairs), the sums for the first k steps (k = 0: not one step fits in KV)."""
    B, H = adv.shape
    C = np.empty((B, H), np.int64)
    blocks = np.empty((B, H), np.int64)
    k = H
    extra = np.zeros(H, np.int64)
    for r in range(B):
        c = 0
        peak = blocks0[r]
        top = peak * block_size  # tokens the peak blocks hold: a step needs more blocks only when it passes this
        ended = False
        for s in range(H):
            ctx = computed[r] + c  # KV cached before the step
            c += adv[r, s]
            C[r, s] = c
            held = ctx + 1 + drafted[r, s]
            if held > top:  # ceil(held / block_size) > peak; a division only then (once per block, not per step)
                peak = -(-held // block_size)
                top = peak * block_size
            blocks[r, s] = peak
            extra[s] += peak - blocks0[r]
            if not ended and c >= remaining[r]:
                ended = True
                if s + 1 < k:
                    k = s + 1
    for s in range(H):
        if extra[s] > avail:
            if s < k:
                k = s
            break
    tokens = np.zeros(k)
    kv = np.zeros(k)
    attn = np.zeros(k)
    pairs = np.zeros(k)
    for r in range(B):  # row by row, as numpy's axis-0 sums add them
        for s in range(k):
            q = 1.0 + drafted[r, s]
            ctx = computed[r] + C[r, s] - adv[r, s]
            tokens[s] += q
            kv[s] += ctx + (1 + drafted[r, s])
            attn[s] += q * (ctx + (q + 1) / 2)
            pairs[s] += q * (ctx + q) if q > 1 else 0.0
    return C, blocks, k, tokens, kv, attn, pairs


@njit(cache=True)
def apply_epoch(advance_cum, blocks_after, j, remaining, computed, produced, blocks):  # pragma: no cover - compiled
    """Apply the first j steps of a planned epoch to the running rows in place; returns the blocks they added."""
    added = 0
    for r in range(computed.shape[0]):
        took = min(advance_cum[r, j - 1], remaining[r])
        computed[r] += took
        produced[r] += took
        added += blocks_after[r, j - 1] - blocks[r]
        blocks[r] = blocks_after[r, j - 1]
    return added


@njit(cache=True)
def count_steps(budget, accepted, drafted, rids, j, tried_out, accepted_out, per):  # pragma: no cover - compiled
    """Add the first j steps to the statistics in place; returns (request-steps with a budget, drafted,
    accepted)."""
    npos = tried_out.shape[0]
    # histograms of how far each request-step got, turned into "reached position i" counts at the end
    tried_hist = np.zeros(npos + 1, np.int64)
    acc_hist = np.zeros(npos + 1, np.int64)
    steps = 0
    d_total = 0
    a_total = 0
    for r in range(budget.shape[0]):
        row_steps = row_drafted = row_accepted = 0
        for s in range(j):
            b, a = budget[r, s], accepted[r, s]
            t = min(b, a + 1)  # position i was tried when the budget reached it and the i before were accepted
            tried_hist[min(t, npos)] += 1
            acc_hist[min(a, npos)] += 1
            if b > 0:
                row_steps += 1
            row_drafted += drafted[r, s]
            row_accepted += a
        rid = rids[r]
        per[rid, 0] += row_steps
        per[rid, 1] += row_drafted
        per[rid, 2] += row_accepted
        steps += row_steps
        d_total += row_drafted
        a_total += row_accepted
    t_run = 0
    a_run = 0
    for i in range(npos - 1, -1, -1):
        t_run += tried_hist[i + 1]
        a_run += acc_hist[i + 1]
        tried_out[i] += t_run
        accepted_out[i] += a_run
    return steps, d_total, a_total


@njit(cache=True)
def ahead_counts(rids, generated, slot, width, finished, progress):  # pragma: no cover - compiled
    """Per row, the other members of its group that are finished or ahead of it (generated more tokens). `slot`:
    each request's place in the group-major `finished` and `progress` arrays (a group's `width` slots in a row;
    padding slots hold 0 tokens and are never finished, so with `generated` >= 0 they never count)."""
    n = np.zeros(rids.shape[0], np.int64)
    for r in range(rids.shape[0]):
        own = slot[rids[r]]
        base = own - own % width
        g = generated[r]
        c = 0
        for m in range(base, base + width):  # no branch on whether a member is ahead: to the CPU a coin flip
            c += finished[m] | (progress[m] > g)
        n[r] = c - (finished[own] | (progress[own] > g))
    return n
