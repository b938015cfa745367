"""Hand-built situations whose outcome can be worked out on paper."""

import dataclasses

import pandas as pd
import pytest

from seer.policies import make_policy
from seer.sim.cluster import ClusterConfig
from seer.sim.driver import simulate
from seer.sim.instance import SimulationError


def trace(rows):
    return pd.DataFrame(
        [
            {"prompt_id": p, "sample_id": s, "prompt_len": pl, "output_len": ol, "max_tokens": 64}
            for p, s, pl, ol in rows
        ]
    )


def tiny(**kw) -> ClusterConfig:
    base = dict(
        name="tiny",
        model="qwen2.5-1.5b",
        instances=1,
        kv_capacity_tokens=10,
        block_size=1,
        max_num_seqs=4,
        max_num_batched_tokens=64,
        max_tokens=64,
    )
    base.update(kw)
    return ClusterConfig(**base)


@pytest.mark.parametrize("exact", [False, True])
def test_preemption_by_recompute_of_the_newest_request(exact):
    # two requests, prompt 2, output 6, KV for 10 tokens: they fit together for 3 decode steps, then the newer
    # one (request 1, holding 5 computed tokens) is preempted, recomputed after request 0 finishes.
    res = simulate(trace([(0, 0, 2, 6), (0, 1, 2, 6)]), tiny(), make_policy("verl"), exact=exact, progress=False)
    r = res.requests.set_index("request_id")
    assert r.loc[1, "preemptions"] == 1 and r.loc[0, "preemptions"] == 0
    assert r.loc[0, "finish_s"] < r.loc[1, "finish_s"]
    assert res.summary["recomputed_tokens"] == 5
    assert list(r["output_len"]) == [6, 6]
    assert (res.timeline["kv_used_tokens"] <= 10).all()
    ev = res.events
    assert list(ev.kind) == ["preempt"] and ev.request_id.iloc[0] == 1


def test_no_preemption_when_kv_suffices():
    res = simulate(
        trace([(0, 0, 2, 6), (0, 1, 2, 6)]), tiny(kv_capacity_tokens=14), make_policy("verl"), progress=False
    )
    assert res.summary["preemptions"] == 0
    # both decode in lockstep and finish together
    assert res.requests.finish_s.nunique() == 1


def test_a_request_larger_than_an_instance_is_refused():
    with pytest.raises(SimulationError, match="needs 12 tokens of KV, more than an instance"):
        simulate(trace([(0, 0, 2, 10)]), tiny(), make_policy("verl"), progress=False)


def test_verl_keeps_groups_whole_and_round_robin():
    tr = trace([(p, s, 3, 5 + p + s) for p in range(5) for s in range(3)])
    res = simulate(tr, tiny(instances=2, kv_capacity_tokens=1000), make_policy("verl"), progress=False)
    placed = res.requests.groupby("prompt_id")["instance"].agg(["nunique", "first"])
    assert (placed["nunique"] == 1).all()
    assert list(placed["first"]) == [0, 1, 0, 1, 0]
    assert res.summary["migrations"] == 0


def test_least_loaded_spreads_requests_and_beats_verl_on_an_unbalanced_trace():
    # one group of long requests and many short ones: verl pins the long group to one instance
    rows = [(0, s, 4, 60) for s in range(4)] + [(p, s, 4, 5) for p in range(1, 8) for s in range(4)]
    cl = tiny(instances=4, kv_capacity_tokens=2000, max_num_seqs=2)
    verl = simulate(trace(rows), cl, make_policy("verl"), progress=False).summary
    ll = simulate(trace(rows), cl, make_policy("least-loaded"), progress=False).summary
    assert ll["makespan_s"] < verl["makespan_s"]


def test_tail_time_definition():
    from seer.metrics import tail_time

    finish = list(range(1, 21))  # 20 requests finishing at 1..20 s: the last 2 are the tail
    assert tail_time(finish) == 20 - 18
    assert tail_time([5.0]) == 5.0


def test_pool_mode_fetches_instead_of_recomputing():
    from seer.core import Chunk, Request

    cl = tiny(kv_capacity_tokens=1000, kv_mode="pool")
    import simpy

    from seer.sim.instance import SimInstance

    env = simpy.Environment()
    events = []
    inst = SimInstance(env, 0, cl.cost_model(), cl.instance_config(), {0: 50}, events.append)
    req = Request(0, 0, 0, prompt_len=100, max_tokens=64, generated=20)  # resumed: 120 tokens of context
    inst.submit(Chunk(0, 0, 10, 20), req)
    env.run()
    # the 119 tokens before the last generated one come from the pool; only that last one is computed again
    assert inst.stats.pool_fetched_tokens == 119 and inst.stats.resumed_prefill_tokens == 0
    assert events[-2].new_tokens == 10 and not events[-2].finished
    local = SimInstance(
        simpy.Environment(),
        0,
        cl.cost_model(),
        dataclasses.replace(cl.instance_config(), kv_mode="local"),
        {0: 50},
        lambda e: None,
    )
    local.submit(Chunk(0, 0, 10, 20), req)
    local.env.run()
    assert local.stats.pool_fetched_tokens == 0 and local.stats.resumed_prefill_tokens == 119
    assert local.env.now > env.now  # recomputing 119 tokens costs more than fetching them


@pytest.mark.parametrize("exact", [True, False])
def test_an_abort_waiting_on_the_step_that_ends_the_chunk_keeps_the_chunks_reason(exact):
    """An abort takes effect at the next step boundary; if the chunk ended in that step, it finished (audit m7)."""
    import simpy

    from seer.core import Chunk, ChunkFinished, FinishReason, Request
    from seer.sim.instance import SimInstance

    cl = tiny(kv_capacity_tokens=1000)

    def finish(abort_at: float | None):
        env, events = simpy.Environment(), []
        inst = SimInstance(env, 0, cl.cost_model(), cl.instance_config(), {0: 5}, events.append, exact=exact)
        inst.submit(Chunk(0, 0, 100, 0), Request(0, 0, 0, prompt_len=20, max_tokens=100))
        if abort_at is not None:
            env.run(until=abort_at)
            inst.abort(0)
        env.run()
        (done,) = [e for e in events if isinstance(e, ChunkFinished)]
        return done

    end = finish(None)
    assert end.finished and end.reason is not FinishReason.ABORT
    last = finish(end.t * (1 - 1e-6))  # inside the step that produces the last token
    assert (last.reason, last.finished, last.new_tokens) == (end.reason, True, 5)
    early = finish(end.t * 0.01)  # inside the first step: the request is cut short
    assert early.reason is FinishReason.ABORT and not early.finished and early.new_tokens < 5


def test_the_lower_bound_counts_a_shared_prompt_once():
    """With the prefix cache, siblings share their group's prompt blocks, so the bound must not charge every
    sibling its whole prompt: two siblings of a 17-token prompt with 16-token blocks compute 17 + 1 prompt tokens
    at least, not 34 (hypothesis found a run that finished under the old bound)."""
    from seer.sim.bounds import min_prefill_tokens

    assert min_prefill_tokens([17, 17], [0, 0], 16) == 18
    assert min_prefill_tokens([40, 40, 40, 9], [0, 0, 0, 1], 16) == 40 + 8 + 8 + 9
    assert min_prefill_tokens([32, 32], [0, 0], 16) == 32 + 16  # the last token is always computed
    assert min_prefill_tokens([0, 0, 0, 0], [0, 0, 0, 0], 16) == 0  # empty prompts compute nothing
    # siblings of different lengths share at most the longest prompt's full blocks (192 tokens): the 191-token
    # ones may compute a single token each, and the group's first member may be a short one
    assert min_prefill_tokens([208] + [191] * 31, [0] * 32, 16) == 16 + 31 + 190
    cluster = tiny(
        model="moonlight-16b-a3b",
        max_num_seqs=2,
        max_num_batched_tokens=6,
        prefix_cache=True,
        max_tokens=400,
        kv_capacity_tokens=128,
        block_size=16,
    )
    tr = pd.DataFrame({"prompt_id": [0, 0], "sample_id": [0, 1], "prompt_len": [17, 17], "output_len": [0, 0]})
    for policy in ("verl", "least-loaded"):
        s = simulate(tr, cluster, make_policy(policy), progress=False).summary
        assert s["lower_bound_s"] <= s["makespan_s"] * (1 + 1e-9)
        off = simulate(tr, dataclasses.replace(cluster, prefix_cache=False), make_policy(policy), progress=False)
        assert off.summary["lower_bound_s"] > s["lower_bound_s"]  # without sharing the whole prompts count
    # siblings of unequal prompts, and empty prompts: the bound stays under the makespan
    wide = dataclasses.replace(cluster, max_num_seqs=64, max_num_batched_tokens=64, kv_capacity_tokens=16384)
    for lens in ([208] + [191] * 31, [0] * 8):
        tr = pd.DataFrame(
            {"prompt_id": 0, "sample_id": range(len(lens)), "prompt_len": lens, "output_len": [0] * len(lens)}
        )
        s = simulate(tr, wide, make_policy("verl"), progress=False).summary
        assert s["lower_bound_s"] <= s["makespan_s"] * (1 + 1e-9), lens


def test_siblings_of_unequal_prompts_share_the_shortest_ones_full_blocks():
    # one prompt id, prompts of 300 and 100 tokens (block 16), the longer admitted first: they share the 100-token
    # prompt's 6 full blocks, so the shorter computes 100 - 96 tokens. Before, it shared the first admitted's 18
    # blocks and computed only its last token (301 in all), more sharing than its own prompt holds.
    tr = trace([(0, 0, 300, 1), (0, 1, 100, 1)])
    cluster = tiny(kv_capacity_tokens=4096, block_size=16, prefix_cache=True)
    s = simulate(tr, cluster, make_policy("verl"), progress=False).summary
    assert s["prefill_tokens"] == 300 + 4
    off = simulate(tr, dataclasses.replace(cluster, prefix_cache=False), make_policy("verl"), progress=False)
    assert off.summary["prefill_tokens"] == 400


@pytest.mark.parametrize("policy", ["verl", "divided", "context"])
def test_the_timeline_counts_what_a_step_runs_after_admitting(policy):
    # KV of one 16-token block, one request's whole context (prompt 5 + 11 outputs): an instance is never idle
    # until the last request ends, and one request runs in every step. The divided family cuts one-token
    # chunks, so every step admits; the timeline row was taken before admission and showed 0 running
    # throughout (mean_running 0).
    rows = [(p, s, 5, 11) for p in range(4) for s in range(3)]
    cluster = tiny(kv_capacity_tokens=16, block_size=16, instances=2)
    res = simulate(trace(rows), cluster, make_policy(policy), progress=False)
    busy = res.timeline[res.timeline["t"] < res.summary["makespan_s"]]
    assert (busy["running"] == 1).all() and (busy["kv_used_tokens"] > 0).all()
    assert res.summary["mean_running"] == pytest.approx(1.0)


def test_a_resumed_chunk_counts_the_context_it_prefills_again():
    # prompt 10, 20 outputs in chunks of 8, 8, 4: the second chunk re-prefills 10 + 8 - 1 tokens (the last sampled
    # token's KV was never computed), the third 10 + 16 - 1. The global pool fetches them and the prefix cache
    # keeps them, so neither re-prefills.
    want = {"local": 17 + 25, "pool": 0}
    for mode, tokens in want.items():
        res = simulate(
            trace([(0, 0, 10, 20)]), tiny(kv_capacity_tokens=4096, kv_mode=mode), make_policy("divided:chunk_size=8")
        )
        assert res.summary["chunks"] == 3 and res.summary["resumed_prefill_tokens"] == tokens
    cached = tiny(kv_capacity_tokens=4096, prefix_cache=True)
    assert (
        simulate(trace([(0, 0, 10, 20)]), cached, make_policy("divided:chunk_size=8")).summary["resumed_prefill_tokens"]
        == 0
    )


def test_arrival_times_are_ignored_and_the_user_is_told():
    rows = trace([(0, s, 10, 5) for s in range(4)]).assign(arrival_s=[0.0, 1.0, 2.0, 30.0])
    with pytest.warns(UserWarning, match=r"arrival_s \(up to 30 s\) is ignored"):
        late = simulate(rows, tiny(kv_capacity_tokens=4096), make_policy("verl"))
    plain = simulate(rows.drop(columns="arrival_s"), tiny(kv_capacity_tokens=4096), make_policy("verl"))
    assert late.summary["makespan_s"] == plain.summary["makespan_s"]


def test_a_trace_of_several_iterations_runs_as_one_rollout_and_the_user_is_told():
    import warnings

    rows = trace([(p, s, 10, 5) for p in range(3) for s in range(2)]).assign(iteration=[0, 0, 1, 1, 5, 5])
    with pytest.warns(UserWarning, match=r"iteration column holds 3 iterations; they run as one rollout"):
        simulate(rows, tiny(kv_capacity_tokens=4096), make_policy("verl"))
    with warnings.catch_warnings():  # partial reads it (carried groups first), and one iteration says nothing
        warnings.simplefilter("error")
        simulate(rows, tiny(kv_capacity_tokens=4096), make_policy("partial:target_groups=3"))
        simulate(rows.assign(iteration=2), tiny(kv_capacity_tokens=4096), make_policy("verl"))


def test_compare_says_a_warning_once_not_once_per_policy(tmp_path, capsys):
    from seer.cli import main

    path = tmp_path / "t.parquet"
    trace([(p, s, 10, 5) for p in range(2) for s in range(2)]).assign(arrival_s=[0.0, 1.0, 2.0, 3.0]).to_parquet(path)
    toml = tmp_path / "c.toml"
    toml.write_text('[cluster]\nmodel = "qwen2.5-1.5b"\ninstances = 2\nkv_capacity_tokens = 4096\n')
    out = str(tmp_path / "o")
    assert (
        main(
            [
                "compare",
                "--trace",
                str(path),
                "--cluster",
                str(toml),
                "--policies",
                "verl,divided,context",
                "--out",
                out,
            ]
        )
        == 0
    )
    assert capsys.readouterr().err.count("arrival_s") == 1
    assert main(["simulate", "--trace", str(path), "--cluster", str(toml), "--out", out + "s"]) == 0  # said again
    assert capsys.readouterr().err.count("arrival_s") == 1


@pytest.mark.parametrize("policy", ["verl", "context"])
def test_first_instance_done_counts_an_instance_that_finished_no_request(policy):
    # one group on three instances: verl keeps it whole on one instance, so two never work and were done at 0;
    # the reading used to be the earliest last request finish among instances that finished any
    rows = [(0, s, 5, 20 + s) for s in range(4)]
    res = simulate(trace(rows), tiny(kv_capacity_tokens=4096, block_size=16, instances=3), make_policy(policy))
    s, tl = res.summary, res.timeline
    last = tl.sort_values("t", kind="stable").groupby("instance").tail(1).set_index("instance")
    idle_at = [last.loc[i, "t"] if i in last.index else 0.0 for i in range(3)]
    assert s["first_instance_done_s"] == pytest.approx(min(idle_at))
    if policy == "verl":
        assert s["first_instance_done_s"] == 0.0 < s["makespan_s"]
    assert 0.0 <= s["first_instance_done_s"] <= s["makespan_s"]


def test_an_events_file_without_rows_has_the_types_of_one_with_rows(tmp_path):
    # a run without preemptions wrote every events column as null, one with them float/int/string
    rows = [(p, s, 5, 11) for p in range(4) for s in range(3)]
    kinds = {}
    for name, kv in (("calm", 4096), ("tight", 24)):
        res = simulate(trace(rows), tiny(kv_capacity_tokens=kv, block_size=4, instances=1), make_policy("verl"))
        res.save(tmp_path / name)
        kinds[name] = pd.read_parquet(tmp_path / name / "events.parquet")
    assert len(kinds["calm"]) == 0 < len(kinds["tight"])
    assert kinds["calm"].dtypes.to_dict() == kinds["tight"].dtypes.to_dict()


def test_first_instance_done_reads_each_instances_last_row():
    from seer.metrics import first_instance_done

    tl = pd.DataFrame({"instance": [0, 0, 1, 1], "t": [0.0, 2.0, 0.0, 5.0], "running": [1, 0, 1, 0], "waiting": 0})
    assert first_instance_done(tl, 5.0, 2) == 2.0  # instance 0 went idle for good at 2 s
    assert first_instance_done(tl, 5.0, 2, failed=[0]) == 5.0  # a failed instance did not run out of work
    assert first_instance_done(tl, 5.0, 3) == 0.0  # instance 2 never had any
    busy = tl.assign(running=[1, 1, 1, 0])
    assert first_instance_done(busy, 5.0, 2) == 5.0  # still running at its last row: done at the makespan


def test_far_more_instances_than_requests_is_no_livelock():
    # every idle instance reports itself at t = 0: 11,000 of them are events without time passing, not a policy
    # cycling (the livelock guard once counted only requests and stopped this run)
    result = simulate(
        trace([(0, 0, 5, 3), (0, 1, 5, 4), (1, 0, 5, 5), (1, 1, 5, 6)]),
        tiny(instances=11_000, kv_capacity_tokens=64),
        make_policy("verl"),
    )
    assert result.requests["output_len"].tolist() == [3, 4, 5, 6]
