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

from seer.sim.batch import InstanceStats, Running, Seq
from seer.sim.config import InstanceConfig, SimulationError
from seer.sim.kv import KVMemory, blocks_for


class StepScheduler:
    """Admission, preemption and per-step token allocation for one instance.

    `on_preempted(seq)` is called for each victim right after its KV is released (the instance counts and
    reports it).

    With the prefix cache on, a request's prompt is computed once per instance for its whole group, as vLLM does:
    a sibling admitted while another member of its group is here (or is admitted in the same step; vLLM caches a
    block when it allocates it) starts with the prompt's full blocks computed. Each sibling still holds its own
    copy of those blocks in the KV accounting (vLLM shares them), so KV use is over-counted by up to the shared
    prompt blocks of each group: a conservative simplification.
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
        self.prompt_holders: dict[int, int] = {}  # group -> its members here holding the prompt's blocks

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

    def admission_need(self, seq: Seq, budget: int) -> tuple[int, int, int, int]:
        """(hit tokens, new tokens this step, extra blocks, cached blocks reused) to admit `seq` now."""
        cached = self.kv.cached_tokens(seq.rid)
        if cached:
            entry = self.kv.cache.get(seq.rid)
            hit, cb = min(cached, seq.target - 1), (entry[1] if entry else 0)
        else:
            hit, cb = min(max(seq.pool_tokens, self._shared_prompt(seq)), seq.target - 1), 0
        q = min(seq.target - hit, budget)
        return hit, q, max(0, blocks_for(hit + q, self.cfg.block_size) - cb), cb

    def _shared_prompt(self, seq: Seq) -> int:
        """Prompt tokens a sibling has in the prefix cache here (full blocks; the last token is always computed)."""
        if not self.kv.prefix_cache or seq.group < 0 or not self.prompt_holders.get(seq.group):
            return 0
        return (seq.prompt_len - 1) // self.cfg.block_size * self.cfg.block_size

    def hold_prompt(self, seq: Seq) -> None:
        if self.kv.prefix_cache and not seq.holds_prompt:
            seq.holds_prompt = True
            self.prompt_holders[seq.group] = self.prompt_holders.get(seq.group, 0) + 1

    def release_prompt(self, seq: Seq) -> None:
        if seq.holds_prompt:
            seq.holds_prompt = False
            left = self.prompt_holders[seq.group] - 1
            if left:
                self.prompt_holders[seq.group] = left
            else:
                del self.prompt_holders[seq.group]

    def can_admit_head(self, budget: int) -> bool:
        if not self.waiting or len(self.run_set) >= self.cfg.max_num_seqs or budget <= 0:
            return False
        _hit, _q, extra, cb = self.admission_need(self.waiting[0], budget)
        return extra <= self.kv.available() - cb

    def plan_running(self, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """New tokens per running row this step (1 per decoding row, then prefill rows in order) and the
        extra blocks each row needs for them."""
        rs = self.run_set
        dec = rs.decoding()
        n = dec.astype(np.int64)
        left = budget - int(dec.sum())
        if left < 0:  # more decoders than the budget: serve them in admission order
            n[np.flatnonzero(dec)[budget:]] = 0
            left = 0
        for i in np.flatnonzero(~dec):
            take = min(int(rs.ctx0[i] + rs.produced[i] - rs.computed[i]), left)
            n[i] = take
            left -= take
        need = np.where(n > 0, np.maximum(-(-(rs.computed + n) // self.cfg.block_size) - rs.blocks, 0), 0)
        return n, need

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
                rs.blocks = rs.blocks + need
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
        avail = self.kv.available()
        order = rs.order_desc()
        freed = np.cumsum(rs.blocks[order])
        still = int(need.sum()) - np.cumsum(need[order])
        k = int(np.argmax(still <= avail + freed)) + 1
        if len(rs) == 1 or k >= len(rs):
            self.check_fits(int(rs.target[order[-1]] + 1), int(rs.rid[order[-1]]))
        mask = np.zeros(len(rs), dtype=bool)
        mask[order[:k]] = True
        for victim in rs.remove(mask):
            self.stats.preemptions += 1
            self.stats.recomputed_tokens += victim.computed
            self.kv.keep_prefix(victim.rid, victim.computed, victim.blocks)
            self.release_prompt(victim)
            victim.computed = victim.blocks = 0
            victim.pool_tokens = 0
            self.enqueue(victim)
            self.on_preempted(victim)

    def _admit(self, budget: int) -> tuple[list[Seq], list[int]]:
        """Waiting sequences admitted this step, in queue order, with their new tokens."""
        admitted, admit_n = [], []
        while self.waiting and len(self.run_set) + len(admitted) < self.cfg.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            hit, q, extra, cb = self.admission_need(seq, budget)
            if extra > self.kv.available() - cb:
                break
            self.waiting.pop(0)
            if cb:
                _tok, blocks = self.kv.take_prefix(seq.rid)
                seq.blocks = blocks
                self.stats.prefix_hit_tokens += hit
            else:
                seq.blocks = 0
                shared = min(self._shared_prompt(seq), hit)
                self.stats.prefix_hit_tokens += shared
                if hit > shared:
                    self.stats.pool_fetched_tokens += hit
            self.hold_prompt(seq)
            seq.computed = hit
            seq.pool_tokens = 0
            ok = self.kv.allocate(extra)
            assert ok
            seq.blocks += extra
            admitted.append(seq)
            admit_n.append(q)
            budget -= q
        return admitted, admit_n
