"""Numba kernels over the running batch: the step's token plan, its cost-model sums, its application, and the
plain decode epoch's length (one module: numba's disk cache only notices changes to a kernel's own file).

Integer arithmetic only: every sum the cost model reads is an integer or a half-integer far below 2**53, so it is
exact in any order and equals the numpy reference's float sum bit for bit (tests/test_sim_properties.py checks
each kernel against its numpy form on random batches).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _decoding(ctx0, produced, computed, r):  # pragma: no cover - compiled
    return produced[r] > 0 and computed[r] == ctx0[r] + produced[r] - 1


@njit(cache=True)
def all_decoding(ctx0, produced, computed):  # pragma: no cover - compiled
    """True when every row is decoding (its context cached up to the last sampled token)."""
    for r in range(ctx0.shape[0]):
        if not _decoding(ctx0, produced, computed, r):
            return False
    return True


@njit(cache=True)
def plan_tokens(ctx0, produced, computed, blocks, budget, block_size):  # pragma: no cover - compiled
    """New tokens per row this step (1 per decoding row in admission order while the budget lasts, then the rest
    of the budget to rows in prefill, in order) and the extra blocks each needs for them."""
    B = ctx0.shape[0]
    n = np.zeros(B, np.int64)
    decoders = 0
    for r in range(B):
        if _decoding(ctx0, produced, computed, r):
            decoders += 1
            if decoders <= budget:
                n[r] = 1
    left = max(budget - decoders, 0)
    for r in range(B):
        if not _decoding(ctx0, produced, computed, r):
            take = min(ctx0[r] + produced[r] - computed[r], left)
            n[r] = take
            left -= take
    need = np.zeros(B, np.int64)
    for r in range(B):
        if n[r] > 0:
            need[r] = max(-(-(computed[r] + n[r]) // block_size) - blocks[r], 0)
    return n, need


@njit(cache=True)
def step_sums(idx, n, computed, ctx0, produced):  # pragma: no cover - compiled
    """The cost model's sums of one step of rows `idx` taking `n` new tokens each: (tokens, KV tokens read,
    attention pairs, score pairs of multi-token rows, rows sampling a token)."""
    tokens = kv = attn2 = pairs = logits = 0
    for k in range(idx.shape[0]):
        r, q = idx[k], n[k]
        c = computed[r]
        tokens += q
        kv += c + q
        attn2 += q * (2 * c + q + 1)  # twice q * (c + (q + 1) / 2): an integer
        if q > 1:
            pairs += q * (c + q)
        if c + q >= ctx0[r] + produced[r]:
            logits += 1
    return float(tokens), float(kv), attn2 / 2.0, float(pairs), logits


@njit(cache=True)
def apply_step(idx, n, computed, ctx0, produced):  # pragma: no cover - compiled
    """Rows `idx` computed `n` more tokens; a row whose context is then complete sampled one token."""
    for k in range(idx.shape[0]):
        r = idx[k]
        computed[r] += n[k]
        if computed[r] >= ctx0[r] + produced[r]:
            produced[r] += 1


@njit(cache=True)
def advance_decode(computed, produced, blocks, steps, block_size):  # pragma: no cover - compiled
    """Every row decoded `steps` tokens: grow its blocks to cover its context (never shrink them: draft lookahead
    slots stay held); returns the blocks added."""
    extra = 0
    for r in range(computed.shape[0]):
        computed[r] += steps
        produced[r] += steps
        need = -(-computed[r] // block_size)
        if need > blocks[r]:
            extra += need - blocks[r]
            blocks[r] = need
    return extra


@njit(cache=True)
def _extra_blocks(computed, held, k, block_size):  # pragma: no cover - compiled
    total = 0
    for r in range(computed.shape[0]):
        need = -(-(computed[r] + k) // block_size) - held[r]
        if need > 0:
            total += need
    return total


@njit(cache=True)
def epoch_length(stop, produced, computed, held, block_size, avail):  # pragma: no cover - compiled
    """Decode steps before the first row ends its chunk or the new blocks stop fitting in `avail`."""
    if stop.shape[0] == 0:  # no bounds checks here: an empty batch must not read stop[0]
        return 0
    n_finish = stop[0] - produced[0]
    for r in range(1, stop.shape[0]):
        if stop[r] - produced[r] < n_finish:
            n_finish = stop[r] - produced[r]
    if _extra_blocks(computed, held, n_finish, block_size) <= avail:
        return n_finish
    lo, hi = 0, n_finish  # lo fits, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _extra_blocks(computed, held, mid, block_size) <= avail:
            lo = mid
        else:
            hi = mid
    return lo
