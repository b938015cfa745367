"""The rollout data model: a group of G samples of one prompt, its requests, and the chunks they run in.

A rollout iteration is a set of groups. Each group is one prompt sampled G times; each sample is a
request. A request advances in chunks: a chunk is "continue request r on instance i for at most k new
tokens from its current context". Divided rollout uses many chunks per request; the veRL baseline uses
one chunk that runs to completion.

Nothing here holds a request's true final length: that lives in the trace (simulator) or in the model
(real engine), never in what a policy reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RequestState(enum.Enum):
    """Where a request is in its life."""

    WAITING = "waiting"  # in the request buffer, not on any instance
    RUNNING = "running"  # a chunk of it is submitted to an instance (queued or in a batch there)
    FINISHED = "finished"  # produced EOS or reached max_tokens
    ABORTED = "aborted"  # cancelled by the policy (e.g. partial rollout carries it over)


class FinishReason(enum.Enum):
    """Why a chunk ended."""

    CHUNK = "chunk"  # the chunk's token budget is used up; the request goes back to the buffer
    EOS = "eos"  # the model stopped: the request is finished
    LENGTH = "length"  # the request reached its max_tokens: finished
    ABORT = "abort"  # aborted by the policy or because its instance failed


@dataclass(frozen=True)
class Group:
    """One prompt sampled `size` times (GRPO's group).

    Attributes:
        group_id: unique within the rollout.
        prompt_len: prompt length in tokens.
        max_tokens: generation cap of every request in the group.
        size: G, the number of samples.
        prompt_ids: the prompt's token ids when known (real engines need them; the simulator does not).
        iteration: the RL iteration this group belongs to (partial rollout carries groups over).
    """

    group_id: int
    prompt_len: int
    max_tokens: int
    size: int
    prompt_ids: tuple[int, ...] | None = None
    iteration: int = 0


@dataclass(frozen=True)
class Request:
    """One sample of a group: what a scheduler can know about it while it runs.

    `generated` counts output tokens produced so far; `output_ids` holds them (a tuple) when the backend
    reports token ids (the speculation drafter reads them). A request's context is its prompt plus
    what it generated; a chunk resumes from there.

    Read-only (assigning a field raises `dataclasses.FrozenInstanceError`): policies and engines read the same
    live objects, and a policy that wrote `generated` or `state` would silently change what the loop records.
    The contract loop's ledger is the one writer (`write_request`); a policy keeps its own per-request state
    in itself and changes a request only through actions.
    """

    __hash__ = None  # equal by value, mutable through the ledger: not a dict key

    request_id: int
    group_id: int
    sample_index: int
    prompt_len: int
    max_tokens: int
    generated: int = 0
    state: RequestState = RequestState.WAITING
    instance: int | None = None
    output_ids: tuple[int, ...] | None = None
    finish_reason: FinishReason | None = None
    chunks: int = 0  # chunks dispatched so far
    arrival_s: float = 0.0
    key: tuple = ()  # the sample's identity in its trace: (prompt_id, sample_id)

    def __post_init__(self):
        # a tuple, so a reader cannot append to the tokens an engine resumes from (a list given is copied)
        if self.output_ids is not None and type(self.output_ids) is not tuple:
            object.__setattr__(self, "output_ids", tuple(self.output_ids))

    @property
    def context_len(self) -> int:
        """Tokens of KV the request needs to continue: prompt plus generated output."""
        return self.prompt_len + self.generated

    @property
    def remaining_budget(self) -> int:
        """Tokens it may still generate before max_tokens."""
        return self.max_tokens - self.generated

    @property
    def done(self) -> bool:
        return self.state in (RequestState.FINISHED, RequestState.ABORTED)


def write_request(req: Request, **fields) -> None:
    """Set fields of a request: for the contract loop's ledger (and a request's builder) only, the single
    writer of request state."""
    for name, value in fields.items():
        object.__setattr__(req, name, value)


@dataclass(frozen=True)
class Chunk:
    """A unit of work handed to an engine: continue `request_id` for at most `max_new_tokens` tokens.

    `priority` follows vLLM's convention: lower values run first. `start_generated` is the number of
    tokens the request had generated when the chunk was dispatched, so the engine knows the context.
    """

    request_id: int
    instance: int
    max_new_tokens: int
    start_generated: int
    priority: int = 0


@dataclass
class Rollout:
    """The work of one rollout iteration: groups and their requests, indexed by id.

    `members[group_id]` lists a group's request ids in sample order, so nothing needs to scan every request
    to find a group.
    """

    groups: dict[int, Group] = field(default_factory=dict)
    requests: dict[int, Request] = field(default_factory=dict)
    members: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def add_group(
        self,
        group: Group,
        arrival_s: float = 0.0,
        keys: list[tuple] | None = None,
        prompt_lens: list[int] | None = None,
        max_tokens: list[int] | None = None,
    ) -> list[Request]:
        """Register a group and create its G requests (ids continue the rollout's numbering).

        `keys`: each sample's identity in its trace, (prompt_id, sample_id); default (group_id, sample index).
        `prompt_lens`, `max_tokens`: each sample's own, where a trace gives them (default: the group's).
        """
        if group.group_id in self.groups:
            raise ValueError(f"group {group.group_id} already in the rollout")
        for what, per in (("keys", keys), ("prompt_lens", prompt_lens), ("max_tokens", max_tokens)):
            if per is not None and len(per) != group.size:
                raise ValueError(f"group {group.group_id}: {len(per)} {what} for {group.size} samples")
        self.groups[group.group_id] = group
        start = len(self.requests)
        made = []
        for i in range(group.size):
            req = Request(
                request_id=start + i,
                group_id=group.group_id,
                sample_index=i,
                prompt_len=prompt_lens[i] if prompt_lens is not None else group.prompt_len,
                max_tokens=max_tokens[i] if max_tokens is not None else group.max_tokens,
                arrival_s=arrival_s,
                key=tuple(keys[i]) if keys is not None else (group.group_id, i),
            )
            self.requests[req.request_id] = req
            made.append(req)
        self.members[group.group_id] = tuple(r.request_id for r in made)
        return made

    def group_requests(self, group_id: int) -> list[Request]:
        """The group's requests in sample order."""
        return [self.requests[rid] for rid in self.members[group_id]]
