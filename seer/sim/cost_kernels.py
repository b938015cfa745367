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

# the positions of `PARAMS`, by name (numba reads module-level ints as compile-time constants)
(
    BASE,
    WEIGHTS,
    ALWAYS_BYTES,
    EXPERT_BYTES,
    N_EXPERTS,
    KEEP,
    BW,
    KV,
    KV_BYTES,
    LINEAR,
    LIN_PER_TOKEN,
    LOGIT_FLOPS,
    PEAK,
    ATTENTION,
    ATTN_FLOPS,
    SCORES,
    SCORE_BYTES,
    TP,
    TWO_L,
    TP_LATENCY,
    TP_HIDDEN,
    RING,
    LINK,
    EP,
    TWO_MOE,
    EP_LATENCY,
    DP,
    TOP_K,
    EP_HIDDEN,
    NET,
) = range(len(PARAMS))


@njit(cache=True)
def price_step(p, t, kv_tokens, attn_pairs, score_pairs, logits):  # pragma: no cover - compiled
    """Seconds of one step (p: `CostModel.price_params`) from its new tokens, KV tokens read, attention and score
    pairs and logit rows."""
    touched = p[N_EXPERTS] * (1.0 - p[KEEP] ** t) if p[N_EXPERTS] != 0.0 else 0.0
    comm = 0.0
    if p[TP] != 0.0:
        comm = comm + p[TWO_L] * (p[TP_LATENCY] + t * p[TP_HIDDEN] * 2 * p[RING] / p[LINK])
    if p[EP] != 0.0:
        comm = comm + p[TWO_MOE] * (p[EP_LATENCY] + t / p[DP] * p[TOP_K] * p[EP_HIDDEN] * 2 / p[NET])
    return (
        p[BASE]
        + p[WEIGHTS] * (p[ALWAYS_BYTES] + touched * p[EXPERT_BYTES]) / p[BW]
        + p[KV] * kv_tokens * p[KV_BYTES] / p[BW]
        + p[LINEAR] * (t * p[LIN_PER_TOKEN] + logits * p[LOGIT_FLOPS]) / p[PEAK]
        + p[ATTENTION] * attn_pairs * p[ATTN_FLOPS] / p[PEAK]
        + p[SCORES] * score_pairs * p[SCORE_BYTES] / p[BW]
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
