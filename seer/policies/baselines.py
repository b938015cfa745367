"""The baselines Seer is measured against."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from seer.core import ChunkFinished, ClusterView, Dispatch, Event, RequestState, RolloutStarted
from seer.policies.config import ConfiguredPolicy, PolicyConfig, param


def _live(view: ClusterView) -> list[int]:
    return [iv.instance_id for iv in view.instances if iv.alive]


@dataclass(frozen=True)
class VerlConfig(PolicyConfig):
    priority: int = param(0, "engine priority of every request (lower runs first)")


class VerlPolicy(ConfiguredPolicy):
    """veRL's synchronous rollout: groups are assigned whole to instances round-robin when the rollout
    starts (the G samples of a prompt stay together on one data-parallel rank), each request runs to
    completion, and each instance's engine batches and preempts on its own. No rebalancing afterwards.
    """

    name = "verl"
    Config = VerlConfig

    def on_event(self, event: Event, view: ClusterView) -> list:
        prio = self.cfg.priority
        if (
            isinstance(event, ChunkFinished)
            and not event.finished
            and view.requests[event.request_id].state is RequestState.WAITING
        ):
            # only a failed instance ends a verl request early: continue it on the next live instance
            live = _live(view)
            req = view.requests[event.request_id]
            return (
                [Dispatch(req.request_id, live[req.group_id % len(live)], req.remaining_budget, prio)] if live else []
            )
        if not isinstance(event, RolloutStarted):
            return []
        live = _live(view)
        actions = []
        for k, gid in enumerate(sorted(view.groups)):
            inst = live[k % len(live)]
            for rid in view.members[gid]:
                actions.append(Dispatch(rid, inst, view.requests[rid].max_tokens, prio))
        return actions


class VerlLBPolicy(ConfiguredPolicy):
    """veRL's current router: every sample is its own request (siblings scatter), sent when the rollout starts
    to the replica with the fewest requests in flight (ties: the lowest id); each runs to completion with the
    engine batching and preempting on its own. A chunk a failed replica returns goes to the least loaded live one.
    """

    name = "verl-lb"
    Config = VerlConfig

    def on_event(self, event: Event, view: ClusterView) -> list:
        prio = self.cfg.priority
        if isinstance(event, RolloutStarted):
            rids = [rid for gid in sorted(view.groups) for rid in view.members[gid]]
        elif (
            isinstance(event, ChunkFinished)
            and not event.finished
            and view.requests[event.request_id].state is RequestState.WAITING
        ):
            rids = [event.request_id]
        else:
            return []
        load = {iv.instance_id: iv.in_flight for iv in view.instances if iv.alive}
        if not load:
            return []
        heap = [(n, i) for i, n in load.items()]
        heapq.heapify(heap)
        actions = []
        for rid in rids:
            n, inst = heapq.heappop(heap)
            actions.append(Dispatch(rid, inst, view.requests[rid].remaining_budget, prio))
            heapq.heappush(heap, (n + 1, inst))
        return actions


@dataclass(frozen=True)
class LeastLoadedConfig(PolicyConfig):
    max_in_flight: int | None = param(None, "requests in flight per instance (default: the engine's max_num_seqs)")

    def problems(self) -> list[str]:
        return ["max_in_flight must be >= 1"] if self.max_in_flight is not None and self.max_in_flight < 1 else []


class LeastLoadedPolicy(ConfiguredPolicy):
    """Request-level dynamic dispatch without chunking: requests wait in a buffer (group order) and each
    goes, whole, to the instance with the most free KV among those below their concurrency limit.
    """

    name = "least-loaded"
    Config = LeastLoadedConfig

    def __init__(self, config: LeastLoadedConfig | None = None, **params):
        super().__init__(config, **params)
        self.buffer: deque[int] = deque()

    def on_event(self, event: Event, view: ClusterView) -> list:
        if isinstance(event, RolloutStarted):
            self.buffer = deque(rid for gid in sorted(view.groups) for rid in view.members[gid])
        if not self.buffer:
            return []
        free = {}
        room = {}
        for iv in view.instances:
            if not iv.alive:
                continue
            limit = self.cfg.max_in_flight or iv.max_num_seqs or 256
            free[iv.instance_id] = iv.kv_capacity_tokens - iv.kv_used_tokens
            room[iv.instance_id] = limit - iv.in_flight
        actions = []
        while self.buffer:
            candidates = [i for i in free if room[i] > 0]
            if not candidates:
                break
            inst = max(candidates, key=lambda i: (free[i], -i))
            rid = self.buffer.popleft()
            req = view.requests[rid]
            actions.append(Dispatch(rid, inst, req.remaining_budget))
            free[inst] -= req.context_len + 1
            room[inst] -= 1
        return actions
