"""The numpy forms of `seer.sim.batch_kernels`: the reference each compiled kernel must equal exactly (the
property tests compare them on random batches). The simulator does not call these."""

from __future__ import annotations

import numpy as np

from seer.sim.batch import Running


def plan_tokens(rs: Running, budget: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """New tokens per running row this step and the extra blocks each needs (`StepScheduler.plan_running`)."""
    dec = rs.decoding()
    n = dec.astype(np.int64)
    left = budget - int(dec.sum())
    if left < 0:  # more decoders than the budget: serve them in admission order
        n[np.flatnonzero(dec)[budget:]] = 0
        left = 0
    for i in np.flatnonzero(~dec):
        take = min(int(rs.ctx0[i] + rs.produced[i] - rs.computed[i]), left)
        n[i] = take
        left -= take
    need = np.where(n > 0, np.maximum(-(-(rs.computed + n) // block_size) - rs.blocks, 0), 0)
    return n, need


def step_sums(rs: Running, idx: np.ndarray, n: np.ndarray) -> tuple[float, float, float, float, int]:
    """(tokens, KV tokens read, attention pairs, score pairs, sampling rows) of a step of rows `idx`."""
    comp = rs.computed[idx]
    logits = int((comp + n >= rs.ctx0[idx] + rs.produced[idx]).sum())
    multi = n > 1
    return (
        float(n.sum()),
        float((comp + n).sum()),
        float((n * (comp + (n + 1) / 2)).sum()),
        float((n * (comp + n))[multi].sum()),
        logits,
    )


def apply_step(rs: Running, idx: np.ndarray, n: np.ndarray) -> None:
    """Rows `idx` computed `n` more tokens; a row whose context is then complete sampled one token."""
    rs.computed[idx] += n
    rs.produced[idx] += rs.computed[idx] >= rs.ctx0[idx] + rs.produced[idx]


def advance_decode(rs: Running, steps: int, block_size: int) -> int:
    """Every row decoded `steps` tokens; blocks grow to cover the context. Returns the blocks added."""
    rs.computed += steps
    rs.produced += steps
    new_blocks = np.maximum(-(-rs.computed // block_size), rs.blocks)
    extra = int((new_blocks - rs.blocks).sum())
    rs.blocks[:] = new_blocks
    return extra


def fast_epoch_length(rs: Running, block_size: int, avail: int) -> int:
    """Decode steps the batch can take before a sequence ends its chunk or new blocks stop fitting."""
    n_finish = int((rs.stop - rs.produced).min())
    comp, held = rs.computed, rs.blocks

    def extra(k: int) -> int:
        return int(np.maximum(-(-(comp + k) // block_size) - held, 0).sum())

    if extra(n_finish) <= avail:
        return n_finish
    lo, hi = 0, n_finish  # extra(lo) fits, extra(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if extra(mid) <= avail:
            lo = mid
        else:
            hi = mid
    return lo
