"""A simulated inference instance: vLLM-style continuous batching as a SimPy process.

Each step the scheduler serves running sequences first (one token for a decoding sequence, a chunk of
its prompt for one still in prefill, within `max_num_batched_tokens`), allocating paged KV blocks; when
a block cannot be had it preempts by recompute the lowest-priority, newest running sequence (vLLM v1).
If nothing was preempted it then admits waiting sequences in (priority, arrival) order while
`max_num_seqs`, the token budget and KV allow.

Speed: between composition changes the batch is all-decode and fixed, so the process computes how many
steps pass before the next event (a sequence reaching its chunk end, the first step whose new blocks do
not fit, or a wake-up from a submit/abort) and advances them in closed form with the cost model. With
`exact=True` it takes every step one at a time through the same code; the two must agree.

Speculative decoding: with a speculation source (see `seer.sim.speculation`) and draft budgets set by the
policy (`set_speculation`), an all-decode batch runs verify steps: each sequence feeds its last token plus
its draft (q = 1 + drafted tokens), the step costs the cost model's T(batch, q), and the sequence advances
by 1 + accepted tokens. The per-step advances of the next `spec_horizon` steps are planned up front (the
drafter frozen meanwhile), so an epoch is still one SimPy timeout; exact mode plans one step at a time.
KV for the draft tokens is allocated as vLLM does (lookahead slots) and kept by the sequence.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import simpy

from seer.core import Chunk, ChunkFinished, FinishReason, InstanceIdle, InstanceView, Request, RequestPreempted
from seer.errors import SeerInputError
from seer.sim.costmodel import CostModel
from seer.sim.kv import KVMemory, blocks_for


@dataclass(frozen=True)
class InstanceConfig:
    """Engine settings of one instance (vLLM names where they exist)."""

    kv_capacity_tokens: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    prefix_cache: bool = False
    kv_mode: str = "local"  # "local": a moved request re-prefills; "pool": its KV is fetched from a global pool
    pool_bytes_per_s: float = 50e9

    def __post_init__(self):
        if self.kv_mode not in ("local", "pool"):
            raise SeerInputError(f"kv_mode must be 'local' or 'pool', not {self.kv_mode!r}")
        if self.max_num_seqs > self.max_num_batched_tokens:
            raise SeerInputError("max_num_seqs must not exceed max_num_batched_tokens")


class SimulationError(SeerInputError):
    """The workload cannot run on this cluster (e.g. one request needs more KV than an instance has)."""


@dataclass(eq=False)
class Seq:
    """One chunk of a request on this instance."""

    rid: int
    priority: int
    arrival: int
    ctx0: int  # context at dispatch: prompt + tokens generated before this chunk
    stop: int  # tokens this chunk will produce (min of the chunk budget and what the request has left)
    final: bool  # producing `stop` tokens finishes the request
    reason: FinishReason
    max_new: int
    gen0: int = 0  # tokens the request had generated when this chunk was dispatched
    computed: int = 0  # tokens with KV computed here
    produced: int = 0  # tokens generated in this chunk
    blocks: int = 0
    pool_tokens: int = 0  # tokens fetchable from the global KV pool on admission
    ready_at: float = 0.0

    @property
    def target(self) -> int:
        """Tokens whose KV must exist before the next token can be sampled."""
        return self.ctx0 + self.produced

    @property
    def decoding(self) -> bool:
        return self.produced > 0 and self.computed == self.target - 1

    def order(self) -> tuple[int, int]:
        return (self.priority, self.arrival)


SPEC_POSITIONS = 64  # draft positions counted in the acceptance statistics


@dataclass
class InstanceStats:
    busy_s: float = 0.0
    steps: int = 0
    epochs: int = 0
    preemptions: int = 0
    recomputed_tokens: int = 0
    pool_fetched_tokens: int = 0
    prefix_hit_tokens: int = 0
    timeline: list = field(default_factory=list)  # (t, kv_used_tokens, running, waiting)
    events: list = field(default_factory=list)  # (t, kind, request_id)
    spec_tried: np.ndarray = field(default_factory=lambda: np.zeros(SPEC_POSITIONS, np.int64))
    spec_accepted: np.ndarray = field(default_factory=lambda: np.zeros(SPEC_POSITIONS, np.int64))
    spec_request_steps: int = 0  # request-steps with a draft budget
    spec_drafted_tokens: int = 0
    spec_accepted_tokens: int = 0
    spec_by_request: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # per rid: steps, drafted, accepted


class Running:
    """The running sequences as parallel numpy arrays (structure of arrays), in admission order."""

    COLS = ("rid", "priority", "arrival", "ctx0", "stop", "gen0", "computed", "produced", "blocks")

    def __init__(self):
        for c in self.COLS:
            setattr(self, c, np.zeros(0, dtype=np.int64))
        self.seqs: list[Seq] = []

    def __len__(self) -> int:
        return len(self.seqs)

    def append(self, seqs: list[Seq]) -> None:
        if not seqs:
            return
        for c in self.COLS:
            extra = np.fromiter((getattr(s, c) for s in seqs), dtype=np.int64, count=len(seqs))
            setattr(self, c, np.concatenate([getattr(self, c), extra]))
        self.seqs.extend(seqs)

    def sync(self, idx) -> list[Seq]:
        """Write the dynamic state of rows `idx` back into their Seq objects and return them."""
        out = []
        for i in np.atleast_1d(idx):
            seq = self.seqs[int(i)]
            seq.computed, seq.produced, seq.blocks = int(self.computed[i]), int(self.produced[i]), int(self.blocks[i])
            out.append(seq)
        return out

    def remove(self, mask: np.ndarray) -> list[Seq]:
        """Remove rows where mask is True; return their (synced) Seq objects in order."""
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            return []
        gone = self.sync(idx)
        keep = ~mask
        for c in self.COLS:
            setattr(self, c, getattr(self, c)[keep])
        self.seqs = [s for s, k in zip(self.seqs, keep) if k]
        return gone

    @property
    def target(self) -> np.ndarray:
        return self.ctx0 + self.produced

    def decoding(self) -> np.ndarray:
        return (self.produced > 0) & (self.computed == self.ctx0 + self.produced - 1)

    def order_desc(self) -> np.ndarray:
        """Row indices from lowest priority (largest (priority, arrival)) to highest."""
        return np.lexsort((-self.arrival, -self.priority))


class SimInstance:
    """One inference instance behind the `Engine` protocol, advancing in SimPy time."""

    def __init__(self, env: simpy.Environment, instance_id: int, cost: CostModel, cfg: InstanceConfig,
                 true_output_len: Mapping[int, int], emit: Callable, exact: bool = False, spec=None,
                 spec_horizon: int = 16):
        self.env, self.instance_id, self.cost, self.cfg = env, instance_id, cost, cfg
        self.spec = spec
        self.spec_horizon = max(1, spec_horizon)
        self.spec_budgets: Mapping[int, int] = {}
        self.spec_default = 0
        self.true_len = true_output_len
        self.emit = emit
        self.exact = exact
        self.kv = KVMemory(cfg.kv_capacity_tokens // cfg.block_size, cfg.block_size, cfg.prefix_cache)
        self.run_set = Running()
        self.waiting: list[Seq] = []  # kept sorted by (priority, arrival)
        self.loading: list[Seq] = []  # fetching KV from the pool
        self.seqs: dict[int, Seq] = {}
        self.reserved = 0
        self.alive = True
        self._aborts: list[int] = []
        self._wake: simpy.Event | None = None
        self._arrivals = 0
        self._idle_reported = False
        self.stats = InstanceStats()
        if spec is not None:
            self.stats.spec_by_request = np.zeros((max(true_output_len, default=-1) + 1, 3), np.int64)
        self._spec_view: dict | None = None
        self.process = env.process(self._run())

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
        seq = Seq(request.request_id, chunk.priority, self._arrivals, request.context_len, stop, final, reason,
                  chunk.max_new_tokens, gen0=request.generated)
        self._arrivals += 1
        self.seqs[seq.rid] = seq
        self.reserved += self._worst_case(seq)
        if self.cfg.kv_mode == "pool" and request.generated > 0 and not self.kv.cached_tokens(seq.rid):
            seq.pool_tokens = seq.ctx0 - 1
            delay = seq.pool_tokens * self.cost.shape.kv_bytes_per_token / self.cfg.pool_bytes_per_s
            seq.ready_at = self.env.now + delay
            self.loading.append(seq)
            self.env.timeout(delay).callbacks.append(lambda _ev: self._poke())
        else:
            self._enqueue(seq)
        self._poke()

    def abort(self, request_id: int) -> None:
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
            self._poke()  # an epoch planned with the old budgets is cut short

    def view(self) -> InstanceView:
        cached = {rid: tok for rid, (tok, _b) in self.kv.cache.items()} if self.kv.prefix_cache else {}
        bs = self.cfg.block_size
        spec = {}
        if self.spec is not None:
            if self._spec_view is None:
                n = int(np.flatnonzero(self.stats.spec_tried).max() + 1) if self.stats.spec_tried.any() else 0
                self._spec_view = {"spec_tried": tuple(self.stats.spec_tried[:n].tolist()),
                                   "spec_accepted": tuple(self.stats.spec_accepted[:n].tolist())}
            spec = self._spec_view
        return InstanceView(self.instance_id, self.kv.capacity_blocks * bs, self.kv.held * bs, self.reserved,
                            len(self.run_set), len(self.waiting) + len(self.loading), self.alive,
                            self.cfg.max_num_seqs, self.cfg.block_size, cached, **spec)

    # ---- helpers -----------------------------------------------------------------------------

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _new_wake(self) -> simpy.Event:
        self._wake = self.env.event()
        return self._wake

    def _enqueue(self, seq: Seq) -> None:
        i = bisect.bisect_right(self.waiting, seq.order(), key=Seq.order)
        self.waiting.insert(i, seq)

    def _record(self) -> None:
        self.stats.timeline.append((self.env.now, self.kv.held * self.cfg.block_size, len(self.run_set),
                                    len(self.waiting) + len(self.loading)))

    def _worst_case(self, seq: Seq) -> int:
        return blocks_for(seq.ctx0 + seq.max_new, self.cfg.block_size) * self.cfg.block_size

    def _leave(self, seq: Seq) -> None:
        """Remove a sequence from the instance; its KV stays in the prefix cache when enabled."""
        self.seqs.pop(seq.rid, None)
        self.reserved -= self._worst_case(seq)
        self.kv.keep_prefix(seq.rid, seq.computed, seq.blocks)
        seq.blocks = 0

    def _finish(self, seq: Seq, reason: FinishReason, finished: bool) -> None:
        if self.spec is not None:
            self.spec.commit(seq.rid, seq.gen0 + seq.produced)
            if finished:
                self.spec.finish(seq.rid)
        self._leave(seq)
        self.emit(ChunkFinished(self.env.now, seq.rid, self.instance_id, seq.produced, finished, reason))

    def _preempt_rows(self, mask: np.ndarray) -> None:
        for victim in self.run_set.remove(mask):
            self.stats.preemptions += 1
            self.stats.recomputed_tokens += victim.computed
            self.stats.events.append((self.env.now, "preempt", victim.rid))
            self.kv.keep_prefix(victim.rid, victim.computed, victim.blocks)
            victim.computed = victim.blocks = 0
            victim.pool_tokens = 0
            self._enqueue(victim)
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
            self._finish(seq, FinishReason.ABORT, finished=False)
        self._aborts.clear()

    def _promote_loaded(self) -> None:
        ready = [s for s in self.loading if s.ready_at <= self.env.now + 1e-12]
        for seq in ready:
            self.loading.remove(seq)
            self._enqueue(seq)

    def _collect_finished(self) -> None:
        rs = self.run_set
        if not len(rs):
            return
        done = rs.produced >= rs.stop
        if done.any():
            for seq in rs.remove(done):
                self._finish(seq, seq.reason, seq.final)

    def _cached_blocks(self, seq: Seq) -> int:
        entry = self.kv.cache.get(seq.rid)
        return entry[1] if entry else 0

    def _admission_need(self, seq: Seq, budget: int) -> tuple[int, int, int, int]:
        """(hit tokens, new tokens this step, extra blocks, cached blocks reused) to admit `seq` now."""
        cached = self.kv.cached_tokens(seq.rid)
        if cached:
            hit, cb = min(cached, seq.target - 1), self._cached_blocks(seq)
        else:
            hit, cb = min(seq.pool_tokens, seq.target - 1), 0
        q = min(seq.target - hit, budget)
        return hit, q, max(0, blocks_for(hit + q, self.cfg.block_size) - cb), cb

    def _can_admit_head(self, budget: int) -> bool:
        if not self.waiting or len(self.run_set) >= self.cfg.max_num_seqs or budget <= 0:
            return False
        _hit, _q, extra, cb = self._admission_need(self.waiting[0], budget)
        return extra <= self.kv.available() - cb

    def _check_fits(self, target: int, rid: int) -> None:
        if blocks_for(target, self.cfg.block_size) > self.kv.capacity_blocks:
            raise SimulationError(
                f"request {rid} needs {target:,} tokens of KV, more than instance {self.instance_id} holds "
                f"({self.kv.capacity_blocks * self.cfg.block_size:,})")

    # ---- the process -------------------------------------------------------------------------

    def _run(self):
        while True:
            self._process_aborts()
            self._promote_loaded()
            self._collect_finished()
            if not len(self.run_set) and not self.waiting:
                if not self._idle_reported and not self.loading:
                    self._idle_reported = True
                    self._record()
                    self.emit(InstanceIdle(self.env.now, self.instance_id))
                yield self._new_wake()
                continue
            self._idle_reported = False
            self._record()
            if self.spec is not None and self._plain_decode_ready():
                gammas = self._gammas()
                if gammas.any():
                    ran = yield from self._spec_epoch(gammas, 1 if self.exact else self.spec_horizon)
                    if ran:
                        continue
            steps = 0 if self.exact else self._fast_epoch_length()
            if steps >= 1:
                yield from self._decode_epoch(steps)
                continue
            idx, n = self._schedule_step()
            if not len(idx):
                if not len(self.run_set) and self.waiting:
                    self._check_fits(self.waiting[0].target, self.waiting[0].rid)
                yield self._new_wake()
                continue
            rs = self.run_set
            comp = rs.computed[idx]
            logits = int((comp + n >= rs.ctx0[idx] + rs.produced[idx]).sum())
            multi = n > 1
            dur = self.cost.step_time_sums(float(n.sum()), float((comp + n).sum()), float((n * (comp + (n + 1) / 2)).sum()),
                                           float((n * (comp + n))[multi].sum()), logits)
            yield self.env.timeout(dur)
            self.stats.busy_s += dur
            self.stats.steps += 1
            rs.computed[idx] += n
            rs.produced[idx] += (rs.computed[idx] >= rs.ctx0[idx] + rs.produced[idx])
            self._commit_rows()

    def _commit_rows(self) -> None:
        """Tell the speculation source what every running sequence has generated by now."""
        if self.spec is None:
            return
        rs = self.run_set
        self.spec.commit_many(rs.rid, rs.gen0 + rs.produced)

    def _plain_decode_ready(self) -> bool:
        """True when the next step is an all-decode step of a fixed batch (nothing to admit)."""
        rs = self.run_set
        B = len(rs)
        if not B or B > self.cfg.max_num_batched_tokens:
            return False
        if self.waiting and self._can_admit_head(self.cfg.max_num_batched_tokens - B):
            return False
        return bool(rs.decoding().all())

    def _epoch_avail(self) -> int:
        """Blocks an epoch may take: free plus evictable cache, but never the waiting head's cached prefix
        (evicting it would change whether the head can be admitted: stop before that)."""
        avail = self.kv.available()
        if self.waiting and self.waiting[0].rid in self.kv.cache:
            avail = self.kv.free
            for rid, (_tok, blocks) in self.kv.cache.items():
                if rid == self.waiting[0].rid:
                    break
                avail += blocks
        return avail

    def _gammas(self) -> np.ndarray:
        """Draft budget per running row, capped so a step's tokens fit max_num_batched_tokens."""
        rs = self.run_set
        B = len(rs)
        if self.spec_budgets:
            g = np.fromiter((self.spec_budgets.get(r, self.spec_default) for r in rs.rid.tolist()), np.int64, B)
        else:
            g = np.full(B, self.spec_default, np.int64)
        cap = (self.cfg.max_num_batched_tokens - B) // max(B, 1)
        return np.clip(g, 0, min(cap, SPEC_POSITIONS))

    def _spec_epoch(self, gammas: np.ndarray, horizon: int):
        """Up to `horizon` verify steps of the fixed all-decode batch; returns False (having done nothing)
        when not even one step fits in KV, so the caller's scheduling pass preempts."""
        rs = self.run_set
        remaining = rs.stop - rs.produced
        # a row advances >= 1 token a step, so the first chunk end comes within min(remaining) steps
        horizon = max(1, min(horizon, int(remaining.min())))
        plan = self.spec.plan(rs.rid, rs.gen0 + rs.produced, remaining, gammas, horizon)
        adv = plan.advance
        C = np.cumsum(adv, axis=1)
        ends = C >= remaining[:, None]
        k = horizon
        if ends.any():
            k = min(k, int(np.where(ends.any(axis=1), ends.argmax(axis=1), horizon).min()) + 1)
        q = 1 + plan.drafted
        ctx = rs.computed[:, None] + (C - adv)  # KV cached before each step
        bs = self.cfg.block_size
        blocks = np.maximum(np.maximum.accumulate(-(-(ctx + q) // bs), axis=1), rs.blocks[:, None])
        extra = (blocks - rs.blocks[:, None]).sum(axis=0)
        over = np.flatnonzero(extra > self._epoch_avail())
        if len(over):
            k = min(k, int(over[0]))
        if k == 0:
            return False
        qk, ck = q[:, :k], ctx[:, :k]
        qf = qk.astype(np.float64)
        dur = self.cost.step_time_sums(qf.sum(axis=0), (ck + qk).sum(axis=0).astype(np.float64),
                                       (qf * (ck + (qf + 1) / 2)).sum(axis=0),
                                       np.where(qk > 1, qf * (ck + qf), 0.0).sum(axis=0))
        cum = np.cumsum(np.broadcast_to(dur, (k,)))
        t0 = self.env.now
        self.stats.epochs += 1
        wake = self._new_wake()
        timer = self.env.timeout(float(cum[-1]))
        yield timer | wake
        j = k
        if not timer.processed and self.env.now < t0 + float(cum[-1]):
            j = min(int(np.searchsorted(cum, self.env.now - t0, side="right")) + 1, k)  # the step in flight completes
            end = t0 + float(cum[j - 1])
            if end > self.env.now:
                yield self.env.timeout(end - self.env.now)
        took = np.minimum(C[:, j - 1], remaining)
        rs.computed += took
        rs.produced += took
        ok = self.kv.allocate(int((blocks[:, j - 1] - rs.blocks).sum()))
        assert ok, "speculative epoch over-allocated KV"
        rs.blocks = blocks[:, j - 1].copy()
        st = self.stats
        st.busy_s += float(cum[j - 1])
        st.steps += j
        b, a, d = plan.budget[:, :j], plan.accepted[:, :j], plan.drafted[:, :j]
        # position i (0-based) was tried when the budget reached it and the i before it were accepted
        tried = np.minimum(b, a + 1).ravel()
        n = SPEC_POSITIONS + 1
        st.spec_tried += np.cumsum(np.bincount(tried, minlength=n)[::-1])[::-1][1:n]
        st.spec_accepted += np.cumsum(np.bincount(a.ravel(), minlength=n)[::-1])[::-1][1:n]
        self._spec_view = None
        spec_rows = b > 0
        st.spec_request_steps += int(spec_rows.sum())
        st.spec_drafted_tokens += int(d.sum())
        st.spec_accepted_tokens += int(a.sum())
        per = st.spec_by_request
        np.add.at(per, (rs.rid, 0), spec_rows.sum(axis=1))
        np.add.at(per, (rs.rid, 1), d.sum(axis=1))
        np.add.at(per, (rs.rid, 2), a.sum(axis=1))
        self._commit_rows()
        return True

    def _fast_epoch_length(self) -> int:
        """Steps that can run in closed form from now: 0 if the next step is not a plain decode step."""
        if not self._plain_decode_ready():
            return 0
        rs = self.run_set
        n_finish = int((rs.stop - rs.produced).min())
        bs, avail = self.cfg.block_size, self._epoch_avail()
        comp, held = rs.computed, rs.blocks

        def extra(k: int) -> int:
            return int(np.maximum(-(-(comp + k) // bs) - held, 0).sum())

        if extra(n_finish) <= avail:
            return n_finish
        lo, hi = 0, n_finish  # extra(lo) fits, extra(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if extra(mid) <= avail:
                lo = mid
            else:
                hi = mid
        return lo

    def _decode_epoch(self, steps: int):
        rs = self.run_set
        B = len(rs)
        S0 = float(rs.computed.sum())
        t0 = self.env.now
        dur = self.cost.decode_span(B, S0, steps)
        self.stats.epochs += 1
        wake = self._new_wake()
        timer = self.env.timeout(dur)
        yield timer | wake
        if not timer.processed and self.env.now < t0 + dur:
            done = self.cost.steps_within(B, S0, self.env.now - t0)
            steps = min(done + 1, steps)  # the step in flight completes
            end = t0 + self.cost.decode_span(B, S0, steps)
            if end > self.env.now:
                yield self.env.timeout(end - self.env.now)
            dur = end - t0
        self.stats.busy_s += dur
        self.stats.steps += steps
        rs.computed += steps
        rs.produced += steps
        new_blocks = np.maximum(-(-rs.computed // self.cfg.block_size), rs.blocks)
        ok = self.kv.allocate(int((new_blocks - rs.blocks).sum()))
        assert ok, "fast path over-allocated KV"
        rs.blocks = new_blocks
        self._commit_rows()

    def _plan_running(self, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """New tokens per running row this step: 1 per decoding row, then prefill rows in order."""
        rs = self.run_set
        dec = rs.decoding()
        n = dec.astype(np.int64)
        left = budget - int(dec.sum())
        if left < 0:  # more decoders than the budget: serve them in admission order
            n[np.flatnonzero(dec)[budget:]] = 0
            left = 0
        for i in np.flatnonzero(~dec):
            take = min(int(rs.ctx0[i] + rs.produced[i] - rs.computed[i]), left)
            n[i] = take
            left -= take
        need = np.where(n > 0, np.maximum(-(-(rs.computed + n) // self.cfg.block_size) - rs.blocks, 0), 0)
        return n, need

    def _schedule_step(self) -> tuple[np.ndarray, np.ndarray]:
        """One vLLM-style scheduling pass: running rows and their new tokens for the next step.

        Running sequences are served first; when their new blocks do not fit, the lowest-priority, newest
        sequences are preempted (recompute) until they do. Only a pass without preemption admits waiting
        sequences, in (priority, arrival) order, while concurrency, token budget and KV allow.
        """
        budget = self.cfg.max_num_batched_tokens
        rs = self.run_set
        preempted = False
        if len(rs):
            n, need = self._plan_running(budget)
            avail = self.kv.available()
            while int(need.sum()) > avail:
                order = rs.order_desc()
                # victims in priority order until the survivors' needs fit
                freed = np.cumsum(rs.blocks[order])
                still = int(need.sum()) - np.cumsum(need[order])
                k = int(np.argmax(still <= avail + freed)) + 1
                if len(rs) == 1 or k >= len(rs):
                    self._check_fits(int(rs.target[order[-1]] + 1), int(rs.rid[order[-1]]))
                mask = np.zeros(len(rs), dtype=bool)
                mask[order[:k]] = True
                self._preempt_rows(mask)
                preempted = True
                if not len(rs):
                    break
                n, need = self._plan_running(budget)
                avail = self.kv.available()
            if len(rs):
                ok = self.kv.allocate(int(need.sum()))
                assert ok
                rs.blocks = rs.blocks + need
                budget -= int(n.sum())
        idx = np.flatnonzero(n > 0) if len(rs) else np.zeros(0, dtype=np.int64)
        ns = n[idx] if len(rs) else np.zeros(0, dtype=np.int64)
        if preempted:
            return idx, ns
        admitted, admit_n = [], []
        while self.waiting and len(rs) + len(admitted) < self.cfg.max_num_seqs and budget > 0:
            seq = self.waiting[0]
            hit, q, extra, cb = self._admission_need(seq, budget)
            if extra > self.kv.available() - cb:
                break
            self.waiting.pop(0)
            if cb:
                _tok, blocks = self.kv.take_prefix(seq.rid)
                seq.blocks = blocks
                self.stats.prefix_hit_tokens += hit
            else:
                seq.blocks = 0
                if hit:
                    self.stats.pool_fetched_tokens += hit
            seq.computed = hit
            seq.pool_tokens = 0
            ok = self.kv.allocate(extra)
            assert ok
            seq.blocks += extra
            admitted.append(seq)
            admit_n.append(q)
            budget -= q
        if admitted:
            start = len(rs)
            rs.append(admitted)
            idx = np.concatenate([idx, np.arange(start, start + len(admitted))])
            ns = np.concatenate([ns, np.array(admit_n, dtype=np.int64)])
        return idx, ns
