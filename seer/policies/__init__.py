"""Scheduling policies, written once against the contract in `seer.core` (no backend imports).

`make_policy(name, **params)` builds one by name; `POLICIES` lists them with a one-line description.
"""

from __future__ import annotations

from collections.abc import Callable

from seer.core import Policy
from seer.errors import SeerInputError
from seer.policies.baselines import LeastLoadedPolicy, VerlPolicy

POLICIES: dict[str, tuple[Callable[..., Policy], str]] = {
    "verl": (VerlPolicy, "veRL baseline: whole groups round-robin over instances at the start, vLLM batching inside"),
    "least-loaded": (LeastLoadedPolicy, "request-level dispatch to the instance with most free KV, no chunking"),
}


def make_policy(name: str, **params) -> Policy:
    """A fresh policy object by registry name."""
    if name not in POLICIES:
        raise SeerInputError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    try:
        return POLICIES[name][0](**params)
    except TypeError as exc:
        raise SeerInputError(f"policy {name}: {exc}")


__all__ = ["POLICIES", "make_policy"]
