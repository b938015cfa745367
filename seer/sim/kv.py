"""Paged KV memory of one instance: blocks held by running sequences plus an optional prefix cache.

With the prefix cache on, a group's samples on one instance share the full blocks of their prompt, as vLLM's
refcounted blocks do: the group holds them once, each sample holds only the blocks after them. When the last
sample leaves, the prompt's blocks stay cached on their own, as vLLM's content-hashed blocks do, so any sample of
the group that comes later (a sibling, or a returning sample whose own blocks are cached) starts from them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-int(tokens) // block_size)


def prompt_key(group: int) -> tuple[str, int]:
    """The cache key of a group's prompt blocks (request entries are keyed by request id, an int)."""
    return ("prompt", group)


@dataclass
class KVMemory:
    """Block accounting. `held` counts blocks of running sequences; cached blocks are free to evict.

    The prefix cache keeps, per request, the KV of its last context on this instance after the request
    left (chunk end or preemption), evicted least-recently-used when blocks are needed. An entry is
    (tokens, blocks it occupies, shared prompt blocks it needs): a sample of a group caches only its own
    blocks, usable again while the group's prompt is here, held or cached. The last sharer to leave caches the
    prompt blocks under `prompt_key(group)`, after its own entry: vLLM frees a sequence's blocks tail first, so
    its own blocks are evicted before the prompt the others need.

    `groups[g] = [prompt blocks, samples referencing them]`: held = sum over sequences of (blocks - shared)
    plus every live group's prompt blocks.
    """

    capacity_blocks: int
    block_size: int
    prefix_cache: bool = False
    held: int = 0
    cache: OrderedDict = field(default_factory=OrderedDict)  # request id or prompt_key(g) -> (tokens, blocks, shared)
    cached_blocks: int = 0
    version: int = 0  # bumped by every change, so views of this memory can be cached
    groups: dict = field(default_factory=dict)  # group -> [prompt blocks held once, sequences sharing them]

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
            key, (tokens, blocks, shared) = self.cache.popitem(last=False)
            short = n - self.free
            if blocks > short and type(key) is not tuple:
                # vLLM frees a sequence's blocks tail first, so its tail is evicted first and the rest of its
                # prefix still hits; a group's prompt goes whole (its samples' entries need all of it)
                blocks -= short
                self.cache[key] = (min(tokens, (shared + blocks) * self.block_size), blocks, shared)
                self.cache.move_to_end(key, last=False)
                self.cached_blocks -= short
            else:
                self.cached_blocks -= blocks
        self.held += n
        return True

    def keep_prefix(self, request_id: int, tokens: int, blocks: int, group: int = -1, shared: int = 0) -> None:
        """A sequence leaves: its own blocks (and its group's prompt blocks, if it was their last sharer) go into
        the cache instead of being freed."""
        self.version += 1
        own = blocks - shared
        self.held -= own
        prompt = 0
        if shared:
            entry = self.groups[group]
            entry[1] -= 1
            if entry[1] == 0:  # the last sharer: the prompt blocks are cached on their own
                del self.groups[group]
                self.held -= entry[0]
                prompt = entry[0]
        if not self.prefix_cache:
            return
        if tokens > 0:
            self.drop_prefix(request_id)
            self.cache[request_id] = (tokens, own, shared)
            self.cached_blocks += own
        if prompt:
            self.drop_prefix(prompt_key(group))
            self.cache[prompt_key(group)] = (prompt * self.block_size, prompt, 0)
            self.cached_blocks += prompt

    def usable_prefix(self, request_id: int, group: int) -> tuple[int, int, int] | None:
        """The cached entry of a returning request, or None when it has none or its prompt blocks are gone."""
        entry = self.cache.get(request_id)
        if entry is None or (entry[2] and group not in self.groups and prompt_key(group) not in self.cache):
            return None
        return entry

    def cached_prompt(self, group: int) -> int:
        """Blocks of the group's prompt that sit in the cache (held by no sequence), 0 when none do."""
        entry = self.cache.get(prompt_key(group))
        return entry[1] if entry else 0

    def take_prefix(self, request_id) -> tuple[int, int, int]:
        """Claim a cached prefix (a returning request's, or a group's prompt under `prompt_key`): (tokens, blocks
        now held, shared prompt blocks)."""
        entry = self.cache.pop(request_id, None)
        if entry is None:
            return 0, 0, 0
        self.version += 1
        tokens, blocks, shared = entry
        self.cached_blocks -= blocks
        self.held += blocks
        return tokens, blocks, shared

    def join(self, group: int, prompt_blocks: int) -> None:
        """One more sequence shares its group's prompt blocks (the first sharer's admission allocates them)."""
        entry = self.groups.get(group)
        if entry is None:
            self.groups[group] = [prompt_blocks, 1]
        else:
            entry[1] += 1

    def sharers(self, group: int) -> int:
        entry = self.groups.get(group)
        return entry[1] if entry else 0

    def drop_prefix(self, request_id: int) -> None:
        entry = self.cache.pop(request_id, None)
        if entry is not None:
            self.version += 1
            self.cached_blocks -= entry[1]

    def cached_tokens(self, request_id: int) -> int:
        entry = self.cache.get(request_id)
        return entry[0] if entry else 0
