"""The engine host: one vLLM `LLMEngine` and nothing of seer's bookkeeping, so it can live in the driver's process
or in its own (a Ray actor, `seer.real.launch`). Everything crossing its boundary is plain data.

`step()` runs one engine step and returns a `HostStep`: its measured duration, the scheduler's counters, the new
token ids of every request that produced some (so the driver always holds every generated token), which
requests finished and why, and each live request's preemption count read from the scheduler at that step.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from seer.errors import SeerInputError
from seer.real.settings import EngineSettings, configure_environment


class EngineLost(RuntimeError):
    """The engine's process is gone (killed, or crashed): its in-flight step and its requests with it."""


@dataclass
class HostStep:
    """One engine step, as plain data."""

    duration_s: float
    running: int
    waiting: int
    kv_usage: float
    prompt_tokens: int
    generation_tokens: int
    preempted: int
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    # the step's shape, in the simulator's own terms (`StepTimeModel.step_time_sums`), read from the scheduler's
    # output: tokens computed, KV tokens read, attention pairs, pairs of multi-token rows, rows that sample
    shape: tuple = (0, 0, 0.0, 0.0, 0)
    outputs: list = field(default_factory=list)  # (chunk id, new token ids, finished, vLLM finish reason)
    preemptions: dict = field(default_factory=dict)  # chunk id -> preemptions so far


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


@contextlib.contextmanager
def kernel_scan_safe():
    """Hide from `sys.modules`, while an engine is built, the modules vLLM's kernel scan would crash on.

    At every engine build vLLM's CPU backend rebinds its Triton kernels by scanning the namespace of every loaded
    module and reading `vars()` of each value (vllm/triton_utils/dispatcher.py). llvmlite, which numba loads (the
    compiled group drafter, and vLLM's own ngram proposer), keeps a module-level object whose `__getattr__`
    answers `__dict__` with a function wrapper, and the scan fails on it. The modules stay imported and usable;
    only the scan does not see them.
    """
    hidden = {}
    with warnings.catch_warnings():  # reading some attributes warns of deprecations
        warnings.simplefilter("ignore")
        _find_unscannable(hidden)
    try:
        yield
    finally:
        for name, module in hidden.items():
            sys.modules.setdefault(name, module)


def _find_unscannable(hidden: dict) -> None:
    for name, module in list(sys.modules.items()):
        for value in list(getattr(module, "__dict__", {}).values()):
            try:
                bad = hasattr(value, "__dict__") and not isinstance(vars(value), Mapping)
            except Exception:  # noqa: BLE001 - anything vars() raises on would break the scan too
                bad = True
            if bad:
                hidden[name] = sys.modules.pop(name)
                break


def step_shape(sched, out) -> tuple:
    """(tokens, KV tokens, attention pairs, pairs of multi-token rows, sampling rows) of one scheduler output:
    each row computes n tokens on top of k cached ones; it samples when it reaches the end of its sequence."""
    cached = {r.req_id: r.num_computed_tokens for r in out.scheduled_new_reqs}
    c = out.scheduled_cached_reqs
    cached.update(zip(c.req_ids, c.num_computed_tokens))
    tokens = kv = logits = 0
    attn = score = 0.0
    for rid, n in out.num_scheduled_tokens.items():
        k = cached.get(rid, 0)
        tokens += n
        kv += k + n
        attn += n * (k + (n + 1) / 2)
        if n > 1:
            score += n * (k + n)
        req = sched.requests.get(rid)
        if req is None or k + n >= req.num_tokens:
            logits += 1
    return tokens, kv, attn, score, logits


def _ray_node() -> str | None:
    """The Ray node this host runs on (None outside Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def _reason(exc: Exception) -> str:
    """The line of a (pydantic) validation error that says what is wrong, without its [type=...] annotations."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()] or [type(exc).__name__]
    said = next((x for x in lines if x.startswith("Value error,")), lines[0])
    return said.removeprefix("Value error,").split(" [type=")[0].strip()


class EngineHost:
    """One vLLM engine behind a plain-data interface (submit, abort, step)."""

    def __init__(self, settings: EngineSettings):
        configure_environment()
        from vllm import EngineArgs, LLMEngine

        t0 = time.perf_counter()
        self.settings = settings
        self._stats: dict = {}
        with kernel_scan_safe():
            try:
                args = EngineArgs(**settings.engine_args())
                self.engine = LLMEngine.from_engine_args(args, stat_loggers=[_logger_factory(self._stats)])
            except ValueError as exc:  # vLLM's checks of the settings (pydantic's ValidationError is a ValueError)
                raise SeerInputError(f"vLLM refused the engine settings: {_reason(exc)}") from None
        cache = self.engine.vllm_config.cache_config
        self.block_size = int(cache.block_size)
        # vLLM keeps one block aside as its null block: the rest hold KV (its usage metric counts those too)
        self.capacity = (int(cache.num_gpu_blocks) - 1) * self.block_size
        self.engine_ids: dict[str, str] = {}
        self._shape: tuple = HostStep.shape
        self._probe_schedule()
        self.startup_s = time.perf_counter() - t0

    def _probe_schedule(self) -> None:
        """Read every step's scheduled rows (tokens and cached context per request) as the scheduler hands them
        to the model, so that recorded steps have the shape the simulator prices."""
        sched = self._scheduler()
        if sched is None or not hasattr(sched, "schedule"):
            return
        schedule = sched.schedule

        def probed(*args, **kwargs):
            out = schedule(*args, **kwargs)
            self._shape = step_shape(sched, out)
            return out

        sched.schedule = probed

    def describe(self) -> dict:
        """What the driver needs to know once: KV capacity and block size, process id, start-up time."""
        return {
            "capacity": self.capacity,
            "block_size": self.block_size,
            "pid": os.getpid(),
            "startup_s": self.startup_s,
            "node": os.uname().nodename,
            "ray_node": _ray_node(),
        }

    def submit(self, cid: str, prompt: list[int], budget: int, priority: int, replay: bool) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        s = self.settings
        params = SamplingParams(
            max_tokens=budget,
            temperature=s.temperature,
            top_p=s.top_p,
            ignore_eos=replay or not s.stop_token_ids,
            stop_token_ids=None if replay else list(s.stop_token_ids) or None,
            output_kind=RequestOutputKind.DELTA,
            detokenize=False,
        )
        engine_id = self.engine.add_request(cid, TokensPrompt(prompt_token_ids=prompt), params, priority=priority)
        self.engine_ids[cid] = str(engine_id or cid)

    def abort(self, cid: str) -> None:
        if self.engine_ids.pop(cid, None) is not None:
            self.engine.abort_request([cid])

    def _scheduler(self):
        core = getattr(getattr(self.engine, "engine_core", None), "engine_core", None)
        return getattr(core, "scheduler", None)

    def step(self) -> HostStep:
        self._shape = HostStep.shape
        t0 = time.perf_counter()
        outputs = self.engine.step()
        dur = time.perf_counter() - t0
        sched, it = self._stats.get("scheduler"), self._stats.get("iteration")
        sd = getattr(sched, "spec_decoding_stats", None) if sched is not None else None
        result = HostStep(
            dur,
            int(getattr(sched, "num_running_reqs", 0)),
            int(getattr(sched, "num_waiting_reqs", 0)),
            float(getattr(sched, "kv_cache_usage", 0.0)),
            int(getattr(it, "num_prompt_tokens", 0) or 0),
            int(getattr(it, "num_generation_tokens", 0) or 0),
            int(getattr(it, "num_preempted_reqs", 0) or 0),
            int(getattr(sd, "num_drafts", 0) or 0),
            int(getattr(sd, "num_draft_tokens", 0) or 0),
            int(getattr(sd, "num_accepted_tokens", 0) or 0),
            self._shape,
        )
        scheduler = self._scheduler()
        if scheduler is not None:  # read at the step the preemption happened
            for cid, eid in self.engine_ids.items():
                r = scheduler.requests.get(eid)
                if r is not None:
                    result.preemptions[cid] = int(r.num_preemptions)
        for out in outputs:
            if out.request_id not in self.engine_ids:
                continue
            n = getattr(getattr(out, "metrics", None), "num_preemptions", None)
            if scheduler is None and n is not None:  # else from the request's metrics, when it next outputs
                result.preemptions[out.request_id] = int(n)
            result.outputs.append(
                (out.request_id, list(out.outputs[0].token_ids), bool(out.finished), out.outputs[0].finish_reason)
            )
            if out.finished:
                self.engine_ids.pop(out.request_id, None)
        return result

    def shutdown(self) -> None:
        try:
            self.engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
