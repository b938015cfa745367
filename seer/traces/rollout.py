"""From a trace to the rollout both backends run: groups, requests and each request's recorded length."""

from __future__ import annotations

import pandas as pd

from seer.core import Group, Rollout
from seer.errors import SeerInputError


def rollout_from_trace(trace: pd.DataFrame, default_max_tokens: int) -> tuple[Rollout, dict[int, int], list]:
    """Groups and requests from a trace, in (prompt, sample) order, plus each request's true length.

    Returns (rollout, true output length by request id, original (prompt_id, sample_id) by request id).
    """
    df = trace.sort_values(["prompt_id", "sample_id"], kind="stable").reset_index(drop=True)
    ro = Rollout()
    true_len: dict[int, int] = {}
    keys: list = []
    has_max = "max_tokens" in df.columns
    for gid, (pid, sub) in enumerate(df.groupby("prompt_id", sort=False)):
        max_tokens = int(sub["max_tokens"].max()) if has_max else int(default_max_tokens)
        plen = int(sub["prompt_len"].iloc[0])
        iteration = int(sub["iteration"].min()) if "iteration" in sub.columns else 0
        reqs = ro.add_group(Group(gid, plen, max_tokens, len(sub), iteration=iteration))
        for req, (_, row) in zip(reqs, sub.iterrows()):
            req.prompt_len = int(row["prompt_len"])
            if has_max:
                req.max_tokens = int(row["max_tokens"])
            out = int(row["output_len"])
            if out > req.max_tokens:
                raise SeerInputError(f"prompt {pid!r} sample {row['sample_id']}: output_len {out} exceeds max_tokens {req.max_tokens}")
            # an engine always samples at least one token
            true_len[req.request_id] = max(1, out)
            keys.append((pid, int(row["sample_id"])))
    return ro, true_len, keys
