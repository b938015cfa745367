"""Invariants of the simulator over random small traces and clusters."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seer.policies import make_policy
from seer.sim.cluster import ClusterConfig
from seer.sim.driver import simulate


@st.composite
def workloads(draw, mixed: bool = False):
    block = draw(st.sampled_from([1, 4, 16]))
    cap_blocks = draw(st.integers(8, 120))
    cap = cap_blocks * block
    max_seqs = draw(st.integers(1, 8))
    cluster = ClusterConfig(
        name="prop",
        model=draw(st.sampled_from(["qwen2.5-1.5b", "moonlight-16b-a3b"])),
        instances=draw(st.integers(1, 3)),
        kv_capacity_tokens=cap,
        block_size=block,
        max_num_seqs=max_seqs,
        max_num_batched_tokens=draw(st.integers(max_seqs, 64)),
        prefix_cache=draw(st.booleans()),
        max_tokens=400,
    )
    rows = []
    for p in range(draw(st.integers(1, 6))):
        plen = draw(st.integers(1, max(1, cap // 3)))
        for s in range(draw(st.integers(1, 4))):
            if mixed:  # the samples of one prompt id differ in prompt length (a carried-over or user trace)
                plen = draw(st.integers(1, max(1, cap // 3)))
            out = draw(st.integers(0, max(0, min(300, cap - plen))))
            rows.append({"prompt_id": p, "sample_id": s, "prompt_len": plen, "output_len": out})
    return pd.DataFrame(rows), cluster


POLICIES = ["verl", "least-loaded"]
settings_ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("policy", POLICIES)
@settings_
@given(work=workloads())
def test_invariants(policy, work):
    trace, cluster = work
    res = simulate(trace, cluster, make_policy(policy), progress=False)
    got = res.requests.set_index(["prompt_id", "sample_id"])["output_len"]
    want = trace.set_index(["prompt_id", "sample_id"])["output_len"]
    # every request reports exactly its recorded length (an empty one still samples its end token, not counted)
    assert got.sort_index().tolist() == want.sort_index().tolist()
    assert (res.requests["finish_reason"] != "").all()
    # KV in use never exceeds capacity
    assert (res.timeline["kv_used_tokens"] <= cluster.kv_capacity()).all()
    # makespan is never under the lower bound
    s = res.summary
    assert s["makespan_s"] >= s["lower_bound_s"] * (1 - 1e-9)
    assert 0 < s["efficiency"] <= 1 + 1e-9
    assert s["tail_s"] <= s["makespan_s"] + 1e-9


@settings(max_examples=40, deadline=None)
@given(
    plen=st.integers(1, 5000),
    out=st.integers(0, 300),
    chunk=st.integers(16, 2048),
    model=st.sampled_from(["qwen2.5-1.5b", "moonlight-16b-a3b"]),
)
def test_a_request_alone_meets_its_bound(plen, out, chunk, model):
    """A request alone on an instance prefills in full chunks (the remainder last) and then decodes alone. The
    per-request bound prices the same steps with the remainder first (the cheapest order, reading less KV): equal
    when the chunks are equal, otherwise just below."""
    cluster = ClusterConfig(
        name="one", model=model, instances=1, max_num_seqs=1, max_num_batched_tokens=chunk, max_tokens=400
    )
    trace = pd.DataFrame([{"prompt_id": 0, "sample_id": 0, "prompt_len": plen, "output_len": out}])
    s = simulate(trace, cluster, make_policy("verl"), progress=False).summary
    if plen <= chunk or plen % chunk == 0:
        assert s["lower_bound_s"] == pytest.approx(s["makespan_s"], rel=1e-9)
    else:
        assert s["makespan_s"] * 0.99 <= s["lower_bound_s"] <= s["makespan_s"] * (1 + 1e-9)


@pytest.mark.parametrize(
    "policy, prompts, samples",
    [
        # a short prompt fills the step, so the long one's first chunk is small: it reads less KV in all
        ("verl", [15, 16001], 1),
        # partial rollout aborts the second group before its 100,000-token prompt is prefilled
        ("partial", [16, 100_000], 2),
    ],
)
def test_the_bound_holds_where_prefill_is_cheaper_or_never_runs(policy, prompts, samples):
    cluster = ClusterConfig(
        name="one", model="qwen2.5-1.5b", instances=1, max_num_seqs=4, max_num_batched_tokens=16, max_tokens=400
    )
    trace = pd.DataFrame(
        [{"prompt_id": i, "sample_id": s, "prompt_len": p, "output_len": 1} for i, p in enumerate(prompts)
         for s in range(samples)]
    )  # fmt: skip
    s = simulate(trace, cluster, make_policy(policy), progress=False).summary
    assert s["makespan_s"] >= s["lower_bound_s"] * (1 - 1e-9)


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=workloads())
def test_fast_path_agrees_with_step_exact_mode(policy, work):
    trace, cluster = work
    fast = simulate(trace, cluster, make_policy(policy), progress=False).summary
    exact = simulate(trace, cluster, make_policy(policy), exact=True, progress=False).summary
    assert fast["makespan_s"] == pytest.approx(exact["makespan_s"], rel=0.01)
    assert fast["preemptions"] == exact["preemptions"]
    assert fast["steps"] == exact["steps"]


@settings(max_examples=15, deadline=None)
@given(work=workloads())
def test_same_input_same_result(work):
    trace, cluster = work
    a = simulate(trace, cluster, make_policy("least-loaded"), progress=False)
    b = simulate(trace, cluster, make_policy("least-loaded"), progress=False)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.timeline, b.timeline)
    assert {k: v for k, v in a.summary.items() if k != "wall_s"} == {
        k: v for k, v in b.summary.items() if k != "wall_s"
    }


@pytest.mark.parametrize("policy", POLICIES)
def test_fast_and_exact_agree_on_a_synthetic_trace_with_preemption(policy):
    from seer.traces.synth import SynthConfig, synthesize

    trace = synthesize(SynthConfig(prompts=12, group_size=4, mean_len=300, max_tokens=2048, seed=5))
    cluster = ClusterConfig(
        name="small",
        model="qwen2.5-7b",
        instances=2,
        kv_capacity_tokens=4096,
        block_size=16,
        max_num_seqs=16,
        max_num_batched_tokens=512,
        max_tokens=2048,
    )
    fast = simulate(trace, cluster, make_policy(policy), progress=False).summary
    exact = simulate(trace, cluster, make_policy(policy), exact=True, progress=False).summary
    assert fast["preemptions"] > 0
    assert fast["epochs"] > 0 and exact["epochs"] == 0
    assert abs(fast["makespan_s"] - exact["makespan_s"]) <= 0.01 * exact["makespan_s"]


@pytest.mark.parametrize("policy", ["context", "divided", "oracle"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=workloads(), instances=st.integers(1, 6))
def test_the_incremental_load_book_matches_a_full_read(policy, work, instances):
    """The divided family's book re-reads only the instances the change log names: after every sync it must
    equal a book read from every instance's view."""
    import dataclasses

    from seer.core import ClusterView
    from seer.policies.placement import LoadBook

    trace, cluster = work
    cluster = dataclasses.replace(cluster, instances=instances)
    sync, syncs = LoadBook.sync, []

    def checked(book, view):
        sync(book, view)
        full = LoadBook()
        sync(full, ClusterView(view.t, list(view.instances), view.groups, view.requests, view.members))
        keys = ("free", "in_flight", "limit", "block", "capacity", "max_capacity", "max_block")
        keys += ("free_total", "in_flight_total", "open_slots", "open_count")
        assert {k: getattr(book, k) for k in keys} == {k: getattr(full, k) for k in keys}
        assert (book.most_free(), book.most_free_open()) == (full.most_free(), full.most_free_open())
        assert book.uniform_blocks() == full.uniform_blocks()
        syncs.append(view.changes is not None)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(LoadBook, "sync", checked)
        simulate(trace, cluster, make_policy(policy), progress=False)
    assert syncs and all(syncs)  # the simulator keeps a change log, so the incremental path was the one checked


@pytest.mark.parametrize("policy", ["context", "divided", "oracle"])
def test_the_divided_family_reads_views_per_change_not_per_instance(policy, monkeypatch):
    """Each dispatch pass re-reads only the instances that changed: the views read per event stay flat from 4 to
    32 instances (reading every instance per pass, as before the change log, makes it grow with the cluster)."""
    from seer.experiment import Setup, run
    from seer.sim.cluster import load_cluster
    from seer.sim.instance import SimInstance
    from seer.traces.synth import SynthConfig, synthesize

    reads, view = [0], SimInstance.view

    def counted(self):
        reads[0] += 1
        return view(self)

    monkeypatch.setattr(SimInstance, "view", counted)
    trace = synthesize(SynthConfig(prompts=250, group_size=8, mean_len=2000, max_tokens=16384, seed=0))
    per_event = []
    for instances in (4, 32):
        reads[0] = 0
        s = run(Setup(trace, load_cluster("moonlight", instances=instances), "x"), policy, progress=False).summary
        per_event.append(reads[0] / (s["chunks"] + s["epochs"]))
    assert max(per_event) < 1.0, per_event


@pytest.mark.parametrize("policy", ["verl", "context"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=workloads(), exact=st.booleans())
def test_group_prompt_blocks_are_held_once(policy, work, exact):
    """KV held = every running sequence's own blocks + each group's shared prompt blocks once, with each group
    counting exactly its running sharers, and the cache adding up, after every scheduling pass."""
    import dataclasses

    from seer.sim.kv import prompt_key
    from seer.sim.step_scheduler import StepScheduler

    trace, cluster = work
    cluster = dataclasses.replace(cluster, prefix_cache=True)
    schedule, checked = StepScheduler.schedule, [0]

    def check(sched):
        out = schedule(sched)
        kv, seqs = sched.kv, list(sched.run_set.seqs)
        sharers: dict[int, int] = {}
        for seq in seqs:
            if seq.shared:
                sharers[seq.group] = sharers.get(seq.group, 0) + 1
                assert seq.shared == kv.groups[seq.group][0]
        assert sharers == {g: n for g, (_blocks, n) in kv.groups.items()}
        own = sum(int(b) for b in sched.run_set.blocks) - sum(s.shared for s in seqs)
        assert kv.held == own + sum(blocks for blocks, _n in kv.groups.values())
        assert kv.cached_blocks == sum(entry[1] for entry in kv.cache.values())
        assert 0 <= kv.held + kv.cached_blocks <= kv.capacity_blocks
        # a prompt is here once: held by its running samples or cached, never both
        assert not any(prompt_key(g) in kv.cache for g in kv.groups)
        checked[0] += 1
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StepScheduler, "schedule", check)
        res = simulate(trace, cluster, make_policy(policy), exact=exact, progress=False)
    got = res.requests.set_index(["prompt_id", "sample_id"])["output_len"].sort_index().tolist()
    assert got == trace.set_index(["prompt_id", "sample_id"])["output_len"].sort_index().tolist()
    assert checked[0] > 0


def test_siblings_share_their_prompt_blocks_on_an_instance():
    """Eight samples of a 1,000-token prompt on one instance: the prompt's 62 full blocks are held once."""
    import simpy

    from seer.core import Chunk, Request
    from seer.sim.instance import SimInstance

    cluster = ClusterConfig(
        name="share",
        model="qwen2.5-1.5b",
        instances=1,
        kv_capacity_tokens=16 * 2000,
        block_size=16,
        max_num_seqs=8,
        max_num_batched_tokens=16384,
        prefix_cache=True,
        max_tokens=64,
    )
    env = simpy.Environment()
    inst = SimInstance(
        env, 0, cluster.cost_model(), cluster.instance_config(), dict.fromkeys(range(8), 64), lambda e: None
    )
    for rid in range(8):
        inst.submit(Chunk(rid, 0, 64, 0), Request(rid, 0, rid, prompt_len=1000, max_tokens=64))
    env.run(until=1e-9)
    env.step()  # the admission step
    blocks = [int(b) for b in inst.run_set.blocks]
    assert len(blocks) == 8 and inst.kv.groups == {0: [62, 8]}
    # each sample: its last 8 prompt tokens + the first output token in one block of its own, after the 62 shared
    assert inst.kv.held == 62 + sum(b - 62 for b in blocks) < 8 * 62


@st.composite
def running_batches(draw):
    """A running batch in any mix of states: decoding, mid-prefill, not yet started, and a few blocks to spare."""
    from seer.core import FinishReason
    from seer.sim.batch import Running, Seq

    block = draw(st.sampled_from([1, 4, 16]))
    rows = draw(
        st.lists(
            st.tuples(st.integers(1, 5000), st.integers(0, 300), st.integers(0, 400), st.sampled_from(["dec", "pre"])),
            min_size=1,
            max_size=40,
        )
    )
    rs = Running()
    ctx0 = np.array([c for c, _, _, _ in rows], np.int64)
    produced = np.array([p for _, p, _, _ in rows], np.int64)
    # a decoding row has its context cached up to its last sampled token; a prefill row only part of it
    target = ctx0 + produced
    computed = np.array(
        [
            t - 1 if (kind == "dec" and p > 0) else draw(st.integers(0, t - 1))
            for t, (_, p, _, kind) in zip(target, rows)
        ],
        np.int64,
    )
    spare = draw(st.lists(st.integers(0, 3), min_size=len(rows), max_size=len(rows)))
    blocks = -(-computed // block) + np.array(spare, np.int64)
    rs.append(
        [
            Seq(i, 0, i, int(c0), int(p + 1 + left), False, FinishReason.CHUNK, int(p + 1 + left))
            for i, (c0, p, left, _kind) in enumerate(rows)
        ]
    )
    rs.computed[:], rs.produced[:], rs.blocks[:] = computed, produced, blocks
    return rs, block


@settings(max_examples=300, deadline=None)
@given(batch=running_batches(), budget=st.integers(1, 4000), avail=st.integers(0, 600))
def test_the_compiled_batch_kernels_equal_their_numpy_reference(batch, budget, avail):
    """Step plan, step sums (the floats the cost model reads, bit for bit), step application, a decode epoch's
    advance and its cut: every kernel of `seer.sim.batch_kernels` against `seer.sim.batch_reference`."""
    import copy

    from seer.sim import batch_kernels as k
    from seer.sim import batch_reference as ref

    rs, block = batch
    n, need = k.plan_tokens(rs.ctx0, rs.produced, rs.computed, rs.blocks, budget, block)
    n_ref, need_ref = ref.plan_tokens(rs, budget, block)
    assert n.tolist() == n_ref.tolist() and need.tolist() == need_ref.tolist()
    assert k.all_decoding(rs.ctx0, rs.produced, rs.computed) == bool(rs.decoding().all())
    idx = np.flatnonzero(n > 0)
    sums, sums_ref = k.step_sums(idx, n[idx], rs.computed, rs.ctx0, rs.produced), ref.step_sums(rs, idx, n[idx])
    assert sums == sums_ref and all(type(a) is type(b) for a, b in zip(sums, sums_ref))
    other = copy.deepcopy(rs)
    k.apply_step(idx, n[idx], rs.computed, rs.ctx0, rs.produced)
    ref.apply_step(other, idx, n[idx])
    assert rs.computed.tolist() == other.computed.tolist() and rs.produced.tolist() == other.produced.tolist()
    steps = int(min(avail, 50))
    again = copy.deepcopy(rs)
    assert k.advance_decode(rs.computed, rs.produced, rs.blocks, steps, block) == ref.advance_decode(
        again, steps, block
    )
    assert [c.tolist() for c in (rs.computed, rs.produced, rs.blocks)] == [
        c.tolist() for c in (again.computed, again.produced, again.blocks)
    ]
    if len(rs) and (rs.stop > rs.produced).all():
        from seer.sim.epochs import fast_epoch_length

        assert fast_epoch_length(rs, block, avail) == ref.fast_epoch_length(rs, block, avail)


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 4)),
            st.tuples(st.just("bump"), st.integers(0, 50)),
            st.tuples(st.just("remove"), st.lists(st.booleans(), min_size=0, max_size=12)),
        ),
        max_size=30,
    ),
    capacity=st.integers(1, 4),
)
def test_the_running_batch_buffer_equals_a_list_of_rows(ops, capacity):
    """`Running` keeps its columns in one growable buffer and compacts it in place; against a plain list of rows,
    after every append (growing past the capacity), in-place update and removal (one row or several)."""
    from seer.core import FinishReason
    from seer.sim.batch import Running, Seq

    rs, model, made = Running(capacity), [], 0
    for op, arg in ops:
        if op == "append":
            new = [  # every column a different value, so a column written to another's place shows
                Seq(made + i, made % 3, 1000 + made + i, 10 + i, 5, False, FinishReason.CHUNK, 5, gen0=7 + i)
                for i in range(arg)
            ]
            for seq in new:
                seq.computed, seq.produced, seq.blocks = 3 + seq.rid, seq.rid % 5, 40 + 2 * seq.rid
            made += arg
            rs.append(new)
            model += new
        elif op == "bump" and model:
            rs.computed += arg  # columns are updated in place, as the instance does
            rs.produced += 1
            rs.blocks[:] = rs.blocks + 2
            for seq in model:
                seq.computed, seq.produced, seq.blocks = seq.computed + arg, seq.produced + 1, seq.blocks + 2
        elif op == "remove" and model:
            mask = np.array((arg + [False] * len(model))[: len(model)])
            leaving = [s for s, m in zip(model, mask) if m]
            state = [(s.computed, s.produced, s.blocks) for s in leaving]
            for seq in leaving:  # the buffer's values must be written back into the Seq objects that leave
                seq.computed = seq.produced = seq.blocks = -1
            gone = rs.remove(mask)
            assert gone == leaving
            assert [(s.computed, s.produced, s.blocks) for s in gone] == state
            model = [s for s, m in zip(model, mask) if not m]
        assert len(rs) == len(model) and list(rs.seqs) == model
        for col in Running.COLS:
            assert getattr(rs, col).tolist() == [getattr(s, col) for s in model], col
    assert all(o is None for o in rs._objs[len(rs) :])  # removed rows hold no references


@pytest.mark.parametrize("policy", ["verl", "divided", "context"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=workloads(), mixed=workloads(mixed=True), exact=st.booleans())
def test_kv_held_stays_within_what_the_instance_reserved(policy, work, mixed, exact):
    """An instance's reservation (`kv_reserved_tokens`: every chunk's worst case, with the prefix cache a group's
    shared prompt blocks once) bounds the KV its sequences hold, whenever a step or an epoch starts, and returns
    to zero when the rollout ends; also when the samples of one prompt id differ in prompt length."""
    from seer.sim.driver import SimDriver
    from seer.sim.instance import SimInstance

    record, checked = SimInstance._record, [0]

    def check(inst):
        assert inst.kv.held * inst.cfg.block_size <= inst.reservation.tokens
        checked[0] += 1
        return record(inst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SimInstance, "_record", check)
        for trace, cluster in (work, mixed):
            driver = SimDriver(trace, cluster, make_policy(policy), exact=exact, progress=False)
            driver.run()
            assert [inst.reservation.tokens for inst in driver.engines] == [0] * cluster.instances
    assert checked[0] > 0


@settings(max_examples=100, deadline=None)
@given(
    chunks=st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 500), st.integers(0, 2)), min_size=1, max_size=30),
    mixed=st.booleans(),
    order=st.randoms(use_true_random=False),
)
def test_a_reservation_counts_each_groups_shared_prompt_once(chunks, mixed, order):
    """After any arrivals and departures: every chunk's worst case beyond its group's prompt, plus the prompt
    once for each group with a chunk present (group -1: no group, nothing shared); where a group's chunks bring
    different prompts, the prompt counts at the least any of them brought; nothing is left when all have gone."""
    from seer.core import Reservation

    res, present, least = Reservation(), [], {}

    def prompt(g, k):  # the group's shared tokens, one per group unless `mixed`
        return 0 if g < 0 else 16 * (g + 2 + (k if mixed else 0))

    def expected():
        groups = {g for g, _w, _s in present if g >= 0}
        counts = {g: sum(g == h for h, _w, _s in present) for g in groups}
        return sum(w for _g, w, _s in present) - sum((counts[g] - 1) * least[g] for g in groups)

    for g, own, k in chunks:
        shared = prompt(g, k)
        res.change(own + shared, g, shared, 1)
        present.append((g, own + shared, shared))
        least[g] = min(least.get(g, shared), shared)
        assert res.tokens == expected()
    order.shuffle(present)
    while present:
        g, worst, shared = present.pop()
        res.change(worst, g, shared, -1)
        assert res.tokens == expected()
    assert res.tokens == 0


@pytest.mark.parametrize("lengths", [[1515, 1823, 2912, 2191, 1900, 1635, 1684, 2805], [900, 1200, 2500, 3100] * 3])
def test_an_abort_answering_a_finish_on_the_same_instance_lands_before_its_next_step(lengths):
    """Partial rollout aborts the leftovers the moment its target is met, often in answer to a finish on the same
    instance: the fast path started its next epoch with the aborted request in the batch and ran it on (one more
    group counted done, 16% on the makespan against exact mode)."""
    G = 1 if len(lengths) == 8 else 4
    trace = pd.DataFrame(
        [{"prompt_id": i // G, "sample_id": i % G, "prompt_len": 300, "output_len": n, "max_tokens": 4096}
         for i, n in enumerate(lengths)]
    )  # fmt: skip
    cluster = ClusterConfig(
        name="small",
        model="moonlight-16b-a3b",
        instances=2,
        max_num_seqs=64,
        max_num_batched_tokens=8192,
        max_tokens=4096,
        kv_capacity_tokens=8192,
    )
    fast = simulate(trace, cluster, make_policy("partial"), progress=False)
    exact = simulate(trace, cluster, make_policy("partial"), exact=True, progress=False)
    assert fast.summary["makespan_s"] == pytest.approx(exact.summary["makespan_s"], rel=1e-9)
    assert fast.summary["output_tokens"] == exact.summary["output_tokens"]
    assert (fast.requests["finish_reason"] == "abort").sum() > 0
    assert list(fast.requests["finish_reason"]) == list(exact.requests["finish_reason"])


@pytest.mark.parametrize(
    "outputs, groups, prompt_len, capacity, batched",
    [
        # instances 0 and 2 end a step at the same instant; the end on 2 meets the target, and the abort it sends
        # to 0 landed before 0's next step in fast mode and after it in exact mode (the order of tied events
        # followed when each end had been scheduled)
        ([1, 6, 0, 6, 2, 0, 6, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0], [4, 2, 3, 3, 3, 2], [3] * 6, 9, 59),
        # the end on 1 meets the target at the instant a step inside 2's fast epoch ends: the epoch counted the
        # next step as in flight (one more token), while exact mode's step end let the abort land first
        ([4, 2, 1, 0, 1, 7, 4, 7, 1, 0, 5, 1, 0, 1, 7, 6], [3, 4, 4, 2, 2, 1], [2, 1, 1, 1, 1, 2], 8, 34),
    ],
)
def test_events_that_tie_between_instances_land_in_the_same_order_in_both_modes(
    outputs, groups, prompt_len, capacity, batched
):
    """Three identical instances serving identical shapes end steps at the same instants. At one instant the
    simulator runs the instant's other events, then step ends in instance order, then step starts, whatever the
    mode, so an abort answering a tied finish lands at the same step boundary in both."""
    keys = [(p, s) for p, n in enumerate(groups) for s in range(n)]
    trace = pd.DataFrame(
        [{"prompt_id": p, "sample_id": s, "prompt_len": prompt_len[p], "output_len": out}
         for (p, s), out in zip(keys, outputs)]
    )  # fmt: skip
    cluster = ClusterConfig(
        name="ties",
        model="moonlight-16b-a3b",
        instances=3,
        kv_capacity_tokens=capacity,
        block_size=1,
        max_num_seqs=1,
        max_num_batched_tokens=batched,
        prefix_cache=True,
        max_tokens=400,
    )
    fast = simulate(trace, cluster, make_policy("partial"), progress=False)
    exact = simulate(trace, cluster, make_policy("partial"), exact=True, progress=False)
    assert fast.summary["makespan_s"] == pytest.approx(exact.summary["makespan_s"], rel=1e-9)
    assert fast.summary["steps"] == exact.summary["steps"]
    assert list(fast.requests["output_len"]) == list(exact.requests["output_len"])
    assert list(fast.requests["finish_reason"]) == list(exact.requests["finish_reason"])
