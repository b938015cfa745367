"""The optional half of the policy contract: what a policy needs from a backend beyond events.

A policy declares it as `traits` (a `PolicyTraits`); drivers read it once, through `traits_of`, and every
backend honours all of it. `DraftConfig` lives here too because it is what a speculative policy asks the
backend's drafter to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

SCOPES = ("own", "group", "global")
MAX_MATCH = 256  # the longest context suffix a suffix index hashes
MAX_TOPK = 256
MAX_OCCURRENCES = 1 << 31
MAX_OVER_ISSUE = 100  # groups held per group needed (partial rollout), at most


@dataclass(frozen=True)
class DraftConfig:
    """How drafts are made. Names follow Seer's SpeculationArgs and vLLM's suffix/n-gram options.

    scope: "own" (each request drafts from its own prompt and output), "group" (from every response of its
    group, Seer's grouped drafting) or "global" ("group" plus a cache of finished responses of all groups).
    """

    scope: str = "group"
    max_match: int = 8  # pattern_lookup_max: longest context suffix matched
    min_match: int = 1  # pattern_lookup_min
    min_prob: float = 0.1  # drop draft tokens whose path probability falls below this
    topk: int = 1  # branches kept per depth (1 = linear drafts)
    max_occurrences: int = 16  # most recent occurrences of the matched pattern whose continuations are counted
    max_cached: int = 10_000  # finished responses kept for scope "global"

    def __post_init__(self):
        for key in ("max_match", "min_match", "topk", "max_occurrences", "max_cached"):
            value = getattr(self, key)
            if type(value) is not int:
                raise ValueError(f"{key} must be an integer, not {value!r}")
        if isinstance(self.min_prob, bool) or not isinstance(self.min_prob, (int, float)):
            raise ValueError(f"min_prob must be a number, not {self.min_prob!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")
        if self.topk < 1 or self.min_match < 1 or self.max_match < self.min_match:
            raise ValueError("need topk >= 1 and 1 <= min_match <= max_match")
        if self.max_match > MAX_MATCH:  # the index hashes at most MAX_MATCH tokens
            raise ValueError(f"need max_match <= {MAX_MATCH}")
        if self.topk > MAX_TOPK:
            raise ValueError(f"need topk <= {MAX_TOPK}")
        if not 0.0 <= self.min_prob <= 1.0:
            raise ValueError("min_prob must be in [0, 1]")
        if not 1 <= self.max_occurrences <= MAX_OCCURRENCES or self.max_cached < 0:
            raise ValueError(f"need 1 <= max_occurrences <= {MAX_OCCURRENCES} and max_cached >= 0")

    def describe(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PolicyTraits:
    """What a policy needs from a backend. Every field's default means "nothing"."""

    # true output lengths, delivered through `policy.set_oracle_lengths({request_id: length})`; only the
    # explicitly named oracle policies declare it
    needs_oracle: bool = False
    # the backend's verify-step time, delivered through `policy.set_step_profile(profile)`, where
    # profile(batch, tokens per sequence, mean context) -> seconds
    needs_step_profile: bool = False
    # periodic `Tick` events every `tick_s` seconds (None: none)
    tick_s: float | None = None
    # an `Abort` ends its request (ABORTED, never resumed: partial rollout); otherwise an aborted chunk
    # returns its request to the buffer
    aborts_are_final: bool = False
    # the backend drafts with this configuration and honours `SetSpeculation` budgets (None: no drafting)
    drafter: DraftConfig | None = None
    # the largest draft budget the policy will ever set (engine lookahead and makespan bounds)
    max_draft_tokens: int = 0
    # the iteration runner holds over_issue x the groups training needs and carries unfinished requests
    # into the next iteration (partial rollout); 1.0 for synchronous policies
    over_issue: float = 1.0

    def __post_init__(self):
        # a tick is an event: below a millisecond a rollout of minutes becomes hours of ticks (as SeerConfig bounds it)
        if self.tick_s is not None and not (isinstance(self.tick_s, (int, float)) and 0.001 <= self.tick_s < math.inf):
            raise ValueError(f"PolicyTraits: tick_s must be None or a number of seconds >= 0.001, not {self.tick_s!r}")
        if type(self.max_draft_tokens) is not int or not 0 <= self.max_draft_tokens <= 64:
            raise ValueError(
                f"PolicyTraits: max_draft_tokens must be an integer from 0 to 64, not {self.max_draft_tokens!r}"
            )
        # each iteration generates over_issue x the groups: 1e6 ran for ever (partial's own config has the same bound)
        ok = isinstance(self.over_issue, (int, float)) and type(self.over_issue) is not bool
        if not (ok and 1 <= self.over_issue <= MAX_OVER_ISSUE):
            raise ValueError(
                f"PolicyTraits: over_issue must be a number from 1 to {MAX_OVER_ISSUE}, not {self.over_issue!r}"
            )


NO_TRAITS = PolicyTraits()


class StepProfile:
    """A backend's verify-step time, what `policy.set_step_profile` receives: `profile(batch, q, ctx)` is the
    seconds of one step in which `batch` sequences of mean cached context `ctx` each verify `q` tokens.

    `times(batch, q_max, ctx)` gives the step for q = 1 .. q_max at once (a draft-budget rule prices every
    budget at every event); a backend with a faster batched form overrides it, with the same floats."""

    def __init__(self, fn: Callable[[int, int, float], float]):
        self._fn = fn

    @classmethod
    def of(cls, profile: StepProfile | Callable[[int, int, float], float]) -> StepProfile:
        """`profile` as a StepProfile (a plain function is wrapped)."""
        return profile if isinstance(profile, StepProfile) else cls(profile)

    def __call__(self, batch: int, q: int, ctx: float) -> float:
        return self._fn(batch, q, ctx)

    def times(self, batch: int, q_max: int, ctx: float) -> list[float]:
        return [self(batch, q, ctx) for q in range(1, q_max + 1)]


def traits_of(policy) -> PolicyTraits:
    """A policy's declared traits: the one place the optional contract is read."""
    traits = getattr(policy, "traits", NO_TRAITS)
    if not isinstance(traits, PolicyTraits):
        raise TypeError(f"policy {getattr(policy, 'name', policy)!r}: traits must be a PolicyTraits, not {traits!r}")
    return traits
