"""A strict lower bound on a rollout's makespan under the simulator's own cost model.

Every output token but a request's first is produced by a decode step, and a decode step over B sequences
costs alpha_tok(B) + (per-sequence logits and KV/attention terms), with alpha_tok = A0 + g(B), A0 the
per-step fixed part (overheads, always-read weights) and g concave increasing with g(0) = 0 (linear FLOPs,
experts touched, collectives). Hence, with N_dec decode tokens, N_all tokens processed, T_max the most
tokens a step may hold and S_max the most sequences:

    busy(all instances) >= ceil(N_dec / S_max) * A0 + N_all * g(T_max) / T_max
                           + sum over decode tokens of (logit FLOPs + beta * (ctx + 1))

and makespan >= busy / instances. N_all counts every prompt token, or `prefill_tokens` when fewer must be
computed (with the prefix cache, siblings share their group's prompt blocks: see `min_prefill_tokens`).
Without the prefix cache busy also holds each prompt's causal attention, p(p+1)/2 pairs however it is
chunked: quadratic, so it dominates the bound of long prompts.
Independently, the longest request alone needs its prompt prefilled and then its L - 1 decode steps in
sequence, each at least a batch-of-one step over its growing context. Its prefill takes at least the steps of
`prefill_floor`. Recompute only adds time, so both are lower bounds; the larger is reported. (With the prefix
cache a request may find its prompt cached, so the per-request bound then leaves prefill out.)

With speculative decoding a step may advance a sequence by up to `tokens_per_step` = 1 + gamma_max tokens:
the step count, and the per-step context terms, shrink by that factor at best (every token still needs its
logits and its share of the linear FLOPs), which keeps both bounds valid, and much looser.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from seer.sim.costmodel import CostModel


def makespan_lower_bound(
    cm: CostModel,
    prompt_len,
    output_len,
    instances: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    tokens_per_step: float = 1,
    prefill_tokens: float | None = None,
) -> dict:
    """Both bounds and their max, in seconds."""
    k = float(max(1, tokens_per_step))
    p = np.asarray(prompt_len, dtype=np.float64)
    L = np.maximum(np.asarray(output_len, dtype=np.float64), 1.0)
    dec = L - 1.0
    n_dec = float(dec.sum())
    n_all = n_dec + (float(p.sum()) if prefill_tokens is None else float(prefill_tokens))
    a0 = cm.token_time(0.0)
    t_max = float(max(max_num_batched_tokens, max_num_seqs))
    g_per_token = (cm.token_time(t_max) - a0) / t_max
    # decode step j (1..L-1) of a request runs over ctx = p + j - 1 cached tokens
    ctx_sum = (dec * p + dec * (dec - 1) / 2).sum()
    logit = cm.logit_time()
    busy = (
        math.ceil(n_dec / (max_num_seqs * k)) * a0
        + n_all * g_per_token
        + n_dec * logit
        + cm.beta * (n_dec + ctx_sum) / k
        + (_prompt_attention(cm, p) if prefill_tokens is None else 0.0)
    )
    work_bound = busy / instances
    steps = np.ceil(dec / k)
    pre = prefill_floor(cm, p, max_num_batched_tokens) if prefill_tokens is None else 0.0
    longest = float((cm.decode_span(1, p, steps) + pre).max()) if len(p) else 0.0
    return {"work_bound_s": work_bound, "longest_request_s": longest, "lower_bound_s": max(work_bound, longest)}


def _prompt_attention(cm: CostModel, p: np.ndarray) -> float:
    """The attention term of every prompt's prefill (decode rows' attention is in beta)."""
    return cm.attention_time(float((p * (p + 1) / 2).sum()))


def prefill_floor(cm: CostModel, prompt_len, max_chunk: int) -> np.ndarray:
    """Per request, the least time its prompt's prefill can take: the prompt in ceil(p / max_chunk) steps, the
    remainder first and then full chunks of `max_chunk` tokens (the most a step holds), each priced alone, the
    last one sampling the first output token, and no score term.

    Every schedule costs at least that. Another row in a step only adds to its sums. The fixed and weight terms
    are paid per step (the weights grow concavely with tokens), so fewer and fuller steps cost less; the linear
    terms and the causal attention pairs (p(p+1)/2 in all) do not depend on the chunking; the KV read of a step is
    the prompt length at its end, and the j-th last step of any schedule ends at p - (j-1) * max_chunk or later,
    which the remainder-first order reaches. The score term is the exception (smaller chunks shrink it, down to 0
    with one-token chunks), so it is left out."""
    p = np.asarray(prompt_len, dtype=np.float64)
    sizes, where = np.unique(p, return_inverse=True)
    c = float(max_chunk)
    done = np.zeros(len(sizes))
    q = sizes - c * np.maximum(np.ceil(sizes / c) - 1, 0)  # the remainder chunk (a full one when c divides p)
    total = np.zeros(len(sizes))
    while True:
        live = (q > 0) & (done < sizes)
        if not live.any():
            break
        ql, ctx = q[live], done[live]
        last = (ctx + ql >= sizes[live]).astype(np.float64)
        total[live] += cm.step_time_sums(ql, ctx + ql, ql * (ctx + (ql + 1) / 2), np.zeros(len(ql)), logits=last)
        done[live] += ql
        q = np.full(len(sizes), c)
    return total[where.ravel()]


def makespan_lower_bound_steps(
    cm: CostModel,
    prompt_len,
    output_len,
    steps,
    kv_terms,
    instances: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    prefill_tokens: float | None = None,
) -> dict:
    """The same bounds when each request's decode work is known only as a minimum: `steps[r]` decode or verify
    steps at least, and `kv_terms[r]` at least the sum over them of (context + 1) tokens of KV read. With one
    token per step these are L - 1 and sum_j (p + j), and the bound equals `makespan_lower_bound`'s."""
    p = np.asarray(prompt_len, dtype=np.float64)
    L = np.maximum(np.asarray(output_len, dtype=np.float64), 1.0)
    S = np.asarray(steps, dtype=np.float64)
    C = np.asarray(kv_terms, dtype=np.float64)
    n_dec = float((L - 1.0).sum())
    n_all = n_dec + (float(p.sum()) if prefill_tokens is None else float(prefill_tokens))
    a0 = cm.token_time(0.0)
    t_max = float(max(max_num_batched_tokens, max_num_seqs))
    g_per_token = (cm.token_time(t_max) - a0) / t_max
    busy = (
        math.ceil(float(S.sum()) / max_num_seqs) * a0
        + n_all * g_per_token
        + n_dec * cm.logit_time()
        + cm.beta * float(C.sum())
        + (_prompt_attention(cm, p) if prefill_tokens is None else 0.0)
    )
    # a verify step of one sequence costs at least its plain decode step at the same context
    pre = prefill_floor(cm, p, max_num_batched_tokens) if prefill_tokens is None else 0.0
    longest = float((S * cm.alpha(1) + cm.beta * (C - S) + pre).max()) if len(S) else 0.0
    work_bound = busy / instances
    return {"work_bound_s": work_bound, "longest_request_s": longest, "lower_bound_s": max(work_bound, longest)}


def min_prefill_tokens(prompt_len, group, block_size: int) -> float:
    """Prompt tokens a rollout must compute at least with the prefix cache on.

    On an instance, a group's first member computes its whole prompt and its siblings share that prompt's full
    blocks (never more than the full blocks of the group's longest prompt, F tokens), so member i computes at
    least r_i = max(p_i - F, 1) (0 for an empty prompt) and the first one p_first = (p_first - r_first) + r_first.
    Hence sum_i r_i + min_i (p_i - r_i) per group; with equal prompts, the prompt once and what follows its
    full blocks for each further member."""
    p = np.asarray(prompt_len, dtype=np.int64)
    if not len(p):
        return 0.0
    inv = np.unique(np.asarray(group), return_inverse=True)[1].ravel()
    n = int(inv.max()) + 1
    longest = np.zeros(n, np.int64)
    np.maximum.at(longest, inv, p)
    full = np.maximum(longest - 1, 0) // block_size * block_size
    rest = np.where(p > 0, np.maximum(p - full[inv], 1), 0)
    lead = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(lead, inv, p - rest)
    return float(rest.sum() + lead.sum())
