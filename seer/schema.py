"""Typed input records: a dataclass's field annotations are its schema.

`check_types` refuses a field value of the wrong type (TOML and JSON are typed, so nothing is coerced, except an
integer where a number is expected), naming the field. Ranges are each record's own `problems()`. Callers add
where the record came from (a file, a flag) to the message.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

# the largest integer a typed input may hold: far beyond any real count, size or seed, every integer up to it is a
# float exactly, and it fits the int64 of numpy, numba and Parquet (a larger one fails deep inside them)
INT_LIMIT = 2**53


def int_problem(name: str, value) -> str | None:
    """A phrase when an integer is out of the range inputs may hold (None when it is in range or no integer)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT_LIMIT:
        return f"{name} must be between -2**53 and 2**53, not {show(value)}"
    return None


def show(value) -> str:
    """`repr(value)` for a message: a long one cut, a huge integer by its digits (Python refuses to print one of over
    4,300)."""
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) <= 10**20:
        text = repr(value)
        return text if len(text) <= 80 else f"{text[:60]}... ({len(text):,} characters)"
    size = abs(value)
    digits = f"{len(str(size)):,}-digit" if size.bit_length() < 10_000 else "over 3,000-digit"
    return f"a {'negative ' if value < 0 else ''}{digits} integer"


def type_name(tp) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    name = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(base, str(base))
    return name + (" (or absent)" if type(None) in typing.get_args(tp) else "")


def _matches(value, tp) -> bool:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return any(_matches(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # other annotations are not checked here


def check_types(record) -> list[str]:
    """Problems with the types of a dataclass's fields (integers in float fields are converted to float)."""
    hints = typing.get_type_hints(type(record))
    problems = []
    for f in dataclasses.fields(record):
        value, tp = getattr(record, f.name), hints[f.name]
        if not _matches(value, tp):
            problems.append(f"{f.name} must be {type_name(tp)}, not {show(value)}")
        elif too_big := int_problem(f.name, value):
            problems.append(too_big)
        elif tp is float and isinstance(value, int):
            object.__setattr__(record, f.name, float(value))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{f.name} must be finite, not {value!r}")
    return problems


MAX_ITERATIONS = 100_000  # RL iterations of one run (each a whole rollout: more would run for days)
