"""One vLLM engine behind the `Engine` protocol, as the real driver sees it.

Chunks are vLLM requests: prompt = the request's prompt + the tokens it generated so far (token ids, no
tokenizer), `max_tokens` = the chunk budget, DELTA outputs, engine priority = the chunk's priority. Moving a
request to another instance is a resubmission of its tokens (prefix caching helps only where its blocks still
are). The engine itself runs in an `EngineHost` (`seer.real.host`): in this process, or in its own as a Ray actor
(`seer.real.launch`); this adapter keeps the bookkeeping on the driver's side either way: every live chunk, the
tokens each has produced (they stream back with every step, so a killed engine loses no sample), the worst-case
KV promised, the per-step records and the instance's clock (see `seer.real.driver` for the clock modes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from seer.core import (
    Chunk,
    ChunkFinished,
    FinishReason,
    InstanceIdle,
    InstanceView,
    Request,
    RequestPreempted,
    Reservation,
    shared_prompt_kv,
    worst_case_kv,
)
from seer.real.host import EngineHost, HostStep
from seer.real.settings import EngineSettings, configure_environment

__all__ = ["EngineSettings", "LocalHost", "StepRecord", "VLLMInstance", "configure_environment"]


@dataclass
class StepRecord:
    instance: int
    t: float  # instance clock at the start of the step
    duration_s: float
    running: int
    waiting: int
    kv_usage: float
    prompt_tokens: int
    generation_tokens: int
    context_tokens: int  # KV tokens of the sequences in the step, before it
    preempted: int = 0  # sequences vLLM preempted in this step
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    # the step's shape as the simulator prices it (see `HostStep.shape`)
    sched_tokens: int = 0
    sched_kv_tokens: int = 0
    attn_pairs: float = 0.0
    score_pairs: float = 0.0
    logits: int = 0


@dataclass
class _Live:
    request: Request
    chunk_id: str
    budget: int
    reserved: int  # worst-case KV tokens promised to this chunk
    shared: int  # of them, its group's full prompt blocks (held once per engine by vLLM's prefix cache)
    prompt_len: int  # the request's prompt tokens
    tokens: list = field(default_factory=list)
    preemptions: int = 0


class LocalHost:
    """An `EngineHost` in this process, with the same calls as an actor's handle (`seer.real.launch.ActorHost`)."""

    def __init__(self, settings: EngineSettings):
        self.host = EngineHost(settings)

    def call(self, name: str, *args):
        return getattr(self.host, name)(*args)

    send = call  # fire and forget: here the call simply returns

    def start_step(self) -> HostStep:
        return self.host.step()

    def result(self, pending) -> HostStep:
        return pending

    def kill(self) -> None:
        self.host.shutdown()

    @property
    def engine(self):
        return self.host.engine


class VLLMInstance:
    """An inference instance on a real vLLM engine."""

    def __init__(
        self,
        instance_id: int,
        settings: EngineSettings,
        emit: Callable,
        prompt_of: Callable[[Request], list],
        replay_len: Mapping[int, int] | None = None,
        on_tokens: Callable | None = None,
        host=None,
    ):
        self.instance_id, self.settings, self.emit = instance_id, settings, emit
        self.prompt_of, self.replay_len, self.on_tokens = prompt_of, replay_len, on_tokens
        self.host = host if host is not None else LocalHost(settings)
        info = self.host.call("describe")
        self.capacity, self.block_size = int(info["capacity"]), int(info["block_size"])
        self.pid, self.startup_s = info["pid"], info["startup_s"]
        self.node = info.get("ray_node") or info["node"]  # a Ray node id, or the host name in this process
        self.clock = 0.0
        self.alive = True
        self._killed = False
        self.live: dict[str, _Live] = {}
        self.by_rid: dict[int, str] = {}
        self.reservation = Reservation()
        self.steps: list[StepRecord] = []
        self.events: list[tuple[float, str, int]] = []  # (t, kind, request_id), as the simulator records them
        self.proposer = None  # set by the driver when a group drafter is plugged in (in-process hosts only)
        self._last = HostStep(0.0, 0, 0, 0.0, 0, 0, 0)
        self._n = 0
        self._idle_reported = False
        self._pending = None  # a step in flight (wall clock, actors)
        self._pending_start = 0.0
        self._pending_ctx = 0

    # ---- Engine protocol ---------------------------------------------------------------------

    def submit(self, chunk: Chunk, request: Request) -> None:
        budget = chunk.max_new_tokens
        replay = self.replay_len is not None
        if replay:
            budget = min(budget, self.replay_len[request.request_id] - request.generated)
        prompt_len = len(self.prompt_of(request))
        prompt = list(self.prompt_of(request)) + list(request.output_ids or [])
        self._n += 1
        cid = f"{request.request_id}.{self._n}"
        self.host.send("submit", cid, prompt, budget, chunk.priority, replay)
        reserved = worst_case_kv(len(prompt), chunk.max_new_tokens, self.block_size)
        # the engines run with prefix caching, so a group's chunks here share its prompt's full blocks
        shared = shared_prompt_kv(prompt_len, self.block_size) if request.group_id >= 0 else 0
        self.live[cid] = _Live(request, cid, budget, reserved, shared, prompt_len)
        self.by_rid[request.request_id] = cid
        self.reservation.change(reserved, request.group_id, shared, 1)
        self._idle_reported = False

    def abort(self, request_id: int) -> None:
        """The chunk ends now with the tokens the driver holds; any the engine makes before it sees the abort are
        dropped."""
        cid = self.by_rid.get(request_id)
        if cid is None:
            return
        self.host.send("abort", cid)
        self._close(cid, FinishReason.ABORT, finished=False)

    def set_speculation(self, budgets: Mapping[int, int], default: int = 0) -> None:
        # vLLM drafts for a batch row without knowing its request, so one budget per instance: the default
        if self.proposer is not None:
            self.proposer.budget = int(default)

    def view(self) -> InstanceView:
        last = self._last
        spec = {}
        if self.proposer is not None:
            spec = {"spec_tried": tuple(self.proposer.tried), "spec_accepted": tuple(self.proposer.accepted_pos)}
        running = min(last.running, len(self.live))
        return InstanceView(
            self.instance_id,
            self.capacity,
            int(round(last.kv_usage * self.capacity)),
            self.reservation.tokens,
            running,
            max(0, len(self.live) - running),
            self.alive,
            self.settings.max_num_seqs,
            self.block_size,
            {},
            **spec,
        )

    # ---- stepping ----------------------------------------------------------------------------

    def has_work(self) -> bool:
        return bool(self.live)

    @property
    def stepping(self) -> bool:
        return self._pending is not None

    def report_idle(self) -> None:
        """Emit `InstanceIdle` once per idle period (the driver calls this when the instance has no work)."""
        if not self._idle_reported and not self.live and self.alive:
            self._idle_reported = True
            self.emit(InstanceIdle(self.clock, self.instance_id))

    def _context_tokens(self) -> int:
        return sum(lv.prompt_len + lv.request.generated + len(lv.tokens) for lv in self.live.values())

    def step(self) -> float:
        """Run one engine step and apply it (virtual clock: the clock advances by its measured duration)."""
        ctx = self._context_tokens()
        result = self.host.result(self.host.start_step())
        self.apply_step(result, self.clock, self.clock + result.duration_s, ctx)
        return result.duration_s

    def start_step(self, now: float) -> None:
        """Launch a step without waiting for it (wall clock: several instances step at once)."""
        self._pending_ctx, self._pending_start = self._context_tokens(), now
        self._pending = self.host.start_step()

    def finish_step(self, result: HostStep, now: float) -> None:
        """Apply the step launched by `start_step`, which ended at wall time `now`."""
        self._pending = None
        self.apply_step(result, self._pending_start, now, self._pending_ctx)

    def apply_step(self, res: HostStep, start: float, end: float, ctx: int) -> None:
        self.clock = end
        self._last = res
        self.steps.append(
            StepRecord(
                self.instance_id,
                start,
                res.duration_s,
                res.running,
                res.waiting,
                res.kv_usage,
                res.prompt_tokens,
                res.generation_tokens,
                ctx,
                res.preempted,
                res.spec_drafts,
                res.spec_draft_tokens,
                res.spec_accepted_tokens,
                *res.shape,
            )
        )
        for cid, n in res.preemptions.items():
            lv = self.live.get(cid)
            if lv is None:
                continue
            for _ in range(n - lv.preemptions):
                self.events.append((self.clock, "preempt", lv.request.request_id))
                self.emit(RequestPreempted(self.clock, lv.request.request_id, self.instance_id))
            lv.preemptions = max(lv.preemptions, n)
        for cid, new, finished, vllm_reason in res.outputs:
            lv = self.live.get(cid)
            if lv is None:
                continue  # aborted meanwhile: its late tokens are dropped
            if new:
                lv.tokens.extend(new)
                if self.on_tokens is not None:
                    self.on_tokens(lv.request.request_id, new)
            if finished:
                self._finished(lv, vllm_reason)
        if not self.live:
            self.report_idle()

    def _finished(self, lv: _Live, vllm_reason) -> None:
        req = lv.request
        total = req.generated + len(lv.tokens)
        if self.replay_len is not None and total >= self.replay_len[req.request_id]:
            reason = FinishReason.LENGTH if total >= req.max_tokens else FinishReason.EOS
        elif vllm_reason == "stop":
            reason = FinishReason.EOS
        elif total >= req.max_tokens:
            reason = FinishReason.LENGTH
        else:
            reason = FinishReason.CHUNK
        self._close(lv.chunk_id, reason, finished=reason is not FinishReason.CHUNK)

    def _close(self, cid: str, reason: FinishReason, finished: bool) -> None:
        lv = self.live.pop(cid)
        self.by_rid.pop(lv.request.request_id, None)
        self.reservation.change(lv.reserved, lv.request.group_id, lv.shared, -1)
        self.emit(
            ChunkFinished(
                self.clock, lv.request.request_id, self.instance_id, len(lv.tokens), finished, reason, tuple(lv.tokens)
            )
        )

    def fail(self) -> list[int]:
        """Fault injection: the instance's requests are aborted and it takes no more work."""
        for cid in list(self.live):
            self.host.send("abort", cid)
        return self.lost()

    def kill(self) -> None:
        """A real failure: SIGKILL the engine's process. The driver notices when the engine next answers."""
        self._killed = True
        self.host.kill()

    def lost(self) -> list[int]:
        """The instance is out: every live chunk is reported aborted with the tokens the driver holds (a step in
        flight is lost with the engine), so the policy can continue the requests elsewhere."""
        self.alive = False
        self._pending = None
        rids = [lv.request.request_id for lv in self.live.values()]
        for cid in list(self.live):
            self._close(cid, FinishReason.ABORT, finished=False)
        return rids

    def shutdown(self) -> None:
        # a failed instance's engine is shut down too: left to the garbage collector, vLLM's finalizer would tear
        # down the process-wide distributed state under another in-process engine still running
        if not self._killed:
            try:
                self.host.call("shutdown")
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
