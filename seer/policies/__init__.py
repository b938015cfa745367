"""Scheduling policies, written once against the contract in `seer.core` (no backend imports).

`make_policy("NAME:KEY=VALUE:...", **params)` builds one by registry name with typed, checked parameters;
`POLICIES` lists them with a one-line description, and each class's `Config` describes its parameters. A dotted
NAME, `module.Class`, imports a `ConfiguredPolicy` subclass of your own from the Python path, so every command
that takes a policy (simulate, compare, sweep, run) runs it too.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from seer.core import Policy, traits_of
from seer.errors import SeerInputError
from seer.policies.baselines import LeastLoadedPolicy, VerlLBPolicy, VerlPolicy
from seer.policies.config import ConfiguredPolicy, PolicyConfig
from seer.policies.context import ContextPolicy
from seer.policies.divided import DividedPolicy, OraclePolicy
from seer.policies.partial import PartialRolloutPolicy
from seer.policies.speculation.policy import SeerPolicy
from seer.policies.streamrl import StreamRLOraclePolicy

POLICIES: dict[str, tuple[type[ConfiguredPolicy], str]] = {
    "verl": (VerlPolicy, "veRL baseline: whole groups round-robin over instances at the start, vLLM batching inside"),
    "verl-lb": (VerlLBPolicy, "veRL's current router: each sample to the replica with the fewest in-flight requests"),
    "least-loaded": (LeastLoadedPolicy, "request-level dispatch to the instance with most free KV, no chunking"),
    "divided": (DividedPolicy, "divided rollout: chunks of chunk_size tokens, placed only where worst-case KV fits"),
    "context": (ContextPolicy, "divided + context-aware scheduling (Seer Alg. 2): probes first, then longest estimate"),
    "oracle": (OraclePolicy, "divided + longest-first with TRUE lengths (upper reference)"),
    "partial": (
        PartialRolloutPolicy,
        "APRIL partial rollout: over-issue x2, stop at the target groups, carry the rest",
    ),
    "streamrl-oracle": (
        StreamRLOraclePolicy,
        "atomic groups, true-length buckets, longest-first (paper's StreamRL-Oracle)",
    ),
    "seer": (SeerPolicy, "context + adaptive grouped speculative decoding (group suffix drafter, MBA budgets)"),
}


def _value(text: str):
    try:
        return int(text)
    except ValueError:
        if text.strip().lstrip("+-").isdigit():  # too many digits for int(): as text, which a config refuses
            return text
    try:
        return float(text)
    except ValueError:
        return text


def parse_policy_spec(text: str) -> tuple[str, dict]:
    """'seer:scope=own:gamma=4' -> ('seer', {'scope': 'own', 'gamma': 4}); values become int, float or str
    (the policy's config then coerces or refuses them by type)."""
    name, *pairs = str(text).strip().split(":")
    if not name:
        raise SeerInputError(f"policy {text!r}: empty policy name")
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SeerInputError(f"policy {text!r}: expected NAME:KEY=VALUE[:KEY=VALUE...], got {pair!r}")
        key = key.replace("-", "_")
        if key in params:
            raise SeerInputError(f"policy {text!r}: {key} is given twice")
        params[key] = _value(value)
    return name, params


def policy_class(name: str) -> type[ConfiguredPolicy]:
    """A registered policy's class, or `module.Class` imported from the Python path (a policy of your own)."""
    if name in POLICIES:
        return POLICIES[name][0]
    if "." in name:
        return _imported(name)
    raise SeerInputError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}, or module.Class of your own")


def _imported(name: str) -> type[ConfiguredPolicy]:
    """A policy class named `module.Class`: registered names have no dots, so a dotted one is a class to import."""
    module, _, attr = name.rpartition(".")
    try:
        mod = importlib.import_module(module)
    except (Exception, SystemExit) as exc:  # a missing module, a syntax error, an error or sys.exit() as it runs
        raise SeerInputError(f"policy {name!r}: cannot import {module!r} ({type(exc).__name__}: {exc})") from None
    cls = getattr(mod, attr, None)
    if cls is None:
        raise SeerInputError(f"policy {name!r}: module {module} has no {attr}")
    if not (isinstance(cls, type) and issubclass(cls, ConfiguredPolicy)) or not callable(
        getattr(cls, "on_event", None)
    ):
        raise SeerInputError(
            f"policy {name!r}: not a seer.policies.config.ConfiguredPolicy subclass (one with a name, on_event "
            "and a Config of typed parameters)"
        )
    return cls


def policy_keys(name: str) -> tuple[str, ...]:
    """The parameter names a registered policy takes."""
    return policy_class(name).Config.keys()


def check_params(name: str, params: Mapping) -> None:
    """Refuse parameters the policy does not take, in one line naming them and the valid ones."""
    keys = policy_keys(name)
    unknown = sorted(set(params) - set(keys))
    if unknown:
        what = "parameter" if len(unknown) == 1 else "parameters"
        raise SeerInputError(
            f"policy {name}: unknown {what} {', '.join(map(repr, unknown))}; valid: {', '.join(keys) or '(none)'}"
        )


def policy_config(spec: str, shared: Mapping | None = None, **params) -> tuple[str, PolicyConfig]:
    """(name, typed config) for a spec. `params` and the spec's own KEY=VALUEs must be parameters of the
    policy; `shared` values (one set of command-line options serving a list of policies) apply only to the
    policies that take them. Precedence: spec > params > shared. None values mean "not given"."""
    name, own = parse_policy_spec(spec)
    cls = policy_class(name)
    keys = set(cls.Config.keys())
    given = {k: v for k, v in params.items() if v is not None}
    check_params(name, given)
    check_params(name, own)
    if shared:  # a key no policy takes is a typo, which the command line's flags cannot make (from Python it can)
        known = keys.union(*(c.Config.keys() for c, _ in POLICIES.values()))
        unknown = sorted(k for k in shared if k not in known)
        if unknown:
            raise SeerInputError(
                f"shared parameter(s) {', '.join(map(repr, unknown))} of no policy; `seer policies NAME` lists each "
                "policy's"
            )
    merged = {k: v for k, v in (shared or {}).items() if v is not None and k in keys}
    merged.update(given)
    merged.update(own)
    try:
        config = cls.Config(**merged)
    except (TypeError, ValueError) as exc:
        raise SeerInputError(f"policy {spec}: {exc}") from None
    ignored = config.ignored(set(given) | set(own))  # shared values apply only where they are read
    if ignored:
        raise SeerInputError(f"policy {spec}: {'; '.join(ignored.values())}")
    return name, config


def unused_shared(specs: list[str], shared: Mapping | None) -> list[str]:
    """The shared parameters (given: not None) that no listed spec's run would read: one no listed policy takes,
    one every taker sets itself, or one its configuration ignores (gamma without speculation=fixed)."""
    entries = [(parse_policy_spec(s)[1], policy_config(s, shared)[1]) for s in specs]
    return [k for k, v in (shared or {}).items() if v is not None and not any(_uses(k, o, c) for o, c in entries)]


def _uses(key: str, own: dict, cfg: PolicyConfig) -> bool:
    """Whether an entry's run depends on the shared value of `key` (what its configuration ignores, it does not)."""
    if key in own or key not in type(cfg).keys():  # the entry's own value wins over the shared one
        return False
    return key not in cfg.ignored({key})


def make_policy(spec: str, shared: Mapping | None = None, **params) -> Policy:
    """A fresh policy object from a spec such as 'context:chunk_size=512' (see `policy_config`)."""
    name, config = policy_config(spec, shared, **params)
    policy = policy_class(name)(config)
    try:  # a class of one's own may declare anything: refused here, not when a run first reads it
        traits_of(policy)
    except TypeError as exc:
        raise SeerInputError(str(exc)) from None
    return policy


__all__ = [
    "POLICIES",
    "check_params",
    "make_policy",
    "parse_policy_spec",
    "policy_class",
    "policy_config",
    "policy_keys",
    "unused_shared",
]
