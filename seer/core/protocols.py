"""The contract between policies, engines and drivers.

Loop run by a driver (one per backend):

    events -> policy.on_event(event, view) -> actions -> engines -> events ...

A `Policy` is deterministic: no clock (time arrives in events), no I/O, no randomness that is not
seeded at construction. It sees a `ClusterView`: per-instance load and KV, every group's members, and
every request's observable state (tokens generated so far, never its true final length). What it needs
beyond events it declares as `traits` (`seer.core.traits`); oracle policies receive true lengths through
the named input `set_oracle_lengths`, which only they declare.

An `Engine` is one inference instance. It takes chunks, runs them with continuous batching, and reports
through the `emit` callback it was built with: `ChunkFinished` for every chunk it was given (an aborted
one included), `RequestPreempted` when it evicts a request's KV, and `InstanceIdle` when it runs out of
work. The simulated instance and the vLLM adapter both implement it; `tests/test_engine_conformance.py`
runs one script against each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from seer.core.actions import Action
from seer.core.events import Event
from seer.core.model import Chunk, Group, Request, RequestState
from seer.core.traits import PolicyTraits


@dataclass(frozen=True)
class InstanceView:
    """A snapshot of one instance's load as a scheduler can observe it.

    `kv_used_tokens` counts KV actually held; `kv_reserved_tokens` is the worst case of every chunk on the
    instance (context + chunk budget, rounded up to whole blocks), which is what a no-preemption dispatcher
    must keep within `kv_capacity_tokens`. With prefix caching, the full blocks of a group's prompt count once
    for all the group's chunks on the instance, which hold them once (`seer.core.kv.Reservation`).
    `cached_prefix_tokens` maps request ids to the number of their context tokens still cached on this
    instance (prefix cache or pooled KV), the hint for cache-aware placement.
    `spec_tried` / `spec_accepted` are the speculation counters an engine exposes for online acceptance
    estimates (empty when it does not speculate).
    """

    instance_id: int
    kv_capacity_tokens: int
    kv_used_tokens: int
    kv_reserved_tokens: int
    running: int
    waiting: int
    alive: bool = True
    max_num_seqs: int = 0  # the engine's concurrency limit (0 = unknown)
    block_size: int = 1  # KV allocation granularity in tokens
    cached_prefix_tokens: Mapping[int, int] = field(default_factory=dict)
    spec_tried: tuple[
        int, ...
    ] = ()  # cumulative request-steps that reached draft position i+1 (budget > i, first i accepted)
    spec_accepted: tuple[int, ...] = ()  # cumulative request-steps whose first i+1 draft tokens were accepted

    @property
    def kv_free_tokens(self) -> int:
        """Capacity not yet promised to admitted chunks."""
        return self.kv_capacity_tokens - self.kv_reserved_tokens

    @property
    def in_flight(self) -> int:
        return self.running + self.waiting


class InstanceChanges:
    """Which instances' views may have changed since the policy last asked, so that a policy keeping per-instance
    state need not read every instance on every event (large clusters).

    A driver that keeps this log marks an instance on every action sent to it and the engine marks itself
    whenever its state may have moved; `take()` returns the marked instance ids and clears them (one reader:
    the policy). Drivers that keep no log pass `ClusterView.changes = None`, and readers then read every view.
    """

    __slots__ = ("_marked",)

    def __init__(self):
        self._marked: set[int] = set()

    def mark(self, instance_id: int) -> None:
        self._marked.add(instance_id)

    def take(self) -> set[int]:
        marked, self._marked = self._marked, set()
        return marked


@dataclass(frozen=True)
class ClusterView:
    """What a policy may read: time, instances, groups with their members, and every request's observable state.

    `members[group_id]` is the group's request ids in sample order. Drivers pass the rollout's index; a view
    built by hand without it gets one computed from `requests`. `changes`, when the driver keeps one, names the
    instances whose views may have changed (see `InstanceChanges`).
    """

    t: float
    instances: Sequence[InstanceView]
    groups: Mapping[int, Group]
    requests: Mapping[int, Request]
    members: Mapping[int, Sequence[int]] | None = None
    changes: InstanceChanges | None = None

    def __post_init__(self):
        if self.members is None:
            index: dict[int, list[int]] = {gid: [] for gid in self.groups}
            for rid, req in sorted(self.requests.items(), key=lambda kv: (kv[1].sample_index, kv[0])):
                index.setdefault(req.group_id, []).append(rid)
            object.__setattr__(self, "members", {gid: tuple(r) for gid, r in index.items()})

    def waiting_requests(self) -> list[Request]:
        """Requests in the buffer, in request-id order (deterministic)."""
        return [r for r in self.requests.values() if r.state is RequestState.WAITING]


@runtime_checkable
class Policy(Protocol):
    """A scheduling policy. Implement `on_event`; return the actions to take now (possibly none).

    Optional: `traits` (a `PolicyTraits`, default: needs nothing) and `config()` (its parameters as a dict).
    """

    name: str

    def on_event(self, event: Event, view: ClusterView) -> list[Action]: ...


def describe_policy(policy) -> dict:
    """A policy's parameters for result files: its `config()`, or just its name."""
    config = getattr(policy, "config", None)
    return dict(config()) if callable(config) else {"name": policy.name}


EmitFn = Callable[[Event], None]


@runtime_checkable
class Engine(Protocol):
    """One inference instance behind the contract.

    `submit` queues a chunk for a request whose context (prompt + generated tokens) is given by the
    `Request`; the engine owns scheduling inside its batch. `abort` stops a request's chunk and frees
    its KV; the engine then reports the chunk as `ChunkFinished(reason=ABORT)` with the tokens it had
    produced, at its next step boundary (never from inside `abort`). `view` reports load. `alive` is False
    once the instance failed.
    """

    instance_id: int
    alive: bool

    def submit(self, chunk: Chunk, request: Request) -> None: ...

    def abort(self, request_id: int) -> None: ...

    def view(self) -> InstanceView: ...

    def set_speculation(self, budgets: Mapping[int, int], default: int = 0) -> None: ...


__all__ = ["ClusterView", "EmitFn", "Engine", "InstanceView", "Policy", "PolicyTraits", "describe_policy"]
