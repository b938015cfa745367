"""The real backend's driver: the contract loop (`seer.loop`) over vLLM instances, with virtual-parallel or
wall clocks.

Clock modes:
- "virtual" (default): instances share this CPU, so each keeps its own clock, advanced by its measured step
  durations, and the driver always steps the instance that is furthest behind. N instances then behave as N
  devices running in parallel; a dispatch to an idle instance brings its clock up to the dispatch time. An
  instance with work may lag the dispatch time by at most one of its steps.
- "wall": one shared wall clock (one instance per accelerator; here they still take turns on the CPU).
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pandas as pd

from seer.core import Chunk, Policy, Rollout, describe_policy
from seer.errors import SeerInputError
from seer.loop import ContractLoop
from seer.metrics import RolloutResult, events_frame, mean_running, summarize
from seer.real.engine import EngineSettings, VLLMInstance, configure_environment

CLOCKS = ("virtual", "wall")


class RealDriver(ContractLoop):
    """Runs one rollout on `instances` real vLLM engines under a policy.

    `prompts`: group id -> prompt token ids. `replay_len`: request id -> recorded output length (length
    replay with `ignore_eos`), or None for real generation up to EOS / max_tokens. `fail`: (instance, seconds)
    to take an instance out mid-rollout (fault injection). `drafter`: a `GroupDrafter` fed with every token,
    when the engines draft with the project's group drafter (`settings.speculative` names its proposer).
    """

    def __init__(
        self,
        rollout: Rollout,
        prompts: dict[int, list[int]],
        settings: EngineSettings,
        policy: Policy,
        instances: int = 2,
        clock: str = "virtual",
        replay_len: dict[int, int] | None = None,
        progress: bool | None = None,
        fail: tuple[int, float] | None = None,
        drafter=None,
        proposers=None,
    ):
        if clock not in CLOCKS:
            raise SeerInputError(f"clock must be one of {', '.join(CLOCKS)}")
        super().__init__(rollout, policy)
        configure_environment()
        self.prompts, self.settings = prompts, settings
        self.clock_mode, self.replay_len, self.fail_at = clock, replay_len, fail
        self.progress_enabled = progress
        for req in rollout.requests.values():
            req.output_ids = []
            need = len(prompts[req.group_id]) + (replay_len[req.request_id] if replay_len else req.max_tokens)
            if need > settings.max_model_len:
                pid, sid = req.key
                raise SeerInputError(
                    f"prompt {pid!r} sample {sid}: prompt ({len(prompts[req.group_id])} tokens) plus "
                    f"output must fit the model context ({settings.max_model_len}); needs {need}"
                )
        self.provide(replay_len, self._step_profile)
        self.drafting = drafter
        if drafter is not None:
            for req in rollout.requests.values():
                drafter.add_request(req.request_id, req.group_id, prompts[req.group_id])
        self.engines = [
            VLLMInstance(i, settings, self.emit, self._prompt_of, replay_len, self._on_tokens) for i in range(instances)
        ]
        if proposers is not None:
            for inst, prop in zip(self.engines, proposers.created[-instances:]):
                inst.proposer = prop
        self.tick_s = self.traits.tick_s
        self._now = 0.0
        self._t0 = time.perf_counter()

    @property
    def now(self) -> float:
        return self._now

    @property
    def instances(self) -> list[VLLMInstance]:
        return self.engines

    @property
    def completions(self) -> np.ndarray:
        return self.ledger.completions

    # ---- helpers -------------------------------------------------------------------------------

    def _prompt_of(self, req) -> list[int]:
        return self.prompts[req.group_id]

    def _on_tokens(self, rid: int, tokens: list[int]) -> None:
        if self.drafting is not None:
            self.drafting.append(rid, tokens)

    def _step_profile(self, batch: int, q: int, ctx: float) -> float:
        """Mean measured step time at about this batch size (the real engine's 'offline profile')."""
        steps = [s for inst in self.engines for s in inst.steps[-200:] if s.running]
        if not steps:
            return 0.01 * (1 + 0.05 * batch * q)
        per_token = np.median([s.duration_s / max(1, s.generation_tokens + s.prompt_tokens) for s in steps])
        base = np.median([s.duration_s for s in steps])
        return float(base + per_token * batch * max(0, q - 1))

    def emit(self, event) -> None:
        self._now = max(self._now, event.t)
        super().emit(event)

    def before_submit(self, engine: VLLMInstance, chunk: Chunk) -> None:
        if not engine.has_work():
            engine.clock = max(engine.clock, self._now)

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> RolloutResult:
        wall = time.perf_counter()
        next_tick = self.tick_s or math.inf
        with self.progress(f"rollout {self.policy.name}", self.progress_enabled):
            self.start()
            while not self.done:
                self._report_idle()
                busy = [i for i in self.engines if i.alive and i.has_work()]
                if not busy:
                    if next_tick < math.inf:  # let a timer-driven policy act
                        self._now = max(self._now, next_tick)
                        next_tick += self.tick_s
                        self.tick()
                        if any(i.has_work() for i in self.engines):
                            continue
                    self.check_done()
                inst = min(busy, key=lambda i: (i.clock, i.instance_id))
                if self.clock_mode == "wall":
                    inst.clock = time.perf_counter() - self._t0
                if self.fail_at is not None and inst.clock >= self.fail_at[1]:
                    victim = self.engines[self.fail_at[0]]
                    self.fail_at = None
                    self._now = max(self._now, inst.clock)
                    victim.fail()
                    continue
                while next_tick <= inst.clock:
                    self._now = max(self._now, next_tick)
                    next_tick += self.tick_s
                    self.tick()
                self._now = max(self._now, inst.clock)
                inst.step()
        return self._result(time.perf_counter() - wall)

    def _report_idle(self) -> None:
        for inst in self.engines:
            if inst.alive and not inst.has_work():
                inst.report_idle()

    def shutdown(self) -> None:
        for inst in self.engines:
            inst.shutdown()

    # ---- results -------------------------------------------------------------------------------

    def steps_frame(self) -> pd.DataFrame:
        return pd.DataFrame([vars(s) for inst in self.engines for s in inst.steps])

    def _timeline(self, steps: pd.DataFrame, cap: int) -> pd.DataFrame:
        if not len(steps):
            return pd.DataFrame(columns=["instance", "t", "kv_used_tokens", "running", "waiting", "kv_usage"])
        timeline = steps[["instance", "t"]].copy()
        timeline["kv_used_tokens"] = (steps["kv_usage"] * cap).round().astype(int)
        for col in ("running", "waiting", "kv_usage"):
            timeline[col] = steps[col]
        return timeline

    @staticmethod
    def _speculation_summary(steps: pd.DataFrame) -> dict:
        if not len(steps) or not steps["spec_drafts"].sum():
            return {}
        drafts, accepted = int(steps["spec_drafts"].sum()), int(steps["spec_accepted_tokens"].sum())
        return {
            "speculation": "vllm",
            "spec_drafts": drafts,
            "spec_draft_tokens": int(steps["spec_draft_tokens"].sum()),
            "spec_accepted_tokens": accepted,
            "spec_tau": 1 + accepted / drafts,
        }

    def _result(self, wall_s: float) -> RolloutResult:
        df = self.ledger.frame()
        steps = self.steps_frame()
        cap = self.engines[0].capacity
        busy = [
            float(steps.loc[steps.instance == i.instance_id, "duration_s"].sum()) if len(steps) else 0.0
            for i in self.engines
        ]
        extra = {
            "policy": self.policy.name,
            "backend": "vllm",
            "clock": self.clock_mode,
            "mode": self.clock_mode,
            "wall_s": wall_s,
            "steps": int(len(steps)),
            "migrations": int(df["migrations"].sum()),
            "kv_capacity_tokens": cap,
            "model": self.settings.model,
            "failed_instances": [i.instance_id for i in self.engines if not i.alive],
            **self._speculation_summary(steps),
        }
        events = events_frame((t, i.instance_id, kind, rid) for i in self.engines for t, kind, rid in i.events)
        summary = summarize(
            df,
            busy,
            math.nan,
            self.ledger.total_preemptions,
            extra,
            preempt_times=events.loc[events.kind == "preempt", "t"],
        )
        timeline = self._timeline(steps, cap)
        summary["mean_running"] = mean_running(timeline, summary["makespan_s"])
        config = {"engine": dict(vars(self.settings)), "policy": describe_policy(self.policy)}
        return RolloutResult(df, timeline, summary, config, events)

    def recorded_trace(self, with_prompt_ids: bool = True) -> pd.DataFrame:
        """The run as a trace in the project's schema (replayable in the simulator)."""
        reqs = self.rollout.requests
        order = sorted(reqs)
        prompt = [self.prompts[reqs[i].group_id] for i in order]
        df = pd.DataFrame(
            {
                "prompt_id": [reqs[i].key[0] for i in order],
                "sample_id": [reqs[i].key[1] for i in order],
                "prompt_len": [len(p) for p in prompt],
                "output_len": [reqs[i].generated for i in order],
                "max_tokens": [reqs[i].max_tokens for i in order],
                "output_ids": [list(reqs[i].output_ids) for i in order],
                "prompt_hash": [hashlib.sha256(str(p).encode()).hexdigest()[:16] for p in prompt],
                "first_dispatch_s": self.ledger.first_dispatch_s[order],
                "finish_s": self.ledger.finish_s[order],
                "finish_reason": [self.ledger.reason[i] for i in order],
            }
        )
        if with_prompt_ids:
            df["prompt_ids"] = [list(p) for p in prompt]
        return df
