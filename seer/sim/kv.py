"""Paged KV memory of one instance: blocks held by running sequences plus an optional prefix cache."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-int(tokens) // block_size)


@dataclass
class KVMemory:
    """Block accounting. `held` counts blocks of running sequences; cached blocks are free to evict.

    The prefix cache keeps, per request, the KV of its last context on this instance after the request
    left (chunk end or preemption), evicted least-recently-used when blocks are needed.
    """

    capacity_blocks: int
    block_size: int
    prefix_cache: bool = False
    held: int = 0
    cache: OrderedDict = field(default_factory=OrderedDict)  # request_id -> (tokens, blocks)
    cached_blocks: int = 0
    version: int = 0  # bumped by every change, so views of this memory can be cached

    @property
    def free(self) -> int:
        """Blocks allocatable without evicting the cache."""
        return self.capacity_blocks - self.held - self.cached_blocks

    def available(self) -> int:
        """Blocks allocatable after evicting the whole cache."""
        return self.capacity_blocks - self.held

    def allocate(self, n: int) -> bool:
        """Take n blocks, evicting cached prefixes (LRU) if needed. False (and no change) if impossible."""
        if n > self.available():
            return False
        self.version += 1
        while n > self.free:
            _, (_, blocks) = self.cache.popitem(last=False)
            self.cached_blocks -= blocks
        self.held += n
        return True

    def keep_prefix(self, request_id: int, tokens: int, blocks: int) -> None:
        """Move a leaving sequence's blocks into the cache instead of freeing them."""
        self.version += 1
        self.held -= blocks
        if not self.prefix_cache or tokens <= 0:
            return
        self.drop_prefix(request_id)
        self.cache[request_id] = (tokens, blocks)
        self.cached_blocks += blocks

    def take_prefix(self, request_id: int) -> tuple[int, int]:
        """Claim a cached prefix for a returning request: (tokens, blocks), now held."""
        entry = self.cache.pop(request_id, None)
        if entry is None:
            return 0, 0
        self.version += 1
        tokens, blocks = entry
        self.cached_blocks -= blocks
        self.held += blocks
        return tokens, blocks

    def drop_prefix(self, request_id: int) -> None:
        entry = self.cache.pop(request_id, None)
        if entry is not None:
            self.version += 1
            self.cached_blocks -= entry[1]

    def cached_tokens(self, request_id: int) -> int:
        entry = self.cache.get(request_id)
        return entry[0] if entry else 0
