"""Decision-level tests of the memory-aware rules of the divided family: adaptive chunk budgets, backfill,
pacing and the group length estimate."""

from __future__ import annotations

import itertools
import math

import pytest
from engine_script import Harness

from seer.policies.context import ContextPolicy
from seer.policies.divided import DividedPolicy
from seer.policies.estimates import GroupLengthEstimator, normal_order_stat


def budgets(actions):
    return [a.max_new_tokens for a in actions]


def test_chunks_are_full_while_memory_is_plentiful():
    h = Harness(DividedPolicy(chunk_size=100), [4], capacity=10**6)
    assert budgets(h.start()) == [100] * 4


def test_scarce_memory_is_shared_over_the_waiting_requests():
    # 8 requests of context 10 on 1,000 tokens (blocks of 1), with one share of slack for the one instance:
    # (1000 - 8 * (10 + 1)) / (8 + 1) = 101 each, not 200 for the first four (with fewer than 8 waiting per
    # instance, less slack)
    h = Harness(DividedPolicy(chunk_size=200, max_chunks=1000), [8], capacity=1000)
    acts = h.start()
    assert len(acts) == 8 and budgets(acts) == [101] * 8
    # the paper's rule reserves the whole chunk: only 1000 // 210 = 4 fit
    h = Harness(DividedPolicy(chunk_size=200, admission="worst-case"), [8], capacity=1000)
    assert budgets(h.start()) == [200] * 4


def test_a_request_never_gets_less_than_its_floor():
    # max_tokens 1000 / max_chunks 4 = 250: with 300 tokens free (of 2,000), one chunk of 250 fits, no more
    h = Harness(DividedPolicy(chunk_size=500, max_chunks=4), [6], capacity=2000)
    h.reserved = 1700
    assert budgets(h.start()) == [250]


def test_the_floor_is_sized_by_what_an_instance_holds_when_max_tokens_is_more():
    # max_tokens 10**6 on a 300-token instance: no response grows past 290 tokens beside its prompt of 10, so the
    # floor is 290 / 4 = 73 and three chunks run at once (sized by max_tokens, 250,000, one chunk took the instance)
    h = Harness(DividedPolicy(chunk_size=500, max_chunks=4), [6], capacity=300, max_tokens=10**6)
    assert budgets(h.start()) == [73] * 3
    # a cap beyond what any instance holds changes nothing further: the same passes at 290 and at 10**6
    for cap in (290, 10**9):
        again = Harness(DividedPolicy(chunk_size=500, max_chunks=4), [6], capacity=300, max_tokens=cap)
        assert budgets(again.start()) == [73] * 3


def test_the_head_gets_what_the_emptiest_instance_has_left():
    h = Harness(DividedPolicy(chunk_size=500, max_chunks=100), [1], capacity=200)
    assert budgets(h.start()) == [189]  # 200 free - 10 of context - one block of rounding; the floor is 10


def test_backfill_keeps_the_emptiest_instance_for_the_blocked_head():
    # group 0 has a long context (500) and no room anywhere; group 1's short requests fill instance 1 only,
    # instance 0 (the emptiest) is kept for the head
    # (the floor is 1000 / 20 = 50 tokens: a short request needs 10 + 50)
    pol = DividedPolicy(chunk_size=50, max_chunks=20)
    h = Harness(pol, [1, 4], capacity=1100, prompt=[500, 10], instances=2, max_tokens=1000)
    h.engines[0].reserved, h.engines[1].reserved = 800, 950
    acts = h.start()
    assert 0 not in [a.request_id for a in acts]
    assert {a.instance for a in acts} == {1} and budgets(acts) == [50, 50]  # 150 free on instance 1: two of 60
    h2 = Harness(
        DividedPolicy(chunk_size=50, max_chunks=20, backfill=False),
        [1, 4],
        capacity=1100,
        prompt=[500, 10],
        instances=2,
        max_tokens=1000,
    )
    h2.engines[0].reserved, h2.engines[1].reserved = 800, 950
    assert h2.start() == []  # the paper's cycle: the head does not fit, nothing runs


def test_pacing_serves_the_critical_path_and_round_robins_the_rest():
    # three groups finished their probes: estimates 900, 500 and 100
    pol = ContextPolicy(chunk_size=1000, starvation_every=0, estimate="max-finished", admission="worst-case")
    h = Harness(pol, [3, 3, 3], capacity=0)
    h.start()
    h.capacity = 3 * 1010
    h.apply(pol._fill(h.view()))  # the probes
    h.capacity = 0
    for rid, n in ((0, 100), (3, 900), (6, 500)):
        h.finish(rid, n, True, 1000)
    # remaining work 2 * (100 + 900 + 500) = 3000 tokens over the requests in flight: nothing is in flight,
    # so each running slot owes 3000 tokens: the longest (900) is below that, so the oldest waiting goes first
    h.capacity, h.reserved = 10**9, 0
    order = [h.ro.requests[a.request_id].group_id for a in h.apply(pol._fill(h.view()))]
    assert order[:2] == [0, 0] and pol.paced_picks >= 2
    # without pacing: longest estimate first
    pol = ContextPolicy(chunk_size=1000, starvation_every=0, estimate="max-finished", admission="worst-case", pacing=0)
    h = Harness(pol, [3, 3, 3], capacity=0)
    h.start()
    h.capacity = 3 * 1010
    h.apply(pol._fill(h.view()))
    h.capacity = 0
    for rid, n in ((0, 100), (3, 900), (6, 500)):
        h.finish(rid, n, True, 1000)
    h.capacity, h.reserved = 10**9, 0
    assert [h.ro.requests[a.request_id].group_id for a in h.apply(pol._fill(h.view()))] == [1, 1, 2, 2, 0, 0]


def test_order_stat_estimate_reads_the_first_finishers_as_the_shortest():
    est = GroupLengthEstimator("order-stat", {0: 8, 1: 8}, {0: 10_000, 1: 10_000}, prior_sigma=0.3)
    assert est.estimate[0] == 10_000  # nothing finished: the cap
    e = est.finished(0, 1000)
    want = 1000 * math.exp(0.3 * (normal_order_stat(8, 8) - normal_order_stat(1, 8)))
    assert e == round(want) and e > 2000
    assert est.progressed(0, 5000) == 5000  # a member already has 5,000 tokens: the group is at least that long
    assert est.finished(1, 20_000) == 10_000  # never above max_tokens


def test_pooled_spread_comes_from_groups_with_two_finished_responses():
    est = GroupLengthEstimator("order-stat", {0: 4}, {0: 10**6}, prior_sigma=0.3)
    for n in (100, 200, 400):
        est.finished(0, n)
    sample = [math.log(x) for x in (100, 200, 400)]
    ss = sum((x - sum(sample) / 3) ** 2 for x in sample)
    assert est.sigma == pytest.approx(math.sqrt((2 * 0.09 + ss) / (2 + 2)))
    # the last one left is the group's maximum: e(4, 4) - e(3, 4) spreads above the third finisher
    assert est.estimate[0] == round(400 * math.exp(est.sigma * (normal_order_stat(4, 4) - normal_order_stat(3, 4))))


def test_max_finished_is_the_papers_estimate():
    est = GroupLengthEstimator("max-finished", {0: 4}, {0: 1000})
    assert est.finished(0, 300) == 300 and est.progressed(0, 600) == 300 and est.finished(0, 200) == 300


def test_placement_scans_every_instance_only_while_block_sizes_differ():
    """Most-free placement stops at the emptiest instance when every instance rounds KV to the same block size;
    the book must notice when an instance's block size changes (incremental sync) and when it leaves."""
    from seer.core import ClusterView, InstanceChanges, InstanceView
    from seer.policies.placement import LoadBook, Placement

    def views(block1: int, alive1: bool = True) -> list:
        # instance 0: the most free KV (900) in blocks of 1,000, so a 510-token worst case takes 1,000; instance 1:
        # 600 free, where that worst case takes ceil(510 / block1) blocks
        return [
            InstanceView(0, 1000, 0, 100, 0, 0, block_size=1000),
            InstanceView(1, 1000, 0, 400, 0, 0, alive=alive1, block_size=block1),
        ]

    log, book, place = InstanceChanges(), LoadBook(), Placement("most-free")
    book.sync(ClusterView(0.0, views(1000), {}, {}, {}, log))
    assert book.uniform_blocks() and place.choose(book, 0, 10, 500) is None  # 1,000 > 600: none fits
    log.mark(1)
    book.sync(ClusterView(0.0, views(16), {}, {}, {}, log))
    assert not book.uniform_blocks() and place.choose(book, 0, 10, 500) == 1  # 512 <= 600 on instance 1
    log.mark(1)
    book.sync(ClusterView(0.0, views(16, alive1=False), {}, {}, {}, log))
    assert book.uniform_blocks() and place.choose(book, 0, 10, 500) is None


def test_backfill_candidates_come_smallest_context_first_even_when_one_enters_meanwhile():
    """`Admission.candidates` leaves a candidate in its heap until the caller moves past it; a request that
    enters while the iteration is paused (no policy does this today) must still come out in context order."""
    from types import SimpleNamespace

    from seer.policies.admission import Admission

    adm = Admission("adaptive", chunk_size=100, max_chunks=4, backfill=True)
    waiting = set()

    def enter(rid: int, context: int) -> None:
        waiting.add(rid)
        adm.entered(SimpleNamespace(request_id=rid, context_len=context))

    enter(1, 5)
    enter(2, 7)
    enter(4, 9)
    seen = []
    for rid in itertools.islice(adm.candidates(waiting), 10):  # bounded: a broken heap could offer one forever
        seen.append(rid)
        if rid == 1 and 3 not in waiting:
            enter(3, 1)
        if rid == 2:
            waiting.discard(2)  # dispatched
            adm.left(SimpleNamespace(request_id=2, context_len=7))
    assert seen == [1, 3, 2, 4]
    gen = adm.candidates(waiting)  # closed at its first candidate: every waiting request is offered again
    assert next(gen) == 3
    gen.close()
    assert list(adm.candidates(waiting)) == [3, 1, 4]
