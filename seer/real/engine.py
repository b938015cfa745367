"""One vLLM `LLMEngine` behind the `Engine` protocol, stepped by the real driver.

Chunks are vLLM requests: prompt = the request's prompt + the tokens it generated so far (token ids, no
tokenizer), `max_tokens` = the chunk budget, DELTA outputs, engine priority = the chunk's priority. Moving a
request to another instance is a resubmission of its tokens (prefix caching helps only where its blocks
still are). Per-step batch, KV and speculation statistics come from a stat logger; each step's duration is
measured and advances this instance's clock (see `seer.real.driver` for the two clock modes).
"""

from __future__ import annotations

import os
import time
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
    worst_case_kv,
)

# In-process engines on a small CPU: one OpenMP thread each (two threads on two cores are ~45x slower), the
# engine core in this process (so the group drafter is shared with the driver), and caches kept local.
ENVIRONMENT = (
    ("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
    ("OMP_NUM_THREADS", "1"),
    ("VLLM_CPU_KVCACHE_SPACE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    ("VLLM_LOGGING_LEVEL", "WARNING"),
    ("VLLM_LOGGING_STREAM", "ext://sys.stderr"),
)


def configure_environment() -> None:
    """Defaults for in-process engines (a variable the user set is kept); call before vLLM is imported."""
    for key, value in ENVIRONMENT:
        os.environ.setdefault(key, value)


@dataclass(frozen=True)
class EngineSettings:
    """Engine and sampling settings shared by every instance of a run."""

    model: str  # a local HF folder
    dummy: bool = False  # config-only model: random weights (length replay)
    max_num_seqs: int = 64
    max_model_len: int = 2048
    block_size: int = 32  # the CPU backend wants multiples of 32
    max_num_batched_tokens: int = 2048
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0  # engine-level: per-request seeds crash the CPU engine under chunked prefill
    stop_token_ids: tuple[int, ...] = ()
    speculative: Mapping | None = None  # vLLM speculative_config
    kv_blocks: int | None = None  # KV blocks per instance (vLLM's num_gpu_blocks_override); None: from memory

    def engine_args(self) -> dict:
        kw = dict(
            model=self.model,
            skip_tokenizer_init=True,
            dtype="bfloat16",
            max_model_len=self.max_model_len,
            enforce_eager=True,
            seed=self.seed,
            max_num_seqs=self.max_num_seqs,
            block_size=self.block_size,
            max_num_batched_tokens=max(self.max_num_batched_tokens, self.max_model_len),
            enable_prefix_caching=True,
            scheduling_policy="priority",
            disable_log_stats=False,
        )
        if self.dummy:
            kw["load_format"] = "dummy"
        if self.kv_blocks is not None:
            kw["num_gpu_blocks_override"] = int(self.kv_blocks)
        if self.speculative:
            kw["speculative_config"] = dict(self.speculative)
        return kw


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


def _logger_factory(sink: dict):
    from vllm.v1.metrics.loggers import StatLoggerBase

    class Capture(StatLoggerBase):
        def __init__(self, vllm_config, engine_index=0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0, **kw):
            sink["scheduler"] = scheduler_stats
            sink["iteration"] = iteration_stats

        def log_engine_initialized(self):
            pass

    return Capture


@dataclass
class _Live:
    request: Request
    chunk_id: str
    budget: int
    reserved: int  # worst-case KV tokens promised to this chunk
    engine_id: str = ""  # the id vLLM's engine core knows the request by
    tokens: list = field(default_factory=list)
    preemptions: int = 0


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
    ):
        from vllm import EngineArgs, LLMEngine

        self.instance_id, self.settings, self.emit = instance_id, settings, emit
        self.prompt_of, self.replay_len, self.on_tokens = prompt_of, replay_len, on_tokens
        self._stats: dict = {}
        self.engine = LLMEngine.from_engine_args(
            EngineArgs(**settings.engine_args()), stat_loggers=[_logger_factory(self._stats)]
        )
        cache = self.engine.vllm_config.cache_config
        self.block_size = cache.block_size
        self.capacity = int(cache.num_gpu_blocks) * self.block_size
        self.clock = 0.0
        self.alive = True
        self.live: dict[str, _Live] = {}
        self.by_rid: dict[int, str] = {}
        self.reserved = 0
        self.steps: list[StepRecord] = []
        self.events: list[tuple[float, str, int]] = []  # (t, kind, request_id), as the simulator records them
        self.proposer = None  # set by the driver when a group drafter is plugged in
        self._n = 0
        self._idle_reported = False

    # ---- Engine protocol ---------------------------------------------------------------------

    def submit(self, chunk: Chunk, request: Request) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        s = self.settings
        budget = chunk.max_new_tokens
        replay = self.replay_len is not None
        if replay:
            budget = min(budget, self.replay_len[request.request_id] - request.generated)
        prompt = list(self.prompt_of(request)) + list(request.output_ids or [])
        params = SamplingParams(
            max_tokens=budget,
            temperature=s.temperature,
            top_p=s.top_p,
            ignore_eos=replay or not s.stop_token_ids,
            stop_token_ids=None if replay else list(s.stop_token_ids) or None,
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,
        )
        self._n += 1
        cid = f"{request.request_id}.{self._n}"
        engine_id = self.engine.add_request(cid, TokensPrompt(prompt_token_ids=prompt), params, priority=chunk.priority)
        reserved = worst_case_kv(len(prompt), chunk.max_new_tokens, self.block_size)
        self.live[cid] = _Live(request, cid, budget, reserved, str(engine_id or cid))
        self.by_rid[request.request_id] = cid
        self.reserved += reserved
        self._idle_reported = False

    def abort(self, request_id: int) -> None:
        cid = self.by_rid.get(request_id)
        if cid is None:
            return
        self.engine.abort_request([cid])
        self._close(cid, FinishReason.ABORT, finished=False)

    def set_speculation(self, budgets: Mapping[int, int], default: int = 0) -> None:
        # vLLM drafts for a batch row without knowing its request, so one budget per instance: the default
        if self.proposer is not None:
            self.proposer.budget = int(default)

    def view(self) -> InstanceView:
        sched = self._stats.get("scheduler")
        running = sched.num_running_reqs if sched is not None else 0
        waiting = sched.num_waiting_reqs if sched is not None else len(self.live)
        used = int(round((sched.kv_cache_usage if sched is not None else 0.0) * self.capacity))
        spec = {}
        if self.proposer is not None:
            spec = {"spec_tried": tuple(self.proposer.tried), "spec_accepted": tuple(self.proposer.accepted_pos)}
        return InstanceView(
            self.instance_id,
            self.capacity,
            used,
            self.reserved,
            running,
            max(0, len(self.live) - running) if sched is not None else waiting,
            self.alive,
            self.settings.max_num_seqs,
            self.block_size,
            {},
            **spec,
        )

    # ---- stepping ----------------------------------------------------------------------------

    def has_work(self) -> bool:
        return bool(self.live)

    def report_idle(self) -> None:
        """Emit `InstanceIdle` once per idle period (the driver calls this when the instance has no work)."""
        if not self._idle_reported and not self.live:
            self._idle_reported = True
            self.emit(InstanceIdle(self.clock, self.instance_id))

    def _context_tokens(self) -> int:
        return sum(len(self.prompt_of(lv.request)) + lv.request.generated + len(lv.tokens) for lv in self.live.values())

    def step(self) -> float:
        """Run one engine step; returns its measured duration (the clock advances by it first)."""
        ctx = self._context_tokens()
        t0 = time.perf_counter()
        outputs = self.engine.step()
        dur = time.perf_counter() - t0
        start = self.clock
        self.clock += dur
        sched, it = self._stats.get("scheduler"), self._stats.get("iteration")
        sd = getattr(sched, "spec_decoding_stats", None) if sched is not None else None
        self.steps.append(
            StepRecord(
                self.instance_id,
                start,
                dur,
                getattr(sched, "num_running_reqs", 0),
                getattr(sched, "num_waiting_reqs", 0),
                float(getattr(sched, "kv_cache_usage", 0.0)),
                int(getattr(it, "num_prompt_tokens", 0) or 0),
                int(getattr(it, "num_generation_tokens", 0) or 0),
                ctx,
                int(getattr(it, "num_preempted_reqs", 0) or 0),
                int(getattr(sd, "num_drafts", 0) or 0),
                int(getattr(sd, "num_draft_tokens", 0) or 0),
                int(getattr(sd, "num_accepted_tokens", 0) or 0),
            )
        )
        self._report_preemptions(outputs)
        for out in outputs:
            lv = self.live.get(out.request_id)
            if lv is None:
                continue
            new = list(out.outputs[0].token_ids)
            if new:
                lv.tokens.extend(new)
                if self.on_tokens is not None:
                    self.on_tokens(lv.request.request_id, new)
            if out.finished:
                self._finished(lv, out.outputs[0].finish_reason)
        if not self.live:
            self.report_idle()
        return dur

    def _scheduler(self):
        """vLLM's scheduler when the engine core runs in this process (None otherwise)."""
        core = getattr(getattr(self.engine, "engine_core", None), "engine_core", None)
        return getattr(core, "scheduler", None)

    def _report_preemptions(self, outputs) -> None:
        """Emit `RequestPreempted` for every preemption of a live chunk since the last step: read from the
        scheduler in this process (at the step it happened), else from request metrics (when the request next
        produces output)."""
        sched = self._scheduler()
        counts = {}
        if sched is not None:
            for cid, lv in self.live.items():
                r = sched.requests.get(lv.engine_id)
                if r is not None:
                    counts[cid] = int(r.num_preemptions)
        else:
            for out in outputs:
                n = getattr(getattr(out, "metrics", None), "num_preemptions", None)
                if out.request_id in self.live and n is not None:
                    counts[out.request_id] = int(n)
        for cid, n in counts.items():
            lv = self.live[cid]
            for _ in range(n - lv.preemptions):
                rid = lv.request.request_id
                self.events.append((self.clock, "preempt", rid))
                self.emit(RequestPreempted(self.clock, rid, self.instance_id))
            lv.preemptions = max(lv.preemptions, n)

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
        self.reserved -= lv.reserved
        self.emit(
            ChunkFinished(
                self.clock, lv.request.request_id, self.instance_id, len(lv.tokens), finished, reason, tuple(lv.tokens)
            )
        )

    def fail(self) -> list[int]:
        """Take the instance out (fault injection): abort everything, report each chunk as aborted."""
        self.alive = False
        rids = [lv.request.request_id for lv in self.live.values()]
        if self.live:
            self.engine.abort_request(list(self.live))
        for cid in list(self.live):
            self._close(cid, FinishReason.ABORT, finished=False)
        return rids

    def shutdown(self) -> None:
        try:
            self.engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
