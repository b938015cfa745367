"""What one RL iteration hands to the next under over-issue (`partial`, APRIL): the unfinished requests, resuming
from prompt + partial output, and the record of every response that reached training.

A group reaches training in the iteration its last sample finishes. Its samples may have been generated over
several iterations; each trained response is recorded once, with its full length (every iteration's tokens), the
iteration its prompt was first issued in and the one it trained in, so that a researcher can tell carried
responses from fresh ones (Seer Fig 10: partial rollout under-represents long outputs).
"""

from __future__ import annotations

import pandas as pd

TRAINED_COLUMNS = ("prompt_id", "sample_id", "output_len", "issued", "iteration")


class Carry:
    """The carried requests (`trace`, in the simulator's trace form) and the trained responses (`trained()`).

    Traces handed to `update` carry an `iteration` column: the iteration each request's prompt was issued in."""

    def __init__(self):
        self.trace = pd.DataFrame()
        self.next_pid = 0
        self.done_before: dict[tuple, int] = {}  # (prompt_id, sample_id) -> tokens generated in earlier iterations
        # prompt_id -> (sample_id, full length, issued) of its samples finished while the group was not complete
        self.finished_earlier: dict = {}
        self._trained: list[tuple] = []

    def groups(self) -> int:
        return int(self.trace["prompt_id"].nunique()) if len(self.trace) else 0

    def trained(self) -> pd.DataFrame:
        """One row per response that reached training, in the order they did (TRAINED_COLUMNS)."""
        frame = pd.DataFrame(self._trained, columns=list(TRAINED_COLUMNS))
        for col in ("sample_id", "output_len", "issued", "iteration"):
            frame[col] = frame[col].astype("int64")
        return frame

    def update(self, trace: pd.DataFrame, req: pd.DataFrame, iteration: int) -> tuple[int, int]:
        """Record an iteration's outcome (`req`: its requests table); returns (groups trained, requests carried)."""
        truth = trace.set_index(["prompt_id", "sample_id"])
        req = req.join(
            truth[["output_len", "iteration"]].rename(columns={"output_len": "true_left", "iteration": "issued"}),
            on=["prompt_id", "sample_id"],
        )
        done = req["finish_reason"] != "abort"
        complete = req.groupby("prompt_id")["finish_reason"].apply(lambda s: (s != "abort").all())
        trains = req.prompt_id.map(complete)
        before = self.done_before

        def lengths(pid, sub) -> list[tuple]:  # (sample, full length over every iteration, issued)
            return [(s, before.get((pid, s), 0) + o, i) for s, o, i in zip(sub.sample_id, sub.output_len, sub.issued)]

        for pid, sub in req[trains].groupby("prompt_id"):  # groups in prompt order, as `complete` lists them
            for s, length, issued in lengths(pid, sub) + self.finished_earlier.pop(pid, []):
                self._trained.append((pid, int(s), int(length), int(issued), iteration))
        left = req[~done & ~trains]
        for pid, sub in req[done & ~trains].groupby("prompt_id"):
            self.finished_earlier.setdefault(pid, []).extend(lengths(pid, sub))
        if len(left):
            prev = truth.loc[list(zip(left.prompt_id, left.sample_id))]
            self.trace = pd.DataFrame(
                {
                    "prompt_id": left.prompt_id.to_numpy(),
                    "sample_id": left.sample_id.to_numpy(),
                    "prompt_len": left.prompt_len.to_numpy() + left.output_len.to_numpy(),
                    "output_len": left.true_left.to_numpy() - left.output_len.to_numpy(),
                    "max_tokens": prev["max_tokens"].to_numpy() - left.output_len.to_numpy(),
                    "iteration": prev["iteration"].to_numpy(),
                }
            )
            for pid, s, o in zip(left.prompt_id, left.sample_id, left.output_len):
                before[(pid, s)] = before.get((pid, s), 0) + int(o)
        else:
            self.trace = pd.DataFrame()
        return int(complete.sum()), int(len(left))
