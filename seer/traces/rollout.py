"""From a trace to the rollout both backends run: groups, requests (each carrying its trace key) and each
request's recorded length."""

from __future__ import annotations

import pandas as pd

from seer.core import Group, Rollout
from seer.errors import SeerInputError


def rollout_from_trace(
    trace: pd.DataFrame, default_max_tokens: int, progress: bool | None = False
) -> tuple[Rollout, dict[int, int]]:
    """Groups and requests from a trace, in (prompt, sample) order, plus each request's true length.

    Returns (rollout, true output length by request id); `Request.key` is the row's (prompt_id, sample_id).
    `progress`: a bar over the rows while the rollout is built (large traces take a while).
    """
    from tqdm import tqdm

    df = trace.sort_values(["prompt_id", "sample_id"], kind="stable").reset_index(drop=True)
    bar = tqdm(total=len(df), desc="setting up", unit="req", disable=None if progress is None else not progress)
    ro = Rollout()
    true_len: dict[int, int] = {}
    has_max = "max_tokens" in df.columns
    has_iter = "iteration" in df.columns
    for gid, (pid, sub) in enumerate(df.groupby("prompt_id", sort=False)):
        max_tokens = int(sub["max_tokens"].max()) if has_max else int(default_max_tokens)
        plen = int(sub["prompt_len"].iloc[0])
        iteration = int(sub["iteration"].min()) if has_iter else 0
        keys = [(pid, int(s)) for s in sub["sample_id"]]
        reqs = ro.add_group(Group(gid, plen, max_tokens, len(sub), iteration=iteration), keys=keys)
        prompt_lens = sub["prompt_len"].to_numpy()
        outs = sub["output_len"].to_numpy()
        caps = sub["max_tokens"].to_numpy() if has_max else None
        for i, req in enumerate(reqs):
            req.prompt_len = int(prompt_lens[i])
            if caps is not None:
                req.max_tokens = int(caps[i])
            out = int(outs[i])
            if out > req.max_tokens:
                raise SeerInputError(
                    f"prompt {pid!r} sample {keys[i][1]}: output_len {out} exceeds max_tokens {req.max_tokens}"
                )
            # an engine always samples at least one token
            true_len[req.request_id] = max(1, out)
        bar.update(len(reqs))
    bar.close()
    return ro, true_len
