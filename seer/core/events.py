"""Events: what engines and drivers tell a policy. All are immutable and carry the time `t` in seconds."""

from __future__ import annotations

from dataclasses import dataclass

from seer.core.model import FinishReason


@dataclass(frozen=True)
class RolloutStarted:
    """The iteration begins; every group's requests are in the buffer."""

    t: float
    group_ids: tuple[int, ...]


@dataclass(frozen=True)
class ChunkFinished:
    """A chunk ended on `instance` after producing `new_tokens` tokens.

    `finished` is True when the request itself is done (EOS or max_tokens); then `reason` says
    which. Otherwise `reason` is CHUNK and the request is back in the buffer. `token_ids` carries the
    new tokens when the backend knows them.
    """

    t: float
    request_id: int
    instance: int
    new_tokens: int
    finished: bool
    reason: FinishReason
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class RequestPreempted:
    """The engine evicted the request's KV (vLLM recompute preemption); it stays queued there."""

    t: float
    request_id: int
    instance: int


@dataclass(frozen=True)
class InstanceIdle:
    """`instance` has nothing running or queued."""

    t: float
    instance: int


@dataclass(frozen=True)
class Tick:
    """A periodic wake-up, for policies that re-plan on a timer (e.g. speculation budgets)."""

    t: float


Event = RolloutStarted | ChunkFinished | RequestPreempted | InstanceIdle | Tick
