"""Divided rollout and the schedulers built on it: `divided`, `context` (Seer Algorithm 2) and `oracle`.

Groups are split into requests and requests into chunks of at most `chunk_size` new tokens. After each
chunk the request returns to the buffer. A chunk is dispatched only to an instance where its worst-case KV
(context + chunk, in whole blocks) fits beside every other chunk there, so the engine never preempts.
Each scheduling pass picks the next request by the policy's order and places it; when the picked request
fits nowhere the pass ends ("no available instance this cycle", as in Algorithm 2) and resumes at the
next event.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass

from seer.core import ChunkFinished, ClusterView, Dispatch, Event, PolicyTraits, RequestState, RolloutStarted
from seer.policies.config import ConfiguredPolicy, PolicyConfig, param
from seer.policies.placement import PLACEMENTS, LoadBook, Placement


@dataclass(frozen=True)
class DividedConfig(PolicyConfig):
    chunk_size: int = param(8192, "new tokens per chunk; a request returns to the buffer after each")
    placement: str = param("most-free", "instance choice: most free KV, or cached-prefix affinity", PLACEMENTS)
    imbalance_threshold: int = param(32, "cache-aware: in-flight spread below which affinity decides")
    affinity_margin: int = param(512, "cache-aware: cached-token gap above which a KV pull is counted")

    def problems(self) -> list[str]:
        out = []
        if self.chunk_size < 1:
            out.append("chunk_size must be >= 1")
        if self.imbalance_threshold < 0 or self.affinity_margin < 0:
            out.append("imbalance_threshold and affinity_margin must be >= 0")
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
        self._fifo: deque[int] = deque()
        self._waiting: set[int] = set()

    # ---- ordering hooks (overridden by context / oracle) ---------------------------------------

    def _start(self, view: ClusterView) -> None:
        pass

    def _enter(self, rid: int, view: ClusterView) -> None:
        self._fifo.append(rid)

    def _peek(self, view: ClusterView) -> int | None:
        while self._fifo and self._fifo[0] not in self._waiting:
            self._fifo.popleft()
        return self._fifo[0] if self._fifo else None

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
            self._start(view)
            for gid in sorted(view.groups):
                for rid in view.members[gid]:
                    self._buffer(rid, view)
        elif isinstance(event, ChunkFinished):
            if event.finished:
                self._finished(event, view)
            elif view.requests[event.request_id].state is RequestState.WAITING:
                self._buffer(event.request_id, view)
        if not self._waiting:
            return []
        return self._fill(view)

    def _buffer(self, rid: int, view: ClusterView) -> None:
        self._waiting.add(rid)
        self._enter(rid, view)

    def _fill(self, view: ClusterView) -> list:
        book = LoadBook.of(view)
        capacity = max(iv.kv_capacity_tokens for iv in view.instances if iv.alive)
        actions = []
        while self._waiting:
            rid = self._peek(view)
            if rid is None:
                break
            req = view.requests[rid]
            # cap the chunk so its worst case fits an empty instance (the request itself always does)
            budget = max(1, min(self.chunk_size, req.remaining_budget, capacity - req.context_len))
            inst = self.placement.choose(book, rid, req.context_len, budget)
            if inst is None:
                break  # no available instance this cycle; the request stays buffered
            self._waiting.discard(rid)
            self._dispatched(rid)
            book.take(inst, req.context_len, budget)
            actions.append(Dispatch(rid, inst, budget, self._priority(rid, view)))
        return actions


@dataclass(frozen=True)
class ContextConfig(DividedConfig):
    starvation_every: int = param(32, "every n-th non-probe pick serves the longest-waiting request (0: never)")

    def problems(self) -> list[str]:
        return super().problems() + (["starvation_every must be >= 0"] if self.starvation_every < 0 else [])


@dataclass(frozen=True)
class OracleConfig(DividedConfig):
    by: str = param(
        "remaining", "order by true tokens still to generate, or by true final length", ("remaining", "total")
    )


class ContextPolicy(DividedPolicy):
    """Context-aware scheduling (Seer Algorithm 2) on divided rollout.

    One probe per group (its first sample). Probes go first, shortest-generated-first. Every other request
    is ordered longest-estimate-first by its group's L̂ = the longest finished response of the group, or
    `max_tokens` while none has finished; ties go to the lower group id, then FIFO. Anti-starvation: every
    `starvation_every`-th non-probe pick (default 32) takes instead the request that has waited longest
    in the buffer. Probes are dispatched with engine priority 0, others with 1.
    """

    name = "context"
    Config = ContextConfig

    def __init__(self, config: ContextConfig | None = None, **params):
        super().__init__(config, **params)
        self.starvation_every = self.cfg.starvation_every
        self.estimate: dict[int, int] = {}
        self.finished_max: dict[int, int] = {}
        self.probe_of: dict[int, int] = {}
        self._probes: list = []
        self._groups: list = []
        self._group_queue: dict[int, deque] = {}
        self._entry = itertools.count()
        self._entered: dict[int, int] = {}
        self._oldest: deque = deque()
        self._picks = 0
        self.starvation_picks = 0
        self._last_rule = ""

    def _start(self, view: ClusterView) -> None:
        self.estimate = {gid: g.max_tokens for gid, g in view.groups.items()}
        self.finished_max = {}
        self.probe_of = {gid: view.members[gid][0] for gid in view.groups if view.members[gid]}
        self._probes, self._groups = [], []
        self._group_queue = {gid: deque() for gid in view.groups}
        self._oldest = deque()
        self._picks = self.starvation_picks = 0

    def is_probe(self, rid: int, view: ClusterView) -> bool:
        return self.probe_of.get(view.requests[rid].group_id) == rid

    def _enter(self, rid: int, view: ClusterView) -> None:
        n = next(self._entry)
        self._entered[rid] = n
        self._oldest.append((n, rid))
        req = view.requests[rid]
        if self.is_probe(rid, view):
            heapq.heappush(self._probes, (req.generated, rid))
        else:
            q = self._group_queue[req.group_id]
            q.append(rid)
            if len(q) == 1:
                heapq.heappush(self._groups, (-self.estimate[req.group_id], req.group_id))

    def _finished(self, event: ChunkFinished, view: ClusterView) -> None:
        req = view.requests[event.request_id]
        gid = req.group_id
        self.finished_max[gid] = max(self.finished_max.get(gid, 0), req.generated)
        new = self.finished_max[gid]
        if new != self.estimate[gid]:
            self.estimate[gid] = new
            if self._group_queue[gid]:
                heapq.heappush(self._groups, (-new, gid))  # older entries for gid are skipped as stale

    def _peek(self, view: ClusterView) -> int | None:
        """The next request by Algorithm 2's order; records which rule picked it in `_last_rule`, which
        `_dispatched` reads when the pick is placed."""
        while self._probes and (
            self._probes[0][1] not in self._waiting or view.requests[self._probes[0][1]].generated != self._probes[0][0]
        ):
            heapq.heappop(self._probes)  # stale: dispatched, or re-entered with more tokens
        if self._probes:
            self._last_rule = "probe"
            return self._probes[0][1]
        if self.starvation_every and self._picks and self._picks % self.starvation_every == 0:
            while self._oldest and (
                self._oldest[0][1] not in self._waiting or self._entered.get(self._oldest[0][1]) != self._oldest[0][0]
            ):
                self._oldest.popleft()
            if self._oldest:
                self._last_rule = "starvation"
                return self._oldest[0][1]
        while self._groups:
            neg, gid = self._groups[0]
            q = self._group_queue[gid]
            while q and q[0] not in self._waiting:
                q.popleft()
            if not q:
                heapq.heappop(self._groups)
            elif -neg != self.estimate[gid]:
                heapq.heapreplace(self._groups, (-self.estimate[gid], gid))
            else:
                self._last_rule = "lfs"
                return q[0]
        return None

    def _dispatched(self, rid: int) -> None:
        if self._last_rule == "probe":
            heapq.heappop(self._probes)
            return
        self._picks += 1
        if self._last_rule == "starvation":
            self.starvation_picks += 1

    def _priority(self, rid: int, view: ClusterView) -> int:
        return 0 if self.is_probe(rid, view) else 1


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
