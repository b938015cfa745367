"""The contract: data model, events, actions, traits, and the Engine / Policy protocols.

Imports nothing else from seer.
"""

from seer.core.actions import Abort, Action, Dispatch, SetSpeculation
from seer.core.events import ChunkFinished, Event, InstanceIdle, RequestPreempted, RolloutStarted, Tick
from seer.core.kv import Reservation, ceil_div, round_up, shared_prompt_kv, worst_case_kv
from seer.core.model import Chunk, FinishReason, Group, Request, RequestState, Rollout
from seer.core.protocols import (
    ClusterView,
    EmitFn,
    Engine,
    InstanceChanges,
    InstanceView,
    Policy,
    describe_policy,
)
from seer.core.traits import DraftConfig, PolicyTraits, StepProfile, traits_of

__all__ = [
    "Abort",
    "Action",
    "Chunk",
    "ChunkFinished",
    "ClusterView",
    "Dispatch",
    "DraftConfig",
    "EmitFn",
    "Engine",
    "Event",
    "FinishReason",
    "Group",
    "InstanceIdle",
    "InstanceChanges",
    "InstanceView",
    "Policy",
    "PolicyTraits",
    "Request",
    "RequestPreempted",
    "RequestState",
    "Reservation",
    "Rollout",
    "RolloutStarted",
    "SetSpeculation",
    "StepProfile",
    "Tick",
    "ceil_div",
    "describe_policy",
    "round_up",
    "traits_of",
    "worst_case_kv",
    "shared_prompt_kv",
]
