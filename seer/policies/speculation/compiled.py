"""The suffix index compiled: `suffix.SuffixIndex`'s m-gram index over flat numpy arrays, updated and searched by
numba kernels (`kernels`). Same drafts, match lengths and probabilities as the reference (property-tested), several
times faster; `make_index` picks either.

The arrays live in one heap, grown by `heap.HeapStore` (a kernel reports what is short and changes nothing, then
runs again). The class keeps the reference's Python-side bookkeeping (sequence order, removed sequences,
compaction), so the order of occurrences, and with it every draft, is the reference's. Kernels are cached on disk
(`cache=True`): the first call in a fresh environment compiles for a while, later processes load the machine code.

Appends are buffered as Python ints and applied by the next lookup's kernel call, in order (a lookup sees exactly
what the reference would have indexed): a rollout alternates one draft and one append per request step, and a
call into compiled code costs more than the work it does, so this halves the calls and the list-to-array
conversions. A draft is one kernel call with one int64 "command" (packed bytes): the buffered tokens, the context, a
(sequence row, token count) pair per buffered append, then max_depth, max_tokens, topk, min_match, the occurrence
cap, the number of appends and the context length (arguments cost more to pass one by one than to pack).

Departures from the reference, stated: tokens are int64 (ids of 2**63 - 1 and beyond, or not integers, are refused
as negative ids are in both; appends are buffered, so the refusal comes at the next lookup, which drops what was
buffered), `min_match` must be >= 1 (the reference indexes its hash list from the end below 1), and `match` names
an occurrence's sequence by its id instead of handing out the live token list.
"""

from __future__ import annotations

import functools
import struct
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from seer.policies.speculation import kernels as kern
from seer.policies.speculation.heap import (
    APPLY_ONLY,
    PACKERS,
    HeapStore,
    as_array,
    ints,
    occurrence_cap,
    pack,
    pow2,
    resolved,
)
from seer.policies.speculation.row_kernels import draft_batch_kernel
from seer.policies.speculation.suffix import _POW, EMPTY, Draft, SuffixIndex, linear_parents

_FLUSH_AT = 1 << 16  # buffered tokens applied without waiting for a lookup
_DRAFTERS_KEPT = 8  # drafters cached per index, by their fixed arguments (a rollout uses one or two)
_new = object.__new__


def _draft(tokens: tuple, parents: tuple, probs: tuple, match_len: int) -> Draft:
    """Draft(tokens, parents, probs, match_len) without the frozen dataclass's per-field __setattr__ calls (a
    third of the cost of a small draft); the fields are the same, so equality and hashing are too."""
    d = _new(Draft)
    d.__dict__.update(tokens=tokens, parents=parents, probs=probs, match_len=match_len)
    return d


@functools.cache
def _draft_entry() -> Callable:
    """`kernels.draft_kernel` for the drafters' calls, resolved once: a heap (`HeapStore`'s int64 array), a packed
    command (bytes) and min_prob (a float), the types every call of `drafter`'s function passes."""
    return resolved(kern.draft_kernel, np.zeros(1, np.int64), pack([0]), 0.0)


class CompiledSuffixIndex(HeapStore):
    """`SuffixIndex` with its state in flat arrays and its work in compiled kernels; same public behaviour.

    `extend(sid, tokens)`, `remove(sid)`, `compact()`, `draft(...)`, `draft_many(...)` (one kernel call for
    many contexts), `match(...)`, `sequence(sid)`, `len()`.
    """

    def __init__(self, max_match: int = 8):
        if not 1 <= max_match < len(_POW):
            raise ValueError(f"max_match must be in [1, {len(_POW) - 1}]")
        self.max_match = max_match
        self.dead: set[int] = set()
        self._drafters: dict[tuple, Callable[..., Draft]] = {}  # `drafter`'s, by their fixed arguments
        self._reset(0, 0)

    def _reset(self, n_tokens: int, n_seqs: int) -> None:
        self._slot: dict[int, int] = {}  # sequence id -> row of `_slots`, in the reference's `seqs` order
        self._pend: list[int] = []  # buffered append tokens ...
        self._segs: list[int] = []  # ... and (row, count) per buffered append
        n = max(256, n_tokens)
        self._set(self._layout(max(8, n_seqs), pow2(4 * n), n, 2 * n, pow2(self.max_match)))  # work >= max_match

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
        toks = tokens if type(tokens) is list else ints(tokens)
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

    def _command(self, context: list, tail: tuple) -> tuple[bytes, int]:
        """The buffered appends, `context` and `tail` (max_depth .. cap) as one kernel command (see the module
        docstring); empties the buffer. Returns (command, number of appends)."""
        cmd, segs, n_seg = self._pend, self._segs, len(self._segs) // 2
        cmd += context
        cmd += segs
        cmd += tail
        cmd += (n_seg, len(context))
        self._pend, self._segs = [], []
        return self._packed(cmd, len(context) + len(segs) + len(tail) + 2, segs), n_seg

    def _packed(self, cmd: list, own: int, segs: list) -> bytes:
        """`pack(cmd)`, whose buffered appends precede the caller's `own` last words. When it fails, the buffer is
        put back as it was, less a bad append (the valid ones stay; or the caller's words are at fault)."""
        try:
            return pack(cmd)
        except ValueError:
            del cmd[len(cmd) - own :]
            self._pend, self._segs = cmd, segs
            self._drop_bad_appends()
            raise

    def _drop_bad_appends(self) -> None:
        """Keep the buffered appends that are int64 tokens; raise ValueError naming the sequence of the first that
        is not (appends are checked only here, off the per-token path; the caller's own context may be at fault)."""
        kept, segs, bad, at = [], [], None, 0
        for s, n in zip(self._segs[0::2], self._segs[1::2]):
            part, at = self._pend[at : at + n], at + n
            try:
                pack(part)
            except ValueError as exc:
                bad = bad or (s, exc)
                continue
            kept += part
            segs += (s, n)
        self._pend, self._segs = kept, segs
        if bad is not None:
            sid = list(self._slot)[bad[0]]
            raise ValueError(f"tokens appended to sequence {sid} were dropped: {bad[1]}") from None

    def _flush(self) -> None:
        if self._segs:
            cmd, n_seg = self._command([], APPLY_ONLY)
            done, need, *_ = kern.draft_kernel(self._heap, cmd, 0.0)
            if need:
                self._apply(cmd, n_seg, done, need)

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
        return ints(context[-mm:] if len(context) > mm else context)

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
        ctx, cap = as_array(self._tail(context)), occurrence_cap(max_occurrences)
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
        draft = self.drafter(topk, min_prob, min_match, max_occurrences)
        if not visible:
            return draft(context, max_depth, max_tokens)
        rows = self._visible(visible)  # the kernel reads the limits from the sequence rows (kept through growth)
        try:
            return draft(context, max_depth, max_tokens)
        finally:
            self._hide(rows)

    def drafter(
        self, topk: int = 1, min_prob: float = 0.1, min_match: int = 1, max_occurrences: int | None = 16
    ) -> Callable[..., Draft]:
        """`draft` with these arguments fixed (and every prefix visible): `f(context, max_depth, max_tokens=None)`,
        the arguments checked once, as a rollout drafts with the same ones at every step (`GroupDrafter` keeps one
        per index). It holds the index weakly: once the index is gone, it raises `ReferenceError`."""
        key = (topk, min_prob, min_match, max_occurrences)
        fn = self._drafters.get(key)
        if fn is not None:
            return fn
        if min_match < 1:
            raise ValueError("min_match must be >= 1")
        cap, min_prob = occurrence_cap(max_occurrences), float(min_prob)  # cap: None or 0 is all, as the reference
        mm, kernel, index, packers = self.max_match, _draft_entry(), weakref.ref(self), PACKERS  # index: no cycle

        def draft(context: Sequence[int], max_depth: int, max_tokens: int | None = None) -> Draft:
            if max_depth <= 0:
                return EMPTY
            self = index()
            if self is None:
                raise ReferenceError("this drafter's index is gone: make a drafter from a live index")
            if max_tokens is None:
                max_tokens = max_depth * topk
            if max_tokens > self._wide and max_depth * (topk if topk > 1 else 1) > self._wide:
                self._room(min(max_tokens, max_depth * max(topk, 1)))
            ctx = context[-mm:] if len(context) > mm else context
            if type(ctx) is not list:
                ctx = ints(ctx)
            tail = (max_depth, max_tokens, topk, min_match, cap)
            cmd, segs = self._pend, self._segs  # `_command`, inline: this is the rollout's per-step path
            n_seg = len(segs) // 2
            cmd += ctx
            cmd += segs
            cmd += tail
            cmd += (n_seg, len(ctx))
            self._pend, self._segs = [], []
            try:  # `pack`, inline: a command of an uncached length, or of ids no int64, goes through it
                cmd = packers[len(cmd)](*cmd)
            except (KeyError, struct.error):
                cmd = self._packed(cmd, len(ctx) + len(segs) + len(tail) + 2, segs)
            done, need, m, n, toks, probs = kernel(self._heap, cmd, min_prob)
            if need:
                m, n, toks, probs = self._grown(cmd, n_seg, ctx, tail, min_prob, done, need)
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

        if len(self._drafters) >= _DRAFTERS_KEPT:  # a sweep over many arguments keeps only the latest few
            del self._drafters[next(iter(self._drafters))]
        self._drafters[key] = draft
        return draft

    def _grown(self, cmd: bytes, n_seg: int, ctx: list, tail: tuple, min_prob: float, done: int, need: int):
        """The draft kernel stopped at appends that did not fit (`done` applied, short of `need`): grow, then draft
        again for `ctx` with the arguments `tail`; (match length, tokens drafted, first 8 tokens, their probs)."""
        self._apply(cmd, n_seg, done, need)  # the buffer is empty now: the command again is the context alone
        return kern.draft_kernel(self._heap, self._command(ctx, tail)[0], min_prob)[2:]

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
        rows, work, vis = as_array(spec).reshape(-1, 7), self._room(o), self._visible(visible or {})
        try:
            draft_batch_kernel(
                self._heap,
                as_array(flat),
                rows,
                int(topk),
                float(min_prob),
                int(min_match),
                occurrence_cap(max_occurrences),
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
