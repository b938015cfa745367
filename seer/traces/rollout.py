"""From a trace to the rollout both backends run: groups, requests (each carrying its trace key) and each
request's recorded length."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seer.core import Group, Rollout
from seer.errors import SeerInputError, TraceError


def rollout_from_trace(
    trace: pd.DataFrame, default_max_tokens: int, progress: bool | None = False
) -> tuple[Rollout, dict[int, int]]:
    """Groups and requests from a trace, in (prompt, sample) order, plus each request's true length.

    Returns (rollout, true output length by request id); `Request.key` is the row's (prompt_id, sample_id).
    `progress`: a bar over the rows while the rollout is built (large traces take a while).
    """
    from seer.progress import progress_bar

    df = trace.sort_values(["prompt_id", "sample_id"], kind="stable").reset_index(drop=True)
    bar = progress_bar(progress, total=len(df), desc="setting up", unit="req")
    ro = Rollout()
    true_len: dict[int, int] = {}
    # the groups are runs of equal prompt_id in the sorted frame: columns read once, not a pandas group per prompt
    codes, pids = pd.factorize(df["prompt_id"], sort=False)
    codes = np.asarray(codes)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(codes)].astype(np.int64)
    prompt_lens = df["prompt_len"].to_numpy()
    outs = df["output_len"].to_numpy().tolist()
    samples = df["sample_id"].to_numpy().tolist()
    caps = df["max_tokens"].to_numpy().tolist() if "max_tokens" in df.columns else None
    iters = df["iteration"].to_numpy() if "iteration" in df.columns else None
    pids = pids.tolist()
    gid = 0
    for a, b in zip(starts.tolist(), ends.tolist()):
        if codes[a] < 0:  # a missing prompt_id: no group, as pandas' groupby drops it
            continue
        pid = pids[codes[a]]
        max_tokens = int(max(caps[a:b])) if caps is not None else int(default_max_tokens)
        iteration = int(iters[a:b].min()) if iters is not None else 0
        keys = [(pid, int(s)) for s in samples[a:b]]
        reqs = ro.add_group(
            Group(gid, int(prompt_lens[a]), max_tokens, b - a, iteration=iteration),
            keys=keys,
            prompt_lens=[int(x) for x in prompt_lens[a:b]],
            max_tokens=[int(x) for x in caps[a:b]] if caps is not None else None,
        )
        gid += 1
        for i, req in enumerate(reqs, a):
            out = int(outs[i])
            if out > req.max_tokens:
                raise SeerInputError(
                    f"prompt {pid!r} sample {keys[i - a][1]}: output_len {out} exceeds max_tokens {req.max_tokens}"
                )
            # an engine always samples at least one token
            true_len[req.request_id] = max(1, out)
        bar.update(len(reqs))
    bar.close()
    return ro, true_len


def check_output_cap(trace: pd.DataFrame, cap: int, path: str, whose: str) -> None:
    """A trace without max_tokens runs under a cap from elsewhere (`whose`: the cluster's, --max-tokens): a longer
    recorded output is refused where the file's name is known (`rollout_from_trace` refuses it without the name)."""
    if "max_tokens" in trace.columns or not len(trace):
        return
    over = trace["output_len"].to_numpy() > cap
    if over.any():
        i = int(over.argmax())
        label = trace.index[i]  # the file's row where the frame was read whole or filtered, not re-indexed
        raise TraceError(
            path,
            f"output_len {int(trace['output_len'].iloc[i])} exceeds max_tokens {cap} ({whose}; the trace has no "
            "max_tokens column)",
            row=(int(label) if isinstance(label, (int, np.integer)) else i) + 1,
            column="output_len",
        )
