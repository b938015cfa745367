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
from collections.abc import Iterable, Sequence

from seer.core.traits import SCOPES, DraftConfig
from seer.policies.speculation.suffix import EMPTY, Draft, SuffixIndex

__all__ = ["SCOPES", "DraftConfig", "GroupDrafter"]
_PROMPT_SID = 0


class GroupDrafter:
    """Per-group suffix indexes with incremental appends (a request's tokens extend only its own path)."""

    def __init__(self, config: DraftConfig = DraftConfig()):
        self.config = config
        self._prompts: dict[int, tuple[int, ...]] = {}
        self._index: dict[tuple[str, int], SuffixIndex] = {}  # ("group", gid), or ("request", rid) for scope own
        self._where: dict[int, tuple[tuple[str, int], int]] = {}  # request id -> (index key, sequence id)
        self._members: dict[int, int] = {}  # group id -> live requests
        self._group_of: dict[int, int] = {}
        self._global = SuffixIndex(config.max_match) if config.scope == "global" else None
        self._cached: OrderedDict[int, None] = OrderedDict()
        self.appended = 0

    def _new_index(self, prompt: Sequence[int]) -> SuffixIndex:
        idx = SuffixIndex(self.config.max_match)
        if prompt:
            idx.extend(_PROMPT_SID, prompt)
        return idx

    def add_request(self, request_id: int, group_id: int, prompt_ids: Sequence[int] | None = None) -> None:
        """Register a request (its group's prompt, when known, is indexed once)."""
        if request_id in self._where:
            return
        if group_id not in self._prompts:
            self._prompts[group_id] = tuple(prompt_ids or ())
        if self.config.scope == "own":
            key = ("request", request_id)
            self._index[key] = self._new_index(self._prompts[group_id])
        else:
            key = ("group", group_id)
            if key not in self._index:
                self._index[key] = self._new_index(self._prompts[group_id])
        self._where[request_id] = (key, request_id + 1)
        self._members[group_id] = self._members.get(group_id, 0) + 1
        self._group_of[request_id] = group_id

    def append(self, request_id: int, tokens: Iterable[int]) -> None:
        """Tokens a request just produced, in order."""
        key, sid = self._where[request_id]
        toks = list(tokens)
        self._index[key].extend(sid, toks)
        self.appended += len(toks)

    @property
    def prompts(self) -> dict[int, tuple[int, ...]]:
        """Prompt token ids of the groups that still have live requests, by group id."""
        return self._prompts

    def group_of(self, request_id: int) -> int | None:
        return self._group_of.get(request_id)

    def tokens(self, request_id: int) -> list[int]:
        key, sid = self._where[request_id]
        return self._index[key].seqs.get(sid, [])

    def finish(self, request_id: int) -> None:
        """The request is done: free what only it needed; scope "global" caches its response."""
        if request_id not in self._where:
            return
        key, sid = self._where.pop(request_id)
        gid = self._group_of.pop(request_id)
        idx = self._index[key]
        if self._global is not None:
            self._global.extend(request_id + 1, idx.seqs.get(sid, []))
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
        c = self.config
        return idx.draft(
            context, max_depth, max_tokens, c.topk, c.min_prob, c.min_match, max_occurrences=c.max_occurrences
        )

    def propose(self, request_id: int, context: Sequence[int], max_depth: int, max_tokens: int | None = None) -> Draft:
        """A draft for the request whose current context (prompt + output so far, or at least its last
        `max_match` tokens) is `context`."""
        if max_depth <= 0:
            return EMPTY
        c = self.config
        key, _sid = self._where[request_id]
        best = self._index[key].draft(
            context, max_depth, max_tokens, c.topk, c.min_prob, c.min_match, max_occurrences=c.max_occurrences
        )
        if self._global is not None:
            other = self._global.draft(
                context, max_depth, max_tokens, c.topk, c.min_prob, c.min_match, max_occurrences=c.max_occurrences
            )
            if other.score > best.score:
                best = other
        return best
