"""Typed, frozen policy parameters, and the small base class every registered policy builds on.

Each policy's parameters are one frozen dataclass (`PolicyConfig` subclass) whose fields carry their help
text, and whose types are enforced on construction: values from a command line or a TOML file are coerced
where the meaning is unambiguous ("4" for an int, 4 for a float) and refused otherwise. Ranges are checked
by each config's `problems()`. Unknown keys never reach a config: `seer.policies.make_policy` refuses them,
naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field

from seer.core import PolicyTraits
from seer.schema import int_problem, show

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def param(default, help: str, choices: tuple | None = None):
    """A config field with its help text (and, for strings, the allowed values)."""
    return field(default=default, metadata={"help": help, "choices": choices})


def _type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    name = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(base, str(base))
    return name + (" or none" if type(None) in typing.get_args(tp) else "")


def _coerce(tp, value):
    """`value` as type `tp` (int, float, str, bool, or X | None); raises ValueError when it is not one."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        tp = next(a for a in args if a is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ValueError
    if tp in (int, float):
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            return tp(value)
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int if tp is int else (int, float)):
            return tp(value)
        raise ValueError
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError
    raise TypeError(f"unsupported parameter type {tp!r}")


@dataclass(frozen=True)
class PolicyConfig:
    """Base of every policy's parameters: typed fields with help text, coerced and range-checked on creation."""

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                coerced = _coerce(hints[f.name], value)
            except (ValueError, TypeError, StopIteration):
                raise ValueError(f"{f.name} must be {_type_name(hints[f.name])}, not {show(value)}") from None
            if isinstance(coerced, float) and not math.isfinite(coerced):
                raise ValueError(f"{f.name} must be a finite number, not {show(value)}")
            choices = f.metadata.get("choices")
            if choices and coerced not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(map(str, choices))}, not {coerced!r}")
            object.__setattr__(self, f.name, coerced)
        # a config's own range says more; past it, a value no int64 holds would fail deep in the simulation
        problems = self.problems() or [
            p for f in dataclasses.fields(self) if (p := int_problem(f.name, getattr(self, f.name)))
        ]
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Range violations, one phrase each (subclasses extend)."""
        return []

    def ignored(self, given) -> dict[str, str]:
        """Parameters among `given` (those set explicitly, not left at their defaults) that this configuration
        never reads, each with a phrase saying why: a value that would change nothing is refused rather than run
        as if it had not been given (subclasses extend)."""
        return {}

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def describe(cls) -> list[dict]:
        """Every parameter: name, type, default, help and choices (for `seer policies`)."""
        hints = typing.get_type_hints(cls)
        return [
            {
                "name": f.name,
                "type": _type_name(hints[f.name]),
                "default": _default(f),
                "help": f.metadata.get("help", ""),
                "choices": f.metadata.get("choices"),
            }
            for f in dataclasses.fields(cls)
        ]


def _default(f: dataclasses.Field):
    """A field's default as `seer policies` shows it (a field of one's own config may have none, or a factory)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "(required)"


class ConfiguredPolicy:
    """A registered policy: `name`, a `Config` class, `self.cfg` (an instance of it), `config()` and `traits`.

    Build one from keyword parameters (`ContextPolicy(chunk_size=512)`) or from a config object.
    """

    name = "policy"
    Config: type[PolicyConfig] = PolicyConfig

    def __init__(self, config: PolicyConfig | None = None, **params):
        if config is not None and params:
            raise TypeError("give a config object or keyword parameters, not both")
        unknown = set(params) - set(self.Config.keys())
        if unknown:
            raise TypeError(
                f"{self.name}: unexpected keyword argument(s) {', '.join(sorted(unknown))}; "
                f"valid: {', '.join(self.Config.keys())}"
            )
        self.cfg = config if config is not None else self.Config(**params)
        ignored = self.cfg.ignored(params) if config is None else {}
        if ignored:
            raise ValueError(f"{self.name}: {'; '.join(ignored.values())}")
        if not isinstance(self.cfg, self.Config):
            raise TypeError(f"{self.name} needs a {self.Config.__name__}, not {type(self.cfg).__name__}")

    @property
    def traits(self) -> PolicyTraits:
        return PolicyTraits()

    def check_groups(self, groups: int) -> None:
        """Refuse (SeerInputError) a rollout of `groups` groups that this configuration cannot serve: called as the
        rollout starts, and before any run by commands that run several, so none runs in vain."""

    def config(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self.cfg)}
