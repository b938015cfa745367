"""Speculative decoding in the simulator: exact replay, verify-step cost, and the usual invariants."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import simpy
from conftest import token_trace
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from seer.core import Chunk, ChunkFinished, Request
from seer.policies import make_policy
from seer.policies.speculation import DraftConfig
from seer.sim.cluster import ClusterConfig
from seer.sim.driver import SimDriver, simulate
from seer.sim.instance import InstanceConfig, SimInstance
from seer.sim.speculation import ExactReplay, ParametricAcceptance


def small_cluster(**kw) -> ClusterConfig:
    base = dict(
        name="spec",
        model="qwen2.5-7b",
        instances=2,
        kv_capacity_tokens=4096,
        block_size=16,
        max_num_seqs=16,
        max_num_batched_tokens=512,
        max_tokens=200,
    )
    base.update(kw)
    return ClusterConfig(**base)


def test_verify_steps_cost_t_of_b_and_1_plus_gamma():
    # one request, prompt 5, 10 output tokens, every draft accepted, fixed budget 2: a prefill step that
    # samples token 1, then verify steps of q = 3 over contexts 5, 8, 11 that produce 3 tokens each
    cfg = ClusterConfig(name="one", model="qwen2.5-7b", instances=1, kv_capacity_tokens=64, block_size=1)
    cost = cfg.cost_model()
    env = simpy.Environment()
    done = []
    spec = ParametricAcceptance({0: 0}, alpha_table=((0, 1.0),))
    inst = SimInstance(env, 0, cost, InstanceConfig(64, 1, 4, 64), {0: 10}, done.append, spec=spec)
    inst.set_speculation({}, default=2)
    inst.submit(Chunk(0, 0, 10, 0), Request(0, 0, 0, 5, 10))
    env.run()
    want = cost.step_time([5], [0], logits=1) + sum(cost.step_time([3], [c]) for c in (5, 8, 11))
    finished = [e for e in done if isinstance(e, ChunkFinished)]
    assert len(finished) == 1 and finished[0].new_tokens == 10 and finished[0].finished
    assert env.now == pytest.approx(want, rel=1e-9)
    assert inst.stats.spec_accepted_tokens == 6 and inst.stats.spec_request_steps == 3


@pytest.mark.parametrize("exact", [False, True])
def test_exact_replay_accepts_only_recorded_tokens_and_keeps_outputs(exact):
    trace = token_trace(1, groups=3, G=6)
    driver = SimDriver(
        trace, small_cluster(), make_policy("seer", speculation="fixed", gamma=4), exact=exact, progress=False
    )
    driver.spec.check = []
    fed: dict[int, list] = {}
    append = driver.spec.drafter.append
    driver.spec.drafter.append = lambda rid, toks: (fed.setdefault(rid, []).extend(toks), append(rid, toks))
    res = driver.run()
    assert driver.spec.check, "no draft was ever accepted"
    for rid, g, toks, acc in driver.spec.check:
        assert list(toks[:acc]) == driver.spec.outputs[rid][g : g + acc]
    # speculation never changes what a request produces: same lengths, and the drafter saw exactly the record
    assert res.requests["output_len"].tolist() == [driver.true_len[r] for r in res.requests["request_id"]]
    for rid, toks in driver.spec.outputs.items():
        assert fed[rid] == toks
    assert res.summary["spec_accepted_tokens"] > 0 and res.summary["spec_tau"] > 1.0
    assert "exact replay" in res.summary["speculation"]


def test_grouped_speculation_beats_context_on_a_token_trace():
    trace = token_trace(2, groups=4, G=8)
    cl = small_cluster()
    ctx = simulate(trace, cl, make_policy("context"), progress=False).summary
    own = simulate(trace, cl, make_policy("seer", scope="own"), progress=False).summary
    grp = simulate(trace, cl, make_policy("seer"), progress=False).summary
    assert grp["makespan_s"] < ctx["makespan_s"]
    assert grp["spec_tau"] > own["spec_tau"]


def _one_token_responses() -> pd.DataFrame:
    """16 groups x 8 responses of one repeated token (200-800 tokens): every draft is accepted."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(16):
        for s in range(8):
            n = int(rng.integers(200, 801))
            rows.append(
                {"prompt_id": p, "sample_id": s, "prompt_len": 4, "output_len": n, "max_tokens": 1024}
                | {"prompt_ids": [1, 2, 3, 4], "output_ids": [7] * n}
            )
    return pd.DataFrame(rows)


def test_budgets_rest_on_the_prior_until_the_first_tick():
    """MBA folds acceptance in at ticks: a rollout shorter than a few ticks is budgeted on `prior_alpha`
    throughout (docs/speculation.md quotes these numbers)."""
    cl = ClusterConfig(name="c", model="qwen2.5-1.5b", instances=2, kv_capacity_tokens=200_000, max_tokens=1024)
    tau = {}
    for spec in ("seer", "seer:tick_s=0.05", "seer:prior_alpha=0.95"):
        res = simulate(_one_token_responses(), cl, make_policy(spec), progress=False)
        tau[spec] = res.summary["spec_tau"]
        if spec == "seer":
            assert res.summary["makespan_s"] < 2 * 2.0  # shorter than two of the default 2 s ticks
    print(tau)
    assert tau["seer:tick_s=0.05"] > tau["seer"] + 1.5  # ticks inside the rollout: budgets grow with acceptance
    assert tau["seer:prior_alpha=0.95"] > tau["seer"] + 3  # a confident prior drafts deep from the start


def test_length_only_traces_use_the_labelled_parametric_model():
    trace = token_trace(3, groups=3, G=4).drop(columns=["output_ids", "prompt_ids"])
    res = simulate(trace, small_cluster(), make_policy("seer"), progress=False)
    assert res.summary["speculation"].startswith("parametric model")
    assert res.summary["spec_tau"] > 1.0


def test_the_parametric_model_says_when_topk_or_global_scope_are_not_modelled():
    # a sweep over them on a length-only trace returned identical cells with nothing said
    trace = token_trace(3, groups=3, G=4).drop(columns=["output_ids", "prompt_ids"])
    base = simulate(trace, small_cluster(), make_policy("seer"), progress=False).summary
    for spec, said in (("seer:topk=4", "topk=4 not modelled"), ("seer:scope=global", "scope=global not modelled")):
        with pytest.warns(UserWarning, match=said):
            res = simulate(trace, small_cluster(), make_policy(spec), progress=False).summary
        assert said in res["speculation"] and res["makespan_s"] == base["makespan_s"]


@st.composite
def spec_workloads(draw):
    block = draw(st.sampled_from([1, 4, 16]))
    cap = draw(st.integers(20, 80)) * block
    max_seqs = draw(st.integers(1, 8))
    cluster = ClusterConfig(
        name="prop",
        model=draw(st.sampled_from(["qwen2.5-1.5b", "moonlight-16b-a3b"])),
        instances=draw(st.integers(1, 3)),
        kv_capacity_tokens=cap,
        block_size=block,
        max_num_seqs=max_seqs,
        max_num_batched_tokens=draw(st.integers(max_seqs, 96)),
        max_tokens=300,
    )
    rows = []
    vocab = draw(st.integers(2, 5))
    for p in range(draw(st.integers(1, 4))):
        plen = draw(st.integers(1, max(1, cap // 4)))
        base = draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=60))
        for s in range(draw(st.integers(1, 4))):
            n = draw(st.integers(0, min(len(base), max(0, cap - plen - 1))))
            out = base[:n]
            rows.append(
                {
                    "prompt_id": p,
                    "sample_id": s,
                    "prompt_len": plen,
                    "output_len": n,
                    "prompt_ids": [0] * plen,
                    "output_ids": out,
                }
            )
    policy = draw(st.sampled_from(["seer", "seer:speculation=fixed:gamma=3", "seer:scope=own:topk=2"]))
    return pd.DataFrame(rows), cluster, policy


@st.composite
def replay_states(draw):
    """An exact replay part-way through a rollout: recorded outputs over a small alphabet (so drafts match), some
    tokens committed, some requests finished (scope global caches them), and a batch of rows to plan."""
    max_match = draw(st.integers(1, 5))
    config = DraftConfig(
        scope=draw(st.sampled_from(["own", "group", "global"])),
        max_match=max_match,
        min_match=draw(st.integers(1, min(2, max_match))),
        topk=draw(st.integers(1, 3)),
        min_prob=draw(st.sampled_from([0.0, 0.1, 0.4])),
        max_occurrences=draw(st.sampled_from([1, 4, 16])),
        max_cached=draw(st.integers(0, 4)),
    )
    n = draw(st.integers(1, 8))
    group_of = {r: r % draw(st.integers(1, 3)) for r in range(n)}
    outputs = {r: draw(st.lists(st.integers(0, 3), min_size=1, max_size=30)) for r in range(n)}
    prompts = {g: draw(st.lists(st.integers(0, 3), max_size=6)) for g in set(group_of.values()) if draw(st.booleans())}
    # or every request its own prompt, as a trace with prompt_ids per sample gives (samples' prompts may differ)
    own = {r: draw(st.lists(st.integers(0, 3), max_size=6)) for r in range(n)} if draw(st.booleans()) else None
    spec = ExactReplay(config, outputs, group_of, None if own else prompts, own_prompts=own)
    live = []
    for r in range(n):
        done = draw(st.integers(0, len(outputs[r])))
        spec.commit(r, done)
        if done == len(outputs[r]) and draw(st.booleans()):
            spec.finish(r)
        elif done < len(outputs[r]):
            live.append((r, done))
    assume(live)
    rows = draw(st.lists(st.sampled_from(live), min_size=1, max_size=len(live), unique=True))
    rids = np.array([r for r, _ in rows], np.int64)
    generated = np.array([g for _, g in rows], np.int64)
    remaining = np.array([draw(st.integers(1, len(outputs[r]) - g)) for r, g in rows], np.int64)
    gammas = np.array([draw(st.integers(0, 9)) for _ in rows], np.int64)
    return spec, rids, generated, remaining, gammas, draw(st.integers(1, 6))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=replay_states())
def test_the_compiled_exact_plan_equals_drafting_step_by_step(state):
    """`ExactReplay.plan` (one compiled pass per index) against `plan_reference` (`propose` and `accepted_length`
    per row and step): every budget, draft length, acceptance and advance."""
    spec, *args = state
    got, want = spec.plan(*args), spec.plan_reference(*args)
    for name in ("budget", "drafted", "accepted", "advance"):
        assert getattr(got, name).tolist() == getattr(want, name).tolist(), name


def test_the_compiled_exact_plan_keeps_the_group_draft_on_a_score_tie():
    # scope global: after a 7 the group's own text continues with 1 and the cached response of another group with
    # 2, each with probability 1; `propose` keeps the group's draft unless the global one scores higher
    config = DraftConfig(scope="global", max_match=1)
    spec = ExactReplay(config, {0: [7, 1, 7, 1, 1], 1: [7, 2]}, {0: 0, 1: 1})
    spec.commit(1, 2)
    spec.finish(1)
    spec.commit(0, 3)
    args = np.array([0]), np.array([3]), np.array([2]), np.array([4]), 1
    want = spec.plan_reference(*args)
    assert want.accepted.tolist() == [[1]]
    assert spec.plan(*args).accepted.tolist() == [[1]]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(work=spec_workloads(), exact=st.booleans())
def test_speculation_invariants(work, exact):
    trace, cluster, policy = work
    res = simulate(trace, cluster, make_policy(policy), exact=exact, progress=False)
    got = res.requests.set_index(["prompt_id", "sample_id"])["output_len"].sort_index()
    want = trace.set_index(["prompt_id", "sample_id"])["output_len"].sort_index()
    assert got.tolist() == want.tolist()
    assert (res.timeline["kv_used_tokens"] <= cluster.kv_capacity()).all()
    assert res.summary["makespan_s"] >= res.summary["lower_bound_s"] * (1 - 1e-9)
    again = simulate(trace, cluster, make_policy(policy), exact=exact, progress=False)
    assert again.summary["makespan_s"] == res.summary["makespan_s"]
    assert again.requests["finish_s"].tolist() == res.requests["finish_s"].tolist()


def _brute_ceiling(out, sibs, gamma):
    res = []
    for g in range(len(out)):
        a, budget = 0, max(0, min(gamma, len(out) - 1 - g))
        while a < budget:
            gram, k = tuple(out[g : g + a + 1]), a + 1
            elsewhere = any(tuple(s[i : i + k]) == gram for s in sibs for i in range(len(s) - k + 1))
            earlier = any(tuple(out[i : i + k]) == gram for i in range(0, g - k + 1))
            if not (elsewhere or earlier):
                break
            a += 1
        res.append(a)
    return res


@settings(max_examples=200, deadline=None)
@given(
    out=st.lists(st.integers(0, 2), min_size=1, max_size=30),
    gamma=st.integers(1, 6),
    sibs=st.lists(st.lists(st.integers(0, 2), max_size=20), max_size=3),
)
def test_acceptance_ceiling_is_the_longest_copyable_continuation(out, gamma, sibs):
    import numpy as np

    from seer.sim.spec_bound import _gram_hashes, acceptance_ceiling, least_steps

    arr = np.asarray(out)
    own = _gram_hashes(arr, gamma)
    text = [
        np.unique(
            np.concatenate([own[k]] + [_gram_hashes(np.asarray(s, np.int64), gamma)[k] for s in sibs]),
            return_counts=True,
        )
        for k in range(gamma)
    ]
    ceiling = acceptance_ceiling(arr, text, own, gamma)
    assert ceiling.tolist() == _brute_ceiling(out, sibs, gamma)
    # the fewest steps, by breadth-first search over positions
    L, frontier, steps = len(out), {1}, 0
    while L > 1 and L not in frontier and max(frontier) < L:
        frontier = {min(L, g + 1 + a) for g in frontier for a in range(int(ceiling[g]) + 1)}
        steps += 1
    assert least_steps(5, ceiling, gamma)[0] == steps


@settings(max_examples=200, deadline=None)
@given(
    groups=st.lists(
        st.tuples(
            st.lists(st.integers(0, 2), max_size=8),  # the prompt
            st.lists(st.lists(st.integers(0, 2), max_size=20), min_size=1, max_size=4),  # the responses
        ),
        min_size=1,
        max_size=3,
    ),
    gamma=st.integers(1, 6),
    scope=st.sampled_from(["group", "own", "global"]),
)
def test_every_requests_ceiling_at_once_is_its_brute_force(groups, gamma, scope):
    """`ceilings_by_request` (every request of every group in one pass) against each request's brute force, its
    text the group's prompt plus its siblings' (scope group) or everyone else's (scope global) whole responses."""
    from seer.sim.spec_bound import ceilings_by_request

    outputs, group_of, prompts = {}, {}, {}
    for gid, (prompt, outs) in enumerate(groups):
        prompts[gid] = prompt
        for out in outs:
            group_of[len(outputs)] = gid
            outputs[len(outputs)] = out
    got = ceilings_by_request(outputs, group_of, prompts, scope, gamma)
    for rid, out in outputs.items():
        others = [o for r, o in outputs.items() if r != rid and (scope == "global" or group_of[r] == group_of[rid])]
        sibs = [prompts[group_of[rid]]] + (others if scope != "own" else [])
        assert got[rid].tolist() == _brute_ceiling(out, sibs, gamma), rid


def test_exact_replay_bound_is_at_least_the_gamma_ceiling():
    trace = token_trace(4, groups=3, G=4)
    res = simulate(trace, small_cluster(), make_policy("seer"), progress=False).summary
    assert res["lower_bound_s"] >= res["lower_bound_gamma_s"] * (1 - 1e-12)
    assert res["makespan_s"] >= res["lower_bound_s"] and "drafter's best case" in res["bound"]
    assert res["efficiency"] >= res["efficiency_gamma"]


@st.composite
def spec_batches(draw):
    B = draw(st.integers(1, 10))
    block = draw(st.sampled_from([1, 4, 16]))
    computed = [draw(st.integers(1, 400)) for _ in range(B)]
    g_max = draw(st.sampled_from([1, 8]))  # 1: budgets of at most one token (large batches), the plan's own case
    return {
        "B": B,
        "horizon": draw(st.integers(1, 16)),
        "block": block,
        "gammas": [draw(st.integers(0, g_max)) for _ in range(B)],
        "remaining": [draw(st.integers(1, 120)) for _ in range(B)],
        "generated": [draw(st.integers(0, 50)) for _ in range(B)],
        "computed": computed,
        "blocks": [-(-c // block) + draw(st.integers(0, 2)) for c in computed],
        "avail": draw(st.integers(0, 60)),
        "finished": draw(st.lists(st.booleans(), min_size=B, max_size=B)),
        "seed": draw(st.integers(0, 2**31)),
        "j": draw(st.integers(1, 16)),
        "scope": draw(st.sampled_from(["group", "own"])),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=spec_batches())
def test_the_compiled_speculative_epoch_equals_its_numpy_reference(batch):
    """Plan, epoch cut and step sums, and statistics: the numba kernels against the numpy reference, bit for bit,
    with the same random draws."""
    import numpy as np

    from seer.sim.batch import SPEC_POSITIONS, InstanceStats
    from seer.sim.epochs import (
        apply_spec_epoch,
        apply_spec_epoch_reference,
        count_spec_steps,
        count_spec_steps_reference,
        plan_spec_epoch,
        plan_spec_epoch_reference,
    )

    B, H = batch["B"], batch["horizon"]
    ngroups = max(1, B // 3)
    # interleaved groups of unequal size (padded slots), with ids that skip numbers (empty slot blocks)
    group_of = {r: 3 * ((5 * r) % ngroups) + 1 for r in range(B)}
    rids = np.arange(B, dtype=np.int64)
    gen = np.array(batch["generated"], np.int64)
    rem = np.array(batch["remaining"], np.int64)
    gam = np.array(batch["gammas"], np.int64)
    finished = batch["finished"]
    plans = []
    for method in ("plan", "plan_reference"):
        acc = ParametricAcceptance(group_of, seed=batch["seed"], scope=batch["scope"])
        for rid, done in enumerate(batch["finished"]):
            acc.commit(rid, int(gen[rid]) + 3 * rid)
            if done:
                acc.finish(rid)
        # alpha(n) from the group's definition: others in the group finished or ahead of the row
        committed = gen + 3 * rids
        n = [
            sum(1 for m in range(B) if m != r and group_of[m] == group_of[r] and (finished[m] or committed[m] > gen[r]))
            for r in range(B)
        ]
        expected = np.interp(n if batch["scope"] == "group" else np.zeros(B), acc.xs, acc.alphas)
        assert np.array_equal(acc.alpha(rids, gen), expected)
        if batch["scope"] == "group":
            assert np.array_equal(acc.alpha_reference(rids, gen), expected)
        plans.append(getattr(acc, method)(rids, gen, rem, gam, H))
    fast, ref = plans
    for name in ("budget", "drafted", "accepted", "advance"):
        assert np.array_equal(getattr(fast, name), getattr(ref, name)), name

    class Rows:  # what the epoch reads of the running batch
        computed = np.array(batch["computed"], np.int64)
        blocks = np.array(batch["blocks"], np.int64)

    cost = ClusterConfig("t", "qwen2.5-7b", instances=1, kv_capacity_tokens=4096).cost_model()
    args = (Rows, ref, rem, H, batch["block"], batch["avail"], cost, 3)
    e_fast, e_ref = plan_spec_epoch(*args), plan_spec_epoch_reference(*args)
    assert (e_fast is None) == (e_ref is None)
    if e_ref is not None:
        assert e_fast.k == e_ref.k
        assert np.array_equal(e_fast.advance_cum, e_ref.advance_cum)
        assert np.array_equal(e_fast.blocks, e_ref.blocks)
        assert np.array_equal(e_fast.cum_s, e_ref.cum_s)  # the same floats, not merely close
        j_taken = min(batch["j"], e_ref.k)  # the epoch's first j steps applied to the rows, both ways
        applied = []
        for apply in (apply_spec_epoch, apply_spec_epoch_reference):
            rows = SimpleNamespace(computed=Rows.computed.copy(), produced=gen.copy(), blocks=Rows.blocks.copy())
            added = apply(rows, e_ref, j_taken, rem)
            applied.append((added, rows.computed.tolist(), rows.produced.tolist(), rows.blocks.tolist()))
        assert applied[0] == applied[1]
    j = min(batch["j"], H)
    stats = []
    for count in (count_spec_steps, count_spec_steps_reference):
        s = InstanceStats()
        s.spec_by_request = np.zeros((B, 3), np.int64)
        count(s, rids, ref, j)
        stats.append(s)
    a, b = stats
    assert np.array_equal(a.spec_tried, b.spec_tried) and np.array_equal(a.spec_accepted, b.spec_accepted)
    assert np.array_equal(a.spec_by_request, b.spec_by_request)
    assert (a.spec_request_steps, a.spec_drafted_tokens, a.spec_accepted_tokens) == (
        b.spec_request_steps,
        b.spec_drafted_tokens,
        b.spec_accepted_tokens,
    )
    assert len(a.spec_tried) == SPEC_POSITIONS


@settings(max_examples=200, deadline=None)
@example(rids=[1, 2], named={}, default=-2, max_batched=100)  # the one-budget path: clipped at 0,
@example(rids=[1, 2], named={}, default=12, max_batched=100)  # at the engine's draft positions,
@example(rids=[1, 2, 3], named={}, default=4, max_batched=3)  # and at a batch that fills the token budget
@example(rids=[1, 2], named={2: -1}, default=12, max_batched=100)
@given(
    rids=st.lists(st.integers(0, 60), unique=True, max_size=40),
    named=st.dictionaries(st.integers(0, 60), st.integers(-2, 12), max_size=10),
    default=st.integers(-2, 12),
    max_batched=st.integers(0, 400),
)
def test_draft_budgets_are_the_named_or_default_budget_capped(rids, named, default, max_batched):
    assume(max_batched >= len(rids))  # the instance speculates only on a batch that fits the token budget
    """Each running row's draft budget: the policy's for the requests it names, the default for the others, at least 0
    and capped so a verify step of the batch fits max_num_batched_tokens (and the engine's draft positions)."""
    import numpy as np

    from seer.sim.batch import SPEC_POSITIONS
    from seer.sim.epochs import budget_table, draft_budgets

    got = draft_budgets(np.array(rids, np.int64), budget_table(named), default, max_batched)
    # a verify step of B rows, each with 1 + budget tokens, must fit max_num_batched_tokens
    cap = min((max_batched - len(rids)) // max(len(rids), 1), SPEC_POSITIONS)
    assert cap >= 0 and all(len(rids) * (1 + b) <= max(max_batched, len(rids)) for b in got.tolist())
    assert got.tolist() == [min(max(named.get(r, default), 0), cap) for r in rids]
    assert got.dtype == np.int64


def test_samples_with_prompts_of_their_own_draft_from_their_own_and_index_the_shared_part():
    # the first sample's prompt stood for the group's: the second sample's draft context read [5, 6, 7] for its
    # own [5, 6, 9], and the group's index held a prompt one of its samples never had
    config = DraftConfig(scope="group", max_match=3)
    spec = ExactReplay(config, {0: [1, 2], 1: [3, 4]}, {0: 0, 1: 0}, own_prompts={0: [5, 6, 7], 1: [5, 6, 9]})
    assert spec.prompts == {0: [5, 6]}
    assert spec._context(1, 0) == [5, 6, 9] and spec._context(0, 1) == [6, 7, 1]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), rows=st.integers(1, 12), horizon=st.integers(1, 12), data=st.data())
def test_a_parametric_step_draws_the_same_numbers_in_any_epoch(seed, rows, horizon, data):
    """Counter-based draws: a step's acceptance is a function of (seed, request, the token it starts at, draft
    position), so planning `horizon` steps at once equals planning them one at a time (the fast path against
    --exact), and a row's plan does not depend on the other rows of its batch or their order."""
    ints = lambda lo, hi: np.array(data.draw(st.lists(st.integers(lo, hi), min_size=rows, max_size=rows)), np.int64)  # noqa: E731
    gen, rem, gam = ints(0, 500), ints(1, 80), ints(0, 8)
    acc = ParametricAcceptance({r: r % 3 for r in range(rows)}, seed=seed, scope="own")
    rids = np.arange(rows)
    whole = acc.plan(rids, gen, rem, gam, horizon)
    g, r = gen.copy(), rem.copy()
    for s in range(horizon):
        one = acc.plan(rids, g, r, gam, 1)
        for name in ("budget", "accepted", "advance"):
            assert getattr(one, name)[:, 0].tolist() == getattr(whole, name)[:, s].tolist(), (s, name)
        g, r = g + one.advance[:, 0], r - one.advance[:, 0]
    order = np.array(data.draw(st.permutations(range(rows))), np.int64)
    shuffled = acc.plan(rids[order], gen[order], rem[order], gam[order], horizon)
    assert shuffled.accepted.tolist() == whole.accepted[order].tolist()


def test_parametric_draws_accept_at_the_models_rates():
    """The hashed draws are uniform enough that position i of a draft is accepted with probability alpha**i."""
    acc = ParametricAcceptance({0: 0}, seed=7, scope="own")  # alpha(0) = 0.412
    positions = np.arange(0, 400_000, 20, dtype=np.int64)  # 20,000 steps of one request, 8 drafts each
    plan = acc.plan(
        np.zeros(len(positions), np.int64), positions, np.full(len(positions), 10**6), np.full(len(positions), 8), 1
    )
    got = plan.accepted[:, 0]
    alpha = float(acc.alpha_of_n[0])
    for i in (1, 2, 3):
        assert (got >= i).mean() == pytest.approx(alpha**i, abs=0.01)


@pytest.mark.filterwarnings("ignore:synth:UserWarning")
def test_seer_fast_and_exact_draw_alike_on_a_length_only_trace():
    """Fast epochs and single steps draw the same numbers: with scope own (acceptance depends on nothing but the
    draws) the two modes give the same rollout; with the group's references they differ only by the lag of the
    siblings' progress (read as last committed: at epoch ends in fast mode, every step in exact mode)."""
    from seer.traces.synth import SynthConfig, synthesize

    cl = ClusterConfig(name="c", model="qwen2.5-7b", instances=2, kv_capacity_tokens=10_000, max_tokens=2000)
    for seed in (0, 1):
        trace = synthesize(
            SynthConfig(prompts=6, group_size=4, mean_len=300, max_tokens=2000, prompt_mean=64, seed=seed)
        )
        for spec in ("seer:scope=own", "seer"):
            fast, exact = (simulate(trace, cl, make_policy(spec), exact=e, progress=False) for e in (False, True))
            if spec == "seer:scope=own":
                for key in ("steps", "spec_accepted_tokens", "spec_drafted_tokens", "preemptions", "chunks"):
                    assert fast.summary[key] == exact.summary[key], key
                assert fast.summary["makespan_s"] == pytest.approx(exact.summary["makespan_s"], rel=1e-9)
                assert fast.requests["finish_s"].to_numpy() == pytest.approx(
                    exact.requests["finish_s"].to_numpy(), rel=1e-9
                )
            else:
                assert fast.summary["makespan_s"] == pytest.approx(exact.summary["makespan_s"], rel=0.04)
