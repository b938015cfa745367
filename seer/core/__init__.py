"""The contract: data model, events, actions, and the Engine / Policy protocols. Imports nothing else from seer."""

from seer.core.actions import Abort, Action, Dispatch, SetSpeculation
from seer.core.events import ChunkFinished, Event, InstanceIdle, RequestPreempted, RolloutStarted, Tick
from seer.core.model import Chunk, FinishReason, Group, Request, RequestState, Rollout
from seer.core.protocols import ClusterView, EmitFn, Engine, InstanceView, Policy

__all__ = [
    "Abort", "Action", "Chunk", "ChunkFinished", "ClusterView", "Dispatch", "EmitFn", "Engine", "Event",
    "FinishReason", "Group", "InstanceIdle", "InstanceView", "Policy", "Request", "RequestPreempted",
    "RequestState", "Rollout", "RolloutStarted", "SetSpeculation", "Tick",
]
