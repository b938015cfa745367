"""The grouped drafter: one suffix index per group (or per request, or plus a global cache), fed as tokens
arrive and asked for drafts. One object serves the simulator's exact replay and the real engines.

Scopes:
- "own": each request drafts from its own prompt and output only (SuffixDecoding's per-request tree, the
  "vanilla" baseline of the paper's Table 2 row n = 0);
- "group": from every response of its group so far, plus the prompt (Seer's grouped drafting);
- "global": "group", plus a cache of finished responses of all groups (SuffixDecoding's global tree);
  the draft with the higher score wins.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from seer.core.traits import SCOPES, DraftConfig
from seer.policies.speculation.compiled import CompiledSuffixIndex, make_index
from seer.policies.speculation.heap import ints, occurrence_cap
from seer.policies.speculation.row_kernels import replay_kernel
from seer.policies.speculation.suffix import EMPTY, Draft, SuffixIndex

Index = CompiledSuffixIndex | SuffixIndex

__all__ = ["SCOPES", "DraftConfig", "GroupDrafter"]
_PROMPT_SID = 0


MAX_DEPTH = 1 << 12  # a draft's tokens: the kernels size their work by it (engines ask for at most 64)


def _too_deep(max_depth: int) -> ValueError:
    return ValueError(f"max_depth must be at most {MAX_DEPTH:,} draft tokens, not {max_depth:,}")


class GroupDrafter:
    """Per-group suffix indexes with incremental appends (a request's tokens extend only its own path).

    `compiled` (default) uses the numba-compiled index; False the pure-Python reference, same drafts."""

    def __init__(self, config: DraftConfig = DraftConfig(), compiled: bool = True):
        if not isinstance(config, DraftConfig):
            raise TypeError(f"GroupDrafter needs a DraftConfig, not {type(config).__name__}")
        self.config = config
        self.compiled = compiled
        self._prompts: dict[int, tuple[int, ...]] = {}
        self._index: dict[tuple[str, int], Index] = {}  # ("group", gid), or ("request", rid) for scope own
        # request id -> (index key, sequence id, the index itself, its drafter: one lookup on the per-step paths)
        self._where: dict[int, tuple[tuple[str, int], int, Index, Callable[..., Draft]]] = {}
        self._members: dict[int, int] = {}  # group id -> live requests
        self._group_of: dict[int, int] = {}
        self._global = make_index(config.max_match, compiled) if config.scope == "global" else None
        self._global_draft = self._global.drafter(*self._fixed()) if self._global is not None else None
        self._cached: OrderedDict[int, None] = OrderedDict()
        self.appended = 0
        c = config  # the draft arguments every call passes, in `SuffixIndex.draft`'s order after max_tokens
        self._args = (c.topk, c.min_prob, c.min_match, None, c.max_occurrences)

    def _fixed(self) -> tuple:
        """The draft arguments every call passes, for `drafter`: topk, min_prob, min_match, max_occurrences."""
        c = self.config
        return c.topk, c.min_prob, c.min_match, c.max_occurrences

    def _new_index(self, prompt: Sequence[int]) -> Index:
        idx = make_index(self.config.max_match, self.compiled)
        if prompt:
            idx.extend(_PROMPT_SID, prompt)
        return idx

    def add_request(self, request_id: int, group_id: int, prompt_ids: Sequence[int] | None = None) -> None:
        """Register a request (its group's prompt, when known, is indexed once)."""
        if request_id < 0:  # sequence ids are request ids + 1, and 0 is the prompt's
            raise ValueError(f"request ids are integers >= 0, not {request_id!r}")
        if request_id in self._where:
            if self._group_of[request_id] != group_id:
                raise ValueError(f"request {request_id} is registered in group {self._group_of[request_id]}")
            return
        if group_id not in self._prompts:
            self._prompts[group_id] = tuple(ints(prompt_ids)) if prompt_ids is not None else ()
        if self.config.scope == "own":
            key = ("request", request_id)
            self._index[key] = self._new_index(self._prompts[group_id])
        else:
            key = ("group", group_id)
            if key not in self._index:
                self._index[key] = self._new_index(self._prompts[group_id])
        idx = self._index[key]
        self._where[request_id] = (key, request_id + 1, idx, idx.drafter(*self._fixed()))
        self._members[group_id] = self._members.get(group_id, 0) + 1
        self._group_of[request_id] = group_id

    def append(self, request_id: int, tokens: Iterable[int]) -> None:
        """Tokens a request just produced, in order."""
        _, sid, idx, _ = self._where[request_id]
        toks = tokens if type(tokens) is list else list(tokens)
        idx.extend(sid, toks)
        self.appended += len(toks)

    @property
    def prompts(self) -> dict[int, tuple[int, ...]]:
        """Prompt token ids of the groups that still have live requests, by group id."""
        return self._prompts

    def group_of(self, request_id: int) -> int | None:
        return self._group_of.get(request_id)

    def tokens(self, request_id: int) -> list[int]:
        """The tokens appended for a live request so far (a copy)."""
        _, sid, idx, _ = self._where[request_id]
        return idx.sequence(sid)

    def finish(self, request_id: int) -> None:
        """The request is done: free what only it needed; scope "global" caches its response."""
        if request_id not in self._where:
            return
        key, sid, idx, _ = self._where.pop(request_id)
        gid = self._group_of.pop(request_id)
        if self._global is not None:
            self._global.extend(request_id + 1, idx.sequence(sid))
            self._cached[request_id + 1] = None
            while len(self._cached) > self.config.max_cached:
                old, _ = self._cached.popitem(last=False)
                self._global.remove(old)
        if self.config.scope == "own":
            del self._index[key]
        self._members[gid] -= 1
        if self._members[gid] == 0:
            del self._members[gid]
            self._prompts.pop(gid, None)
            self._index.pop(("group", gid), None)

    def propose_group(
        self, group_id: int, context: Sequence[int], max_depth: int, max_tokens: int | None = None
    ) -> Draft:
        """A draft from a group's index when the asking request is not known (vLLM passes no request ids)."""
        idx = self._index.get(("group", group_id))
        if idx is None or max_depth <= 0:
            return EMPTY
        if max_depth > MAX_DEPTH:  # a comparison only: this is the per-step path
            raise _too_deep(max_depth)
        return idx.draft(context, max_depth, max_tokens, *self._args)

    def propose(self, request_id: int, context: Sequence[int], max_depth: int, max_tokens: int | None = None) -> Draft:
        """A draft for the request whose current context (prompt + output so far, or at least its last
        `max_match` tokens) is `context`."""
        if max_depth <= 0:
            return EMPTY
        if max_depth > MAX_DEPTH:  # a comparison only: this is the per-step path
            raise _too_deep(max_depth)
        best = self._where[request_id][3](context, max_depth, max_tokens)
        if self._global_draft is not None:
            other = self._global_draft(context, max_depth, max_tokens)
            if other.score > best.score:
                best = other
        return best

    def propose_batch(
        self,
        request_ids: Sequence[int],
        contexts: Sequence[Sequence[int]],
        max_depths: Sequence[int],
        max_tokens: Sequence[int] | None = None,
    ) -> list[Draft]:
        """`propose` for the many rows of one step (one kernel call per index); equal to calling it row by row."""
        if not len(request_ids) == len(contexts) == len(max_depths):
            raise ValueError("request_ids, contexts and max_depths must be as long as each other")
        keys = [self._where[rid][0] for rid in request_ids]
        drafts = self._by_index(keys, contexts, max_depths, max_tokens)
        if self._global is not None:
            others = self._global.draft_many(contexts, max_depths, max_tokens, *self._args)
            drafts = [o if o.score > d.score else d for d, o in zip(drafts, others)]
        return drafts

    def propose_group_batch(
        self,
        group_ids: Sequence[int],
        contexts: Sequence[Sequence[int]],
        max_depths: Sequence[int],
        max_tokens: Sequence[int] | None = None,
    ) -> list[Draft]:
        """`propose_group` for many rows; equal to calling it row by row."""
        if not len(group_ids) == len(contexts) == len(max_depths):
            raise ValueError("group_ids, contexts and max_depths must be as long as each other")
        return self._by_index([("group", g) for g in group_ids], contexts, max_depths, max_tokens)

    def replay(
        self, request_ids: Sequence[int], rows: np.ndarray, truth: np.ndarray, prompts: np.ndarray, horizon: int
    ) -> np.ndarray:
        """Verify steps of many requests replayed against their recorded outputs with every index frozen (the
        compiled drafter only): (4, rows, horizon) int64 of budget offered, tokens drafted, accepted and advance
        per step, rows[r] (as `row_kernels.replay_kernel` reads them) for request_ids[r]. Equal to
        `propose(rid, context, budget, budget)` and `accepted_length` step by step, row by row."""
        if not self.compiled:
            raise ValueError("replay needs the compiled drafter")
        c, other = self.config, self._global
        plan = np.zeros((4, len(request_ids), horizon), np.int64)
        if not len(request_ids):
            return plan
        by_key: dict[tuple[str, int], list[int]] = {}
        for r, rid in enumerate(request_ids):
            by_key.setdefault(self._where[rid][0], []).append(r)
        width = max(int(rows[:, 6].max()), 1)  # draft budgets: the work rows must hold the longest
        global_heap = other.ready(width) if other is not None else None
        for key, rs in by_key.items():
            heap = self._index[key].ready(width)
            part = np.zeros((4, len(rs), horizon), np.int64)
            replay_kernel(
                heap, heap if global_heap is None else global_heap, global_heap is not None, truth, prompts,
                rows[rs], horizon, c.topk, float(c.min_prob), c.min_match, occurrence_cap(c.max_occurrences), part,
            )  # fmt: skip
            plan[:, rs] = part
        return plan

    def _by_index(self, keys: list, contexts, max_depths, max_tokens) -> list[Draft]:
        """Drafts of rows grouped by the index they draft from (rows of an unknown index get none)."""
        if keys and keys.count(keys[0]) == len(keys):  # one index, as a group's rows in a step: no regrouping
            idx = self._index.get(keys[0])
            return [EMPTY] * len(keys) if idx is None else idx.draft_many(contexts, max_depths, max_tokens, *self._args)
        rows: dict[tuple[str, int], list[int]] = {}
        for r, key in enumerate(keys):
            rows.setdefault(key, []).append(r)
        drafts = [EMPTY] * len(keys)
        for key, rs in rows.items():
            idx = self._index.get(key)
            if idx is None:
                continue
            got = idx.draft_many(
                [contexts[r] for r in rs],
                [max_depths[r] for r in rs],
                None if max_tokens is None else [max_tokens[r] for r in rs],
                *self._args,
            )
            for r, d in zip(rs, got):
                drafts[r] = d
        return drafts
