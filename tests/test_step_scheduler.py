"""Decision-level tests of the simulated instance's step scheduler, without SimPy (as vLLM tests `schedule()`)."""

from __future__ import annotations

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


def test_a_cached_prefix_is_reused_on_admission_in_whole_blocks():
    """vLLM finds cached KV by whole blocks and computes at least the last token: a 12-token context with all 12
    cached (3 blocks of 4) computes its last block again; a 14-token context with 10 cached computes from 8."""
    for cached, blocks, ctx, hit in ((12, 3, 12, 8), (10, 3, 14, 8), (13, 4, 14, 12)):
        sched, _ = make(capacity=64, block=4, prefix_cache=True)
        sched.kv.allocate(blocks)
        sched.kv.keep_prefix(5, cached, blocks)  # request 5 left `cached` tokens of KV here
        sched.enqueue(seq(5, ctx))
        _idx, n = sched.schedule()
        assert n.tolist() == [ctx - hit] and sched.stats.prefix_hit_tokens == hit
        assert sched.kv.cache == {} and sched.kv.held == -(-ctx // 4)


def _leave(sched, rid):
    """Request `rid` leaves the batch as a finished chunk does: its KV goes to the prefix cache."""
    (gone,) = sched.run_set.remove(sched.run_set.rid == rid)
    sched.release(gone)
    return gone


def test_a_groups_prompt_stays_cached_after_its_last_sample_leaves():
    """vLLM's cached blocks are found by content: a sibling admitted after the last sample of its group left the
    instance starts from the prompt's blocks, which are not allocated a second time."""
    sched, _ = make(capacity=64, block=4, prefix_cache=True)
    sched.enqueue(Seq(0, 0, 0, 10, 5, True, None, 5, group=7, prompt_len=10))
    step(sched, *sched.schedule())  # the prompt prefilled: 10 tokens in 3 blocks, 2 of them the group's
    assert sched.kv.groups == {7: [2, 1]} and sched.kv.held == 3
    _leave(sched, 0)
    assert sched.kv.held == 0 and sched.kv.cached_prompt(7) == 2 and sched.kv.cached_blocks == 3
    sched.enqueue(Seq(1, 0, 1, 10, 5, True, None, 5, group=7, prompt_len=10))
    _idx, n = sched.schedule()
    assert n.tolist() == [2] and sched.stats.prefix_hit_tokens == 8  # the prompt's 8 block tokens were cached
    assert sched.kv.groups == {7: [2, 1]} and sched.kv.cached_prompt(7) == 0
    assert sched.kv.held == 3 and sched.kv.cached_blocks == 1  # request 0's own block stays cached
    assert sched.kv.usable_prefix(0, 7) is not None  # and request 0 can come back to it


def test_a_returning_sample_reclaims_its_own_blocks_and_its_groups_cached_prompt():
    """Request 0 leaves while its sibling still holds the prompt, then the sibling leaves too: request 0 comes
    back to its own cached blocks and the prompt's, and computes only its last, partial block again."""
    sched, _ = make(capacity=64, block=4, prefix_cache=True)
    for rid in (0, 1):
        sched.enqueue(Seq(rid, 0, rid, 10, 9, True, None, 9, group=7, prompt_len=10))
    for _ in range(6):  # the prompts, then 5 decode steps: 15 tokens computed, 16 in context
        step(sched, *sched.schedule())
    assert _leave(sched, 0).computed == 15 and sched.kv.usable_prefix(0, 7) is not None
    _leave(sched, 1)
    assert sched.kv.held == 0 and sched.kv.cached_prompt(7) == 2
    sched.enqueue(Seq(0, 0, 0, 16, 3, True, None, 3, gen0=6, group=7, prompt_len=10))
    _idx, n = sched.schedule()
    assert n.tolist() == [4] and sched.stats.resumed_prefill_tokens == 3  # tokens 12..14 again, then the 16th
    assert sched.kv.groups == {7: [2, 1]} and sched.kv.held == 4 and list(sched.kv.cache) == [1]


def test_eviction_takes_a_cached_context_from_its_tail():
    """vLLM frees a sequence's blocks tail first, so the blocks it evicts first are the tail's: what is left of
    the entry still gives its prefix."""
    sched, _ = make(capacity=16, block=4, prefix_cache=True)
    sched.kv.allocate(3)
    sched.kv.keep_prefix(5, 12, 3)  # 3 blocks cached, 1 free
    assert sched.kv.allocate(3) and sched.kv.cache == {5: (4, 1, 0)}  # 2 of its blocks were needed
    hit, new, _extra, reclaimed = sched.admission_need(seq(5, 14), 32)
    assert (hit, new, reclaimed) == (4, 10, 1)
