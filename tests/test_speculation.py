"""Grouped speculative decoding: the suffix index against brute force, acceptance, MBA, and the n-gram baseline."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seer.policies.speculation import (
    AcceptanceStats,
    Draft,
    DraftConfig,
    GroupDrafter,
    SuffixIndex,
    accepted_length,
    best_gamma,
    mba,
    ngram_propose,
)
from seer.sim.cluster import load_cluster
from seer.sim.driver import CostProfile

settings_ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- brute-force reference ------------------------------------------------------------------------


def ref_match(seqs, order, context, max_match, min_match, visible=None, cap=None):
    """Longest context suffix with an occurrence that has a visible continuation; occurrences newest first."""
    for m in range(min(len(context), max_match), min_match - 1, -1):
        pat = list(context[len(context) - m :])
        occ = []
        for sid, p in reversed(order):  # p: position of the occurrence's last token
            seq = seqs[sid]
            lim = len(seq) if visible is None else min(len(seq), visible.get(sid, len(seq)))
            if p - m + 1 >= 0 and seq[p - m + 1 : p + 1] == pat and p + 1 < lim:
                occ.append((sid, p + 1, lim))
        if cap:
            occ = occ[:cap]
        if occ:
            return m, occ
    return 0, []


def ref_tree(seqs, occ, depth, max_tokens, topk, min_prob):
    """Beam search over continuations, written plainly: nodes are (path, occurrences reaching it)."""
    tokens, parents, probs = [], [], []
    beams = [(-1, 1.0, occ)]
    d = 0
    while beams and d < depth and len(tokens) < max_tokens:
        cands = []
        for node, prob, members in beams:
            nxt = {}
            for sid, start, lim in members:
                if start + d < lim:
                    nxt.setdefault(seqs[sid][start + d], []).append((sid, start, lim))
            if topk == 1:
                if not nxt:
                    continue
                tok = sorted(nxt, key=lambda t: (-len(nxt[t]), t))[0]
                nxt = {tok: nxt[tok]}
            for tok, sub in nxt.items():
                p = prob * len(sub) / len(members)
                if p >= min_prob:
                    cands.append((-p, node, tok, sub))
        cands.sort(key=lambda c: (c[0], c[1], c[2]))
        beams = []
        for negp, node, tok, sub in cands[: min(topk, max_tokens - len(tokens))]:
            tokens.append(tok)
            parents.append(node)
            probs.append(-negp)
            beams.append((len(tokens) - 1, -negp, sub))
        d += 1
    return tokens, parents, probs


@st.composite
def indexed(draw):
    """Sequences over a small alphabet built by interleaved appends, plus a query context."""
    alphabet = draw(st.integers(2, 4))
    n_seq = draw(st.integers(1, 4))
    seqs = {sid: [] for sid in range(n_seq)}
    order = []
    ops = draw(
        st.lists(st.tuples(st.integers(0, n_seq - 1), st.lists(st.integers(0, alphabet - 1), max_size=6)), max_size=12)
    )
    for sid, toks in ops:
        for t in toks:
            order.append((sid, len(seqs[sid])))
            seqs[sid].append(t)
    context = draw(st.lists(st.integers(0, alphabet - 1), min_size=1, max_size=10))
    return seqs, ops, order, context


@settings_
@given(
    case=indexed(),
    max_match=st.integers(1, 5),
    depth=st.integers(1, 6),
    topk=st.integers(1, 3),
    min_prob=st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0]),
    cap=st.sampled_from([None, 2, 5]),
)
def test_suffix_index_matches_brute_force(case, max_match, depth, topk, min_prob, cap):
    seqs, ops, order, context = case
    index = SuffixIndex(max_match)
    for sid, toks in ops:
        index.extend(sid, toks)
    assert index.seqs == {sid: s for sid, s in seqs.items() if sid in index.seqs}
    m, occ = index.match(context, max_occurrences=cap)
    rm, rocc = ref_match(seqs, order, context, max_match, 1, cap=cap)
    assert m == rm
    assert [(id(s), start, lim) for s, start, lim in occ] == [
        (id(index.seqs[sid]), start, lim) for sid, start, lim in rocc
    ]
    draft = index.draft(context, depth, topk=topk, min_prob=min_prob, max_occurrences=cap)
    want = ref_tree(seqs, rocc, depth, depth * topk, topk, min_prob) if rocc else ([], [], [])
    assert list(draft.tokens) == want[0]
    assert list(draft.parents) == want[1]
    assert draft.probs == pytest.approx(want[2])
    assert draft.match_len == (rm if rocc else 0)


@settings_
@given(case=indexed(), g=st.integers(0, 10))
def test_visibility_never_reveals_hidden_tokens(case, g):
    seqs, ops, order, context = case
    index = SuffixIndex(4)
    for sid, toks in ops:
        index.extend(sid, toks)
    if 0 not in index.seqs:
        return
    visible = {0: g}
    m, occ = index.match(context, visible=visible)
    rm, rocc = ref_match(seqs, order, context, 4, 1, visible=visible)
    assert m == rm and len(occ) == len(rocc)
    for seq, start, lim in occ:
        if seq is index.seqs[0]:
            assert start < lim <= g


def test_own_path_isolation():
    # a request's new tokens extend only its own path: the other path's continuation is unchanged
    index = SuffixIndex(3)
    index.extend(1, [5, 6, 7])
    index.extend(2, [5, 6, 9])
    index.extend(1, [8])
    assert index.seqs == {1: [5, 6, 7, 8], 2: [5, 6, 9]}
    d = index.draft([5, 6], 3, min_prob=0.0)
    assert d.tokens == (7, 8) or d.tokens == (9,)
    assert index.draft([6, 7], 2, min_prob=0.0).tokens == (8,)


# ---- acceptance -----------------------------------------------------------------------------------


@st.composite
def trees(draw):
    n = draw(st.integers(0, 8))
    tokens, parents = [], []
    for i in range(n):
        parents.append(draw(st.integers(-1, i - 1)))
        tokens.append(draw(st.integers(0, 2)))
    return Draft(tuple(tokens), tuple(parents), tuple([0.5] * n))


def root_paths(draft):
    paths = []
    for i in range(len(draft.tokens)):
        path, j = [], i
        while j >= 0:
            path.append(draft.tokens[j])
            j = draft.parents[j]
        paths.append(path[::-1])
    return paths


@settings_
@given(draft=trees(), truth=st.lists(st.integers(0, 2), max_size=8))
def test_accepted_tokens_are_exactly_the_recorded_ones(draft, truth):
    a = accepted_length(draft, truth)
    # some root path of the draft equals truth[:a] (nothing accepted that differs from the record) ...
    assert a == 0 or truth[:a] in root_paths(draft)
    # ... and no longer path matches
    assert all(p != truth[: len(p)] or len(p) <= a for p in root_paths(draft))


@settings_
@given(tokens=st.lists(st.integers(0, 2), max_size=8), truth=st.lists(st.integers(0, 2), max_size=8))
def test_a_linear_draft_is_accepted_up_to_its_first_difference(tokens, truth):
    """The linear case compares the whole draft first; every outcome (all accepted, a difference, a record shorter
    than the draft, a truth given as a tuple) must equal counting the agreeing prefix."""
    n = len(tokens)
    draft = Draft(tuple(tokens), tuple(range(-1, n - 1)), tuple([0.5] * n))
    agree = next((i for i, (d, t) in enumerate(zip(tokens, truth)) if d != t), min(n, len(truth)))
    assert accepted_length(draft, truth) == agree
    assert accepted_length(draft, tuple(truth)) == agree


def test_group_drafter_scopes_and_cleanup():
    d = GroupDrafter(DraftConfig(scope="group", min_prob=0.0))
    d.add_request(0, 7, [1, 2])
    d.add_request(1, 7, [1, 2])
    d.append(0, [3, 4, 5, 6])
    d.append(1, [3])
    # request 1 drafts from request 0's text: grouped drafting
    assert d.propose(1, [1, 2, 3], 3).tokens == (4, 5, 6)
    own = GroupDrafter(DraftConfig(scope="own", min_prob=0.0))
    own.add_request(0, 7, [1, 2])
    own.add_request(1, 7, [1, 2])
    own.append(0, [3, 4, 5, 6])
    own.append(1, [3])
    assert own.propose(1, [1, 2, 3], 3).tokens == ()
    glob = GroupDrafter(DraftConfig(scope="global", min_prob=0.0))
    glob.add_request(0, 1, [])
    glob.add_request(1, 2, [])
    glob.append(0, [3, 4, 5, 6])
    glob.finish(0)  # group 1 is over; its response stays in the global cache
    glob.append(1, [9, 3])
    assert glob.propose(1, [9, 3], 3).tokens == (4, 5, 6)
    assert ("group", 1) not in glob._index


def test_ngram_baseline_takes_the_longest_earliest_match_as_vllm_does():
    ctx = [1, 2, 3, 9, 1, 2, 4, 7, 2, 3, 1, 2]
    # the longest earlier match of a suffix: [3, 1, 2] occurs nowhere earlier, [1, 2] does, at 0 and at 4; vLLM
    # v1's NgramProposer takes the earliest, followed by 3, 9 (the most recent would give 4, 7)
    assert ngram_propose(ctx, 2, 1, 4) == [3, 9]
    assert ngram_propose([5, 6, 7], 3) == []
    assert ngram_propose([1, 2, 1, 2], 5) == [1, 2]
    # a repeated token: the earliest occurrence of the last 4 has 16 tokens after it, so the draft is k deep
    assert ngram_propose([7] * 20, 8, 1, 4) == [7] * 8
    assert ngram_propose([1, 2, 3, 4, 2, 3], 4, 2, 3) == [4, 2, 3]  # vLLM's docstring example


# ---- MBA ------------------------------------------------------------------------------------------


def qwen_profile(ctx=500.0):
    prof = CostProfile(load_cluster("qwen2-vl-72b").cost_model())
    return lambda b, g: prof(b, 1 + g, ctx)


def test_mba_is_off_when_drafts_cannot_pay_off():
    step = qwen_profile()
    for batch in (1, 16, 256, 1024):
        assert best_gamma(batch, [1.0] + [0.0] * 8, step) == 0
        assert mba(1, batch, [1.0] + [0.0] * 8, step) == (0, 0)
    # verification that costs as much per token as decoding: never worth it, whatever the acceptance
    assert best_gamma(4, [1.0] + [0.99] * 8, lambda b, g: (1 + g) * 0.01) == 0


def test_mba_grows_gamma_as_the_batch_shrinks():
    step = qwen_profile()
    beta = [0.6**i for i in range(9)]
    gammas = [best_gamma(b, beta, step) for b in (1024, 512, 256, 128, 64, 16, 4, 1)]
    assert gammas == sorted(gammas)
    assert gammas[0] <= 1 < gammas[-1] == 8


def test_mba_split_prefers_probes_and_respects_the_budget():
    step = qwen_profile()
    beta = [0.7**i for i in range(9)]
    g_star = best_gamma(40, beta, step)
    # as Algorithm 1 is written: probes always get the first draft token, and a further one only when their
    # class benefit beats lambda times the others' (so a larger lambda never gives probes more)
    splits = [mba(20, 20, beta, step, lam=lam) for lam in (1.0, 2.0, 4.0, 100.0)]
    assert all(g_h >= 1 and 20 * (g_h + g_l) <= g_star * 40 for g_h, g_l in splits)
    assert [g_h for g_h, _ in splits] == sorted((g_h for g_h, _ in splits), reverse=True)
    assert splits[-1][0] == 1
    g_h, g_l = mba(8, 32, beta, step, lam=2.0)
    assert 8 * g_h + 32 * g_l <= g_star * 40
    assert 0 < g_h <= 8 and g_l > 0
    # budget below the number of probes: off
    assert mba(5, 0, beta, lambda b, g: 1.0 + g * 10.0) == (0, 0)
    for benefit in ("paper", "marginal"):
        gh, gl = mba(8, 32, beta, step, benefit=benefit)
        assert 8 * gh + 32 * gl <= g_star * 40


def test_acceptance_stats_estimate_and_extrapolate():
    st_ = AcceptanceStats(gamma_max=4, prior_alpha=0.5)
    assert st_.beta()[1] == pytest.approx(0.5)
    # 1000 request-steps tried position 1, 800 accepted; position 2: 800 tried, 640 accepted; nothing beyond
    st_.update([1000, 800], [800, 640])
    beta = st_.beta()
    assert beta[1] == pytest.approx(0.8, abs=0.01) and beta[2] == pytest.approx(0.64, abs=0.01)
    assert beta[4] == pytest.approx(0.8**4, abs=0.02)  # untried positions extrapolate the pooled rate
    st_.update([1000, 800], [800, 640])  # no new data: counts decay, estimates stay
    assert st_.beta()[1] == pytest.approx(0.8, abs=0.01)
