"""A suffix index over the token sequences of one group: exact pattern lookup plus frequency-scored drafts.

What it answers is the question a suffix tree of depth `max_match` + draft depth answers (SuffixDecoding,
Seer's CST): for the longest suffix of a context (up to `max_match` tokens) that occurs in the indexed
sequences, which tokens followed it, and how often. Instead of a tree it keeps, for every m-gram
(m <= max_match) ending at each position, the list of those positions, keyed by a polynomial hash of the
m-gram. Appending a token costs `max_match` hash updates and list appends (O(max_match), amortised, no
rebalancing); a lookup costs at most `max_match` dictionary probes; a draft reads continuations straight
from the sequences. Memory is one small tuple per token plus `max_match` list slots.

Sequences are independent paths: appending to one sequence never changes another's, so a request's new
tokens extend only its own path. A draft counts, for each candidate next token, how many occurrences of
the matched pattern continue with it (SuffixDecoding's child.count / node.count, where an occurrence that
ends at the node still counts in the denominator) and multiplies these ratios along the path; a path stops
when that probability falls below `min_prob`. Multi-path drafts keep the `topk` most probable branches at
every depth (beam search); the result is a token tree (`parents`), linear when topk == 1.

Hash collisions (61-bit modular hash) can only make a draft token wrong, which verification rejects; they
cannot make a wrong token accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

from seer.core.traits import MAX_MATCH

_P = (1 << 61) - 1
_B = 1_000_003


@dataclass(frozen=True)
class Draft:
    """A draft token tree. `parents[i]` is the index of token i's parent, -1 for children of the context.

    A linear draft has parents [-1, 0, 1, ...]. `probs[i]` is the path probability of token i (product of
    frequency ratios from the root), `score` their sum (SuffixDecoding's score), `match_len` the length of
    the context suffix that was matched (0 when nothing matched).
    """

    tokens: tuple[int, ...] = ()
    parents: tuple[int, ...] = ()
    probs: tuple[float, ...] = ()
    match_len: int = 0

    @property
    def score(self) -> float:
        return float(sum(self.probs))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def depth(self) -> int:
        depth, d = 0, [0] * len(self.tokens)
        for i, p in enumerate(self.parents):
            d[i] = 1 if p < 0 else d[p] + 1
            depth = max(depth, d[i])
        return depth


EMPTY = Draft()


def linear_parents(n: int) -> tuple[int, ...]:
    """Parents of a linear draft of n tokens, (-1, 0, ..., n - 2) (shared tuples: compared at C speed)."""
    return _LINEAR[n] if n < len(_LINEAR) else tuple(range(-1, n - 1))


_LINEAR = [tuple(range(-1, n - 1)) for n in range(65)]


def accepted_length(draft: Draft, truth: Sequence[int]) -> int:
    """Draft tokens accepted against the true continuation `truth`: the longest root path of the tree that
    equals a prefix of `truth` (greedy verification of a token tree; exact replay of a recorded output)."""
    toks = draft.tokens
    if not toks:
        return 0
    if draft.parents == linear_parents(len(draft.parents)):  # linear: compare prefixes
        n = len(toks)
        if len(truth) >= n and toks == tuple(truth[:n]):  # all accepted (most drafts): one comparison in C
            return n
        n = 0
        for d, t in zip(toks, truth):
            if d != t:
                break
            n += 1
        return n
    children: dict[tuple[int, int], list[int]] = {}
    for i, (tok, par) in enumerate(zip(draft.tokens, draft.parents)):
        children.setdefault((par, tok), []).append(i)
    frontier, n = [-1], 0
    for t in truth:
        frontier = [c for node in frontier for c in children.get((node, t), ())]
        if not frontier:
            break
        n += 1
    return n


_POW = [1]
for _ in range(MAX_MATCH):
    _POW.append(_POW[-1] * _B % _P)


def _ints(tokens) -> list[int]:
    """Plain Python ints (numpy integers overflow in the hash arithmetic)."""
    if hasattr(tokens, "tolist"):
        return tokens.tolist()
    out = list(tokens)
    if out and type(out[0]) is not int:
        out = [int(t) for t in out]
    return out


def _hashes(tail: Sequence[int], max_match: int) -> list[int]:
    """Hashes of the m-grams ending at the last token of `tail`, m = 1..min(len, max_match), equal to the
    ones `SuffixIndex.extend` builds forward (h_m = h_{m-1}(previous position) * B + t + 1)."""
    n = min(len(tail), max_match)
    out, h = [], 0
    for m in range(1, n + 1):
        h = ((tail[-m] + 1) * _POW[m - 1] + h) % _P
        out.append(h)
    return out


class SuffixIndex:
    """Token sequences (paths) with an m-gram position index for m = 1..max_match.

    `extend(sid, tokens)` appends to sequence `sid` (creating it); `draft(context, ...)` proposes what
    follows the context. `visible` (sid -> number of tokens) restricts a lookup to a prefix of the named
    sequences (others are seen whole), for offline studies that replay a request over a fully indexed
    output without letting it see its own future.
    """

    def __init__(self, max_match: int = 8):
        if not 1 <= max_match < len(_POW):
            raise ValueError(f"max_match must be in [1, {len(_POW) - 1}]")
        self.max_match = max_match
        self.seqs: dict[int, list[int]] = {}
        self.index: dict[int, list[int]] = {}
        self._tail_hashes: dict[int, list[int]] = {}
        self.dead: set[int] = set()

    # ---- building ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(s) for sid, s in self.seqs.items() if sid not in self.dead)

    def sequence(self, sid: int) -> list[int]:
        """The tokens of sequence `sid` (a copy; [] when unknown)."""
        return list(self.seqs.get(sid, ()))

    def extend(self, sid: int, tokens: Iterable[int]) -> None:
        """Append `tokens` to sequence `sid` (a new sequence if unseen)."""
        toks = _ints(tokens)
        if toks and min(toks) < 0:
            raise ValueError(f"token ids must be >= 0, got {min(toks)}")
        seq = self.seqs.get(sid)
        if seq is None:
            seq = self.seqs[sid] = []
            self._tail_hashes[sid] = []
        hs = self._tail_hashes[sid]
        index, keep = self.index, self.max_match - 1
        pos = len(seq)
        for t in toks:
            t1 = t + 1
            hs = [t1] + [(h * _B + t1) % _P for h in hs[:keep]]
            pos += 1
            occ = (seq, pos, sid)  # one shared entry per position: where the continuation starts
            for h in hs:
                lst = index.get(h)
                if lst is None:
                    index[h] = [occ]
                else:
                    lst.append(occ)
            seq.append(t)
        self._tail_hashes[sid] = hs

    def remove(self, sid: int) -> None:
        """Forget a sequence (lazily: its index entries are skipped and purged on the next compaction)."""
        if sid in self.seqs:
            self.dead.add(sid)
            if len(self.dead) * 2 > len(self.seqs):
                self.compact()

    def compact(self) -> None:
        """Rebuild the index without removed sequences."""
        live = {sid: s for sid, s in self.seqs.items() if sid not in self.dead}
        self.seqs, self.index, self._tail_hashes, self.dead = {}, {}, {}, set()
        for sid, s in live.items():
            self.extend(sid, s)

    # ---- lookup --------------------------------------------------------------------------------

    def match(
        self,
        context: Sequence[int],
        visible: Mapping[int, int] | None = None,
        min_match: int = 1,
        max_occurrences: int | None = None,
    ) -> tuple[int, list[tuple[list[int], int, int]]]:
        """Longest suffix of `context` (length in [min_match, max_match]) that occurs with a visible
        continuation. Returns (match length, [(sequence, start of continuation, visible length)]), the most
        recently appended occurrences first, at most `max_occurrences` of them."""
        tail = _ints(context[-self.max_match :] if len(context) > self.max_match else context)
        hashes = _hashes(tail, self.max_match)
        dead = self.dead
        cap = max_occurrences or 1 << 62
        for m in range(len(hashes), min_match - 1, -1):
            entries = self.index.get(hashes[m - 1])
            if not entries:
                continue
            if visible is None and not dead:
                found = ((seq, pos, len(seq)) for seq, pos, _sid in reversed(entries) if pos < len(seq))
            else:
                vis = visible or {}
                found = (
                    (seq, pos, lim)
                    for seq, pos, sid in reversed(entries)
                    if sid not in dead
                    for lim in (min(len(seq), vis.get(sid, len(seq))),)
                    if pos < lim
                )
            occ = list(islice(found, cap))
            if occ:
                return m, occ
        return 0, []

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
        """Draft up to `max_depth` tokens deep (and `max_tokens` in total, default max_depth * topk).

        Frequencies are counted over the `max_occurrences` most recent occurrences of the matched pattern
        (None: all), which bounds the cost of a draft on highly repetitive groups."""
        if max_depth <= 0:
            return EMPTY
        m, occ = self.match(context, visible, min_match, max_occurrences)
        if not occ:
            return EMPTY
        return build_draft(occ, m, max_depth, max_depth * topk if max_tokens is None else max_tokens, topk, min_prob)

    def drafter(
        self, topk: int = 1, min_prob: float = 0.1, min_match: int = 1, max_occurrences: int | None = 16
    ) -> Callable[..., Draft]:
        """`draft` with these arguments fixed (and every prefix visible): `f(context, max_depth, max_tokens=None)`,
        as `CompiledSuffixIndex.drafter`."""

        def draft(context: Sequence[int], max_depth: int, max_tokens: int | None = None) -> Draft:
            return self.draft(context, max_depth, max_tokens, topk, min_prob, min_match, None, max_occurrences)

        return draft

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
        """`draft` for many contexts (row r: contexts[r], max_depths[r], max_tokens[r]), one after the other."""
        return [
            self.draft(
                c, d, None if max_tokens is None else max_tokens[r], topk, min_prob, min_match, visible, max_occurrences
            )
            for r, (c, d) in enumerate(zip(contexts, max_depths))
        ]


def build_draft(
    occ: list[tuple[list[int], int, int]], match_len: int, max_depth: int, max_tokens: int, topk: int, min_prob: float
) -> Draft:
    """Frequency-scored draft tree from the continuations of a matched pattern (see the module docstring)."""
    tokens: list[int] = []
    parents: list[int] = []
    probs: list[float] = []
    if topk <= 1:
        members, prob, off = occ, 1.0, 0
        while off < max_depth and off < max_tokens:
            groups: dict[int, list] = {}
            for mm in members:
                i = mm[1] + off
                if i < mm[2]:
                    t = mm[0][i]
                    g = groups.get(t)
                    if g is None:
                        groups[t] = [mm]
                    else:
                        g.append(mm)
            if not groups:
                break
            if len(groups) == 1:
                ((tok, sub),) = groups.items()
            else:
                tok, sub = max(groups.items(), key=lambda kv: (len(kv[1]), -kv[0]))
            prob *= len(sub) / len(members)
            if prob < min_prob:
                break
            tokens.append(tok)
            parents.append(off - 1)
            probs.append(prob)
            members = sub
            off += 1
        return Draft(tuple(tokens), tuple(parents), tuple(probs), match_len)
    beams = [(-1, 1.0, occ)]  # (node index, path probability, occurrences reaching the node)
    offset = 0
    while beams and offset < max_depth and len(tokens) < max_tokens:
        cands = []
        for node, prob, members in beams:
            groups: dict[int, list] = {}
            for mm in members:
                i = mm[1] + offset
                if i < mm[2]:
                    groups.setdefault(mm[0][i], []).append(mm)
            for tok, sub in groups.items():
                p = prob * len(sub) / len(members)
                if p >= min_prob:
                    cands.append((-p, node, tok, sub))
        cands.sort(key=lambda c: (c[0], c[1], c[2]))
        beams = []
        for negp, node, tok, sub in cands[: min(topk, max_tokens - len(tokens))]:
            tokens.append(tok)
            parents.append(node)
            probs.append(-negp)
            beams.append((len(tokens) - 1, -negp, sub))
        offset += 1
    return Draft(tuple(tokens), tuple(parents), tuple(probs), match_len)
