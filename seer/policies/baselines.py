"""The baselines Seer is measured against."""

from __future__ import annotations

from collections import deque

from seer.core import ChunkFinished, ClusterView, Dispatch, Event, RolloutStarted


def _requests_by_group(view: ClusterView) -> dict[int, list[int]]:
    by_group: dict[int, list[int]] = {gid: [] for gid in view.groups}
    for rid, req in view.requests.items():
        by_group[req.group_id].append(rid)
    return {gid: sorted(rids) for gid, rids in sorted(by_group.items())}


class VerlPolicy:
    """veRL's synchronous rollout: groups are assigned whole to instances round-robin when the rollout
    starts (the G samples of a prompt stay together on one data-parallel rank), each request runs to
    completion, and each instance's engine batches and preempts on its own. No rebalancing afterwards.
    """

    name = "verl"

    def __init__(self, priority: int = 0):
        self.priority = priority

    def config(self) -> dict:
        return {"name": self.name, "priority": self.priority}

    def on_event(self, event: Event, view: ClusterView) -> list:
        if isinstance(event, ChunkFinished) and not event.finished \
                and view.requests[event.request_id].state.value == "waiting":
            # only a failed instance ends a verl request early: continue it on the next live instance
            live = [iv.instance_id for iv in view.instances if iv.alive]
            req = view.requests[event.request_id]
            return [Dispatch(req.request_id, live[req.group_id % len(live)], req.remaining_budget, self.priority)] if live else []
        if not isinstance(event, RolloutStarted):
            return []
        live = [iv.instance_id for iv in view.instances if iv.alive]
        actions = []
        for k, (gid, rids) in enumerate(_requests_by_group(view).items()):
            inst = live[k % len(live)]
            for rid in rids:
                req = view.requests[rid]
                actions.append(Dispatch(rid, inst, req.max_tokens, self.priority))
        return actions


class LeastLoadedPolicy:
    """Request-level dynamic dispatch without chunking: requests wait in a buffer (group order) and each
    goes, whole, to the instance with the most free KV among those below their concurrency limit.
    """

    name = "least-loaded"

    def __init__(self, max_in_flight: int | None = None):
        self.max_in_flight = max_in_flight
        self.buffer: deque[int] = deque()

    def config(self) -> dict:
        return {"name": self.name, "max_in_flight": self.max_in_flight}

    def on_event(self, event: Event, view: ClusterView) -> list:
        if isinstance(event, RolloutStarted):
            self.buffer = deque(rid for rids in _requests_by_group(view).values() for rid in rids)
        if not self.buffer:
            return []
        free = {}
        room = {}
        for iv in view.instances:
            if not iv.alive:
                continue
            limit = self.max_in_flight or iv.max_num_seqs or 256
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
