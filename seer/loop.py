"""The one contract loop, shared by every backend: events -> policy.on_event -> actions -> engines.

`RequestLedger` is the single writer of request state (WAITING -> RUNNING -> WAITING | FINISHED | ABORTED) and
of the per-request records that become `requests.parquet`. `ContractLoop` delivers events to the policy and
applies its actions to the engines; a backend's driver subclasses it and keeps only what is its own (the
simulator its SimPy processes and bounds, the real backend its clocks, engines and recording).

Decisions made once here, for every backend:
- Events are delivered one at a time, in the order engines emit them. An event an engine raises while the
  loop is applying actions (a real engine reporting an aborted chunk from inside `abort`) is queued and
  delivered after the current action list, never re-entrantly.
- An aborted chunk returns its request to the buffer, unless the policy aborted it and its traits say aborts
  are final; an instance failure never ends a request.
- A request is done when it is FINISHED or ABORTED; the loop counts open requests instead of scanning them.
- Drafting state follows one lifecycle: the driver registers every request at set-up, engines feed tokens as
  they are produced, and the loop releases a request's state when it is done.
- The policy's traits are read once (`traits_of`) and honoured here: oracle lengths, the step profile,
  final aborts; ticks and drafting are the drivers' part of the same traits.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType

import numpy as np
import pandas as pd

from seer.core import (
    Abort,
    Chunk,
    ChunkFinished,
    ClusterView,
    Dispatch,
    Engine,
    Event,
    FinishReason,
    InstanceChanges,
    Policy,
    Request,
    RequestPreempted,
    RequestState,
    Rollout,
    RolloutStarted,
    SetSpeculation,
    Tick,
    traits_of,
)
from seer.errors import PolicyError, SeerInputError
from seer.progress import progress_bar

# requests are read-only to everyone but this ledger (seer.core.model.write_request); a field at a time, inline,
# as it runs several times an event
_set = object.__setattr__

RECORD_COLUMNS = ("first_dispatch_s", "finish_s", "instance", "chunks", "preemptions", "migrations")


def _an_int(value) -> bool:
    """An integer, numpy's too, but not a bool (True is not instance 1)."""
    return isinstance(value, (int, np.integer)) and type(value) is not bool


class RequestLedger:
    """Every request's state transitions and per-request records. Request ids are 0..n-1."""

    def __init__(self, rollout: Rollout):
        self.rollout = rollout
        n = len(rollout.requests)
        self.first_dispatch_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.instance = np.full(n, -1)
        self.chunks = np.zeros(n, np.int64)
        self.preemptions = np.zeros(n, np.int64)
        self.migrations = np.zeros(n, np.int64)
        self.completions = np.zeros(n, np.int64)  # times each request was reported finished (must end at 1)
        self.reason = [""] * n
        self.last_instance = [-1] * n
        self.open = n  # requests not yet done (FINISHED or ABORTED)
        self._abort_requested: set[int] = set()

    def dispatch(self, action: Dispatch, now: float, policy_name: str) -> tuple[Request, Chunk]:
        """WAITING -> RUNNING on `action.instance`; returns the request and the chunk to submit."""
        req = self.rollout.requests.get(action.request_id)
        if req is None:
            raise PolicyError(f"{policy_name}: dispatched unknown request {action.request_id!r}")
        if req.state is not RequestState.WAITING:
            raise PolicyError(f"{policy_name}: dispatched request {req.request_id} in state {req.state.value}")
        budget = min(action.max_new_tokens, req.remaining_budget)
        if budget < 1:
            raise PolicyError(f"{policy_name}: dispatched request {req.request_id} with a budget of {budget} tokens")
        rid = req.request_id
        _set(req, "state", RequestState.RUNNING)
        _set(req, "instance", action.instance)
        _set(req, "chunks", req.chunks + 1)
        if math.isnan(self.first_dispatch_s[rid]):  # np.isnan on one element costs ten times more
            self.first_dispatch_s[rid] = now
        if self.last_instance[rid] not in (-1, action.instance):
            self.migrations[rid] += 1
        self.last_instance[rid] = action.instance
        self.chunks[rid] += 1
        return req, Chunk(rid, action.instance, budget, req.generated, action.priority)

    def abort_requested(self, request_id: int) -> None:
        """The policy asked a running request's engine to abort it."""
        self._abort_requested.add(request_id)

    def abort_waiting(self, req: Request, now: float) -> None:
        """A buffered request is aborted before it runs again (final by definition)."""
        _set(req, "state", RequestState.ABORTED)
        self._close(req.request_id, "abort", now, None)

    def chunk_finished(self, event: ChunkFinished, aborts_are_final: bool) -> Request:
        """Apply a finished chunk to its request; returns the request (done or back in the buffer)."""
        req = self.rollout.requests[event.request_id]
        _set(req, "generated", req.generated + event.new_tokens)
        if event.token_ids and req.output_ids is not None:
            _set(req, "output_ids", req.output_ids + tuple(event.token_ids))
        requested = event.request_id in self._abort_requested
        self._abort_requested.discard(event.request_id)
        if event.finished:
            _set(req, "state", RequestState.FINISHED)
            _set(req, "finish_reason", event.reason)
            self.completions[req.request_id] += 1
            self._close(req.request_id, event.reason.value, event.t, event.instance)
        elif event.reason is FinishReason.ABORT and requested and aborts_are_final:
            _set(req, "state", RequestState.ABORTED)
            _set(req, "finish_reason", FinishReason.ABORT)
            self._close(req.request_id, "abort", event.t, event.instance)
        else:
            _set(req, "state", RequestState.WAITING)
        return req

    def preempted(self, event: RequestPreempted) -> None:
        self.preemptions[event.request_id] += 1

    def _close(self, rid: int, reason: str, t: float, instance: int | None) -> None:
        self.reason[rid] = reason
        self.finish_s[rid] = t
        if instance is not None:
            self.instance[rid] = instance
        self.open -= 1

    @property
    def total_preemptions(self) -> int:
        return int(self.preemptions.sum())

    def frame(self) -> pd.DataFrame:
        """One row per request, in request-id order: identity, lengths, finish reason and the records."""
        reqs = self.rollout.requests
        order = sorted(reqs)
        return pd.DataFrame(
            {
                "request_id": order,
                "prompt_id": [reqs[i].key[0] for i in order],
                "sample_id": [reqs[i].key[1] for i in order],
                "group_id": [reqs[i].group_id for i in order],
                "prompt_len": [reqs[i].prompt_len for i in order],
                "output_len": [reqs[i].generated for i in order],
                "max_tokens": [reqs[i].max_tokens for i in order],
                "finish_reason": [self.reason[i] for i in order],
                **{k: getattr(self, k)[order] for k in RECORD_COLUMNS},
            }
        )


class EngineViews(Sequence):
    """Instance views built on access: most events need none, so none are built for them."""

    def __init__(self, engines: Sequence[Engine]):
        self._engines = engines

    def __len__(self) -> int:
        return len(self._engines)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [e.view() for e in self._engines[i]]
        return self._engines[i].view()

    def __iter__(self):
        return (e.view() for e in self._engines)


class ContractLoop:
    """events -> policy.on_event -> actions -> engines, the same in every backend.

    Subclasses set `self.engines`, provide `now`, and call `start()` once their engines exist; they may
    override `before_submit` (e.g. to bring an idle engine's clock up to the dispatch time).
    """

    def __init__(self, rollout: Rollout, policy: Policy):
        if not isinstance(getattr(policy, "name", None), str):
            raise PolicyError(f"{type(policy).__name__}: a policy needs a `name` (a str); see seer.core.Policy")
        self.rollout, self.policy = rollout, policy
        self.traits = traits_of(policy)
        self.dispatches = 0  # chunks dispatched so far: a backend can tell a tick that changed nothing
        self.ledger = RequestLedger(rollout)
        self.engines: list[Engine] = []
        self.drafting = None  # the backend's drafting state: an object with finish(request_id)
        # set by backends whose engines mark their own changes (the simulator); None: policies read every view
        self.changes: InstanceChanges | None = None
        # live, read-only windows on the rollout's indexes for the views: a policy that stored into them would
        # change what every later view, and the ledger, sees
        self._read_only = tuple(map(MappingProxyType, (rollout.groups, rollout.requests, rollout.members)))
        self._inbox: deque[Event] = deque()
        self._delivering = False
        self._bar = None

    @property
    def now(self) -> float:
        raise NotImplementedError

    # ---- the policy's declared needs, honoured once --------------------------------------------

    def provide(self, true_lengths: Mapping[int, int] | None, step_profile: Callable | None) -> None:
        """Give the policy what its traits ask for: true lengths (oracles) and the step-time profile."""
        for needed, method in (("needs_oracle", "set_oracle_lengths"), ("needs_step_profile", "set_step_profile")):
            if getattr(self.traits, needed) and not callable(getattr(self.policy, method, None)):
                raise PolicyError(f"{self.policy.name}: its traits declare {needed} but it has no {method} method")
        if self.traits.needs_oracle:
            if true_lengths is None:
                raise SeerInputError(
                    f"policy {self.policy.name} needs true output lengths, which this run does not "
                    "have (real generation); use it on a replayed trace"
                )
            self.policy.set_oracle_lengths(dict(true_lengths))
        if self.traits.needs_step_profile:
            self.policy.set_step_profile(step_profile)

    # ---- events in --------------------------------------------------------------------------

    def view(self) -> ClusterView:
        groups, requests, members = self._read_only
        return ClusterView(self.now, EngineViews(self.engines), groups, requests, members, self.changes)

    def emit(self, event: Event) -> None:
        """The engines' callback: deliver now, or after the actions being applied when called from inside them."""
        self._inbox.append(event)
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._inbox:
                ev = self._inbox.popleft()
                self._record(ev)
                self.act(self.policy.on_event(ev, self.view()))
        finally:
            self._delivering = False

    def _record(self, event: Event) -> None:
        if isinstance(event, ChunkFinished):
            req = self.ledger.chunk_finished(event, self.traits.aborts_are_final)
            if req.done:
                if self.drafting is not None:
                    self.drafting.finish(req.request_id)
                if self._bar is not None:
                    self._bar.update(1)
        elif isinstance(event, RequestPreempted):
            self.ledger.preempted(event)

    def start(self) -> None:
        self.emit(RolloutStarted(self.now, tuple(self.rollout.groups)))

    def tick(self) -> None:
        self.emit(Tick(self.now))

    # ---- actions out ------------------------------------------------------------------------

    def act(self, actions) -> None:
        if actions is None:
            return
        if isinstance(actions, (Dispatch, Abort, SetSpeculation)) or not hasattr(actions, "__iter__"):
            raise PolicyError(f"{self.policy.name}: on_event must return a list of actions, not {actions!r}")
        for action in actions:
            self._mark(action)
            if isinstance(action, Dispatch):
                self._dispatch(action)
            elif isinstance(action, Abort):
                self._abort(action)
            elif isinstance(action, SetSpeculation):
                if self.traits.drafter is None:
                    raise PolicyError(f"{self.policy.name}: set speculation budgets, but its traits declare no drafter")
                self._check_budgets(action)
                self._engine(action.instance, "set speculation on").set_speculation(action.budgets, action.default)
            else:
                raise PolicyError(f"{self.policy.name}: unknown action {action!r}")

    def _check_budgets(self, action: SetSpeculation) -> None:
        """Draft budgets are whole tokens from 0 to the traits' max_draft_tokens (a larger one would outrun the
        engines' lookahead and make the makespan bound, which assumes at most that, no bound)."""
        top = self.traits.max_draft_tokens
        if not isinstance(action.budgets, Mapping):
            raise PolicyError(
                f"{self.policy.name}: set draft budgets {action.budgets!r}; they map request ids to tokens"
            )
        requests = self.rollout.requests
        unknown = next((r for r in action.budgets if not _an_int(r) or r not in requests), None)
        if unknown is not None:  # a budget for no request was dropped without a word, or failed in the engine
            raise PolicyError(f"{self.policy.name}: set a draft budget for unknown request {unknown!r}")
        for value in (action.default, *action.budgets.values()):
            if not _an_int(value) or not 0 <= value <= top:
                raise PolicyError(
                    f"{self.policy.name}: set a draft budget of {value!r}; budgets are integers from 0 to its traits' "
                    f"max_draft_tokens ({top})"
                )

    def _mark(self, action) -> None:
        if self.changes is None:
            return
        if isinstance(action, Abort):
            req = self.rollout.requests.get(action.request_id) if _an_int(action.request_id) else None
            inst = req.instance if req is not None else None
            if inst is not None:
                self.changes.mark(inst)
        elif isinstance(action, (Dispatch, SetSpeculation)) and _an_int(action.instance):  # else refused next
            self.changes.mark(action.instance)

    def _engine(self, i: int, what: str) -> Engine:
        if not _an_int(i) or not 0 <= i < len(self.engines):
            raise PolicyError(f"{self.policy.name}: {what} instance {i}, but there are {len(self.engines)}")
        return self.engines[i]

    def _dispatch(self, action: Dispatch) -> None:
        a = action  # ints: one type test per field, the usual case; the full check only otherwise
        if type(a.request_id) is not int or type(a.instance) is not int or type(a.max_new_tokens) is not int:
            self._check_whole(action)
        elif type(a.priority) is not int:
            self._check_whole(action)
        engine = self._engine(action.instance, f"dispatched request {action.request_id} to")
        if not engine.alive:
            raise PolicyError(
                f"{self.policy.name}: dispatched request {action.request_id} to failed instance {action.instance}"
            )
        req, chunk = self.ledger.dispatch(action, self.now, self.policy.name)
        self.dispatches += 1
        self.before_submit(engine, chunk)
        engine.submit(chunk, req)

    def _check_whole(self, action: Dispatch) -> None:
        """A dispatch's fields are integers (numpy's too): 2.5 tokens was floored, True was instance 1, request 3.0
        ran as 3, and a priority "high" failed inside the engine's queue."""
        fields = ("request_id", "instance", "max_new_tokens", "priority")
        for what, value in ((f, getattr(action, f)) for f in fields):
            if not _an_int(value):
                raise PolicyError(f"{self.policy.name}: dispatched request {action.request_id!r} with {what} {value!r}")

    def before_submit(self, engine: Engine, chunk: Chunk) -> None:
        """Hook: called just before a chunk is submitted."""

    def _abort(self, action: Abort) -> None:
        rid = action.request_id
        req = self.rollout.requests.get(rid) if _an_int(rid) else None
        if req is None:
            raise PolicyError(f"{self.policy.name}: aborted unknown request {rid!r}")
        if req.state is RequestState.RUNNING:
            self.ledger.abort_requested(req.request_id)
            self.engines[req.instance].abort(req.request_id)
        elif req.state is RequestState.WAITING:
            if not self.traits.aborts_are_final:
                raise PolicyError(
                    f"{self.policy.name}: aborted buffered request {req.request_id}, but its traits do "
                    "not declare final aborts"
                )
            self.ledger.abort_waiting(req, self.now)

    # ---- progress and the end ---------------------------------------------------------------

    @contextlib.contextmanager
    def progress(self, desc: str, enabled: bool | None) -> Iterator[None]:
        """A progress bar over finished requests for the duration of the block."""
        self._bar = progress_bar(enabled, total=len(self.rollout.requests), desc=desc, unit="req")
        try:
            yield
        finally:
            self._bar.close()
            self._bar = None

    @property
    def done(self) -> bool:
        return self.ledger.open == 0

    def check_done(self) -> None:
        """Raise if the rollout ended with requests neither finished nor (finally) aborted."""
        if self.ledger.open:
            left = [rid for rid, r in self.rollout.requests.items() if not r.done][:5]
            raise PolicyError(f"policy {self.policy.name} left {self.ledger.open} requests unfinished (first: {left})")


def nan_bounds() -> dict:
    """Bounds for a backend without a step-time model to bound with."""
    return {"work_bound_s": math.nan, "longest_request_s": math.nan, "lower_bound_s": math.nan}
