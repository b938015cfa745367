"""A simulated inference instance: vLLM-style continuous batching as a SimPy process.

Each step the instance's `StepScheduler` decides what runs (serve running sequences, preempt by recompute
when KV runs out, admit waiting ones); the process then waits out the step's cost-model time and applies it.

Speed: between composition changes the batch is all-decode and fixed, so the process advances the steps up
to the next event in one closed-form epoch (`seer.sim.epochs`); a submit or abort wakes it and cuts the epoch
short after the step in flight. With `exact=True` it takes every step one at a time through the same code;
the two must agree.

Speculative decoding: with a speculation source (`seer.sim.speculation`) and draft budgets set by the policy
(`set_speculation`), an all-decode batch runs verify steps: each sequence feeds its last token plus its draft
(q = 1 + drafted tokens), the step costs the cost model's T(batch, q), and the sequence advances by
1 + accepted tokens. The next `spec_horizon` steps are planned up front (the drafter frozen meanwhile), so an
epoch is still one SimPy timeout; exact mode plans one step at a time. KV for the draft tokens is allocated
as vLLM does (lookahead slots) and kept by the sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np
import simpy

from seer.core import (
    Chunk,
    ChunkFinished,
    FinishReason,
    InstanceChanges,
    InstanceIdle,
    InstanceView,
    Request,
    RequestPreempted,
    Reservation,
    worst_case_kv,
)
from seer.sim.batch import InstanceStats, Running, Seq
from seer.sim.batch_kernels import advance_decode, all_decoding, apply_step, step_sums
from seer.sim.config import InstanceConfig, SimulationError  # noqa: F401  (SimulationError re-exported)
from seer.sim.epochs import (
    apply_spec_epoch,
    budget_table,
    count_spec_steps,
    draft_budgets,
    epoch_avail,
    fast_epoch_length,
    marking_suspensions,
    plan_spec_epoch,
    run_epoch,
    spec_steps_within,
    step_end,
    step_start,
)
from seer.sim.kv import KVMemory
from seer.sim.step_scheduler import StepScheduler


class SimInstance:
    """One inference instance behind the `Engine` protocol, advancing in SimPy time."""

    def __init__(
        self,
        env: simpy.Environment,
        instance_id: int,
        cost,
        cfg: InstanceConfig,
        true_output_len: Mapping[int, int],
        emit: Callable,
        exact: bool = False,
        spec=None,
        spec_horizon: int = 16,
        changes: InstanceChanges | None = None,
        spec_counts: np.ndarray | None = None,
        shared_prompt: Mapping[int, int] | None = None,  # group -> the prompt tokens its samples share
    ):
        self.env, self.instance_id, self.cost, self.cfg = env, instance_id, cost, cfg
        self.spec = spec
        self.spec_horizon = max(1, spec_horizon)
        self.spec_budgets: Mapping[int, int] = {}
        self.spec_default = 0
        self._budget_table = budget_table({})
        self.true_len, self.shared_prompt = true_output_len, shared_prompt or {}
        self._emit_to, self._changes = emit, changes
        self.exact = exact
        self.kv = kv = KVMemory(cfg.kv_capacity_tokens // cfg.block_size, cfg.block_size, cfg.prefix_cache)
        self.run_set = Running()
        self.waiting: list[Seq] = []  # kept sorted by (priority, arrival)
        self.loading: list[Seq] = []  # fetching KV from the pool
        self.seqs: dict[int, Seq] = {}
        self.reservation = Reservation()
        self.alive = True
        self.stats = InstanceStats()
        self.scheduler = StepScheduler(instance_id, cfg, kv, self.run_set, self.waiting, self.stats, self._preempted)
        self._aborts: list[int] = []
        self._wake: simpy.Event | None = None
        self._arrivals = 0
        self._idle_reported, self._settled = False, -1.0  # _settled: the instant last waited out before a step
        if spec is not None:  # per request; a driver passes one table to all its instances (fewer cache lines)
            if spec_counts is None:
                spec_counts = np.zeros((max(true_output_len, default=-1) + 1, 3), np.int64)
            self.stats.spec_by_request = spec_counts
        self._spec_view: dict | None = None
        self._view: tuple | None = None  # (state key, InstanceView): views are read far more often than changed
        run = self._run() if changes is None else marking_suspensions(self._run(), self._changed)
        self.process = env.process(run)

    # ---- Engine protocol ---------------------------------------------------------------------

    def submit(self, chunk: Chunk, request: Request) -> None:
        if request.request_id in self.seqs:
            raise RuntimeError(f"request {request.request_id} already on instance {self.instance_id}")
        true_left = self.true_len[request.request_id] - request.generated
        if true_left <= 0 or chunk.max_new_tokens <= 0:
            raise RuntimeError(f"chunk for request {request.request_id} has nothing to generate")
        stop = min(chunk.max_new_tokens, true_left)
        final = stop == true_left or request.generated + stop >= request.max_tokens
        if request.generated + stop >= request.max_tokens:
            reason = FinishReason.LENGTH
        elif stop == true_left:
            reason = FinishReason.EOS
        else:
            reason = FinishReason.CHUNK
        seq = Seq(
            request.request_id,
            chunk.priority,
            self._arrivals,
            request.context_len,
            stop,
            final,
            reason,
            chunk.max_new_tokens,
            gen0=request.generated,
            group=request.group_id,
            prompt_len=self.shared_prompt.get(request.group_id, request.prompt_len),
        )
        self._arrivals += 1
        self.seqs[seq.rid] = seq
        self._reserve(seq, 1)
        if self.cfg.kv_mode == "pool" and request.generated > 0 and not self.kv.cached_tokens(seq.rid):
            seq.pool_tokens = seq.ctx0 - 1
            delay = seq.pool_tokens * self.cost.kv_bytes_per_token / self.cfg.pool_bytes_per_s
            seq.ready_at = self.env.now + delay
            self.loading.append(seq)
            # nothing changes for the running batch until the KV arrives: wake the process only then
            self.env.timeout(delay).callbacks.append(lambda _ev: self._poke())
        else:
            self.scheduler.enqueue(seq)
            self._poke()

    def abort(self, request_id: int) -> None:
        """Takes effect at the next step boundary (the step in flight completes)."""
        if request_id in self.seqs:
            self._aborts.append(request_id)
            self._poke()

    def set_speculation(self, budgets: Mapping[int, int], default: int = 0) -> None:
        """Draft budgets: `budgets[rid]` for the requests named, `default` for the others."""
        if self.spec is None:
            return
        budgets = dict(budgets)
        if budgets != self.spec_budgets or default != self.spec_default:
            self.spec_budgets, self.spec_default = budgets, int(default)
            self._budget_table = budget_table(budgets)
            self._poke()  # an epoch planned with the old budgets is cut short

    def view(self) -> InstanceView:
        key = (
            self.kv.version,
            self.reservation.tokens,
            len(self.run_set),
            len(self.waiting),
            len(self.loading),
            self.alive,
            self._spec_view is None,
        )
        if self._view is None or self._view[0] != key:
            self._view = (key, self._build_view())
        return self._view[1]

    def _build_view(self) -> InstanceView:
        # requests' cached contexts (a group's prompt is keyed by `prompt_key`), read-only: the view is handed out again
        cache = self.kv.cache if self.kv.prefix_cache else {}
        cached = MappingProxyType({rid: e[0] for rid, e in cache.items() if type(rid) is not tuple})
        bs = self.cfg.block_size
        spec = {}
        if self.spec is not None:
            if self._spec_view is None:
                # positions reached never increase with i (reaching i+1 means reaching i): the nonzero ones lead
                n = int(np.count_nonzero(self.stats.spec_tried))
                self._spec_view = {
                    "spec_tried": tuple(self.stats.spec_tried[:n].tolist()),
                    "spec_accepted": tuple(self.stats.spec_accepted[:n].tolist()),
                }
            spec = self._spec_view
        return InstanceView(
            self.instance_id,
            self.kv.capacity_blocks * bs,
            self.kv.held * bs,
            self.reservation.tokens,
            len(self.run_set),
            len(self.waiting) + len(self.loading),
            self.alive,
            self.cfg.max_num_seqs,
            self.cfg.block_size,
            cached,
            **spec,
        )

    # ---- helpers -----------------------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _changed(self) -> None:
        self._changes.mark(self.instance_id)

    def emit(self, event) -> None:
        if self._changes is not None:
            self._changed()
        self._emit_to(event)

    def _new_wake(self) -> simpy.Event:
        self._wake = self.env.event()
        return self._wake

    def _record(self) -> None:
        """One timeline row: the state from now until the instance's next row (taken as a step or an epoch
        starts, after admission, so a step that admits counts what it runs)."""
        self.stats.timeline.append(
            (self.env.now, self.kv.held * self.cfg.block_size, len(self.run_set), len(self.waiting) + len(self.loading))
        )

    def _reserve(self, seq: Seq, sign: int) -> None:
        """The chunk arrives (1) or leaves (-1); its group's prompt blocks, held once here, are reserved once."""
        worst = worst_case_kv(seq.ctx0, seq.max_new, self.cfg.block_size)
        self.reservation.change(worst, seq.group, self.scheduler.prompt_blocks(seq) * self.cfg.block_size, sign)

    def _leave(self, seq: Seq) -> None:
        """Remove a sequence from the instance; its KV stays in the prefix cache when enabled."""
        self.seqs.pop(seq.rid, None)
        self._reserve(seq, -1)
        self.scheduler.release(seq)
        seq.blocks = 0

    def _finish(self, seq: Seq, reason: FinishReason, finished: bool) -> None:
        if self.spec is not None:
            self.spec.commit(seq.rid, seq.gen0 + seq.produced)
        self._leave(seq)
        self.emit(ChunkFinished(self.env.now, seq.rid, self.instance_id, seq.produced, finished, reason))

    def _preempted(self, victim: Seq) -> None:
        self.stats.events.append((self.env.now, "preempt", victim.rid))
        self.emit(RequestPreempted(self.env.now, victim.rid, self.instance_id))

    def _process_aborts(self) -> None:
        for rid in self._aborts:
            seq = self.seqs.get(rid)
            if seq is None:
                continue
            rows = self.run_set.rid == rid
            if rows.any():
                self.run_set.remove(rows)
            for queue in (self.waiting, self.loading):
                if seq in queue:
                    queue.remove(seq)
            if seq.produced >= seq.stop:  # the chunk ended in the step the abort waited for: it is not aborted
                self._finish(seq, seq.reason, seq.final)
            else:
                self._finish(seq, FinishReason.ABORT, finished=False)
        self._aborts.clear()

    def _promote_loaded(self) -> None:
        ready = [s for s in self.loading if s.ready_at <= self.env.now + 1e-12]
        for seq in ready:
            self.loading.remove(seq)
            self.scheduler.enqueue(seq)

    def _collect_finished(self) -> None:
        rs = self.run_set
        if not len(rs):
            return
        done = rs.produced >= rs.stop
        if np.count_nonzero(done):  # a third of `done.any()`'s cost (no Python-level reduction wrapper)
            for seq in rs.remove(done):
                self._finish(seq, seq.reason, seq.final)

    def _commit_rows(self) -> None:
        """Tell the speculation source what every running sequence has generated by now."""
        if self.spec is not None:
            self.spec.commit_many(self.run_set.rid, self.run_set.gen0 + self.run_set.produced)

    def _plain_decode_ready(self) -> bool:
        """True when the next step is an all-decode step of a fixed batch (nothing to admit)."""
        rs = self.run_set
        B = len(rs)
        if not B or B > self.cfg.max_num_batched_tokens:
            return False
        if self.waiting and self.scheduler.can_admit_head(self.cfg.max_num_batched_tokens - B):
            return False
        return all_decoding(rs.ctx0, rs.produced, rs.computed)

    # ---- the process -------------------------------------------------------------------------

    def _run(self):
        while True:
            self._process_aborts()
            self._promote_loaded()
            self._collect_finished()
            if self._aborts:  # the policy answered a finish here with an abort: it lands before the next step
                continue
            if not len(self.run_set) and not self.waiting:
                if not self._idle_reported and not self.loading:
                    self._idle_reported = True
                    self._record()
                    self.emit(InstanceIdle(self.env.now, self.instance_id))
                yield self._new_wake()
                continue
            self._idle_reported = False
            if self.env.peek() == self.env.now != self._settled:  # let the instant's events land first
                self._settled = self.env.now
                yield step_start(self.env, self.instance_id)
                continue
            if self.spec is not None and self._plain_decode_ready():
                cap = self.cfg.max_num_batched_tokens
                gammas = draft_budgets(self.run_set.rid, self._budget_table, self.spec_default, cap)
                if np.count_nonzero(gammas):
                    ran = yield from self._spec_epoch(gammas, 1 if self.exact else self.spec_horizon)
                    if ran:
                        continue
            steps = 0
            if not self.exact and self._plain_decode_ready():
                steps = fast_epoch_length(self.run_set, self.cfg.block_size, epoch_avail(self.kv, self.waiting))
            if steps >= 1:
                yield from self._decode_epoch(steps)
                continue
            idx, n = self.scheduler.schedule()
            if not len(idx):
                self._record()
                if not len(self.run_set) and self.waiting:
                    self.scheduler.check_fits(self.waiting[0].target, self.waiting[0].rid)
                yield self._new_wake()
                continue
            yield from self._step(idx, n)

    def _step(self, idx: np.ndarray, n: np.ndarray):
        """One scheduled step (prefill and/or decode rows): wait its time, then apply it."""
        self._record()  # after admission: the batch this step runs
        rs = self.run_set
        tokens, kv, attn, pairs, logits = step_sums(idx, n, rs.computed, rs.ctx0, rs.produced)
        dur = self.cost.step_time_sums(tokens, kv, attn, pairs, logits, len(self.waiting))
        yield step_end(self.env, dur, self.instance_id)
        self.stats.busy_s += dur
        self.stats.steps += 1
        apply_step(idx, n, rs.computed, rs.ctx0, rs.produced)
        self._commit_rows()

    def _decode_epoch(self, steps: int):
        rs = self.run_set
        B = len(rs)
        S0 = float(rs.computed.sum())
        W = len(self.waiting)  # constant through the epoch: nothing is admitted until it ends
        self.stats.epochs += 1
        self._record()
        within = lambda elapsed: self.cost.steps_within(B, S0, elapsed, W)  # noqa: E731
        span = lambda n: self.cost.decode_span(B, S0, n, W)  # noqa: E731
        steps, dur = yield from run_epoch(self.env, self._new_wake(), steps, within, span, self.instance_id)
        self.stats.busy_s += dur
        self.stats.steps += steps
        ok = self.kv.allocate(int(advance_decode(rs.computed, rs.produced, rs.blocks, steps, self.cfg.block_size)))
        assert ok, "fast path over-allocated KV"
        self._commit_rows()

    def _spec_epoch(self, gammas: np.ndarray, horizon: int):
        """Up to `horizon` verify steps of the fixed all-decode batch; returns False (having done nothing)
        when not even one step fits in KV, so the caller's scheduling pass preempts."""
        rs = self.run_set
        remaining = rs.stop - rs.produced
        # a row advances >= 1 token a step, so the first chunk end comes within min(remaining) steps
        horizon = max(1, min(horizon, int(remaining.min())))
        plan = self.spec.plan(rs.rid, rs.gen0 + rs.produced, remaining, gammas, horizon)
        avail, block = epoch_avail(self.kv, self.waiting), self.cfg.block_size
        epoch = plan_spec_epoch(rs, plan, remaining, horizon, block, avail, self.cost, len(self.waiting))
        if epoch is None:
            return False
        self.stats.epochs += 1
        self._record()
        within, span = spec_steps_within(epoch.cum_s), lambda n: float(epoch.cum_s[n - 1])
        j, _ = yield from run_epoch(self.env, self._new_wake(), epoch.k, within, span, self.instance_id)
        ok = self.kv.allocate(apply_spec_epoch(rs, epoch, j, remaining))
        assert ok, "speculative epoch over-allocated KV"
        self.stats.busy_s += float(epoch.cum_s[j - 1])
        self.stats.steps += j
        count_spec_steps(self.stats, rs.rid, plan, j)
        self._spec_view = None
        self._commit_rows()
        return True
