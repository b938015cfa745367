"""Instance choice for a chunk: where its worst-case KV fits, by free KV or by cache affinity (Seer §3.2)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from seer.core import ClusterView, worst_case_kv

PLACEMENTS = ("most-free", "cache-aware")


@dataclass
class LoadBook:
    """Per-instance free KV and in-flight counts for one dispatch pass, updated as chunks are placed
    (the view is a snapshot; the policy accounts for what it dispatched since)."""

    free: dict[int, int] = field(default_factory=dict)
    in_flight: dict[int, int] = field(default_factory=dict)
    limit: dict[int, int] = field(default_factory=dict)
    block: dict[int, int] = field(default_factory=dict)
    cached: dict[int, object] = field(default_factory=dict)
    capacity: dict[int, int] = field(default_factory=dict)
    # (-free, instance), built on first use and pushed on every change; stale entries are skipped when read, so
    # the most-free open instance costs O(log instances) per chunk instead of a scan (large clusters)
    _heap: list | None = None

    @classmethod
    def of(cls, view: ClusterView) -> "LoadBook":
        book = cls()
        for iv in view.instances:
            if not iv.alive:
                continue
            i = iv.instance_id
            book.free[i] = iv.kv_capacity_tokens - iv.kv_reserved_tokens
            book.in_flight[i] = iv.in_flight
            book.limit[i] = iv.max_num_seqs or 1 << 30
            book.block[i] = max(1, iv.block_size)
            book.cached[i] = iv.cached_prefix_tokens
            book.capacity[i] = iv.kv_capacity_tokens
        return book

    def fits(self, i: int, context: int, budget: int) -> bool:
        return self.free[i] >= worst_case_kv(context, budget, self.block[i]) and self.in_flight[i] < self.limit[i]

    def take(self, i: int, context: int, budget: int) -> None:
        self.free[i] -= worst_case_kv(context, budget, self.block[i])
        self.in_flight[i] += 1
        self.touch(i)

    def touch(self, i: int) -> None:
        """Instance i's free KV was set (or it came back into the book): keep the heap current."""
        if self._heap is not None and i in self.free:
            heapq.heappush(self._heap, (-self.free[i], i))

    def most_free_open(self) -> int | None:
        """The instance with the most free KV among those with a free slot (ties: the lowest id)."""
        if self._heap is None:
            self._heap = [(-f, i) for i, f in self.free.items()]
            heapq.heapify(self._heap)
        heap = self._heap
        while heap:
            neg, i = heap[0]
            # within one book an instance's slots only fill up, so a full one is dropped for good
            if self.free.get(i) != -neg or self.in_flight[i] >= self.limit[i]:
                heapq.heappop(heap)
                continue
            return i
        return None

    def cached_tokens(self, i: int, request_id: int) -> int:
        return int(self.cached[i].get(request_id, 0))


@dataclass
class Placement:
    """`most-free`: the instance with the most unreserved KV. `cache-aware` (Seer OSDI §3.2): while in-flight
    counts are balanced (spread <= imbalance_threshold), the instance with the longest cached prefix of the
    request; otherwise the least loaded one, noting a KV pull when the affinity gap exceeds affinity_margin."""

    rule: str = "most-free"
    imbalance_threshold: int = 32
    affinity_margin: int = 512
    pulls: int = 0

    def __post_init__(self):
        if self.rule not in PLACEMENTS:
            raise ValueError(f"placement must be 'most-free' or 'cache-aware', not {self.rule!r}")

    def choose(self, book: LoadBook, request_id: int, context: int, budget: int) -> int | None:
        if self.rule == "most-free":
            # the instance with the most free KV among those with a free slot: if it does not fit, none does
            # (unless block sizes differ between instances: then scan them all)
            best = book.most_free_open()
            if best is None:
                return None
            if book.fits(best, context, budget):
                return best
            if len(set(book.block.values())) == 1:
                return None
        fit = [i for i in book.free if book.fits(i, context, budget)]
        if not fit:
            return None
        if self.rule == "most-free":
            return max(fit, key=lambda i: (book.free[i], -i))
        loads = list(book.in_flight.values())
        if max(loads) - min(loads) <= self.imbalance_threshold:
            return max(fit, key=lambda i: (book.cached_tokens(i, request_id), book.free[i], -i))
        chosen = min(fit, key=lambda i: (book.in_flight[i], -book.free[i], i))
        best = max(book.cached_tokens(i, request_id) for i in book.free)
        if best - book.cached_tokens(chosen, request_id) > self.affinity_margin:
            self.pulls += 1  # in pool mode the chosen instance fetches the KV; locally it re-prefills
        return chosen
