"""Epoch arithmetic: many steps of a fixed all-decode batch advanced at once, and the wait that a wake-up
can cut short.

Between composition changes the batch is fixed and every context grows by one token per step (1 + accepted
drafts with speculation), so the steps up to the next event are computable: the first sequence to reach its
chunk end, or the first step whose new blocks do not fit. A plain decode epoch is then a closed-form sum of
step times; a speculative epoch is planned per row and step (advances, drafted and accepted tokens) and its
step times are one vectorised cost-model evaluation. Everything here is pure arithmetic over the batch
arrays, except `run_epoch`, the SimPy wait.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import simpy

from seer.sim.batch import SPEC_POSITIONS, InstanceStats, Running, Seq
from seer.sim.batch_kernels import epoch_length
from seer.sim.kv import KVMemory, prompt_key
from seer.sim.spec_kernels import apply_epoch, count_steps, epoch_plan


def epoch_avail(kv: KVMemory, waiting: list[Seq]) -> int:
    """Blocks an epoch may take: free plus evictable cache, but never the waiting head's cached prefix or its
    group's cached prompt (evicting either would change whether the head can be admitted: stop before that)."""
    avail = kv.available()
    if waiting and (waiting[0].rid in kv.cache or prompt_key(waiting[0].group) in kv.cache):
        head = waiting[0].rid, prompt_key(waiting[0].group)
        avail = kv.free
        for key, entry in kv.cache.items():
            if key in head:
                break
            avail += entry[1]
    return avail


def budget_table(budgets: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The named requests' draft budgets as (sorted request ids, their budgets), for `draft_budgets`."""
    rids = np.array(sorted(budgets), dtype=np.int64)
    return rids, np.array([budgets[r] for r in rids.tolist()], dtype=np.int64)


def draft_budgets(rids: np.ndarray, table: tuple[np.ndarray, np.ndarray], default: int, max_batched: int) -> np.ndarray:
    """Draft budget per running row (the table's for the requests it names, `default` for the others), capped so
    a step's tokens fit max_num_batched_tokens."""
    B = len(rids)
    cap = min((max_batched - B) // max(B, 1), SPEC_POSITIONS)
    named, values = table
    if not len(named):  # the usual case: one budget for every row
        return np.full(B, min(max(default, 0), cap), np.int64)
    g = np.full(B, default, np.int64)
    # a binary search per row: the policy names a fraction of the rows (one probe per group)
    pos = np.minimum(np.searchsorted(named, rids), len(named) - 1)
    hit = named[pos] == rids
    g[hit] = values[pos[hit]]
    return np.minimum(np.maximum(g, 0), cap)  # np.clip, without its Python-level wrapper


def fast_epoch_length(rs: Running, block_size: int, avail: int) -> int:
    """Decode steps the batch can take before a sequence ends its chunk or new blocks stop fitting (one compiled
    pass; `seer.sim.batch_reference.fast_epoch_length` is the same in numpy)."""
    return int(epoch_length(rs.stop, rs.produced, rs.computed, rs.blocks, block_size, avail))


# SimPy orders one instant's events by priority before insertion order; its own are URGENT (0) or NORMAL (1).
# Insertion order would make a tie between instances depend on when each event was scheduled, which differs
# between fast mode (an epoch's end is scheduled at its start) and exact mode (at its last step's start): a
# reaction to one instance's step end (an abort) reached another before its next step in one mode, after it in
# the other. So an instant runs: its other events, then step ends in instance order, then step starts.
STEP_END, STEP_START = 10, 10 + (1 << 32)


class Ordered(simpy.Event):
    """A timeout with a priority among the events of the instant it falls in."""

    def __init__(self, env: simpy.Environment, delay: float, priority: int):
        # Event.__init__ inlined, as SimPy's own Timeout does (one of these per step)
        self.env, self.callbacks, self._value, self._ok = env, [], None, True
        env.schedule(self, priority, delay)


def step_end(env: simpy.Environment, delay: float, instance_id: int) -> Ordered:
    return Ordered(env, delay, STEP_END + instance_id)


def step_start(env: simpy.Environment, instance_id: int) -> Ordered:
    """Processed once every other event of this instant has been (the step then starts)."""
    return Ordered(env, 0.0, STEP_START + instance_id)


def run_epoch(
    env: simpy.Environment,
    wake: simpy.Event,
    steps: int,
    within: Callable[[float], int],
    span: Callable[[int], float],
    instance_id: int,
):
    """Wait out an epoch of `steps` steps; a wake-up cuts it short, but the step in flight completes.
    `within(elapsed)` gives the steps completed by then, `span(n)` the end offset of the first n. Returns (steps
    taken, seconds taken)."""
    t0, total = env.now, span(steps)
    timer = step_end(env, total, instance_id)
    # `timer | wake` without SimPy's condition machinery (about 4 µs an epoch): `done` is scheduled when the first
    # of the two is processed, exactly when the condition would be, so the event queue sees the same hops
    done = env.event()

    def first(_event) -> None:
        if not done.triggered:
            done.succeed()

    timer.callbacks.append(first)
    wake.callbacks.append(first)
    yield done
    if timer.processed or env.now >= t0 + total:
        return steps, total
    n = min(within(env.now - t0), steps)
    # a step ending at this very instant has no successor in flight yet: a step starts only once the instant's
    # events have landed (`SimInstance._run`), and exact mode's step ends are such instants
    if n < steps and (n == 0 or t0 + span(n) != env.now):
        n += 1
    end = span(n)
    if t0 + end > env.now:
        yield step_end(env, t0 + end - env.now, instance_id)
    return n, end


@dataclass
class SpecEpoch:
    """A planned speculative epoch: `k` verify steps, their cumulative seconds and per-step block needs."""

    plan: object  # seer.sim.speculation.Plan
    advance_cum: np.ndarray  # rows x steps: tokens advanced by the end of each step
    blocks: np.ndarray  # rows x steps: blocks each row holds after each step
    cum_s: np.ndarray  # seconds at the end of each of the k steps
    k: int


def plan_spec_epoch(
    rs: Running, plan, remaining: np.ndarray, horizon: int, block_size: int, avail: int, cost, waiting: int = 0
) -> SpecEpoch | None:
    """Cut a speculation plan at the first chunk end and at the first step whose blocks do not fit, and price
    its steps; None when not even one step fits in KV. (One compiled pass; `plan_spec_epoch_reference` is the
    same in numpy.)"""
    C, blocks, k, tokens, kv, attn, pairs = epoch_plan(
        plan.advance, plan.drafted, np.asarray(remaining, np.int64), rs.computed, rs.blocks, block_size, avail
    )
    if k == 0:
        return None
    dur = cost.step_time_sums(tokens, kv, attn, pairs, waiting=waiting)
    if type(dur) is not np.ndarray or dur.shape != (k,):
        dur = np.broadcast_to(dur, (k,))
    # np.cumsum is this ufunc's accumulate (the same additions in the same order) behind a Python wrapper
    return SpecEpoch(plan, C, blocks, np.add.accumulate(dur), k)


def plan_spec_epoch_reference(
    rs: Running, plan, remaining: np.ndarray, horizon: int, block_size: int, avail: int, cost, waiting: int = 0
) -> SpecEpoch | None:
    """`plan_spec_epoch` in numpy."""
    adv = plan.advance
    C = np.cumsum(adv, axis=1)
    ends = C >= remaining[:, None]
    k = horizon
    if ends.any():
        k = min(k, int(np.where(ends.any(axis=1), ends.argmax(axis=1), horizon).min()) + 1)
    q = 1 + plan.drafted
    ctx = rs.computed[:, None] + (C - adv)  # KV cached before each step
    blocks = np.maximum(np.maximum.accumulate(-(-(ctx + q) // block_size), axis=1), rs.blocks[:, None])
    extra = (blocks - rs.blocks[:, None]).sum(axis=0)
    over = np.flatnonzero(extra > avail)
    if len(over):
        k = min(k, int(over[0]))
    if k == 0:
        return None
    qk, ck = q[:, :k], ctx[:, :k]
    qf = qk.astype(np.float64)
    dur = cost.step_time_sums(
        qf.sum(axis=0),
        (ck + qk).sum(axis=0).astype(np.float64),
        (qf * (ck + (qf + 1) / 2)).sum(axis=0),
        np.where(qk > 1, qf * (ck + qf), 0.0).sum(axis=0),
        waiting=waiting,
    )
    return SpecEpoch(plan, C, blocks, np.cumsum(np.broadcast_to(dur, (k,))), k)


def spec_steps_within(cum_s: np.ndarray) -> Callable[[float], int]:
    """`run_epoch`'s `within` for a speculative epoch (its `span(n)` is `cum_s[n - 1]`)."""
    return lambda elapsed: int(np.searchsorted(cum_s, elapsed, side="right"))


def apply_spec_epoch(rs: Running, epoch: SpecEpoch, j: int, remaining: np.ndarray) -> int:
    """Advance the running rows by the epoch's first `j` steps (in place); returns the blocks they added. (One
    compiled pass; `apply_spec_epoch_reference` is the same in numpy.)"""
    return int(apply_epoch(epoch.advance_cum, epoch.blocks, j, remaining, rs.computed, rs.produced, rs.blocks))


def apply_spec_epoch_reference(rs: Running, epoch: SpecEpoch, j: int, remaining: np.ndarray) -> int:
    """`apply_spec_epoch` in numpy."""
    took = np.minimum(epoch.advance_cum[:, j - 1], remaining)
    rs.computed += took
    rs.produced += took
    added = int((epoch.blocks[:, j - 1] - rs.blocks).sum())
    rs.blocks[:] = epoch.blocks[:, j - 1]
    return added


def count_spec_steps(stats: InstanceStats, rids: np.ndarray, plan, j: int) -> None:
    """Add the first `j` steps of a plan to the acceptance statistics (per position, per request): one compiled
    pass; `count_spec_steps_reference` is the same in numpy."""
    steps, drafted, accepted = count_steps(
        plan.budget, plan.accepted, plan.drafted, rids, j, stats.spec_tried, stats.spec_accepted, stats.spec_by_request
    )
    stats.spec_request_steps += int(steps)
    stats.spec_drafted_tokens += int(drafted)
    stats.spec_accepted_tokens += int(accepted)


def count_spec_steps_reference(stats: InstanceStats, rids: np.ndarray, plan, j: int) -> None:
    """`count_spec_steps` in numpy."""
    b, a, d = plan.budget[:, :j], plan.accepted[:, :j], plan.drafted[:, :j]
    # position i (0-based) was tried when the budget reached it and the i before it were accepted
    tried = np.minimum(b, a + 1).ravel()
    n = SPEC_POSITIONS + 1
    stats.spec_tried += np.cumsum(np.bincount(tried, minlength=n)[::-1])[::-1][1:n]
    stats.spec_accepted += np.cumsum(np.bincount(a.ravel(), minlength=n)[::-1])[::-1][1:n]
    spec_rows = b > 0
    stats.spec_request_steps += int(spec_rows.sum())
    stats.spec_drafted_tokens += int(d.sum())
    stats.spec_accepted_tokens += int(a.sum())
    per = stats.spec_by_request
    np.add.at(per, (rids, 0), spec_rows.sum(axis=1))
    np.add.at(per, (rids, 1), d.sum(axis=1))
    np.add.at(per, (rids, 2), a.sum(axis=1))


def marking_suspensions(process, mark: Callable[[], None]):
    """A SimPy process generator that calls `mark` at every suspension of `process`: whatever the process
    changed since it last resumed is then visible to readers of the instance change log."""
    try:
        target = next(process)
        while True:
            mark()
            try:
                value = yield target
            except BaseException as exc:  # an interrupt: deliver it to the wrapped process
                target = process.throw(exc)
            else:
                target = process.send(value)
    except StopIteration as stop:
        return stop.value
