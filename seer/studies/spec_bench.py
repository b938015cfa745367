"""Offline acceptance replay (the paper's Table 2): how long drafts get accepted when a request drafts from
its own history plus n other responses of its group, against the tokens it really produced.

For each request of the sampled groups, the n references are the next n samples of its group (cyclic,
complete responses, the "later stage of rollout" of the paper), the request's own output is revealed one
verification step at a time, and each step drafts up to `gamma` tokens deep (top-k trees hold up to
k * gamma tokens), accepts the longest tree path equal to the recorded continuation, and advances by the
accepted tokens plus the bonus token. tau = tokens / steps. A vLLM-style n-gram drafter (prompt lookup over
the request's own context, fixed k = gamma) is the per-request baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from seer.errors import SeerInputError
from seer.policies.speculation.compiled import make_index
from seer.policies.speculation.ngram import ngram_propose
from seer.policies.speculation.suffix import accepted_length
from seer.progress import progress_bar

_PROMPT, _OWN = 0, 1


def _replay(out: list[int], prompt: list[int], gamma: int, propose) -> tuple[int, int, int, int]:
    """(steps, drafts made, drafted tokens, accepted tokens) replaying `out` with `propose(context, g, budget)`."""
    g = steps = drafts = drafted = accepted = 0
    L = len(out)
    while g < L:
        budget = min(gamma, L - g - 1)
        a = 0
        if budget > 0:
            draft = propose(prompt + out[:g] if g < 64 else out[g - 64 : g], g, budget)
            if len(draft):
                drafts += 1
                drafted += len(draft)
                a = (
                    accepted_length(draft, out[g : g + budget])
                    if hasattr(draft, "parents")
                    else _prefix(draft, out[g : g + budget])
                )
        accepted += a
        g += 1 + a
        steps += 1
    return steps, drafts, drafted, accepted


def _prefix(draft: Sequence[int], truth: Sequence[int]) -> int:
    n = 0
    for d, t in zip(draft, truth):
        if d != t:
            break
        n += 1
    return n


def _sample_groups(trace: pd.DataFrame, groups: int, samples: int, seed: int) -> list[tuple[list, list]]:
    """(outputs, prompt) of the replayed groups: `groups` drawn at random (0 = all), first `samples` each."""
    has_prompt = "prompt_ids" in trace.columns and trace["prompt_ids"].notna().all()
    pids = sorted(trace["prompt_id"].unique(), key=str)
    if groups and groups < len(pids):
        rng = np.random.default_rng(seed)
        pids = [pids[i] for i in sorted(rng.choice(len(pids), size=groups, replace=False))]
    chosen = trace[trace["prompt_id"].isin(set(pids))].sort_values(["prompt_id", "sample_id"], kind="stable")
    work = []
    for _pid, sub in chosen.groupby("prompt_id", sort=False):
        sub = sub.head(samples) if samples else sub
        outs = [list(map(int, o)) for o in sub["output_ids"]]
        prompt = list(map(int, sub["prompt_ids"].iloc[0])) if has_prompt else []
        work.append((outs, prompt))
    return work


def acceptance_table(
    trace: pd.DataFrame,
    refs: Sequence[int] = (0, 1, 5, 15),
    topk: Sequence[int] = (1, 2, 4),
    gamma: int = 8,
    groups: int = 20,
    samples: int = 16,
    min_prob: float = 0.1,
    max_match: int = 8,
    ngram: tuple[int, int] = (1, 4),
    seed: int = 0,
    progress: bool | None = None,
    source: str | None = None,
) -> list[dict]:
    """Rows {drafter, refs, topk, tau, accepted_per_draft, ...} for every (n, k) and the n-gram baseline.

    groups / samples: how many groups (random, by `seed`; 0 = all) and samples per group (the first ones;
    0 = all) to replay. A reference count larger than samples - 1 is clipped, and the row says so. `source`: the
    trace's file, named in a refusal."""
    if "output_ids" not in trace.columns or trace["output_ids"].isna().any():
        where = f"{source}: " if source else ""
        raise SeerInputError(f"{where}spec bench needs a trace with output_ids (token ids of every response)")
    if gamma < 1 or any(k < 1 for k in topk) or any(n < 0 for n in refs):
        raise SeerInputError("need --gamma >= 1, --topk values >= 1 and --refs values >= 0")
    for flag, vals in (("--refs", refs), ("--topk", topk)):  # a repeat would count its requests twice
        repeated = sorted({v for v in vals if list(vals).count(v) > 1})
        if repeated:
            raise SeerInputError(f"{flag} lists {', '.join(map(str, repeated))} more than once")
    work = _sample_groups(trace, groups, samples, seed)
    acc: dict = {}  # (drafter, n, k) -> [steps, drafts, drafted, accepted, tokens, requests, n_effective]
    total = sum(len(outs) for outs, _ in work)
    bar = progress_bar(progress, total=total, desc="replaying drafts", unit="req")
    try:
        for outs, prompt in work:
            for j in range(len(outs)):
                _replay_request(acc, outs, j, prompt, refs, topk, gamma, min_prob, max_match, ngram)
                bar.update(1)
    finally:
        bar.close()
    return [_row(key, counts, gamma) for key, counts in acc.items()]


def _add(acc: dict, key: tuple, res: tuple, tokens: int, n_eff: int) -> None:
    row = acc.setdefault(key, [0, 0, 0, 0, 0, 0, n_eff])
    for i, v in enumerate(res + (tokens, 1)):
        row[i] += v
    row[6] = min(row[6], n_eff)


def _replay_request(
    acc: dict,
    outs: list,
    j: int,
    prompt: list,
    refs,
    topk,
    gamma: int,
    min_prob: float,
    max_match: int,
    ngram: tuple[int, int],
) -> None:
    """Replay request j of a group against every (n references, top-k) drafter and the n-gram baseline."""
    out, G = outs[j], len(outs)
    for n in refs:
        n_eff = min(n, G - 1)
        index = make_index(max_match)
        if prompt:
            index.extend(_PROMPT, prompt)
        index.extend(_OWN, out)
        for r in range(1, n_eff + 1):
            index.extend(_OWN + r, outs[(j + r) % G])
        for k in topk:

            def propose(ctx, g, budget, index=index, k=k):
                return index.draft(ctx, budget, budget * k, k, min_prob, visible={_OWN: g})

            _add(acc, ("group-suffix", n, k), _replay(out, prompt, gamma, propose), len(out), n_eff)
    res = _replay(out, prompt, gamma, lambda ctx, g, budget: ngram_propose(prompt + out[:g], budget, *ngram))
    _add(acc, ("ngram", 0, 1), res, len(out), 0)


def _row(key: tuple, counts: list, gamma: int) -> dict:
    (drafter, n, k), (steps, drafts, drafted, accepted, tokens, requests, n_eff) = key, counts
    return {
        "drafter": drafter,
        "refs": n,
        "refs_used": n_eff,
        "topk": k,
        "gamma": gamma,
        "tau": tokens / steps if steps else float("nan"),
        # no draft or no step (every response empty): a ratio of 0 / 0 is undefined, not 0 (null in bench.json)
        "accepted_per_draft": accepted / drafts if drafts else float("nan"),
        "accepted_per_step": accepted / steps if steps else float("nan"),
        "drafted_per_draft": drafted / drafts if drafts else float("nan"),
        "steps": steps,
        "drafts": drafts,
        "accepted": accepted,
        "tokens": tokens,
        "requests": requests,
    }
