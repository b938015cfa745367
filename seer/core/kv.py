"""KV arithmetic shared by policies and engines: one definition of a chunk's worst-case reservation.

A dispatcher that promises "no preemption" keeps, per instance, the sum of its chunks' worst cases within
the KV capacity; the engines report the same sum as `InstanceView.kv_reserved_tokens`. Policy and engines
must agree on it to the token, so they all call `worst_case_kv`.
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
