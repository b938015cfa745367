"""Invariants of the simulator over random small traces and clusters."""

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seer.policies import make_policy
from seer.sim.cluster import ClusterConfig
from seer.sim.driver import simulate


@st.composite
def workloads(draw):
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
