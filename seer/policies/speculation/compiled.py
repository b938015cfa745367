"""The suffix index compiled: `suffix.SuffixIndex`'s m-gram index over flat numpy arrays, updated and searched by
numba kernels (`kernels`). Same drafts, match lengths and probabilities as the reference (property-tested), several
times faster; `make_index` picks either.

This class owns the arrays and grows them (a kernel reports what is short and changes nothing, then runs again);
it keeps the reference's Python-side bookkeeping (sequence order, removed sequences, compaction), so the order of
occurrences, and with it every draft, is the reference's. Kernels are cached on disk (`cache=True`): the first
call in a fresh environment compiles for a while, later processes load the machine code.

Appends are buffered as Python ints and applied by the next lookup's kernel call, in order (a lookup sees exactly
what the reference would have indexed): a rollout alternates one draft and one append per request step, and a
call into compiled code costs more than the work it does, so this halves the calls and the list-to-array
conversions. A draft is one kernel call with one int64 "command" array: the buffered tokens, the context, a
(sequence row, token count) pair per buffered append, then max_depth, max_tokens, topk, min_match, the occurrence
cap, the number of appends and the context length (arguments cost more to pass one by one than to pack).

Departures from the reference, stated: tokens are int64 (ids of 2**63 - 1 and beyond, or not integers, are refused
as negative ids are in both; appends are buffered, so the refusal comes at the next lookup, which drops what was
buffered), `min_match` must be >= 1 (the reference indexes its hash list from the end below 1), and `match` names
an occurrence's sequence by its id instead of handing out the live token list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from seer.policies.speculation import kernels as kern
from seer.policies.speculation.row_kernels import draft_batch_kernel
from seer.policies.speculation.suffix import _POW, EMPTY, Draft, SuffixIndex, linear_parents

_UNLIMITED = 1 << 62
_TAIL = 7  # words after a command's (row, count) pairs
_FLUSH_AT = 1 << 16  # buffered tokens applied without waiting for a lookup
_new = object.__new__


def _draft(tokens: tuple, parents: tuple, probs: tuple, match_len: int) -> Draft:
    """Draft(tokens, parents, probs, match_len) without the frozen dataclass's per-field __setattr__ calls (a
    third of the cost of a small draft); the fields are the same, so equality and hashing are too."""
    d = _new(Draft)
    d.__dict__.update(tokens=tokens, parents=parents, probs=probs, match_len=match_len)
    return d


def _ints(tokens) -> list:
    """Tokens as a list (of ints, numpy integers converted)."""
    if type(tokens) is list:
        return tokens
    return tokens.tolist() if isinstance(tokens, np.ndarray) else list(tokens)


def _array(cmd: list) -> np.ndarray:
    try:
        return np.array(cmd, dtype=np.int64)
    except (OverflowError, TypeError, ValueError) as e:
        raise ValueError(f"token ids must be integers from 0 to 2**63 - 2 ({e}); buffered appends dropped") from None


def _cap(max_occurrences: int | None) -> int:
    cap = max_occurrences or _UNLIMITED  # None or 0: all, as in the reference
    if cap < 0:
        raise ValueError("max_occurrences must be None or >= 0")
    return cap


def _heap_size(mm: int, rows: int, tcap: int, gcap: int, bcap: int, wcap: int) -> int:
    """Words of a heap with these region sizes (the layout `kernels.views` cuts)."""
    return kern.HDR + rows * (kern.TAIL + mm) + 2 * tcap + gcap * (mm + 2) + bcap + 8 * wcap


def _pow2(n: int) -> int:
    return 1 << max(6, int(n - 1).bit_length())


class CompiledSuffixIndex:
    """`SuffixIndex` with its state in flat arrays and its work in compiled kernels; same public behaviour.

    `extend(sid, tokens)`, `remove(sid)`, `compact()`, `draft(...)`, `draft_many(...)` (one kernel call for
    many contexts), `match(...)`, `sequence(sid)`, `len()`.
    """

    def __init__(self, max_match: int = 8):
        if not 1 <= max_match < len(_POW):
            raise ValueError(f"max_match must be in [1, {len(_POW) - 1}]")
        self.max_match = max_match
        self.dead: set[int] = set()
        self._reset(0, 0)

    def _reset(self, n_tokens: int, n_seqs: int) -> None:
        self._slot: dict[int, int] = {}  # sequence id -> row of `_slots`, in the reference's `seqs` order
        self._pend: list[int] = []  # buffered append tokens ...
        self._segs: list[int] = []  # ... and (row, count) per buffered append
        n = max(256, n_tokens)
        self._set(self._layout(max(8, n_seqs), _pow2(4 * n), n, 2 * n, _pow2(self.max_match)))  # work >= max_match

    def _layout(self, rows: int, tcap: int, gcap: int, bcap: int, wcap: int) -> np.ndarray:
        """An empty heap with these region sizes (see `kernels`)."""
        heap = np.zeros(_heap_size(self.max_match, rows, tcap, gcap, bcap, wcap), np.int64)
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
            self._regrow(wcap=_pow2(n))
        return self._work

    def ready(self, width: int) -> np.ndarray:
        """The heap, for a kernel that reads the index as it is now: buffered appends applied, room for `width`
        draft tokens in the work rows (`row_kernels.replay_kernel`)."""
        self._flush()
        self._room(width)
        return self._heap

    # ---- building ------------------------------------------------------------------------------

    def __len__(self) -> int:
        self._flush()
        return int(sum(self._slots[s, kern.LEN] for sid, s in self._slot.items() if sid not in self.dead))

    def sequence(self, sid: int) -> list[int]:
        """The tokens of sequence `sid` (a copy; [] when unknown)."""
        self._flush()
        s = self._slot.get(sid)
        if s is None:
            return []
        start = self._slots[s, kern.START]
        return self._buf[start : start + self._slots[s, kern.LEN]].tolist()

    def extend(self, sid: int, tokens: Iterable[int]) -> None:
        """Append `tokens` to sequence `sid` (a new sequence if unseen); applied by the next lookup."""
        s = self._slot.get(sid)
        if s is None:
            s = self._add(sid)
        toks = tokens if type(tokens) is list else _ints(tokens)
        if toks:
            self._pend += toks
            self._segs += (s, len(toks))
            if len(self._pend) > _FLUSH_AT:
                self._flush()

    def _add(self, sid: int) -> int:
        s = len(self._slot)
        if s == self._slots.shape[0]:
            self._regrow(rows=2 * s)
        self._slot[sid] = s
        return s

    def _command(self, context: list, tail: tuple) -> tuple[np.ndarray, int]:
        """The buffered appends, `context` and `tail` (max_depth .. cap) as one kernel command (see the module
        docstring); empties the buffer. Returns (command, number of appends)."""
        cmd, n_seg = self._pend, len(self._segs) // 2
        cmd += context
        cmd += self._segs
        cmd += tail
        cmd += (n_seg, len(context))
        self._pend, self._segs = [], []
        return _array(cmd), n_seg

    def _flush(self) -> None:
        if self._segs:
            cmd, n_seg = self._command([], (0, 0, 1, 1, 1))
            done, need, *_ = kern.draft_kernel(self._heap, cmd, 0.0)
            if need:
                self._apply(cmd, n_seg, done, need)

    def _apply(self, cmd: np.ndarray, n_seg: int, done: int, need: int) -> None:
        """Apply the appends of `cmd` from number `done` on, which stopped for want of `need`: grow, then go on with
        the rest in one call, until all are in."""
        seg = cmd.shape[0] - _TAIL - 2 * n_seg
        pairs = cmd[seg : seg + 2 * n_seg]
        at, end = int(pairs[1 : 2 * done : 2].sum()), int(pairs[1::2].sum())  # the append tokens: cmd[:end]
        while need:
            if need == kern.BAD_TOKEN:
                raise ValueError("token ids must be integers from 0 to 2**63 - 2")
            self._grow(need, int(pairs[2 * done]), int(pairs[2 * done + 1]))
            rest = np.concatenate([cmd[at:end], pairs[2 * done :], [0, 0, 1, 1, 1, n_seg - done, 0]])  # apply only
            applied, need = kern.draft_kernel(self._heap, rest, 0.0)[:2]
            at += int(pairs[2 * done + 1 : 2 * (done + applied) : 2].sum())
            done += applied

    def _grow(self, need: int, s: int, k: int) -> None:
        """Make room for appending k tokens to row s (what the kernel reported short)."""
        meta, grow = self._meta, {}
        if need & kern.NEED_ENT:
            grow["gcap"] = max(2 * self._ent.shape[0], meta[kern.NTOK] + k)
        if need & kern.NEED_TABLE:
            grow["tcap"] = _pow2(4 * (meta[kern.NKEYS] + k * self.max_match))
        if need & kern.NEED_BUF:  # pack the segments into a larger buffer, leaving room for this one
            rows, slots = len(self._slot), self._slots
            cap_s = max(2 * int(slots[s, kern.CAP]), int(slots[s, kern.LEN]) + k, 16)
            words = int(slots[:rows, kern.CAP].sum()) - int(slots[s, kern.CAP]) + cap_s
            buf = np.zeros(max(2 * self._buf.shape[0], 2 * words), np.int64)
            meta[kern.USED], grow["buf"] = kern.pack_kernel(self._buf, buf, slots, rows, s, cap_s), buf
        self._regrow(**grow)

    def remove(self, sid: int) -> None:
        """Forget a sequence (lazily: its entries are skipped and purged on the next compaction)."""
        s = self._slot.get(sid)
        if s is not None:
            self.dead.add(sid)
            self._slots[s, kern.DEAD] = 1
            if len(self.dead) * 2 > len(self._slot):
                self.compact()

    def compact(self) -> None:
        """Rebuild the index without removed sequences (in the same sequence order, as the reference does)."""
        live = [(sid, self.sequence(sid)) for sid in self._slot if sid not in self.dead]
        self.dead = set()
        self._reset(sum(len(t) for _, t in live), len(live))
        for sid, toks in live:
            self.extend(sid, toks)

    # ---- lookup --------------------------------------------------------------------------------

    def _visible(self, visible: Mapping[int, int]) -> list[int]:
        rows = []
        for sid, lim in visible.items():
            s = self._slot.get(sid)
            if s is not None:
                self._slots[s, kern.VIS] = max(-kern.BIG, min(int(lim), kern.BIG))
                rows.append(s)
        return rows

    def _hide(self, rows: list[int]) -> None:
        for s in rows:
            self._slots[s, kern.VIS] = kern.BIG

    def _tail(self, context) -> list:
        mm = self.max_match
        return _ints(context[-mm:] if len(context) > mm else context)

    def match(
        self,
        context: Sequence[int],
        visible: Mapping[int, int] | None = None,
        min_match: int = 1,
        max_occurrences: int | None = None,
    ) -> tuple[int, list[tuple[int, int, int]]]:
        """Longest suffix of `context` (length in [min_match, max_match]) that occurs with a visible
        continuation: (match length, [(sequence id, start of continuation, visible length)]), newest first."""
        if min_match < 1:
            raise ValueError("min_match must be >= 1")
        self._flush()
        ctx, cap = _array(self._tail(context)), _cap(max_occurrences)
        size, rows = min(cap, 64), self._visible(visible or {})
        try:
            while True:
                occ = np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int64)
                m, n = kern.match_kernel(
                    self._slots, self._table, self._ent, ctx, 0, ctx.shape[0], min_match, cap,
                    np.empty(self.max_match, np.int64), *occ,
                )  # fmt: skip
                if n < size or size >= cap:
                    break
                size = min(cap, 8 * size)
        finally:
            self._hide(rows)
        sid_of = list(self._slot)
        found = []
        for s, base, end in zip(*(a[:n].tolist() for a in occ)):
            start = int(self._slots[s, kern.START])
            found.append((sid_of[s], base - start, end - start))
        return m, found

    def draft(
        self,
        context: Sequence[int],
        max_depth: int,
        max_tokens: int | None = None,
        topk: int = 1,
        min_prob: float = 0.1,
        min_match: int = 1,
        visible: Mapping[int, int] | None = None,
        max_occurrences: int | None = 16,
    ) -> Draft:
        """Draft up to `max_depth` tokens deep (and `max_tokens` in total, default max_depth * topk); see
        `SuffixIndex.draft`."""
        if max_depth <= 0:
            return EMPTY
        if min_match < 1:
            raise ValueError("min_match must be >= 1")
        cap = max_occurrences or _UNLIMITED  # None or 0: all, as in the reference
        if cap < 0:
            raise ValueError("max_occurrences must be None or >= 0")
        if max_tokens is None:
            max_tokens = max_depth * topk
        if max_tokens > self._wide and max_depth * (topk if topk > 1 else 1) > self._wide:
            self._room(min(max_tokens, max_depth * max(topk, 1)))
        mm = self.max_match
        ctx = context[-mm:] if len(context) > mm else context
        if type(ctx) is not list:
            ctx = _ints(ctx)
        cmd, n_seg = self._command(ctx, (max_depth, max_tokens, topk, min_match, cap))
        rows = self._visible(visible) if visible else None
        try:
            done, need, m, n, toks, probs = kern.draft_kernel(self._heap, cmd, float(min_prob))
            if need:  # an append did not fit: grow, finish the appends, then draft with nothing buffered
                self._apply(cmd, n_seg, done, need)
                cmd = _array(ctx + [max_depth, max_tokens, topk, min_match, cap, 0, len(ctx)])
                _, _, m, n, toks, probs = kern.draft_kernel(self._heap, cmd, float(min_prob))
        finally:
            if rows:
                self._hide(rows)
        if not m:
            return EMPTY
        if n > 8:
            toks, probs = tuple(self._work[kern.W_TOK, :n].tolist()), tuple(self._probs[:n].tolist())
        d = _new(Draft)  # Draft(...) without the frozen dataclass's per-field __setattr__ (a third of the cost)
        d.__dict__.update(
            tokens=toks[:n],
            parents=linear_parents(n) if topk <= 1 else tuple(self._work[kern.W_PAR, :n].tolist()),
            probs=probs[:n],
            match_len=m,
        )
        return d

    def draft_many(
        self,
        contexts: Sequence[Sequence[int]],
        max_depths: Sequence[int],
        max_tokens: Sequence[int] | None = None,
        topk: int = 1,
        min_prob: float = 0.1,
        min_match: int = 1,
        visible: Mapping[int, int] | None = None,
        max_occurrences: int | None = 16,
    ) -> list[Draft]:
        """`draft` for many contexts (row r: contexts[r], max_depths[r], max_tokens[r]) in one kernel call."""
        if min_match < 1:
            raise ValueError("min_match must be >= 1")
        self._flush()
        if not len(contexts):
            return []
        mm, wide = self.max_match, max(topk, 1)
        if max_tokens is None:
            max_tokens = [int(d) * topk for d in max_depths]
        # rows of (context start, end, output offset, max_depth, max_tokens, n, m), flat: one conversion
        flat, spec, o = [], [], 0
        for context, d, t in zip(contexts, max_depths, max_tokens, strict=True):
            d, t, lo = int(d), int(t), len(flat)
            flat += context[-mm:] if type(context) is list else self._tail(context)
            spec += (lo, len(flat), o, d, t, 0, 0)
            if d > 0 and t > 0:
                o += min(t, d * wide)
        rows, work, vis = _array(spec).reshape(-1, 7), self._room(o), self._visible(visible or {})
        try:
            draft_batch_kernel(
                self._heap, _array(flat), rows, int(topk), float(min_prob), int(min_match), _cap(max_occurrences)
            )
        finally:
            self._hide(vis)
        toks, probs = work[kern.W_TOK, :o].tolist(), self._probs[:o].tolist()
        pars = work[kern.W_PAR, :o].tolist() if topk > 1 else None
        out = []
        for at, n, m in zip(rows[:, 2].tolist(), rows[:, 5].tolist(), rows[:, 6].tolist()):
            if not m:
                out.append(EMPTY)
                continue
            e = at + n
            parents = linear_parents(n) if pars is None else tuple(pars[at:e])
            out.append(_draft(tuple(toks[at:e]), parents, tuple(probs[at:e]), m))
        return out


def make_index(max_match: int = 8, compiled: bool = True) -> CompiledSuffixIndex | SuffixIndex:
    """A suffix index: the compiled one, or the pure-Python reference (`compiled=False`)."""
    return CompiledSuffixIndex(max_match) if compiled else SuffixIndex(max_match)
