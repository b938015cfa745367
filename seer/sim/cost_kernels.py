"""The roofline step model's formula, compiled: one step (`price_step`), an epoch's steps (`price_steps`), and a
verify step at every draft budget (`verify_step_times`, what the MBA rule reads). `CostModel.step_time_sums` calls
it for scalars and arrays alike, so a step costs the same to the bit whether priced alone or inside an epoch.

numpy's vectorised `power` on AVX-512 machines differs from the C library's `pow` in the last bit for a few percent
of inputs; this code calls the C library's, as Python does. tests/test_costmodel.py checks it bit for bit against
the formula written out in Python: were numba ever to vectorise these loops with Intel's SVML (when its runtime is
installed), that test is what would tell.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# the order of `CostModel.price_params`
PARAMS = (
    "base",
    "weights",
    "always_bytes",
    "expert_bytes",
    "n_experts",
    "keep",
    "bw",
    "kv",
    "kv_bytes",
    "linear",
    "lin_per_token",
    "logit_flops",
    "peak",
    "attention",
    "attn_flops",
    "scores",
    "score_bytes",
    "tp",
    "two_l",
    "tp_latency",
    "tp_hidden",
    "ring",
    "link",
    "ep",
    "two_moe",
    "ep_latency",
    "dp",
    "top_k",
    "ep_hidden",
    "net",
)


@njit(cache=True)
def price_step(p, t, kv_tokens, attn_pairs, score_pairs, logits):  # pragma: no cover - compiled
    """Seconds of one step (p: `CostModel.price_params`) from its new tokens, KV tokens read, attention and score
    pairs and logit rows."""
    touched = p[4] * (1.0 - p[5] ** t) if p[4] != 0.0 else 0.0
    comm = 0.0
    if p[17] != 0.0:
        comm = comm + p[18] * (p[19] + t * p[20] * 2 * p[21] / p[22])
    if p[23] != 0.0:
        comm = comm + p[24] * (p[25] + t / p[26] * p[27] * p[28] * 2 / p[29])
    return (
        p[0]
        + p[1] * (p[2] + touched * p[3]) / p[6]
        + p[7] * kv_tokens * p[8] / p[6]
        + p[9] * (t * p[10] + logits * p[11]) / p[12]
        + p[13] * attn_pairs * p[14] / p[12]
        + p[15] * score_pairs * p[16] / p[6]
        + comm
    )


@njit(cache=True)
def price_steps(p, tokens, kv_tokens, attn_pairs, score_pairs, logits):  # pragma: no cover - compiled
    """Seconds of each step, from its new tokens, KV tokens read, attention and score pairs and logit rows."""
    out = np.empty(tokens.shape[0])
    for i in range(tokens.shape[0]):
        out[i] = price_step(p, tokens[i], kv_tokens[i], attn_pairs[i], score_pairs[i], logits[i])
    return out


@njit(cache=True)
def verify_step_times(p, batch, ctx, q_max):  # pragma: no cover - compiled
    """Seconds of a step of `batch` sequences of mean context `ctx` verifying q = 1 .. q_max tokens each, with the
    sums `seer.sim.driver.CostProfile` forms, operation for operation."""
    out = np.empty(q_max)
    b = float(batch)
    for i in range(q_max):
        q = float(i + 1)
        pairs = b * q * (ctx + q) if q > 1 else 0.0
        out[i] = price_step(p, b * q, b * (ctx + q), b * q * (ctx + (q + 1) / 2), pairs, b * q)
    return out
