"""Decision-level tests of the simulated instance's step scheduler, without SimPy (as vLLM tests `schedule()`)."""

from __future__ import annotations

import numpy as np
import pytest

from seer.core import FinishReason
from seer.sim.batch import InstanceStats, Running, Seq
from seer.sim.config import InstanceConfig, SimulationError
from seer.sim.kv import KVMemory
from seer.sim.step_scheduler import StepScheduler


def make(capacity=64, block=4, max_seqs=8, batched=32, prefix_cache=False):
    cfg = InstanceConfig(capacity, block, max_seqs, batched, prefix_cache)
    preempted = []
    sched = StepScheduler(
        0, cfg, KVMemory(capacity // block, block, prefix_cache), Running(), [], InstanceStats(), preempted.append
    )
    return sched, preempted


def seq(rid, ctx, stop=10, priority=0, arrival=None):
    return Seq(rid, priority, rid if arrival is None else arrival, ctx, stop, True, FinishReason.EOS, stop)


def step(sched, idx, n):
    """Apply a scheduled step as the instance does: tokens computed, one sampled where the prompt is done."""
    rs = sched.run_set
    rs.computed[idx] += n
    rs.produced[idx] += rs.computed[idx] >= rs.ctx0[idx] + rs.produced[idx]


def test_admits_in_priority_then_arrival_order_within_the_token_budget():
    sched, _ = make(batched=12)
    for s in (seq(0, 8, priority=1), seq(1, 5), seq(2, 5)):
        sched.enqueue(s)
    assert [s.rid for s in sched.waiting] == [1, 2, 0]
    idx, n = sched.schedule()
    # 12 tokens: request 1's prompt (5), request 2's (5), then 2 tokens of request 0's prompt (chunked prefill)
    assert sched.run_set.rid.tolist() == [1, 2, 0] and n.tolist() == [5, 5, 2]
    assert sched.kv.held == 2 + 2 + 1


def test_decoders_first_then_prefill_with_what_is_left():
    sched, _ = make(batched=6, max_seqs=4)
    sched.enqueue(seq(0, 4))
    step(sched, *sched.schedule())  # request 0 prefilled, 1 token sampled: decoding
    sched.enqueue(seq(1, 9))
    idx, n = sched.schedule()
    assert n.tolist() == [1, 5]  # one decode token, then 5 of request 1's 9 prompt tokens


def test_preempts_the_newest_lowest_priority_request_when_blocks_run_out():
    sched, preempted = make(capacity=16, block=4, batched=32)
    for s in (seq(0, 7, priority=0), seq(1, 7, priority=1), seq(2, 1, priority=1)):
        sched.enqueue(s)
    step(sched, *sched.schedule())  # 2 + 2 + 1 = 5 blocks > 4: request 2 does not fit and waits
    assert sched.run_set.rid.tolist() == [0, 1] and [s.rid for s in sched.waiting] == [2]
    step(sched, *sched.schedule())  # contexts 8 and 8: two blocks each, all 4 held
    idx, n = sched.schedule()  # each needs a third block: request 1 (priority 1) goes, request 0 keeps running
    assert [p.rid for p in preempted] == [1]
    assert sched.run_set.rid.tolist() == [0] and n.tolist() == [1]
    assert [s.rid for s in sched.waiting] == [1, 2] and sched.stats.recomputed_tokens == 8
    assert sched.kv.held == 3


def test_a_pass_that_preempts_admits_nothing():
    sched, preempted = make(capacity=8, block=4, batched=32)
    sched.enqueue(seq(0, 3))
    sched.enqueue(seq(1, 3))
    step(sched, *sched.schedule())
    step(sched, *sched.schedule())  # contexts 5: blocks 2 each would be needed next
    sched.enqueue(seq(2, 1, priority=-1))
    idx, n = sched.schedule()
    assert preempted and 2 not in sched.run_set.rid.tolist()


def test_a_request_larger_than_the_instance_is_refused():
    sched, _ = make(capacity=8, block=4)
    sched.enqueue(seq(0, 8, stop=4))
    step(sched, *sched.schedule())
    with pytest.raises(SimulationError, match="more than instance 0 holds"):
        sched.schedule()


def test_a_cached_prefix_is_reused_on_admission():
    sched, _ = make(capacity=64, block=4, prefix_cache=True)
    sched.kv.allocate(3)
    sched.kv.keep_prefix(5, 12, 3)  # request 5 left 12 tokens of KV here
    s = seq(5, 12)
    s.produced = 0
    sched.enqueue(s)
    idx, n = sched.schedule()
    assert n.tolist() == [1] and sched.stats.prefix_hit_tokens == 11  # only the last token is recomputed
    assert np.array_equal(sched.run_set.blocks, [3])
