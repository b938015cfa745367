"""Admission for divided rollout: how much KV a chunk reserves, and what runs when the next request does not fit.

A chunk is placed only where its worst case (context + budget, in whole blocks) fits beside everything already
promised on that instance, so no engine ever preempts. The rule decides the budget:

- "worst-case" (Seer as printed): every chunk gets `chunk_size` tokens. Simple, but when KV is the constraint,
  reserving context + 8K for every running request keeps far fewer of them running than vLLM would.
- "adaptive" (default): each dispatch pass shares the free KV over the requests waiting for it (at most as many as
  the free concurrency slots, plus one per instance for how the shares pack into instances, each rounded up to a
  block): budget ~ (free KV - their contexts) / their number, at most `chunk_size` and at
  least a request's floor, its longest possible response / `max_chunks` (so no request is cut into more than about
  `max_chunks` chunks, which bounds the cost of chunk boundaries; the longest is max_tokens, or what an instance
  holds beside the prompt when that is less). Chunks are large while memory is plentiful and shrink as
  contexts grow, so concurrency stays close to what the memory can hold (Seer's "maximum concurrency that avoids
  preemption"); a request whose chunk ends waits in the buffer with its KV in the global pool, and resumes at the
  cost of a pool transfer. A request that does not fit at the pass's budget gets what the emptiest instance has
  left, down to its floor.

Backfill (adaptive only): when the request at the head of the policy's order fits nowhere, the emptiest instance
is kept for it and the rest of the free KV goes to the waiting requests with the smallest contexts, instead of
ending the pass with memory unused.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from seer.core import Request
from seer.policies.placement import LoadBook, Placement

RULES = ("adaptive", "worst-case")


class Admission:
    """Chunk budgets and placement for one divided-family policy, with the waiting requests' aggregates."""

    def __init__(self, rule: str, chunk_size: int, max_chunks: int, backfill: bool):
        self.rule, self.chunk_size, self.backfill = rule, chunk_size, backfill and rule == "adaptive"
        self.max_chunks = max_chunks
        self.context_share = 8
        self.reset()

    def floor(self, req: Request, capacity: int) -> int:
        """The smallest budget a request's chunk gets (adaptive admission): its longest response / max_chunks, and
        an eighth of its context (a longer request reserves at most 1/8 more than it holds, and is not cut into more
        chunks than its growth needs). The longest response is max_tokens, or what an instance of `capacity` tokens
        holds beside the prompt when that is less: a cap no instance can reach would size every chunk by it, and a
        few such chunks fill an instance."""
        longest = max(1, min(req.max_tokens, capacity - req.prompt_len))
        least = max(-(-longest // self.max_chunks), req.context_len // self.context_share)
        return max(1, min(self.chunk_size, req.remaining_budget, least))

    def reset(self) -> None:
        self.waiting_ctx = 0  # context tokens of the buffered requests
        self._by_context: list = []  # (context, entry, rid): backfill candidates, smallest first
        self._entry: dict[int, int] = {}
        self._seq = itertools.count()

    def entered(self, req: Request) -> None:
        self.waiting_ctx += req.context_len
        if self.backfill:
            n = next(self._seq)
            self._entry[req.request_id] = n
            heapq.heappush(self._by_context, (req.context_len, n, req.request_id))

    def left(self, req: Request) -> None:
        self.waiting_ctx -= req.context_len
        self._entry.pop(req.request_id, None)

    def pass_budget(self, book: LoadBook, waiting: int) -> int:
        """The chunk budget of this dispatch pass (see the module docstring)."""
        if self.rule == "worst-case":
            return self.chunk_size
        free, slots = book.free_total, book.open_slots
        n = min(waiting, slots)
        if n <= 0:
            return self.chunk_size
        # whole blocks per chunk, and one chunk's worth per instance left for how the shares pack into instances
        share = (free - n * (self.waiting_ctx / waiting + book.max_block)) / (n + min(book.open_count, n // 8))
        return int(max(1, min(self.chunk_size, share)))

    def place(
        self, book: LoadBook, placement: Placement, req: Request, target: int, capacity: int
    ) -> tuple[int, int] | None:
        """(instance, budget) for the request's next chunk, or None when it fits nowhere now."""
        adaptive = self.rule == "adaptive"
        least = self.floor(req, capacity) if adaptive else 1
        if adaptive:
            target = max(target, least)
        context = req.context_len
        # the request itself always fits an empty instance: cap its chunk so the worst case does too
        budget = max(1, min(target, req.remaining_budget, capacity - context))
        inst = placement.choose(book, req.request_id, context, budget)
        if inst is None and adaptive and book.free:
            smaller = min(budget, book.free[book.most_free()] - context)
            if smaller >= least:
                budget = smaller
                inst = placement.choose(book, req.request_id, context, budget)
        return None if inst is None else (inst, budget)

    def candidates(self, waiting: set[int]) -> Iterator[int]:
        """Waiting requests by ascending context (for backfill). Those not dispatched meanwhile are put back
        when the generator is closed."""
        heap, popped = self._by_context, []
        try:
            while heap:
                item = heap[0]
                _ctx, n, rid = item
                if rid not in waiting or self._entry.get(rid) != n:  # stale: dispatched or re-entered since
                    heapq.heappop(heap)
                    continue
                # a candidate is popped only once the caller moves past it: a backfill usually stops at its first
                # candidate, which then stays where it is (keys are unique, so the order does not depend on this)
                yield rid
                if heap and heap[0] is item:
                    heapq.heappop(heap)
                else:  # the caller pushed a smaller entry meanwhile (no caller does today): take this one out
                    heap.remove(item)
                    heapq.heapify(heap)
                popped.append(item)
        finally:
            for item in popped:
                if item[2] in waiting and self._entry.get(item[2]) == item[1]:
                    heapq.heappush(self._by_context, item)
