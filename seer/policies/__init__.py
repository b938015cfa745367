"""Scheduling policies, written once against the contract in `seer.core` (no backend imports).

`make_policy(name, **params)` builds one by name; `POLICIES` lists them with a one-line description.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from seer.core import Policy
from seer.errors import SeerInputError
from seer.policies.baselines import LeastLoadedPolicy, VerlPolicy
from seer.policies.divided import ContextPolicy, DividedPolicy, OraclePolicy
from seer.policies.partial import PartialRolloutPolicy
from seer.policies.speculation.policy import SeerPolicy
from seer.policies.streamrl import StreamRLOraclePolicy

POLICIES: dict[str, tuple[Callable[..., Policy], str]] = {
    "verl": (VerlPolicy, "veRL baseline: whole groups round-robin over instances at the start, vLLM batching inside"),
    "least-loaded": (LeastLoadedPolicy, "request-level dispatch to the instance with most free KV, no chunking"),
    "divided": (DividedPolicy, "divided rollout: chunks of chunk_size tokens, placed only where worst-case KV fits"),
    "context": (ContextPolicy, "divided + context-aware scheduling (Seer Alg. 2): probes first, then longest estimate"),
    "oracle": (OraclePolicy, "divided + longest-first with TRUE lengths (upper reference)"),
    "partial": (PartialRolloutPolicy, "APRIL partial rollout: over-issue x2, stop at the target groups, carry the rest"),
    "streamrl-oracle": (StreamRLOraclePolicy, "atomic groups, true-length buckets, longest-first (paper's StreamRL-Oracle)"),
    "seer": (SeerPolicy, "context + adaptive grouped speculative decoding (group suffix drafter, MBA budgets)"),
}


def parse_policy_spec(text: str) -> tuple[str, dict]:
    """'seer:scope=own:gamma=4' -> ('seer', {'scope': 'own', 'gamma': 4}); values become int, float or str."""
    name, *pairs = text.strip().split(":")
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SeerInputError(f"policy {text!r}: expected NAME:KEY=VALUE[:KEY=VALUE...], got {pair!r}")
        for cast in (int, float):
            try:
                params[key.replace("-", "_")] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[key.replace("-", "_")] = value
    return name, params


def make_policy(name: str, lenient: bool = False, **params) -> Policy:
    """A fresh policy object by registry name. With `lenient`, parameters it does not take are dropped
    (so one set of CLI options can serve a list of policies)."""
    name, own = parse_policy_spec(name)
    if name not in POLICIES:
        raise SeerInputError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    params = {k: v for k, v in params.items() if v is not None}
    if lenient:
        accepted = inspect.signature(POLICIES[name][0]).parameters
        params = {k: v for k, v in params.items() if k in accepted}
    params.update(own)
    try:
        return POLICIES[name][0](**params)
    except (TypeError, ValueError) as exc:
        raise SeerInputError(f"policy {name}: {exc}")


__all__ = ["POLICIES", "make_policy", "parse_policy_spec"]
