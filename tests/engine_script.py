"""Engines and loops for tests: one script of submits, aborts and steps for any `Engine` (and the adapters that
drive each kind), a step-based fake engine, and a hand-driven harness for policy decisions.

The conformance tests (`test_engine_conformance.py`, and the vLLM case in `test_real_backend.py`) run the same
script on the simulated instance, the fake engine and a real vLLM instance and compare what they report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seer.core import (
    Chunk,
    ChunkFinished,
    Dispatch,
    FinishReason,
    Group,
    InstanceIdle,
    InstanceView,
    Request,
    RequestPreempted,
    Rollout,
    worst_case_kv,
)
from seer.core.model import write_request
from seer.loop import ContractLoop

# request id -> (prompt tokens, true output length)
REQUESTS = {0: (4, 3), 1: (6, 10), 2: (5, 30), 3: (3, 5), 4: (4, 6)}
MAX_TOKENS = 64


@dataclass
class FakeEngine:
    """A step-based engine for tests: every running chunk produces one token per step, KV is unlimited, an abort
    is reported from inside `abort` (as a real engine does) and idleness when the last chunk ends."""

    instance_id: int
    emit: object
    true_len: dict
    alive: bool = True
    live: dict = field(default_factory=dict)  # rid -> [request, chunk, produced]
    clock: float = 0.0
    step_s: float = 0.01
    budgets: dict = field(default_factory=dict)

    def submit(self, chunk: Chunk, request: Request) -> None:
        assert request.request_id not in self.live
        self.live[request.request_id] = [request, chunk, 0]

    def abort(self, request_id: int) -> None:
        entry = self.live.pop(request_id, None)
        if entry is not None:
            self.emit(ChunkFinished(self.clock, request_id, self.instance_id, entry[2], False, FinishReason.ABORT))

    def set_speculation(self, budgets, default: int = 0) -> None:
        self.budgets = dict(budgets)

    def view(self) -> InstanceView:
        reserved = sum(worst_case_kv(r.context_len, c.max_new_tokens, 1) for r, c, _p in self.live.values())
        used = sum(r.context_len + p for r, _c, p in self.live.values())
        return InstanceView(self.instance_id, 10**9, used, reserved, len(self.live), 0, self.alive)

    def has_work(self) -> bool:
        return bool(self.live)

    def step(self) -> None:
        self.clock += self.step_s
        for rid in list(self.live):
            req, chunk, produced = self.live[rid]
            produced += 1
            self.live[rid][2] = produced
            total = req.generated + produced
            if total >= self.true_len[rid] or total >= req.max_tokens:
                reason = FinishReason.LENGTH if total >= req.max_tokens else FinishReason.EOS
                del self.live[rid]
                self.emit(ChunkFinished(self.clock, rid, self.instance_id, produced, True, reason))
            elif produced >= chunk.max_new_tokens:
                del self.live[rid]
                self.emit(ChunkFinished(self.clock, rid, self.instance_id, produced, False, FinishReason.CHUNK))
        if not self.live:
            self.emit(InstanceIdle(self.clock, self.instance_id))


def stepper(engine):
    """(steps(k), run_until_idle) for an engine with `step()` and `has_work()` (the fake one, a vLLM instance)."""

    def steps(k):
        for _ in range(k):
            engine.step()

    def until_idle():
        while engine.has_work():
            engine.step()

    return steps, until_idle


class Script:
    """Drives one engine through the conformance script and keeps what it reported."""

    def __init__(self):
        self.events: list = []
        self.requests = {rid: Request(rid, rid, 0, p, MAX_TOKENS, output_ids=[]) for rid, (p, _n) in REQUESTS.items()}

    def on_event(self, event) -> None:
        self.events.append(event)
        if isinstance(event, ChunkFinished):
            req = self.requests[event.request_id]
            write_request(req, generated=req.generated + event.new_tokens)
            write_request(req, output_ids=req.output_ids + tuple(event.token_ids or [0] * event.new_tokens))

    def submit(self, engine, rid: int, budget: int) -> None:
        req = self.requests[rid]
        engine.submit(Chunk(rid, engine.instance_id, budget, req.generated), req)

    def run(self, engine, steps, run_until_idle) -> list:
        """The script: four requests, two steps, abort one running and one queued, then run to the end."""
        self.submit(engine, 0, 8)  # finishes (EOS) after 3 tokens
        self.submit(engine, 1, 4)  # its chunk ends after 4 of its 10 tokens
        self.submit(engine, 2, 30)  # aborted while running
        self.submit(engine, 3, 5)  # finishes (EOS) after 5 tokens
        steps(2)
        engine.abort(2)
        self.submit(engine, 4, 6)
        engine.abort(4)  # aborted before it ran
        run_until_idle()
        return self.events


def outline(events) -> list[tuple]:
    """The comparable part of an event sequence: kind, request, tokens, finished, reason (no times)."""
    out = []
    for e in events:
        if isinstance(e, ChunkFinished):
            out.append(("finished", e.request_id, e.new_tokens, e.finished, e.reason.value))
        elif isinstance(e, RequestPreempted):
            out.append(("preempted", e.request_id))
        elif isinstance(e, InstanceIdle):
            out.append(("idle",))
    return out


EXPECTED = [
    ("finished", 2, 2, False, "abort"),  # aborted after the two steps (the simulator: after the step in flight)
    ("finished", 4, 0, False, "abort"),
    ("finished", 0, 3, True, "eos"),
    ("finished", 1, 4, False, "chunk"),
    ("finished", 3, 5, True, "eos"),
    ("idle",),
]


def check_invariants(script: Script, events) -> None:
    """What every engine must satisfy on this script, whatever its timing."""
    finished = [e for e in events if isinstance(e, ChunkFinished)]
    assert sorted(e.request_id for e in finished) == sorted(REQUESTS), "one ChunkFinished per submitted chunk"
    for e in finished:
        assert e.new_tokens >= 0
        if e.finished:
            assert script.requests[e.request_id].generated == REQUESTS[e.request_id][1]
    times = [e.t for e in events]
    assert times == sorted(times), "events come in time order"
    assert isinstance(events[-1], InstanceIdle), "the engine reports idleness when its work is done"


class FakeLoop:
    """Mixin for a `ContractLoop` over `FakeEngine`s: steps the busy engine with the earliest clock until done."""

    def run_fake(self, max_steps: int = 10_000) -> None:
        self.start()
        for _ in range(max_steps):
            if self.done:
                return
            busy = [e for e in self.engines if e.has_work()]
            if not busy:
                self.check_done()
            engine = min(busy, key=lambda e: (e.clock, e.instance_id))
            self._fake_now = max(getattr(self, "_fake_now", 0.0), engine.clock)
            engine.step()
        raise AssertionError("the fake rollout did not end")


class ManualEngine:
    """An instance whose KV capacity the test sets; its chunks finish when the test says so."""

    alive = True

    def __init__(self, capacity, instance_id=0):
        self.instance_id = instance_id
        self.capacity, self.reserved = capacity, 0
        self.held: dict[int, int] = {}

    def submit(self, chunk, request):
        self.held[chunk.request_id] = request.context_len + chunk.max_new_tokens
        self.reserved += self.held[chunk.request_id]

    def abort(self, request_id):
        raise AssertionError("no policy under test aborts")

    def set_speculation(self, budgets, default=0):
        pass

    def view(self):
        return InstanceView(self.instance_id, self.capacity, 0, self.reserved, len(self.held), 0)


class Harness(ContractLoop):
    """The contract loop over a `ManualEngine`: the test finishes chunks by hand and sees what the policy did."""

    def __init__(self, policy, groups, capacity=10**9, max_tokens=1000, prompt=10, instances=1):
        ro = Rollout()
        for gid, size in enumerate(groups):
            ro.add_group(Group(gid, prompt if isinstance(prompt, int) else prompt[gid], max_tokens, size))
        super().__init__(ro, policy)
        self.ro = ro
        self.engines = [ManualEngine(capacity, i) for i in range(instances)]
        self.log: list[Dispatch] = []
        self.t = 0.0

    @property
    def now(self):
        return self.t

    capacity = property(lambda self: self.engines[0].capacity, lambda self, v: setattr(self.engines[0], "capacity", v))
    reserved = property(lambda self: self.engines[0].reserved, lambda self, v: setattr(self.engines[0], "reserved", v))

    def act(self, actions):
        self.log.extend(a for a in actions or () if isinstance(a, Dispatch))
        super().act(actions)

    def apply(self, actions):
        """Apply actions the test obtained from the policy directly; returns them."""
        self.act(actions)
        return actions

    def _since(self, call):
        n = len(self.log)
        call()
        return self.log[n:]

    def start(self):
        return self._since(super().start)

    def finish(self, rid, new_tokens, done, budget=None):
        """Chunk `rid` ends after `new_tokens` tokens (the request with it when `done`); returns the dispatches."""
        self.t += 1.0
        eng = self.engines[self.ro.requests[rid].instance]
        eng.reserved -= eng.held.pop(rid)
        ev = ChunkFinished(
            self.t, rid, eng.instance_id, new_tokens, done, FinishReason.EOS if done else FinishReason.CHUNK
        )
        return self._since(lambda: self.emit(ev))
