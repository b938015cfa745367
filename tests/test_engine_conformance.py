"""The Engine contract, checked the same way on every engine: one script of submits, aborts and steps run on
the simulated instance and on a fake engine (and on a real vLLM instance in `test_real_backend.py`), with the
same event sequence and invariants. Plus the loop's own promises about event delivery."""

from __future__ import annotations

import pytest
import simpy
from engine_script import EXPECTED, REQUESTS, FakeEngine, FakeLoop, Script, check_invariants, outline, stepper

from seer.core import (
    Abort,
    ChunkFinished,
    Dispatch,
    FinishReason,
    Group,
    PolicyTraits,
    RequestState,
    Rollout,
    RolloutStarted,
    SetSpeculation,
    Tick,
)
from seer.loop import ContractLoop, PolicyError
from seer.sim.cluster import ClusterConfig
from seer.sim.config import InstanceConfig
from seer.sim.instance import SimInstance

TRUE_LEN = {rid: n for rid, (_p, n) in REQUESTS.items()}


def run_sim(exact: bool = True):
    script = Script()
    env = simpy.Environment()
    cost = ClusterConfig(name="c", model="qwen2.5-1.5b", instances=1, kv_capacity_tokens=4096).cost_model()
    inst = SimInstance(env, 0, cost, InstanceConfig(4096, 16, 16, 512), TRUE_LEN, script.on_event, exact=exact)

    def steps(k):
        target = inst.stats.steps + k
        while inst.stats.steps < target:
            env.step()

    return script, script.run(inst, steps, env.run)


def run_fake():
    script = Script()
    eng = FakeEngine(0, script.on_event, TRUE_LEN)
    return script, script.run(eng, *stepper(eng))


def test_fake_engine_follows_the_script():
    script, events = run_fake()
    assert outline(events) == EXPECTED
    check_invariants(script, events)


def test_simulated_instance_follows_the_same_script():
    script, events = run_sim()
    # an abort takes effect at the next step boundary; the simulated instance always has the next step in
    # flight when the script aborts, so the aborted chunk reports that step's token too
    want = [("finished", 2, 3, False, "abort") if e[:2] == ("finished", 2) else e for e in EXPECTED]
    assert outline(events) == want
    check_invariants(script, events)


# ---- the loop: delivery order, aborts, contract errors ------------------------------------------


class Recorder:
    """A policy that runs a scripted list of actions at the start and re-dispatches whatever comes back."""

    name = "recorder"

    def __init__(self, first, traits=PolicyTraits()):
        self.first, self.traits, self.seen = first, traits, []

    def on_event(self, event, view):
        self.seen.append((event, {rid: r.state for rid, r in view.requests.items()}))
        if isinstance(event, RolloutStarted):
            return list(self.first)
        if (
            isinstance(event, ChunkFinished)
            and not event.finished
            and view.requests[event.request_id].state is RequestState.WAITING
        ):
            return [Dispatch(event.request_id, 0, 100)]
        return []


class Loop(FakeLoop, ContractLoop):
    def __init__(self, policy, sizes=(2,), lengths=None):
        ro = Rollout()
        for gid, size in enumerate(sizes):
            ro.add_group(Group(gid, 4, 50, size))
        super().__init__(ro, policy)
        lengths = lengths or {rid: 5 for rid in ro.requests}
        self.engines = [FakeEngine(0, self.emit, lengths)]

    @property
    def now(self):
        return getattr(self, "_fake_now", 0.0)


def test_events_raised_while_acting_are_delivered_after_the_action_list():
    pol = Recorder([Dispatch(0, 0, 100), Abort(0), Dispatch(1, 0, 100)])
    loop = Loop(pol)
    loop.run_fake()
    aborted = [(e, states) for e, states in pol.seen if isinstance(e, ChunkFinished) and e.reason is FinishReason.ABORT]
    assert len(aborted) == 1
    event, states = aborted[0]
    # delivered after the whole list: request 1 was already dispatched, request 0 back in the buffer
    assert states[1] is RequestState.RUNNING and states[0] is RequestState.WAITING
    assert loop.ledger.completions.tolist() == [1, 1]
    assert [r.generated for r in loop.rollout.requests.values()] == [5, 5]


def test_final_aborts_end_requests_and_failures_never_do():
    pol = Recorder([Dispatch(0, 0, 100), Dispatch(1, 0, 100), Abort(0)], PolicyTraits(aborts_are_final=True))
    loop = Loop(pol)
    loop.run_fake()
    assert loop.rollout.requests[0].state is RequestState.ABORTED and loop.ledger.reason[0] == "abort"
    assert loop.rollout.requests[1].state is RequestState.FINISHED
    # an engine that fails reports its chunks aborted; with final aborts they still come back
    pol = Recorder([Dispatch(0, 0, 100)], PolicyTraits(aborts_are_final=True))
    loop = Loop(pol, sizes=(1,))
    loop.start()
    loop.engines[0].abort(0)  # as `fail()` does: not asked for by the policy
    assert loop.rollout.requests[0].state is RequestState.RUNNING  # re-dispatched by the policy
    assert loop.ledger.open == 1


@pytest.mark.parametrize(
    "first, message",
    [
        ([Dispatch(0, 0, 100), Dispatch(0, 0, 100)], "in state running"),
        ([Dispatch(0, 3, 100)], "there are 1"),
        ([Abort(0)], "final aborts"),
        ([Dispatch(0, 0, 0)], "budget of 0"),
        ([Abort(10**9)], "aborted unknown request 1000000000"),
        ([SetSpeculation(0, {}, 4)], "declare no drafter"),
    ],
)
def test_contract_violations_are_named(first, message):
    with pytest.raises(PolicyError, match=message):
        Loop(Recorder(first)).run_fake()


def test_a_stuck_policy_is_reported_not_looped_forever():
    with pytest.raises(PolicyError, match="left 2 requests unfinished"):
        Loop(Recorder([])).run_fake()


class _Bare(Recorder):
    def on_event(self, event, view):
        return Dispatch(0, 0, 100) if isinstance(event, RolloutStarted) else []


class _Lazy(Recorder):
    def on_event(self, event, view):
        return (a for a in super().on_event(event, view))


class _Nameless:
    def on_event(self, event, view):
        return []


class _NoOracleMethod(Recorder):
    traits = PolicyTraits(needs_oracle=True)


def test_a_policy_breaking_the_contract_in_other_ways_is_named():
    with pytest.raises(PolicyError, match="must return a list of actions"):
        Loop(_Bare([])).run_fake()
    lazy = Loop(_Lazy([Dispatch(0, 0, 100), Dispatch(1, 0, 100)]))  # any iterable of actions will do
    lazy.run_fake()
    assert lazy.ledger.open == 0
    with pytest.raises(PolicyError, match="needs a `name`"):
        Loop(_Nameless())
    with pytest.raises(PolicyError, match="no set_oracle_lengths method"):
        Loop(_NoOracleMethod([], PolicyTraits(needs_oracle=True))).provide({0: 5, 1: 5}, None)
    with pytest.raises(ValueError, match="tick_s"):
        PolicyTraits(tick_s=-1.0)


def _sim(policy):
    import pandas as pd

    from seer.sim.driver import simulate

    rows = [dict(prompt_id=0, sample_id=s, prompt_len=10, output_len=20, max_tokens=64) for s in range(4)]
    cluster = ClusterConfig(name="c", model="qwen2.5-1.5b", instances=2, kv_capacity_tokens=4096, max_tokens=64)
    return simulate(pd.DataFrame(rows), cluster, policy, progress=False)


class _Ticking(Recorder):
    """Dispatches two of four requests and waits for ticks that never change its mind."""

    def on_event(self, event, view):
        return [Dispatch(0, 0, 100), Dispatch(1, 1, 100)] if isinstance(event, RolloutStarted) else []


class _Patient(Recorder):
    """Dispatches two requests at the start and the other two at its 50th tick (a back-off)."""

    def on_event(self, event, view):
        if isinstance(event, RolloutStarted):
            self.ticks = 0
            return [Dispatch(0, 0, 100), Dispatch(1, 1, 100)]
        if isinstance(event, Tick):
            self.ticks += 1
            return [Dispatch(2, 0, 100), Dispatch(3, 1, 100)] if self.ticks == 50 else []
        return []


class _AbortCycle(Recorder):
    """Dispatches and aborts the same request in one list, and again at every aborted chunk: no time passes."""

    def on_event(self, event, view):
        if isinstance(event, RolloutStarted) or (isinstance(event, ChunkFinished) and not event.finished):
            return [Dispatch(0, 0, 100), Abort(0)]
        return []


def test_the_simulator_ends_a_run_that_can_no_longer_progress():
    # ticks used to keep an idle simulation alive forever; now the run ends once a tick changes nothing
    with pytest.raises(PolicyError, match="left 2 requests unfinished"):
        _sim(_Ticking([], PolicyTraits(tick_s=1.0)))
    waited = _sim(_Patient([], PolicyTraits(tick_s=1.0)))  # idle ticks on purpose, then the rest: it finishes
    assert waited.summary["requests"] == 4 and 50 <= waited.summary["makespan_s"] < 51
    with pytest.raises(PolicyError, match="makes no progress"):
        _sim(_AbortCycle([]))
