"""Several RL iterations in a row, each needing `prompts` fresh groups (the paper averages 5 iterations).

Synchronous policies generate every group of an iteration. `partial` (APRIL) holds over_issue x the groups,
stops at the target, and carries unfinished requests, with what they generated, into the next iteration.
The runner records per iteration the rollout time, the tokens generated and the lengths of the responses
that training receives (Seer Fig 10: partial rollout under-represents long outputs).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from seer.policies import make_policy
from seer.sim.cluster import ClusterConfig
from seer.sim.driver import simulate
from seer.traces.synth import SynthConfig, synthesize


def run_iterations(cfg: SynthConfig, cluster: ClusterConfig, policy_name: str, iterations: int = 5,
                   over_issue: float = 2.0, progress: bool | None = False, **params) -> tuple[pd.DataFrame, np.ndarray]:
    """(per-iteration table, lengths of every response that reached training)."""
    n = cfg.prompts
    carry = pd.DataFrame()
    done_before: dict[tuple, int] = {}  # (prompt_id, sample_id) -> tokens generated in earlier iterations
    finished_earlier: dict[int, list[int]] = {}  # prompt_id -> full lengths of its samples already finished
    next_pid = 0
    rows, trained = [], []
    partial = policy_name == "partial"
    for it in range(iterations):
        carried_groups = carry["prompt_id"].nunique() if len(carry) else 0
        n_new = max(0, math.ceil(over_issue * n) - carried_groups) if partial else n
        parts = [carry] if len(carry) else []
        if n_new:
            new = synthesize(dataclasses.replace(cfg, prompts=n_new, seed=cfg.seed + 7919 * it))
            new["prompt_id"] += next_pid
            new["iteration"] = it
            next_pid += n_new
            parts.append(new)
        trace = pd.concat(parts, ignore_index=True)
        extra = {"target_groups": n, "over_issue": over_issue} if partial else {}
        res = simulate(trace, cluster, make_policy(policy_name, lenient=True, **params, **extra), progress=progress)
        req = res.requests
        truth = trace.set_index(["prompt_id", "sample_id"])
        req = req.join(truth[["output_len"]].rename(columns={"output_len": "true_left"}), on=["prompt_id", "sample_id"])
        done = req["finish_reason"] != "abort"
        complete = req.groupby("prompt_id")["finish_reason"].apply(lambda s: (s != "abort").all())
        for pid in complete[complete].index:
            sub = req[req.prompt_id == pid]
            lengths = [done_before.get((pid, s), 0) + o for s, o in zip(sub.sample_id, sub.output_len)]
            trained.extend(lengths + finished_earlier.pop(pid, []))
        # carry: unfinished requests resume from prompt + partial output
        left = req[~done & ~req.prompt_id.map(complete)]
        for pid, sub in req[done & ~req.prompt_id.map(complete)].groupby("prompt_id"):
            finished_earlier.setdefault(pid, []).extend(
                done_before.get((pid, s), 0) + o for s, o in zip(sub.sample_id, sub.output_len))
        if len(left):
            prev = truth.loc[list(zip(left.prompt_id, left.sample_id))]
            carry = pd.DataFrame({
                "prompt_id": left.prompt_id.to_numpy(), "sample_id": left.sample_id.to_numpy(),
                "prompt_len": left.prompt_len.to_numpy() + left.output_len.to_numpy(),
                "output_len": left.true_left.to_numpy() - left.output_len.to_numpy(),
                "max_tokens": prev["max_tokens"].to_numpy() - left.output_len.to_numpy(),
                "iteration": prev["iteration"].to_numpy(),
            })
            for pid, s, o in zip(left.prompt_id, left.sample_id, left.output_len):
                done_before[(pid, s)] = done_before.get((pid, s), 0) + int(o)
        else:
            carry = pd.DataFrame()
        s = res.summary
        rows.append({"iteration": it, "policy": policy_name, "makespan_s": s["makespan_s"],
                     "output_tokens": s["output_tokens"], "throughput_tok_s": s["throughput_tok_s"],
                     "tail_s": s["tail_s"], "preemptions": s["preemptions"], "groups_trained": int(complete.sum()),
                     "carried_requests": int(len(left))})
    return pd.DataFrame(rows), np.asarray(trained, dtype=np.int64)
