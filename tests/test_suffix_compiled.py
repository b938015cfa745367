"""The compiled suffix index against the pure-Python reference: identical drafts (tokens, tree parents, exact
probabilities, match lengths), occurrences and hash keys on random inputs, for the index, the group drafter
and the batched calls."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seer.policies.speculation import DraftConfig, GroupDrafter, SuffixIndex
from seer.policies.speculation.compiled import CompiledSuffixIndex, make_index
from seer.policies.speculation.suffix import _P, EMPTY

settings_ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(ref: SuffixIndex, comp: CompiledSuffixIndex) -> None:
    """Same sequences, same length, same hash keys (bit for bit)."""
    for sid in ref.seqs:
        assert comp.sequence(sid) == ref.sequence(sid)
    assert len(comp) == len(ref)
    comp._flush()
    table = comp._table
    assert set(table[table[:, 1] >= 0, 0].tolist()) == set(ref.index)


def drafts(idx, query) -> tuple:
    ctx, depth, max_tokens, topk, min_prob, min_match, visible, cap = query
    d = idx.draft(ctx, depth, max_tokens, topk, min_prob, min_match, visible, cap)
    m, occ = idx.match(ctx, visible, min_match, cap)
    return d, m, occ


def occurrences(ref: SuffixIndex, occ) -> list:
    """The reference's occurrences with sequences named by id (the compiled index names them so)."""
    sid_of = {id(s): sid for sid, s in ref.seqs.items()}
    return [(sid_of[id(s)], start, lim) for s, start, lim in occ]


@st.composite
def operations(draw, tokens=None):
    """Interleaved appends over a few sequences, removals and compactions, over a small alphabet (so that
    matches, ties and hash-table reuse are frequent)."""
    alphabet = tokens or list(range(draw(st.integers(2, 5))))
    tok = st.sampled_from(alphabet)
    op = st.one_of(
        st.tuples(st.just("extend"), st.integers(0, 5), st.lists(tok, max_size=10)),
        st.tuples(st.just("remove"), st.integers(0, 5), st.none()),
        st.tuples(st.just("compact"), st.none(), st.none()),
    )
    return alphabet, draw(st.lists(op, max_size=25))


@st.composite
def queries(draw, alphabet):
    ctx = draw(st.lists(st.sampled_from(alphabet), max_size=10))
    depth = draw(st.integers(0, 7))
    max_tokens = draw(st.one_of(st.none(), st.integers(0, 12)))
    topk = draw(st.integers(1, 4))
    min_prob = draw(st.sampled_from([0.0, 0.1, 0.25, 1 / 3, 0.5, 1.0]))
    min_match = draw(st.integers(1, 3))
    visible = draw(st.one_of(st.none(), st.dictionaries(st.integers(0, 6), st.integers(-1, 20), max_size=2)))
    cap = draw(st.sampled_from([None, 0, 1, 2, 3, 16]))
    return ctx, depth, max_tokens, topk, min_prob, min_match, visible, cap


def apply(ops, *indexes) -> None:
    for kind, sid, toks in ops:
        for idx in indexes:
            if kind == "extend":
                idx.extend(sid, toks)
            elif kind == "remove":
                idx.remove(sid)
            else:
                idx.compact()


@settings_
@given(data=st.data(), max_match=st.integers(1, 6))
def test_compiled_index_drafts_exactly_like_the_reference(data, max_match):
    alphabet, ops = data.draw(operations())
    ref, comp = SuffixIndex(max_match), CompiledSuffixIndex(max_match)
    apply(ops, ref, comp)
    same(ref, comp)
    for _ in range(4):
        query = data.draw(queries(alphabet))
        (rd, rm, rocc), (cd, cm, cocc) = drafts(ref, query), drafts(comp, query)
        assert cd == rd  # tokens, parents, probabilities (exactly) and match length
        assert (cm, cocc) == (rm, occurrences(ref, rocc))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), max_match=st.integers(1, 5))
def test_odd_token_ids_hash_and_collide_like_the_reference(data, max_match):
    # ids >= P wrap in the hash; huge ids, up to the largest allowed (2**63 - 2), stay exact (negative ids are
    # refused: see test_refusals)
    alphabet = [0, 1, 2, _P - 1, _P + 3, (1 << 62) + 7, (1 << 63) - 2]
    _, ops = data.draw(operations(alphabet))
    ref, comp = SuffixIndex(max_match), CompiledSuffixIndex(max_match)
    apply(ops, ref, comp)
    same(ref, comp)
    for _ in range(3):
        query = data.draw(queries(alphabet))
        assert drafts(comp, query)[0] == drafts(ref, query)[0]


def test_large_index_growth_compaction_and_unlimited_occurrences():
    # long sequences over 3 tokens: buffers, table and entries grow, segments relocate, a pattern has hundreds
    # of occurrences (the sorting paths), removals compact
    rng = random.Random(5)
    ref, comp = SuffixIndex(6), CompiledSuffixIndex(6)
    for step in range(400):
        sid = rng.randrange(40)
        toks = [rng.randrange(3) for _ in range(rng.randrange(1, 60))]
        ref.extend(sid, toks)
        comp.extend(sid, toks)
        if step % 37 == 0:
            ref.remove(sid - 1)
            comp.remove(sid - 1)
        if step % 9 == 0:  # drafts between appends: some find buffered appends that need the arrays grown
            ctx = [rng.randrange(3) for _ in range(8)]
            for topk, cap in ((1, None), (3, None), (1, 16), (4, 5)):
                assert comp.draft(ctx, 8, None, topk, 0.0, 1, None, cap) == ref.draft(
                    ctx, 8, None, topk, 0.0, 1, None, cap
                )
    same(ref, comp)
    assert comp.dead == ref.dead


@settings_
@given(data=st.data(), max_match=st.integers(1, 6))
def test_a_drafter_held_through_appends_growth_and_compaction_drafts_as_draft(data, max_match):
    # `drafter(...)` fixes the arguments once (GroupDrafter keeps one per index); it must keep drafting what
    # `draft` would while the index grows, relocates its arrays and compacts under it
    alphabet, _ = data.draw(operations())
    topk = data.draw(st.integers(1, 4))
    min_prob = data.draw(st.sampled_from([0.0, 0.1, 1 / 3, 1.0]))
    min_match = data.draw(st.integers(1, 3))
    cap = data.draw(st.sampled_from([None, 0, 2, 16]))
    ref, comp = SuffixIndex(max_match), CompiledSuffixIndex(max_match)
    held = [ref.drafter(topk, min_prob, min_match, cap), comp.drafter(topk, min_prob, min_match, cap)]
    for _ in range(4):
        _, ops = data.draw(operations(alphabet))
        apply(ops, ref, comp)
        ctx = data.draw(st.lists(st.sampled_from(alphabet), max_size=10))
        depth = data.draw(st.integers(0, 7))
        max_tokens = data.draw(st.one_of(st.none(), st.integers(0, 12)))
        want = ref.draft(ctx, depth, max_tokens, topk, min_prob, min_match, None, cap)
        assert [f(ctx, depth, max_tokens) for f in held] == [want, want]


def test_a_held_drafter_keeps_no_index_alive():
    # the compiled index caches its drafters; they reach it weakly, so dropping the index frees it (and its heap)
    # at once, without waiting for the cycle collector
    import gc
    import weakref

    idx = CompiledSuffixIndex(4)
    idx.extend(1, [1, 2, 3, 1, 2, 4])
    f = idx.drafter()
    assert f([1, 2], 4) == idx.draft([1, 2], 4)
    assert f([1, 2], 4).tokens == (3, 1, 2, 4)  # "1 2" continues with 3 and with 4: the tie goes to the lower id
    alive = weakref.ref(idx)
    gc.disable()
    try:
        del idx
        assert alive() is None
    finally:
        gc.enable()
    with pytest.raises(ReferenceError, match="index is gone"):  # one clear error, not an AttributeError inside
        f([1, 2], 4)


def test_drafters_cached_per_index_are_bounded_and_each_drafts_as_draft():
    # a sweep over min_prob on one index must not keep a function per value forever; the latest are reused
    idx = CompiledSuffixIndex(4)
    idx.extend(1, [1, 2, 3, 1, 2, 4, 1, 2, 3])
    probs = [i / 40 for i in range(40)]
    made = [idx.drafter(2, p) for p in probs]
    assert len({id(f) for f in made}) == len(probs)
    assert idx.drafter(2, probs[-1]) is made[-1]  # recent arguments: the cached function
    assert idx.drafter(2, probs[0]) is not made[0]  # long-evicted arguments: made anew ...
    for p, f in zip(probs, made):  # ... and every one, held or remade, drafts as `draft`
        assert f([1, 2], 3) == idx.drafter(2, p)([1, 2], 3) == idx.draft([1, 2], 3, None, 2, p)


@settings_
@given(data=st.data())
def test_draft_many_equals_drafting_row_by_row(data):
    alphabet, ops = data.draw(operations())
    ref, comp = SuffixIndex(4), CompiledSuffixIndex(4)
    apply(ops, ref, comp)
    rows = data.draw(st.lists(queries(alphabet), max_size=6))
    topk, min_prob, min_match, visible, cap = rows[0][3:] if rows else (1, 0.1, 1, None, 16)
    ctxs, depths, maxt = [r[0] for r in rows], [r[1] for r in rows], [r[2] or 0 for r in rows]
    want = [ref.draft(c, d, t, topk, min_prob, min_match, visible, cap) for c, d, t in zip(ctxs, depths, maxt)]
    assert comp.draft_many(ctxs, depths, maxt, topk, min_prob, min_match, visible, cap) == want
    assert ref.draft_many(ctxs, depths, maxt, topk, min_prob, min_match, visible, cap) == want
    want = [ref.draft(np.array(c, dtype=np.int32), d, None, topk) for c, d in zip(ctxs, depths)]
    assert comp.draft_many([np.array(c, dtype=np.int32) for c in ctxs], depths, None, topk) == want


@st.composite
def replays(draw):
    """A rollout: groups of requests that append and draft in random interleaving and finish."""
    config = DraftConfig(
        scope=draw(st.sampled_from(["own", "group", "global"])),
        max_match=draw(st.integers(1, 5)),
        topk=draw(st.integers(1, 3)),
        min_prob=draw(st.sampled_from([0.0, 0.1, 0.3])),
        max_occurrences=draw(st.sampled_from([1, 3, 16])),
        max_cached=draw(st.integers(0, 3)),
    )
    steps = draw(st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 3), max_size=5)), max_size=40))
    prompts = draw(st.lists(st.lists(st.integers(0, 3), max_size=6), min_size=2, max_size=2))
    return config, prompts, steps


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=replays())
def test_group_drafter_compiled_equals_reference_and_batches_equal_rows(case):
    config, prompts, steps = case
    ref, comp = GroupDrafter(config, compiled=False), GroupDrafter(config)
    live: dict[int, list[int]] = {}
    finished: set[int] = set()
    for rid, toks in steps:
        if rid not in live and rid not in finished and len(live) < 4:
            for d in (ref, comp):
                d.add_request(rid, rid % 2, prompts[rid % 2])
            live[rid] = list(prompts[rid % 2])
        if rid not in live:
            continue
        ctx = live[rid][-6:]
        assert comp.propose(rid, ctx, 4) == ref.propose(rid, ctx, 4)
        if not toks:  # an empty step finishes the request
            ref.finish(rid)
            comp.finish(rid)
            del live[rid]
            finished.add(rid)
            continue
        for d in (ref, comp):
            d.append(rid, toks)
        live[rid] += toks
        assert comp.tokens(rid) == ref.tokens(rid)
    rids = list(live)
    ctxs = [live[r][-5:] for r in rids]
    want = [ref.propose(r, c, 3) for r, c in zip(rids, ctxs)]
    assert comp.propose_batch(rids, ctxs, [3] * len(rids)) == want
    assert ref.propose_batch(rids, ctxs, [3] * len(rids)) == want
    gids = [r % 2 for r in rids] + [7]  # group 7 is unknown: no draft
    ctxs.append([1, 2])
    want = [ref.propose_group(g, c, 3, 2) for g, c in zip(gids, ctxs)]
    assert comp.propose_group_batch(gids, ctxs, [3] * len(gids), [2] * len(gids)) == want
    assert comp.propose_group_batch([7, 7], [[1, 2], [0]], [3, 3]) == [EMPTY, EMPTY]  # rows of one unknown index


def test_refusals():
    comp = CompiledSuffixIndex(3)
    with pytest.raises(ValueError):
        CompiledSuffixIndex(0)
    with pytest.raises(ValueError):
        comp.draft([1], 2, min_match=0)
    with pytest.raises(ValueError):
        comp.draft([1], 2, max_occurrences=-1)
    comp.extend(1, [1, 2, 3])
    comp.extend(2, [(1 << 63) - 1])
    with pytest.raises(ValueError):
        comp.draft([1], 2)
    assert comp.sequence(1) == [1, 2, 3]
    # negative ids are no vocabulary's (the kernels pad with -1): refused by both, never indexed
    comp.extend(3, [4, -100000])
    with pytest.raises(ValueError, match="from 0"):
        comp.draft([4], 2)
    assert comp.sequence(3) == [] and comp.draft([4], 2) == EMPTY
    comp.extend(3, [5, 1 << 63])  # no int64 at all: refused while packing the command, buffered appends dropped
    with pytest.raises(ValueError, match="from 0"):
        comp.draft([5], 2)
    assert comp.sequence(3) == [] and comp.draft([5], 2) == EMPTY
    ref = SuffixIndex(3)
    with pytest.raises(ValueError, match=">= 0"):
        ref.extend(1, [4, -1])
    assert ref.sequence(1) == [] and len(ref) == 0
    assert isinstance(make_index(3), CompiledSuffixIndex) and isinstance(make_index(3, compiled=False), SuffixIndex)


def test_long_commands_and_the_resolved_kernel():
    """A draft whose buffered appends make a command longer than the cached packers cover goes through `pack`; the
    kernel the drafters call directly (`heap.resolved`) returns what numba's dispatcher does."""
    from seer.policies.speculation import kernels as kern
    from seer.policies.speculation.compiled import _draft_entry
    from seer.policies.speculation.heap import pack, resolved

    rng = random.Random(5)
    ref, comp = SuffixIndex(4), CompiledSuffixIndex(4)
    for sid in (1, 2):
        toks = [rng.randrange(6) for _ in range(700)]  # one command of 1,400 buffered tokens and more
        ref.extend(sid, toks)
        comp.extend(sid, toks)
    for ctx in ([1, 2], [0, 3, 5], toks[-4:]):
        assert comp.draft(ctx, 6, min_prob=0.0) == ref.draft(ctx, 6, min_prob=0.0)
    cmd = pack([*toks[-3:], 5, 4, 1, 1, 16, 0, 3])
    assert _draft_entry()(comp._heap, cmd, 0.0) == kern.draft_kernel(comp._heap, cmd, 0.0)
    plain = lambda x: x  # noqa: E731  (no numba dispatcher: used as it is)
    assert resolved(plain, 1) is plain


def test_the_vllm_proposer_drafts_a_step_as_row_by_row_group_drafts():
    """The proposer vLLM builds (`seer.real.drafter`) drafts a whole step in one batched call; each row must get
    what the group drafter proposes for it alone, and rows with nothing sampled, no tokens or an unknown prompt
    get none (vLLM passes no request ids: a row's group is recognised by its prompt)."""
    from types import SimpleNamespace

    from seer.real.drafter import proposer_for

    rng = random.Random(3)
    prompts = {0: [5, 6, 7], 1: [9, 9, 8, 1]}
    drafter = GroupDrafter(DraftConfig(scope="group", max_match=4))
    outs = {}
    for rid in range(6):
        gid = rid % 2
        drafter.add_request(rid, gid, prompts[gid])
        outs[rid] = [rng.randrange(4) for _ in range(30)]
        drafter.append(rid, outs[rid])
    _, cls = proposer_for(drafter)
    prop = cls(SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=3)))
    rows = [prompts[r % 2] + outs[r][: 10 + r] for r in range(6)] + [[4, 4, 4, 4, 4], prompts[0] + [1, 2]]
    width = max(map(len, rows))
    ids = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    sampled = [[1]] * len(rows)
    sampled[7] = []  # a row that sampled nothing this step
    lengths = [len(r) for r in rows]
    got = prop.propose(sampled, lengths, ids)
    want = [list(drafter.propose_group(r % 2, rows[r][-4:], 3, 3).tokens[:3]) for r in range(6)]
    assert got[:6] == want and any(want)
    assert got[6:] == [[], []]  # an unknown prompt; nothing sampled
    assert prop.proposed == sum(map(len, want))
    lengths[0] = 0  # a row with no tokens yet
    assert prop.propose(sampled, lengths, ids)[0] == []
