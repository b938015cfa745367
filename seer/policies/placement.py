"""Instance choice for a chunk: where its worst-case KV fits, by free KV or by cache affinity (Seer §3.2)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from seer.core import ClusterView, worst_case_kv

PLACEMENTS = ("most-free", "cache-aware")


class LoadBook:
    """Per-instance free KV and in-flight counts for the divided family's dispatch passes.

    One book lives across passes: `sync(view)` brings it up to date with the views, re-reading only the instances
    the view's change log names (every instance when there is no log), and `take` accounts for what the policy
    dispatched within a pass. Totals for the pass budget and two heaps over free KV are kept as entries change,
    so a pass costs O(changed instances + dispatches x log instances), not O(instances), on large clusters.
    """

    def __init__(self):
        self.free: dict[int, int] = {}
        self.in_flight: dict[int, int] = {}
        self.limit: dict[int, int] = {}
        self.block: dict[int, int] = {}
        self.cached: dict[int, object] = {}
        self.capacity: dict[int, int] = {}
        self.max_capacity = self.max_block = 0
        self._uniform: bool | None = None  # every instance has the same block size (None: not known since a change)
        self.free_total = 0  # sum of max(0, free)
        self.open_slots = self.open_count = 0  # free concurrency slots, and instances that have any
        self.in_flight_total = 0
        self._log = None
        self._pos: dict[int, int] = {}  # instance id -> position in view.instances
        self._touched: set[int] = set()
        # (-free, instance) over every instance and over those with a free slot; an entry is pushed on every
        # change and stale ones are skipped when read (and dropped in a rebuild once they dominate)
        self._all: list = []
        self._open: list = []

    @classmethod
    def of(cls, view: ClusterView) -> "LoadBook":
        book = cls()
        book.sync(view)
        return book

    def sync(self, view: ClusterView) -> None:
        """Bring the book up to date with `view` (and drop what `take` assumed since the last sync)."""
        log, instances = view.changes, view.instances
        if log is None or log is not self._log or len(instances) != len(self._pos):
            self.__init__()
            self._log = log
            if log is not None:
                log.take()
            for pos, iv in enumerate(instances):
                self._pos[iv.instance_id] = pos
                self._read(iv)
        else:
            for i in sorted(log.take() | self._touched):
                self._read(instances[self._pos[i]])
        self._touched = set()
        self._compact()

    def _read(self, iv) -> None:
        i = iv.instance_id
        if not iv.alive:
            if i in self.free:
                self._set(i, 0, 0, 0)
                for d in (self.free, self.in_flight, self.limit, self.block, self.cached, self.capacity):
                    del d[i]
                self._uniform = None
                self.max_capacity = max(self.capacity.values(), default=0)
                self.max_block = max(self.block.values(), default=0)
            return
        block = max(1, iv.block_size)
        if self.block.get(i) != block:
            self.block[i] = block
            self._uniform = None
        self.cached[i] = iv.cached_prefix_tokens
        self.capacity[i] = iv.kv_capacity_tokens
        self.max_capacity = max(self.max_capacity, iv.kv_capacity_tokens)
        self.max_block = max(self.max_block, self.block[i])
        self._set(i, iv.kv_capacity_tokens - iv.kv_reserved_tokens, iv.in_flight, iv.max_num_seqs or 1 << 30)

    def _set(self, i: int, free: int, in_flight: int, limit: int) -> None:
        if self.free.get(i) == free and self.in_flight[i] == in_flight and self.limit[i] == limit:
            return  # unchanged (a view re-read after its KV use moved, say): the heaps already hold its entry
        if i in self.free:
            self.free_total -= max(0, self.free[i])
            self.in_flight_total -= self.in_flight[i]
            if self.in_flight[i] < self.limit[i]:
                self.open_slots -= self.limit[i] - self.in_flight[i]
                self.open_count -= 1
        self.free[i], self.in_flight[i], self.limit[i] = free, in_flight, limit
        self.free_total += max(0, free)
        self.in_flight_total += in_flight
        if in_flight < limit:
            self.open_slots += limit - in_flight
            self.open_count += 1
        self.touch(i)

    def _compact(self) -> None:
        n = 2 * len(self.free) + 64
        if len(self._all) > n or len(self._open) > n:
            self._all = [(-f, i) for i, f in self.free.items()]
            self._open = [(-f, i) for i, f in self.free.items() if self.in_flight[i] < self.limit[i]]
            heapq.heapify(self._all)
            heapq.heapify(self._open)

    def fits(self, i: int, context: int, budget: int) -> bool:
        return self.free[i] >= worst_case_kv(context, budget, self.block[i]) and self.in_flight[i] < self.limit[i]

    def take(self, i: int, context: int, budget: int) -> None:
        self._set(i, self.free[i] - worst_case_kv(context, budget, self.block[i]), self.in_flight[i] + 1, self.limit[i])
        self._touched.add(i)

    def touch(self, i: int) -> None:
        """Instance i's free KV was set (or it came back into the book): keep the heaps current."""
        if i in self.free:
            heapq.heappush(self._all, (-self.free[i], i))
            if self.in_flight[i] < self.limit[i]:
                heapq.heappush(self._open, (-self.free[i], i))

    def uniform_blocks(self) -> bool:
        """Whether every instance in the book allocates KV in blocks of the same size."""
        if self._uniform is None:
            self._uniform = len(set(self.block.values())) == 1
        return self._uniform

    def most_free(self) -> int | None:
        """The instance with the most free KV (ties: the lowest id)."""
        heap = self._all
        while heap:
            neg, i = heap[0]
            if self.free.get(i) != -neg:
                heapq.heappop(heap)
                continue
            return i
        return None

    def most_free_open(self) -> int | None:
        """The instance with the most free KV among those with a free slot (ties: the lowest id)."""
        heap = self._open
        while heap:
            neg, i = heap[0]
            # an instance whose slots filled is pushed again when its free KV or in-flight count next changes
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
            if book.uniform_blocks():
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
