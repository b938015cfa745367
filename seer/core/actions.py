"""Actions: what a policy asks the driver to do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dispatch:
    """Run request `request_id` on `instance` for at most `max_new_tokens` new tokens.

    The request must be WAITING. `priority`: lower runs first (vLLM convention).
    """

    request_id: int
    instance: int
    max_new_tokens: int
    priority: int = 0


@dataclass(frozen=True)
class Abort:
    """Stop request `request_id` wherever it runs; it becomes ABORTED."""

    request_id: int


@dataclass(frozen=True)
class SetSpeculation:
    """Draft-token budgets on `instance`: `budgets[request_id]` for the requests named, `default` for every
    other request there (0 turns speculation off). Holds until the next SetSpeculation for the instance."""

    instance: int
    budgets: Mapping[int, int] = field(default_factory=dict)
    default: int = 0


Action = Dispatch | Abort | SetSpeculation
