"""Decision-level tests of the Seer schedulers on hand-built situations, plus end-to-end checks."""

import dataclasses

import pytest
from engine_script import Harness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_properties import workloads

from seer.core import Request, traits_of
from seer.policies import POLICIES, make_policy
from seer.policies.context import ContextPolicy
from seer.policies.divided import DividedPolicy, OraclePolicy
from seer.sim.cluster import ClusterConfig
from seer.sim.driver import simulate
from seer.traces.synth import SynthConfig, synthesize


def paper_context(**params):
    """Seer's Algorithm 2 as printed: worst-case chunk reservations, L̂ = longest finished, LFS without pacing."""
    return ContextPolicy(admission="worst-case", estimate="max-finished", pacing=0, **params)


def sample(h, rid):
    return h.ro.requests[rid].sample_index


def test_probes_go_first_then_the_rest():
    h = Harness(paper_context(chunk_size=10), [3, 3, 3])
    acts = h.start()
    assert [sample(h, a.request_id) for a in acts[:3]] == [0, 0, 0]  # one probe per group, first
    assert all(a.priority == 0 for a in acts[:3]) and all(a.priority == 1 for a in acts[3:])
    assert len(acts) == 9 and all(a.max_new_tokens == 10 for a in acts)


def test_probes_shortest_generated_first_and_no_dispatch_where_kv_does_not_fit():
    # room for one chunk at a time (a chunk needs context + 10 <= 35 tokens; two never fit together)
    h = Harness(paper_context(chunk_size=10), [2, 2, 2], capacity=35)
    first = h.start()
    assert len(first) == 1 and first[0].request_id == 0  # probe of group 0; nothing else fits
    nxt = h.finish(0, 10, False, 10)  # probe 0 has 10 tokens now; probes 2 and 4 have none
    assert [a.request_id for a in nxt] == [2]
    nxt = h.finish(2, 4, False, 10)  # probe 2: 4 tokens; probe 4: 0 tokens -> shortest first
    assert [a.request_id for a in nxt] == [4]
    nxt = h.finish(4, 10, False, 10)  # now 0:10, 2:4, 4:10 -> probe 2
    assert [a.request_id for a in nxt] == [2]
    h.capacity = 0
    assert h.finish(2, 1, False, 10) == []  # fits nowhere: the request stays buffered


def test_estimate_is_max_finished_length_and_longest_estimate_goes_first():
    pol = paper_context(chunk_size=1000, starvation_every=0)
    h = Harness(pol, [3, 3, 3], capacity=0)
    h.start()  # nothing fits
    assert pol.estimate == {0: 1000, 1: 1000, 2: 1000}  # no finished response yet: max_tokens
    # dispatch the probes only: make room for three chunks
    h.capacity = 3 * 1010
    acts = h.apply(pol._fill(h.view()))
    assert [a.request_id for a in acts] == [0, 3, 6]
    h.capacity = 0
    h.finish(0, 100, True, 1000)
    h.finish(3, 900, True, 1000)
    h.finish(6, 500, True, 1000)
    assert pol.estimate == {0: 100, 1: 900, 2: 500}
    h.capacity, h.reserved = 10**9, 0
    order = [h.ro.requests[a.request_id].group_id for a in h.apply(pol._fill(h.view()))]
    assert order == [1, 1, 2, 2, 0, 0]  # longest estimate first, FIFO inside a group


def test_estimate_only_grows_after_the_first_finish():
    pol = paper_context(chunk_size=1000)
    h = Harness(pol, [3])
    assert len(h.start()) == 3
    h.finish(1, 300, True, 1000)
    assert pol.estimate[0] == 300
    h.finish(2, 200, True, 1000)
    assert pol.estimate[0] == 300
    h.finish(0, 700, True, 1000)
    assert pol.estimate[0] == 700


def test_anti_starvation_serves_the_longest_waiting_request():
    pol = paper_context(chunk_size=1000, starvation_every=2)
    h = Harness(pol, [1, 3, 3], capacity=0)
    h.start()
    h.capacity = 3 * 1010
    h.apply(pol._fill(h.view()))  # the three probes
    h.capacity = 0
    h.finish(0, 10, True, 1000)  # group 0 done
    h.finish(1, 900, True, 1000)  # group 1 long
    h.finish(4, 50, True, 1000)  # group 2 short
    h.capacity, h.reserved = 10**9, 0
    order = [a.request_id for a in h.apply(pol._fill(h.view()))]
    # LFS would give 2, 3 (group 1) then 5, 6; every 2nd pick goes to the oldest waiting request instead
    assert order == [2, 3, 5, 6]
    assert pol.starvation_picks >= 1


def test_oracle_orders_by_true_length_and_needs_its_input():
    pol = OraclePolicy(chunk_size=100, admission="worst-case")
    h = Harness(pol, [2, 2])
    with pytest.raises(RuntimeError, match="set_oracle_lengths"):
        h.start()
    pol.set_oracle_lengths({0: 5, 1: 50, 2: 500, 3: 1})
    assert [a.request_id for a in h.start()] == [2, 1, 0, 3]


def test_only_oracle_policies_can_receive_true_lengths():
    for name, (cls, _desc) in POLICIES.items():
        has_input = hasattr(cls, "set_oracle_lengths")
        assert has_input == traits_of(cls()).needs_oracle == ("oracle" in name), name
    with pytest.raises(Exception, match="unexpected keyword|true_lengths"):
        make_policy("context", true_lengths={0: 1})
    # what a policy reads about a request carries no final length
    fields = {f.name for f in dataclasses.fields(Request)}
    assert not fields & {"output_len", "true_len", "final_len", "length"}


class Spy(DividedPolicy):
    """Takes true lengths if handed them (it has the method), but does not declare needs_oracle."""

    name = "spy"

    def __init__(self, **params):
        super().__init__(**params)
        self.events, self.given = 0, []

    def set_oracle_lengths(self, lengths):
        self.given.append(lengths)

    def on_event(self, event, view):
        self.events += 1
        for req in view.requests.values():
            assert req.generated <= req.max_tokens
            assert not hasattr(req, "output_len")
        return super().on_event(event, view)


def test_the_driver_gives_ordinary_policies_no_lengths():
    tr = synthesize(SynthConfig(prompts=4, group_size=2, mean_len=50, max_tokens=400))
    cl = ClusterConfig(name="c", model="qwen2.5-1.5b", instances=2, kv_capacity_tokens=5000, max_tokens=400)
    spy = Spy(chunk_size=16)
    res = simulate(tr, cl, spy, progress=False)
    assert spy.events >= len(tr) and res.summary["requests"] == len(tr)  # it ran the whole rollout
    assert spy.given == []  # the true lengths go only to a policy whose traits ask for them


ADMISSION_VARIANTS = [
    "divided",
    "divided:admission=worst-case",
    "divided:backfill=false",
    "divided:max_chunks=4",
    "context",
    "context:pacing=0:estimate=max-finished",
    "context:admission=worst-case",
    "oracle",
    "streamrl-oracle",
]


@pytest.mark.parametrize("policy", ADMISSION_VARIANTS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=workloads(), chunk=st.sampled_from([8, 32, 256]))
def test_no_preemption_by_construction(policy, work, chunk):
    """Every admission rule of the divided family: no preemption, every token once, KV within capacity,
    makespan at or above the lower bound."""
    trace, cluster = work
    res = simulate(trace, cluster, make_policy(policy, shared={"chunk_size": chunk}), progress=False)
    assert (res.timeline["kv_used_tokens"] <= cluster.kv_capacity()).all()
    group_kv = (trace["prompt_len"] + trace["output_len"].clip(lower=1)).groupby(trace["prompt_id"]).sum()
    if policy != "streamrl-oracle" or group_kv.max() <= cluster.kv_capacity():  # atomic groups must fit whole
        assert res.summary["preemptions"] == 0
    got = res.requests.set_index(["prompt_id", "sample_id"])["output_len"].sort_index()
    assert got.tolist() == trace.set_index(["prompt_id", "sample_id"])["output_len"].sort_index().tolist()
    assert res.summary["makespan_s"] >= res.summary["lower_bound_s"] * (1 - 1e-9)


class _CheckedLongest(ContextPolicy):
    """`_longest` (a heap with lazily dropped entries) held to a scan of every group after each call."""

    calls = 0

    def _longest(self):
        waiting = {g: next((r for r in q if r in self._waiting), None) for g, q in self._group_queue.items()}
        live = [g for g, r in waiting.items() if r is not None]
        want = waiting[min(live, key=lambda g: (-self.estimate[g], g))] if live else None
        got = super()._longest()
        assert got == want
        _CheckedLongest.calls += 1
        return got


@pytest.mark.parametrize("params", [{}, {"pacing": 0, "estimate": "max-finished"}])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=workloads(), chunk=st.sampled_from([4, 16, 64]))
def test_context_longest_first_is_the_group_with_the_largest_estimate(params, work, chunk):
    """Longest-first picks the first waiting request of the group with the largest current estimate (ties: the
    smaller group id), however often estimates moved up and down since entries were pushed."""
    trace, cluster = work
    before = _CheckedLongest.calls
    simulate(trace, cluster, _CheckedLongest(chunk_size=chunk, **params), progress=False)
    assert _CheckedLongest.calls > before or trace["prompt_id"].nunique() * 2 >= len(trace)


def test_streamrl_oracle_keeps_groups_atomic():
    tr = synthesize(SynthConfig(prompts=12, group_size=4, mean_len=200, max_tokens=2000, seed=2))
    cl = ClusterConfig(name="c", model="qwen2.5-7b", instances=3, kv_capacity_tokens=8000, max_tokens=2000)
    res = simulate(tr, cl, make_policy("streamrl-oracle"), progress=False)
    assert (res.requests.groupby("prompt_id")["instance"].nunique() == 1).all()
    assert (res.requests["chunks"] == 1).all() and res.summary["preemptions"] == 0


@pytest.fixture(scope="module")
def long_tail_results():
    trace = synthesize(
        SynthConfig(
            prompts=48,
            group_size=8,
            mean_len=3000,
            eta2=0.75,
            within_cv=0.28,
            max_tokens=16384,
            prompt_mean=256,
            seed=3,
        )
    )
    cluster = ClusterConfig(
        name="c",
        model="qwen2.5-7b",
        instances=4,
        kv_capacity_tokens=120_000,
        max_num_seqs=256,
        max_tokens=16384,
        kv_mode="pool",
    )
    policies = (
        "verl",
        "divided",
        "context",
        "oracle",
        "divided:admission=worst-case",
        "context:admission=worst-case:estimate=max-finished:pacing=0",
    )
    return {
        p: simulate(trace, cluster, make_policy(p, shared={"chunk_size": 4096}), progress=False).summary
        for p in policies
    }


def test_end_to_end_context_beats_verl_and_divided_and_oracle_beats_context(long_tail_results):
    r = {p: s["throughput_tok_s"] for p, s in long_tail_results.items()}
    assert r["context"] > r["verl"] and r["context"] > r["divided"]
    assert r["oracle"] >= r["context"]
    assert long_tail_results["context"]["tail_s"] < long_tail_results["verl"]["tail_s"]
    # adaptive admission keeps more requests running than reserving every chunk's worst case
    assert r["divided"] > 1.1 * r["divided:admission=worst-case"]
    assert (
        long_tail_results["divided"]["mean_running"] > long_tail_results["divided:admission=worst-case"]["mean_running"]
    )
    # the paper's rules as printed: lower throughput here, but the long tail is cut in half
    paper = long_tail_results["context:admission=worst-case:estimate=max-finished:pacing=0"]
    assert paper["throughput_tok_s"] > r["verl"] and paper["tail_s"] < 0.5 * long_tail_results["verl"]["tail_s"]


def test_partial_rollout_stops_at_the_target_and_biases_lengths_short():
    from seer.experiment import Setup, run_iterations

    cfg = SynthConfig(prompts=16, group_size=4, mean_len=400, max_tokens=4000, prompt_mean=64, seed=4)
    cl = ClusterConfig(name="c", model="qwen2.5-7b", instances=2, kv_capacity_tokens=40_000, max_tokens=4000)
    setup = Setup(synthesize(cfg), cl, "small", cfg)
    sync, sync_len = run_iterations(setup, "verl", iterations=3)
    part, part_len = run_iterations(setup, "partial", iterations=3)
    assert (sync.groups_trained == 16).all()
    assert (part.groups_trained >= 16).all() and (part.carried_requests > 0).any()
    assert part_len.output_len.mean() < sync_len.output_len.mean()


def test_partial_refuses_a_target_above_the_groups_and_reports_the_requests_it_ran():
    """A target_groups above the groups an iteration holds was run as if met: every group trained, and the
    compare row said the setup's requests per iteration although over-issue ran twice as many."""
    from seer.errors import SeerInputError
    from seer.experiment import Setup, iterations_summary, run, run_iterations

    cfg = SynthConfig(prompts=4, group_size=4, mean_len=200, max_tokens=2000, prompt_mean=64, seed=5)
    cl = ClusterConfig(name="c", model="qwen2.5-7b", instances=2, kv_capacity_tokens=40_000, max_tokens=2000)
    setup = Setup(synthesize(cfg), cl, "small", cfg)
    with pytest.raises(SeerInputError, match=r"partial: target_groups=9 is more than the 8 groups"):
        run_iterations(setup, "partial:target_groups=9", iterations=1)
    with pytest.raises(SeerInputError, match=r"target_groups=5 is more than the 4 groups"):
        run(setup, "partial:target_groups=5")  # one rollout of the trace as it is: 4 groups
    table, trained = run_iterations(setup, "partial:target_groups=8", iterations=2)  # as many as there are
    assert list(table.groups_issued) == [8, 8] and table.requests[0] == 8 * 4
    row = iterations_summary("partial", table, trained, requests=len(setup.trace))
    assert row["requests"] == round(table.requests.mean()) > len(setup.trace)
    sync, sync_len = run_iterations(setup, "verl", iterations=1)
    assert iterations_summary("verl", sync, sync_len, requests=len(setup.trace))["requests"] == 16


def test_compare_takes_a_users_policy_object_and_refuses_a_name_twice():
    from seer.core import Dispatch, RolloutStarted
    from seer.errors import SeerInputError
    from seer.experiment import Setup, compare

    class Mine:  # round-robin at the start, each request to completion: the contract and nothing more
        name = "mine"

        def on_event(self, event, view):
            if not isinstance(event, RolloutStarted):
                return []
            n = len(view.instances)
            return [Dispatch(rid, i % n, 10**9) for i, rid in enumerate(sorted(view.requests))]

    setup = Setup.from_preset("moonlight", prompts=6)
    rows, results = compare(setup, ["verl", Mine()])
    assert [r["policy"] for r in rows] == ["verl", "mine"] and set(results) == {"verl", "mine"}
    assert rows[1]["requests"] == rows[0]["requests"] == len(setup.trace)
    with pytest.raises(SeerInputError, match="'verl' given more than once"):
        compare(setup, ["verl", "verl"])
