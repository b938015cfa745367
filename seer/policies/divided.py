"""Divided rollout (`divided`) and the template the other divided-family schedulers fill in (`context` in
`seer.policies.context`, and `oracle` here).

Groups are split into requests and requests into chunks of at most `chunk_size` new tokens. After each
chunk the request returns to the buffer. A chunk is dispatched only to an instance where its worst-case KV
(context + chunk, in whole blocks) fits beside every other chunk there, so the engine never preempts.
Each scheduling pass picks the next request by the policy's order and places it; when the picked request
fits nowhere the pass ends ("no available instance this cycle", as in Algorithm 2) and resumes at the
next event.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from seer.core import ChunkFinished, ClusterView, Dispatch, Event, PolicyTraits, RequestState, RolloutStarted
from seer.policies.admission import Admission
from seer.policies.config import ConfiguredPolicy, PolicyConfig, param
from seer.policies.placement import PLACEMENTS, LoadBook, Placement


@dataclass(frozen=True)
class DividedConfig(PolicyConfig):
    chunk_size: int = param(8192, "new tokens per chunk; a request returns to the buffer after each")
    placement: str = param("most-free", "instance choice: most free KV, or cached-prefix affinity", PLACEMENTS)
    imbalance_threshold: int = param(32, "cache-aware: in-flight spread below which affinity decides")
    affinity_margin: int = param(512, "cache-aware: cached-token gap above which a KV pull is counted")
    admission: str = param(
        "adaptive",
        "chunk budgets: adaptive to free KV and waiting demand, or the paper's "
        "fixed worst case (chunk_size every time)",
        ("adaptive", "worst-case"),
    )
    max_chunks: int = param(
        64,
        "adaptive: chunks a request is cut into at most while KV is scarce (its smallest "
        "budget is its longest possible response, max_tokens or what an instance holds, / max_chunks)",
    )
    backfill: bool = param(
        True,
        "adaptive: when the next request fits nowhere, keep the emptiest instance for it "
        "and fill the rest with the smallest waiting requests",
    )

    def problems(self) -> list[str]:
        out = [
            f"{k} must be >= 1, not {getattr(self, k)}" for k in ("chunk_size", "max_chunks") if getattr(self, k) < 1
        ]
        out += [
            f"{k} must be >= 0, not {getattr(self, k)}"
            for k in ("imbalance_threshold", "affinity_margin")
            if getattr(self, k) < 0
        ]
        return out

    def ignored(self, given) -> dict[str, str]:
        out = super().ignored(given)
        for key in sorted(given):
            if key in ("imbalance_threshold", "affinity_margin") and self.placement != "cache-aware":
                out[key] = f"{key} tunes placement=cache-aware, and this one's placement is {self.placement}"
            elif key in ("max_chunks", "backfill") and self.admission != "adaptive":
                out[key] = f"{key} tunes admission=adaptive, and this one's admission is {self.admission}"
        return out


class DividedPolicy(ConfiguredPolicy):
    """Divided rollout with FIFO order (requests in group order; a returning request rejoins the back)."""

    name = "divided"
    Config = DividedConfig

    def __init__(self, config: DividedConfig | None = None, **params):
        super().__init__(config, **params)
        c = self.cfg
        self.chunk_size = c.chunk_size
        self.placement = Placement(c.placement, c.imbalance_threshold, c.affinity_margin)
        self.admission = Admission(c.admission, c.chunk_size, c.max_chunks, c.backfill)
        self._fifo: deque[int] = deque()
        self._waiting: set[int] = set()
        self._pass_in_flight = 0  # requests in flight during the current dispatch pass
        self._book = LoadBook()

    # ---- ordering hooks (overridden by context / oracle) ---------------------------------------

    def _start(self, view: ClusterView) -> None:
        pass

    def _enter(self, rid: int, view: ClusterView) -> None:
        self._fifo.append(rid)

    def _peek(self, view: ClusterView) -> int | None:
        while self._fifo and self._fifo[0] not in self._waiting:
            self._fifo.popleft()
        return self._fifo[0] if self._fifo else None

    def _chunk_ended(self, event: ChunkFinished, view: ClusterView) -> None:
        pass

    def _finished(self, event: ChunkFinished, view: ClusterView) -> None:
        pass

    def _priority(self, rid: int, view: ClusterView) -> int:
        return 0

    def _dispatched(self, rid: int) -> None:
        pass

    # ---- the loop ------------------------------------------------------------------------------

    def on_event(self, event: Event, view: ClusterView) -> list:
        if isinstance(event, RolloutStarted):
            self._waiting = set()
            self._book = LoadBook()
            self.admission.reset()
            self._start(view)
            for gid in sorted(view.groups):
                for rid in view.members[gid]:
                    self._buffer(rid, view)
        elif isinstance(event, ChunkFinished):
            self._chunk_ended(event, view)
            if event.finished:
                self._finished(event, view)
            elif view.requests[event.request_id].state is RequestState.WAITING:
                self._buffer(event.request_id, view)
        if not self._waiting:
            return []
        return self._fill(view)

    def _buffer(self, rid: int, view: ClusterView) -> None:
        self._waiting.add(rid)
        self.admission.entered(view.requests[rid])
        self._enter(rid, view)

    def _fill(self, view: ClusterView) -> list:
        book = self._book
        book.sync(view)
        if not book.free:
            return []
        capacity = book.max_capacity
        target = self.admission.pass_budget(book, len(self._waiting))
        self._pass_in_flight = book.in_flight_total
        actions = []
        while self._waiting:
            rid = self._peek(view)
            if rid is None:
                break
            placed = self.admission.place(book, self.placement, view.requests[rid], target, capacity)
            if placed is None:  # no available instance this cycle for the head; it stays buffered
                if self.admission.backfill:
                    actions += self._backfill(view, book, target, capacity, rid)
                break
            self._dispatched(rid)
            actions.append(self._dispatch(view, book, rid, *placed))
        return actions

    def _dispatch(self, view: ClusterView, book: LoadBook, rid: int, inst: int, budget: int) -> Dispatch:
        req = view.requests[rid]
        self._waiting.discard(rid)
        self.admission.left(req)
        book.take(inst, req.context_len, budget)
        self._pass_in_flight += 1
        return Dispatch(rid, inst, budget, self._priority(rid, view))

    def _backfill(self, view: ClusterView, book: LoadBook, target: int, capacity: int, head: int) -> list:
        """Keep the emptiest instance for the blocked head; fill the others with the smallest waiting requests."""
        held = book.most_free()
        kept = (book.free.pop(held), book.in_flight.pop(held))
        actions = []
        candidates = self.admission.candidates(self._waiting)
        try:
            for rid in candidates:
                if rid == head or not book.free:
                    continue
                placed = self.admission.place(book, self.placement, view.requests[rid], target, capacity)
                if placed is None:
                    break  # every other candidate is larger
                actions.append(self._dispatch(view, book, rid, *placed))
        finally:
            candidates.close()
            book.free[held], book.in_flight[held] = kept
            book.touch(held)
        return actions


@dataclass(frozen=True)
class OracleConfig(DividedConfig):
    by: str = param(
        "remaining", "order by true tokens still to generate, or by true final length", ("remaining", "total")
    )


class OraclePolicy(DividedPolicy):
    """Longest-first with true output lengths, on divided rollout: the upper reference for `context`.

    `by="remaining"` (default) orders by true tokens still to generate (longest-processing-time-first list
    scheduling); `by="total"` by the final length. Neither is a proven optimum, so on some traces `context`
    can come within noise of it.

    True lengths arrive only through `set_oracle_lengths`, the named oracle input that the driver fills for
    policies whose traits declare `needs_oracle`; ordinary policies have no way to receive them.
    """

    name = "oracle"
    Config = OracleConfig

    def __init__(self, config: OracleConfig | None = None, **params):
        super().__init__(config, **params)
        self.by = self.cfg.by
        self._true: dict[int, int] | None = None
        self._heap: list = []

    @property
    def traits(self) -> PolicyTraits:
        return PolicyTraits(needs_oracle=True)

    def set_oracle_lengths(self, lengths: dict[int, int]) -> None:
        self._true = dict(lengths)

    def _start(self, view: ClusterView) -> None:
        if self._true is None:
            raise RuntimeError("oracle policy needs true lengths: the driver must call set_oracle_lengths")
        self._heap = []

    def _enter(self, rid: int, view: ClusterView) -> None:
        key = self._true[rid] - view.requests[rid].generated if self.by == "remaining" else self._true[rid]
        heapq.heappush(self._heap, (-key, rid))

    def _peek(self, view: ClusterView) -> int | None:
        while self._heap and self._heap[0][1] not in self._waiting:
            heapq.heappop(self._heap)
        return self._heap[0][1] if self._heap else None
