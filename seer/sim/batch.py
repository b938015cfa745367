"""The state of one simulated instance's batch: a chunk on the instance (`Seq`), the running sequences as
parallel arrays (`Running`), and the instance's counters (`InstanceStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seer.core import FinishReason


@dataclass(eq=False)
class Seq:
    """One chunk of a request on this instance."""

    rid: int
    priority: int
    arrival: int
    ctx0: int  # context at dispatch: prompt + tokens generated before this chunk
    stop: int  # tokens this chunk will produce (min of the chunk budget and what the request has left)
    final: bool  # producing `stop` tokens finishes the request
    reason: FinishReason
    max_new: int
    gen0: int = 0  # tokens the request had generated when this chunk was dispatched
    computed: int = 0  # tokens with KV computed here
    produced: int = 0  # tokens generated in this chunk
    blocks: int = 0
    pool_tokens: int = 0  # tokens fetchable from the global KV pool on admission
    ready_at: float = 0.0
    group: int = -1  # the request's group: siblings share its prompt's cached blocks
    prompt_len: int = 0  # the prompt its group's samples share: the shortest of theirs (`SimInstance.shared_prompt`)
    shared: int = 0  # of `blocks`, the group's prompt blocks it shares (held once per group by the KV memory)
    admitted: bool = False  # admitted to the batch at least once (a later admission follows a preemption)

    @property
    def target(self) -> int:
        """Tokens whose KV must exist before the next token can be sampled."""
        return self.ctx0 + self.produced

    @property
    def decoding(self) -> bool:
        return self.produced > 0 and self.computed == self.target - 1

    def order(self) -> tuple[int, int]:
        return (self.priority, self.arrival)


SPEC_POSITIONS = 64  # draft positions counted in the acceptance statistics


@dataclass
class InstanceStats:
    """Counters and logs of one instance: time, steps, preemptions, KV timeline, speculation statistics."""

    busy_s: float = 0.0
    steps: int = 0
    epochs: int = 0
    preemptions: int = 0
    recomputed_tokens: int = 0  # KV computed again after a preemption
    resumed_prefill_tokens: int = 0  # KV of a resumed chunk's earlier context computed again on admission
    prefill_tokens: int = 0  # KV computed by admissions before their next token (after cache and pool hits)
    pool_fetched_tokens: int = 0
    prefix_hit_tokens: int = 0
    timeline: list = field(default_factory=list)  # (t, kv_used_tokens, running, waiting)
    events: list = field(default_factory=list)  # (t, kind, request_id)
    spec_tried: np.ndarray = field(default_factory=lambda: np.zeros(SPEC_POSITIONS, np.int64))
    spec_accepted: np.ndarray = field(default_factory=lambda: np.zeros(SPEC_POSITIONS, np.int64))
    spec_request_steps: int = 0  # request-steps with a draft budget
    spec_drafted_tokens: int = 0
    spec_accepted_tokens: int = 0
    spec_by_request: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 3), np.int64)
    )  # per rid: steps, drafted, accepted (a simulated cluster's instances share one table)


def _row(s: Seq) -> tuple:
    """A sequence's values in `Running.COLS` order."""
    return (s.rid, s.priority, s.arrival, s.ctx0, s.stop, s.gen0, s.computed, s.produced, s.blocks)


class Running:
    """The running sequences as parallel numpy arrays (structure of arrays), in admission order.

    The columns are row views of one (columns x capacity) buffer with room to grow, so an admission writes its
    rows in place and a departure closes the gap in place: no column is reallocated per event. Update columns
    in place (`rs.blocks[:] = ...`, `rs.computed += ...`); an array read from a column is a view, valid until
    the next append or remove."""

    COLS = ("rid", "priority", "arrival", "ctx0", "stop", "gen0", "computed", "produced", "blocks")
    _STATE = slice(COLS.index("computed"), COLS.index("blocks") + 1)  # the columns `sync` writes back

    def __init__(self, capacity: int = 16):
        self._buf = np.zeros((len(self.COLS), capacity), dtype=np.int64)
        self._objs = np.empty(capacity, dtype=object)  # the Seq of each row (an object array: masks select fast)
        self._n = 0
        self._bind()

    def _bind(self) -> None:
        n = self._n
        (
            self.rid,
            self.priority,
            self.arrival,
            self.ctx0,
            self.stop,
            self.gen0,
            self.computed,
            self.produced,
            self.blocks,
        ) = self._buf[:, :n]
        self.seqs = self._objs[:n]

    def __len__(self) -> int:
        return self._n

    def append(self, seqs: list[Seq]) -> None:
        if not seqs:
            return
        n, m = self._n, len(seqs)
        if n + m > self._objs.shape[0]:
            cap = max(2 * self._objs.shape[0], n + m)
            buf, objs = np.zeros((len(self.COLS), cap), dtype=np.int64), np.empty(cap, dtype=object)
            buf[:, :n], objs[:n] = self._buf[:, :n], self._objs[:n]
            self._buf, self._objs = buf, objs
        if m == 1:  # the common case (one admission): one column written from a tuple
            self._buf[:, n] = _row(seqs[0])
            self._objs[n] = seqs[0]
        else:
            self._buf[:, n : n + m] = np.array([_row(s) for s in seqs], dtype=np.int64).T
            for i, seq in enumerate(seqs, n):
                self._objs[i] = seq
        self._n = n + m
        self._bind()

    def sync(self, idx) -> list[Seq]:
        """Write the dynamic state of rows `idx` back into their Seq objects and return them."""
        out = []
        seqs, state = self.seqs, self._buf[self._STATE, : self._n]
        for i in np.atleast_1d(idx).tolist():
            seq = seqs[i]
            seq.computed, seq.produced, seq.blocks = state[:, i].tolist()
            out.append(seq)
        return out

    def remove(self, mask: np.ndarray) -> list[Seq]:
        """Remove rows where mask is True; return their (synced) Seq objects in order."""
        idx = mask.nonzero()[0]
        if len(idx) == 0:
            return []
        gone = self.sync(idx)
        n, buf, objs = self._n, self._buf, self._objs
        if len(idx) == 1:  # the common case: shift the rows after it down by one
            i = int(idx[0])
            buf[:, i : n - 1] = buf[:, i + 1 : n]
            objs[i : n - 1] = objs[i + 1 : n]
        else:
            keep = ~mask
            buf[:, : n - len(idx)] = buf[:, :n][:, keep]
            objs[: n - len(idx)] = objs[:n][keep]
        objs[n - len(idx) : n] = None
        self._n = n - len(idx)
        self._bind()
        return gone

    @property
    def target(self) -> np.ndarray:
        return self.ctx0 + self.produced

    def decoding(self) -> np.ndarray:
        return (self.produced > 0) & (self.computed == self.ctx0 + self.produced - 1)

    def order_desc(self) -> np.ndarray:
        """Row indices from lowest priority (largest (priority, arrival)) to highest."""
        return np.lexsort((-self.arrival, -self.priority))
