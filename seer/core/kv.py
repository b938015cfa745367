"""KV arithmetic shared by policies and engines: one definition of a chunk's worst-case reservation.

A dispatcher that promises "no preemption" keeps, per instance, the sum of its chunks' worst cases within
the KV capacity; the engines report the same sum as `InstanceView.kv_reserved_tokens` (`Reservation`, which
counts the prompt blocks a group's chunks share under prefix caching once). Policy and engines must agree on
a chunk's worst case to the token, so they all call `worst_case_kv`.
"""

from __future__ import annotations


def ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for integers (b > 0)."""
    return -(-int(a) // int(b))


def round_up(tokens: int, block: int) -> int:
    """`tokens` rounded up to whole blocks of `block` tokens."""
    return ceil_div(tokens, block) * int(block)


def worst_case_kv(context_len: int, budget: int, block_size: int) -> int:
    """KV tokens a chunk may hold when it ends: its context plus its whole budget, in whole blocks."""
    block = int(block_size)  # `round_up` written out: dispatchers call this several times per chunk
    return -(-(int(context_len) + int(budget)) // block) * block


def shared_prompt_kv(prompt_len: int, block_size: int) -> int:
    """KV tokens of a prompt's full blocks, which prefix caching lets the samples of one group on an engine hold
    once (the last prompt token is always computed, so a prompt of exactly k blocks shares k - 1)."""
    block = int(block_size)
    return (int(prompt_len) - 1) // block * block if prompt_len > 0 else 0


class Reservation:
    """The KV an engine has promised its chunks (`InstanceView.kv_reserved_tokens`): each chunk's worst case, where
    `shared` tokens of it (its group's full prompt blocks, under prefix caching) count once for all the group's
    chunks on the engine, because the engine holds them once. A dispatcher that charges each chunk its whole
    worst case stays within it.

    When a group's chunks bring different prompts (a trace whose samples of one prompt id differ in prompt
    length), the prompt counts at the least that any of the group's chunks has brought to this engine: the
    engine never holds less of it shared than that, and each chunk leaves exactly what its arrival added."""

    def __init__(self) -> None:
        self.tokens = 0
        self._groups: dict[int, tuple[int, int]] = {}  # group -> (its chunks here, the sum of their worst cases)
        self._least: dict[int, int] = {}  # group -> the least shared prompt any of its chunks brought here

    def change(self, worst: int, group: int, shared: int, sign: int) -> None:
        """A chunk with this worst case arrives (sign 1) or leaves (-1); `shared` of it is its group's prompt."""
        if group < 0:
            self.tokens += sign * worst
            return
        n, total = self._groups.get(group, (0, 0))
        was = self._least.get(group, shared)
        least = min(was, shared)
        before = total - (n - 1) * was if n else 0
        n, total = n + sign, total + sign * worst
        self.tokens += (total - (n - 1) * least if n else 0) - before
        self._least[group] = least
        if n:
            self._groups[group] = (n, total)
        else:
            del self._groups[group]
