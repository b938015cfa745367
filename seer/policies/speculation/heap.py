"""The compiled suffix index's storage, under `compiled.CompiledSuffixIndex`: one int64 heap cut into the regions
`kernels.views` describes, grown by moving everything to a larger heap when a kernel reports what is short, and the
conversions that hand Python values to the kernels.

A command crosses to a kernel as packed bytes (`pack`), which `kernels.draft_kernel` views in place: for the short
commands of a rollout (one step's appends and a context) this costs a third of converting a list to an array.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from seer.policies.speculation import kernels as kern

TAIL_WORDS = 7  # words after a command's (row, count) pairs
APPLY_ONLY = (0, 0, 1, 1, 1)  # a command's max_depth .. cap when it only applies appends (max_depth 0: no draft)
UNLIMITED = 1 << 62
PACKERS: dict[int, Callable[..., bytes]] = {}  # struct packers by command length, `pack` fills it
_BAD = "token ids must be integers from 0 to 2**63 - 2 ({}); buffered appends dropped"


def ints(tokens) -> list:
    """Tokens as a list (of ints, numpy integers converted)."""
    if type(tokens) is list:
        return tokens
    return tokens.tolist() if isinstance(tokens, np.ndarray) else list(tokens)


def as_array(cmd: list) -> np.ndarray:
    """`cmd` as an int64 array (ValueError for what is no int64)."""
    try:
        return np.array(cmd, dtype=np.int64)
    except (OverflowError, TypeError, ValueError) as e:
        raise ValueError(_BAD.format(e)) from None


def pack(cmd: list) -> bytes:
    """`cmd` as native int64 words (ValueError for what is no int64)."""
    n = len(cmd)
    packer = PACKERS.get(n)
    if packer is None:
        packer = struct.Struct(f"{n}q").pack
        if n <= 256:  # the short commands of a rollout's steps; long ones are rare flushes
            PACKERS[n] = packer
    try:
        return packer(*cmd)
    except struct.error as e:
        raise ValueError(_BAD.format(e)) from None


def resolved(dispatcher: Callable, *example) -> Callable:
    """The machine code `dispatcher` (a numba function) runs for arguments of `example`'s types, to be called
    directly: a call then skips resolving every argument's type (about 0.3 of a draft's 1.2 µs call). Only for a
    call site whose argument types never change, since the compiled function does not check them. Loads from the
    disk cache or compiles, as a first call would; without numba's dispatcher (JIT disabled) `dispatcher` itself."""
    compile_for = getattr(dispatcher, "compile", None)
    if compile_for is None:
        return dispatcher
    return compile_for(tuple(dispatcher.typeof_pyval(a) for a in example))


def occurrence_cap(max_occurrences: int | None) -> int:
    cap = max_occurrences or UNLIMITED  # None or 0: all, as in the reference
    if cap < 0:
        raise ValueError("max_occurrences must be None or >= 0")
    return cap


def heap_size(mm: int, rows: int, tcap: int, gcap: int, bcap: int, wcap: int) -> int:
    """Words of a heap with these region sizes (the layout `kernels.views` cuts)."""
    return kern.HDR + rows * (kern.TAIL + mm) + 2 * tcap + gcap * (mm + 2) + bcap + 8 * wcap


def pow2(n: int) -> int:
    return 1 << max(6, int(n - 1).bit_length())


class HeapStore:
    """The heap and its regions (`_buf`, `_slots`, `_table`, `_ent`, `_meta`, `_work`), with growth. A subclass sets
    `max_match` and `_slot` (sequence id -> row) and calls `_set(_layout(...))`."""

    max_match: int
    _slot: dict[int, int]

    def _layout(self, rows: int, tcap: int, gcap: int, bcap: int, wcap: int) -> np.ndarray:
        """An empty heap with these region sizes (see `kernels`)."""
        heap = np.zeros(heap_size(self.max_match, rows, tcap, gcap, bcap, wcap), np.int64)
        heap[: kern.H_META] = self.max_match, rows, tcap, gcap, bcap, wcap
        _, slots, table, _, _, _ = kern.views(heap)
        slots[:, kern.VIS] = kern.BIG
        table[:, 1] = -1
        return heap

    def _set(self, heap: np.ndarray) -> None:
        self._heap = heap
        self._buf, self._slots, self._table, self._ent, self._meta, self._work = kern.views(heap)
        self._probs = self._work[kern.W_PROB].view(np.float64)
        self._wide = self._work.shape[1]  # room for a draft's tokens, read on every draft

    def _regrow(self, rows: int = 0, tcap: int = 0, gcap: int = 0, buf: np.ndarray | None = None, wcap: int = 0):
        """Move to a heap with larger regions (0: same size; `buf`: a new packed token buffer, its segment
        starts already in `_slots`), copying what the regions hold."""
        h = self._heap
        heap = self._layout(
            max(rows, h[kern.H_ROWS]), max(tcap, h[kern.H_TCAP]), max(gcap, h[kern.H_GCAP]),
            h[kern.H_BCAP] if buf is None else buf.shape[0], max(wcap, h[kern.H_WCAP]),
        )  # fmt: skip
        nbuf, slots, table, ent, meta, _ = kern.views(heap)
        slots[: self._slots.shape[0]] = self._slots
        meta[:] = self._meta
        ent[: meta[kern.NTOK]] = self._ent[: meta[kern.NTOK]]
        if table.shape[0] == self._table.shape[0]:
            table[:] = self._table
        else:
            kern.rehash_kernel(self._table, table)
        nbuf[: meta[kern.USED]] = self._buf[: meta[kern.USED]] if buf is None else buf[: meta[kern.USED]]
        self._set(heap)

    def _room(self, n: int) -> np.ndarray:
        """The work rows, with room for n output tokens."""
        if self._work.shape[1] < n:
            self._regrow(wcap=pow2(n))
        return self._work

    def _apply(self, raw: bytes, n_seg: int, done: int, need: int) -> None:
        """Apply the appends of the command `raw` from number `done` on, which stopped for want of `need`: grow, then
        go on with the rest in one call, until all are in."""
        cmd = memoryview(raw).cast("q")  # Python ints: numpy's reductions cost more on so few
        seg = len(cmd) - TAIL_WORDS - 2 * n_seg
        pairs = cmd[seg : seg + 2 * n_seg]
        at, end = sum(pairs[1 : 2 * done : 2]), sum(pairs[1::2])  # the append tokens: cmd[:end]
        while need:
            if need == kern.BAD_TOKEN:
                raise ValueError("token ids must be integers from 0 to 2**63 - 2")
            self._grow(need, pairs[2 * done], pairs[2 * done + 1])
            rest = cmd[at:end].tobytes() + pairs[2 * done :].tobytes() + pack([*APPLY_ONLY, n_seg - done, 0])
            applied, need = kern.draft_kernel(self._heap, rest, 0.0)[:2]
            at += sum(pairs[2 * done + 1 : 2 * (done + applied) : 2])
            done += applied

    def _grow(self, need: int, s: int, k: int) -> None:
        """Make room for appending k tokens to row s (what the kernel reported short)."""
        meta, grow = self._meta, {}
        if need & kern.NEED_ENT:
            grow["gcap"] = max(2 * self._ent.shape[0], meta[kern.NTOK] + k)
        if need & kern.NEED_TABLE:
            grow["tcap"] = pow2(4 * (meta[kern.NKEYS] + k * self.max_match))
        if need & kern.NEED_BUF:  # pack the segments into a larger buffer, leaving room for this one
            rows, slots = len(self._slot), self._slots
            cap_s = max(2 * int(slots[s, kern.CAP]), int(slots[s, kern.LEN]) + k, 16)
            words = int(slots[:rows, kern.CAP].sum()) - int(slots[s, kern.CAP]) + cap_s
            buf = np.zeros(max(2 * self._buf.shape[0], 2 * words), np.int64)
            meta[kern.USED], grow["buf"] = kern.pack_kernel(self._buf, buf, slots, rows, s, cap_s), buf
        self._regrow(**grow)
