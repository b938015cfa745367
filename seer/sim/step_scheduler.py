"""One instance's vLLM-style step scheduler: a decision over the running batch, the waiting queue and KV.

`StepScheduler.schedule()` is vLLM v1's `schedule()` in miniature: running sequences are served first (one
token per decoding sequence, then the rest of the token budget to sequences still in prefill, in admission
order), allocating KV blocks; when those blocks do not fit, the lowest-priority, newest sequences are preempted
by recompute until they do. Only a pass that preempted nothing admits waiting sequences, in (priority,
arrival) order, while `max_num_seqs`, the token budget and KV allow. It returns the rows that run and their
new tokens; the instance applies the step after its duration. No clock and no SimPy here, so the decision can
be tested on its own.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np

from seer.core import shared_prompt_kv
from seer.sim.batch import InstanceStats, Running, Seq
from seer.sim.batch_kernels import plan_tokens
from seer.sim.config import InstanceConfig, SimulationError
from seer.sim.kv import KVMemory, blocks_for, prompt_key


class StepScheduler:
    """Admission, preemption and per-step token allocation for one instance.

    `on_preempted(seq)` is called for each victim right after its KV is released (the instance counts and
    reports it).

    With the prefix cache on, a request's prompt is computed and held once per instance for its whole group, as
    vLLM's refcounted blocks do: a sibling admitted while another member of its group is here (or is admitted in
    the same step; vLLM caches a block when it allocates it) starts with the prompt's full blocks computed and
    shares them (`KVMemory.groups`); it allocates only the blocks after them. The first sharer reclaims the
    group's prompt when it is still cached here (`kv.prompt_key`), and allocates its full blocks otherwise.
    """

    def __init__(
        self,
        instance_id: int,
        cfg: InstanceConfig,
        kv: KVMemory,
        run_set: Running,
        waiting: list[Seq],
        stats: InstanceStats,
        on_preempted: Callable[[Seq], None],
    ):
        self.instance_id, self.cfg, self.kv = instance_id, cfg, kv
        self.run_set, self.waiting, self.stats = run_set, waiting, stats
        self.on_preempted = on_preempted

    def enqueue(self, seq: Seq) -> None:
        """Into the waiting queue, kept sorted by (priority, arrival)."""
        i = bisect.bisect_right(self.waiting, seq.order(), key=Seq.order)
        self.waiting.insert(i, seq)

    def check_fits(self, target: int, rid: int) -> None:
        if blocks_for(target, self.cfg.block_size) > self.kv.capacity_blocks:
            raise SimulationError(
                f"request {rid} needs {target:,} tokens of KV, more than instance {self.instance_id} holds "
                f"({self.kv.capacity_blocks * self.cfg.block_size:,})"
            )

    def prompt_blocks(self, seq: Seq) -> int:
        """Full blocks of the sequence's prompt that its group shares (the last prompt token is always computed)."""
        if not self.kv.prefix_cache or seq.group < 0:
            return 0
        return shared_prompt_kv(seq.prompt_len, self.cfg.block_size) // self.cfg.block_size

    def admission_need(self, seq: Seq, budget: int) -> tuple[int, int, int, int]:
        """(hit tokens, new tokens this step, blocks to allocate, cached blocks reclaimed) to admit `seq` now."""
        hit, base, cb, _shared, first = self._reuse(seq)
        q = min(seq.target - hit, budget)
        total = blocks_for(hit + q, self.cfg.block_size)
        if first:  # the group's first sharer here allocates the prompt's shared blocks whole
            total = max(total, first)
        return hit, q, max(0, total - base), cb

    def _reuse(self, seq: Seq) -> tuple[int, int, int, int, int]:
        """What an admission of `seq` starts from: (hit tokens, blocks it has without allocating, cached blocks
        reclaimed, group prompt blocks it shares, prompt blocks it creates as the group's first sharer)."""
        S = self.prompt_blocks(seq)
        live = S and self.kv.sharers(seq.group)
        # the group's prompt blocks: held by siblings here, or cached since the last of them left (reclaimed)
        shared = self.kv.groups[seq.group][0] if live else (S and self.kv.cached_prompt(seq.group))
        reclaimed = 0 if live else shared
        entry = self.kv.usable_prefix(seq.rid, seq.group)
        if entry is not None:
            tokens, cb, sh = entry
            if not sh:
                shared = reclaimed = 0
            # vLLM finds cached KV by whole blocks, short of the last token: a partial block is computed again
            hit = min(tokens, seq.target - 1) // self.cfg.block_size * self.cfg.block_size
            return hit, cb + shared, cb + reclaimed, shared, 0
        if shared:
            return min(max(seq.pool_tokens, shared * self.cfg.block_size), seq.target - 1), shared, reclaimed, shared, 0
        return min(seq.pool_tokens, seq.target - 1), 0, 0, 0, S

    def can_admit_head(self, budget: int) -> bool:
        if not self.waiting or len(self.run_set) >= self.cfg.max_num_seqs or budget <= 0:
            return False
        _hit, _q, extra, cb = self.admission_need(self.waiting[0], budget)
        return extra <= self.kv.available() - cb

    def plan_running(self, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """New tokens per running row this step (1 per decoding row, then prefill rows in order) and the
        extra blocks each row needs for them (one compiled pass; `seer.sim.batch_reference.plan_tokens`)."""
        rs = self.run_set
        return plan_tokens(rs.ctx0, rs.produced, rs.computed, rs.blocks, budget, self.cfg.block_size)

    def schedule(self) -> tuple[np.ndarray, np.ndarray]:
        """One scheduling pass: (running row indices, new tokens of each) for the next step."""
        budget = self.cfg.max_num_batched_tokens
        rs = self.run_set
        preempted = False
        n = np.zeros(0, dtype=np.int64)
        if len(rs):
            n, need = self.plan_running(budget)
            while int(need.sum()) > self.kv.available():
                self._preempt_for(need)
                preempted = True
                if not len(rs):
                    break
                n, need = self.plan_running(budget)
            if len(rs):
                ok = self.kv.allocate(int(need.sum()))
                assert ok
                rs.blocks += need
                budget -= int(n.sum())
        idx = np.flatnonzero(n > 0) if len(rs) else np.zeros(0, dtype=np.int64)
        ns = n[idx] if len(rs) else np.zeros(0, dtype=np.int64)
        if preempted:
            return idx, ns
        admitted, admit_n = self._admit(budget)
        if admitted:
            start = len(rs)
            rs.append(admitted)
            idx = np.concatenate([idx, np.arange(start, start + len(admitted))])
            ns = np.concatenate([ns, np.array(admit_n, dtype=np.int64)])
        return idx, ns

    def _preempt_for(self, need: np.ndarray) -> None:
        """Preempt the lowest-priority, newest rows until the survivors' needs fit."""
        rs = self.run_set
        avail, still, freed = self.kv.available(), int(need.sum()), 0
        order = rs.order_desc()
        left: dict[int, int] = {}  # sharers of a group not yet preempted: the last one frees the prompt blocks
        for k, i in enumerate(order.tolist(), 1):
            seq = rs.seqs[i]
            freed += int(rs.blocks[i]) - seq.shared
            if seq.shared:
                left[seq.group] = left.get(seq.group, self.kv.sharers(seq.group)) - 1
                freed += self.kv.groups[seq.group][0] if left[seq.group] == 0 else 0
            still -= int(need[i])
            if still <= avail + freed:
                break
        if len(rs) == 1 or k >= len(rs):
            self.check_fits(int(rs.target[order[-1]] + 1), int(rs.rid[order[-1]]))
        mask = np.zeros(len(rs), dtype=bool)
        mask[order[:k]] = True
        for victim in rs.remove(mask):
            self.stats.preemptions += 1
            self.stats.recomputed_tokens += victim.computed
            self.release(victim)
            victim.computed = victim.blocks = 0
            victim.pool_tokens = 0
            self.enqueue(victim)
            self.on_preempted(victim)

    def release(self, seq: Seq) -> None:
        """The sequence leaves the batch: its blocks (and its share of the group's prompt) go to the cache."""
        self.kv.keep_prefix(seq.rid, seq.computed, seq.blocks, seq.group, seq.shared)
        seq.shared = 0

    def _admitted(self, seq: Seq, hit: int, extra: int) -> None:
        """Apply an admission: reclaim the cached prefix or share the group's prompt, allocate `extra` blocks."""
        _hit, base, _cb, shared, first = self._reuse(seq)
        own_entry = self.kv.usable_prefix(seq.rid, seq.group) is not None  # _reuse started from it
        if shared and not self.kv.sharers(seq.group):  # the prompt comes back from the cache
            self.kv.take_prefix(prompt_key(seq.group))
        if own_entry:  # a sample of a group cached only its own blocks: `shared` is the prompt's, held or reclaimed
            self.kv.take_prefix(seq.rid)
            self.stats.prefix_hit_tokens += hit
        else:
            prompt_hit = min(shared * self.cfg.block_size, hit)
            self.stats.prefix_hit_tokens += prompt_hit
            if hit > prompt_hit:
                self.stats.pool_fetched_tokens += hit
            shared = shared or first
        if shared:
            self.kv.join(seq.group, shared)
        if not seq.admitted and seq.gen0 > 0:
            # a resumed chunk prefills its earlier context again, less what a cache or the pool supplies (the
            # last generated token's KV was never computed); after a preemption `recomputed_tokens` counts it
            self.stats.resumed_prefill_tokens += max(0, seq.ctx0 - 1 - hit)
        self.stats.prefill_tokens += seq.target - hit
        seq.admitted = True
        seq.shared = shared
        seq.blocks = base
        seq.computed = hit
        seq.pool_tokens = 0
        ok = self.kv.allocate(extra)
        assert ok
        seq.blocks += extra

    def _admit(self, budget: int) -> tuple[list[Seq], list[int]]:
        """Waiting sequences admitted this step, in queue order, with their new tokens."""
        admitted, admit_n = [], []
        while self.waiting and len(self.run_set) + len(admitted) < self.cfg.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            hit, q, extra, cb = self.admission_need(seq, budget)
            if extra > self.kv.available() - cb:
                break
            self.waiting.pop(0)
            self._admitted(seq, hit, extra)
            admitted.append(seq)
            admit_n.append(q)
            budget -= q
        return admitted, admit_n
