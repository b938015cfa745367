"""The real backend's driver: the contract loop over vLLM instances, with virtual-parallel or wall clocks.

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
from tqdm import tqdm

from seer.core import (
    Abort, Chunk, ChunkFinished, ClusterView, Dispatch, FinishReason, Policy, RequestState, Rollout, RolloutStarted,
    SetSpeculation, Tick,
)
from seer.errors import SeerInputError
from seer.metrics import RolloutResult, summarize
from seer.real.engine import EngineSettings, VLLMInstance

CLOCKS = ("virtual", "wall")


class RealDriver:
    """Runs one rollout on `instances` real vLLM engines under a policy.

    `prompts`: group id -> prompt token ids. `replay_len`: request id -> recorded output length (length
    replay with `ignore_eos`), or None for real generation up to EOS / max_tokens.
    `fail`: (instance, seconds) to take an instance out mid-rollout (fault injection).
    """

    def __init__(self, rollout: Rollout, prompts: dict[int, list[int]], settings: EngineSettings, policy: Policy,
                 instances: int = 2, clock: str = "virtual", replay_len: dict[int, int] | None = None,
                 keys: list | None = None, progress: bool | None = None, fail: tuple[int, float] | None = None,
                 drafter=None):
        if clock not in CLOCKS:
            raise SeerInputError(f"clock must be one of {', '.join(CLOCKS)}")
        self.rollout, self.prompts, self.settings, self.policy = rollout, prompts, settings, policy
        self.clock_mode, self.replay_len, self.fail_at = clock, replay_len, fail
        self.keys = keys or [(r.group_id, r.sample_index) for r in rollout.requests.values()]
        self.progress = progress
        for req in rollout.requests.values():
            req.output_ids = []
            need = len(prompts[req.group_id]) + (replay_len[req.request_id] if replay_len else req.max_tokens)
            if need > settings.max_model_len:
                pid, sid = self.keys[req.request_id]
                raise SeerInputError(f"prompt {pid!r} sample {sid}: prompt ({len(prompts[req.group_id])} tokens) plus "
                                     f"output must fit the model context ({settings.max_model_len}); needs {need}")
        self.drafter = drafter
        if drafter is not None:
            from seer.real.drafter import GroupProposer
            GroupProposer.shared = drafter
            for req in rollout.requests.values():
                drafter.add_request(req.request_id, req.group_id, prompts[req.group_id])
        self.instances: list[VLLMInstance] = []
        for i in range(instances):
            inst = VLLMInstance(i, settings, self._on_event, self._prompt_of, replay_len, self._on_tokens)
            self.instances.append(inst)
        if drafter is not None:
            for inst, prop in zip(self.instances, GroupProposer.created[-instances:]):
                inst.proposer = prop
        if getattr(policy, "needs_step_profile", False):
            policy.set_step_profile(self._step_profile)
        self.tick_s = getattr(policy, "tick_s", None)
        self.now = 0.0
        self._t0 = time.perf_counter()
        n = len(rollout.requests)
        self._rec = {"first_dispatch_s": np.full(n, np.nan), "finish_s": np.full(n, np.nan), "instance": np.full(n, -1),
                     "chunks": np.zeros(n, np.int64), "migrations": np.zeros(n, np.int64)}
        self._reason = [""] * n
        self._last = [-1] * n
        self._done = 0
        self._bar = None
        self.completions = np.zeros(n, np.int64)  # times each request was reported finished (must end at 1)

    # ---- helpers -------------------------------------------------------------------------------

    def _prompt_of(self, req) -> list[int]:
        return self.prompts[req.group_id]

    def _on_tokens(self, rid: int, tokens: list[int]) -> None:
        if self.drafter is not None:
            self.drafter.append(rid, tokens)

    def _step_profile(self, batch: int, q: int, ctx: float) -> float:
        """Mean measured step time at about this batch size (the real engine's 'offline profile')."""
        steps = [s for inst in self.instances for s in inst.steps[-200:] if s.running]
        if not steps:
            return 0.01 * (1 + 0.05 * batch * q)
        per_token = np.median([s.duration_s / max(1, s.generation_tokens + s.prompt_tokens) for s in steps])
        base = np.median([s.duration_s for s in steps])
        return float(base + per_token * batch * max(0, q - 1))

    def view(self) -> ClusterView:
        return ClusterView(self.now, [inst.view() for inst in self.instances], self.rollout.groups, self.rollout.requests)

    def _act(self, actions) -> None:
        for action in actions or ():
            if isinstance(action, Dispatch):
                req = self.rollout.requests[action.request_id]
                if req.state is not RequestState.WAITING:
                    raise RuntimeError(f"{self.policy.name}: dispatched request {req.request_id} in state {req.state.value}")
                inst = self.instances[action.instance]
                if not inst.alive:
                    raise RuntimeError(f"{self.policy.name}: dispatched request {req.request_id} to failed instance {action.instance}")
                budget = min(action.max_new_tokens, req.remaining_budget)
                req.state, req.instance = RequestState.RUNNING, action.instance
                req.chunks += 1
                rid = req.request_id
                if np.isnan(self._rec["first_dispatch_s"][rid]):
                    self._rec["first_dispatch_s"][rid] = self.now
                if self._last[rid] not in (-1, action.instance):
                    self._rec["migrations"][rid] += 1
                self._last[rid] = action.instance
                self._rec["chunks"][rid] += 1
                if not inst.has_work():
                    inst.clock = max(inst.clock, self.now)
                inst.submit(Chunk(rid, action.instance, budget, req.generated, action.priority), req)
            elif isinstance(action, Abort):
                req = self.rollout.requests[action.request_id]
                if req.state is RequestState.RUNNING:
                    self.instances[req.instance].abort(req.request_id)
                elif req.state is RequestState.WAITING:
                    req.state = RequestState.ABORTED
                    self._reason[req.request_id] = "abort"
                    self._rec["finish_s"][req.request_id] = self.now
            elif isinstance(action, SetSpeculation):
                self.instances[action.instance].set_speculation(action.budgets, action.default)
            else:
                raise TypeError(f"unknown action {action!r}")

    def _on_event(self, event) -> None:
        self.now = max(self.now, event.t)
        if isinstance(event, ChunkFinished):
            req = self.rollout.requests[event.request_id]
            req.generated += event.new_tokens
            req.output_ids.extend(event.token_ids or ())
            if event.finished:
                req.state, req.finish_reason = RequestState.FINISHED, event.reason
                rid = req.request_id
                self.completions[rid] += 1
                self._rec["finish_s"][rid] = event.t
                self._rec["instance"][rid] = event.instance
                self._reason[rid] = event.reason.value
                self._done += 1
                if self.drafter is not None:
                    self.drafter.finish(rid)
                if self._bar is not None:
                    self._bar.update(1)
            elif event.reason is FinishReason.ABORT and getattr(self.policy, "abort_is_final", False) \
                    and self.instances[event.instance].alive:
                req.state = RequestState.ABORTED
                self._reason[req.request_id] = "abort"
                self._rec["finish_s"][req.request_id] = event.t
            else:
                req.state = RequestState.WAITING
        self._act(self.policy.on_event(event, self.view()))

    def _open(self) -> int:
        allowed = (RequestState.FINISHED, RequestState.ABORTED)
        return sum(1 for r in self.rollout.requests.values() if r.state not in allowed)

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> RolloutResult:
        wall = time.perf_counter()
        self._bar = tqdm(total=len(self.rollout.requests), desc=f"rollout {self.policy.name}", unit="req",
                         disable=None if self.progress is None else not self.progress)
        next_tick = self.tick_s or math.inf
        try:
            self._act(self.policy.on_event(RolloutStarted(0.0, tuple(self.rollout.groups)), self.view()))
            while self._open():
                busy = [i for i in self.instances if i.alive and i.has_work()]
                if not busy:
                    if next_tick < math.inf:  # let a timer-driven policy act
                        self.now = max(self.now, next_tick)
                        next_tick += self.tick_s
                        self._act(self.policy.on_event(Tick(self.now), self.view()))
                        if any(i.has_work() for i in self.instances):
                            continue
                    raise RuntimeError(f"policy {self.policy.name} left {self._open()} requests unfinished with "
                                       "nothing running")
                inst = min(busy, key=lambda i: (i.clock, i.instance_id))
                if self.clock_mode == "wall":
                    inst.clock = time.perf_counter() - self._t0
                if self.fail_at is not None and inst.clock >= self.fail_at[1]:
                    victim = self.instances[self.fail_at[0]]
                    self.fail_at = None
                    self.now = max(self.now, inst.clock)
                    victim.fail()
                    continue
                while next_tick <= inst.clock:
                    self.now = max(self.now, next_tick)
                    next_tick += self.tick_s
                    self._act(self.policy.on_event(Tick(self.now), self.view()))
                self.now = max(self.now, inst.clock)
                inst.step()
        finally:
            self._bar.close()
        return self._result(time.perf_counter() - wall)

    def shutdown(self) -> None:
        for inst in self.instances:
            inst.shutdown()

    # ---- results -------------------------------------------------------------------------------

    def steps_frame(self) -> pd.DataFrame:
        rows = [vars(s) for inst in self.instances for s in inst.steps]
        return pd.DataFrame(rows)

    def _result(self, wall_s: float) -> RolloutResult:
        reqs = self.rollout.requests
        order = sorted(reqs)
        df = pd.DataFrame({
            "request_id": order,
            "prompt_id": [self.keys[i][0] for i in order],
            "sample_id": [self.keys[i][1] for i in order],
            "group_id": [reqs[i].group_id for i in order],
            "prompt_len": [len(self.prompts[reqs[i].group_id]) for i in order],
            "output_len": [reqs[i].generated for i in order],
            "max_tokens": [reqs[i].max_tokens for i in order],
            "finish_reason": [self._reason[i] for i in order],
            **{k: v[order] for k, v in self._rec.items()},
        })
        df["preemptions"] = [sum(inst.preemptions_by_rid.get(i, 0) for inst in self.instances) for i in order]
        steps = self.steps_frame()
        timeline = pd.DataFrame({"instance": steps["instance"], "t": steps["t"],
                                 "kv_used_tokens": (steps["kv_usage"] * self.instances[0].capacity).round().astype(int),
                                 "running": steps["running"], "waiting": steps["waiting"], "kv_usage": steps["kv_usage"]}) \
            if len(steps) else pd.DataFrame(columns=["instance", "t", "kv_used_tokens", "running", "waiting", "kv_usage"])
        busy = [float(steps.loc[steps.instance == i.instance_id, "duration_s"].sum()) if len(steps) else 0.0
                for i in self.instances]
        extra = {"policy": self.policy.name, "backend": "vllm", "clock": self.clock_mode, "mode": self.clock_mode,
                 "wall_s": wall_s, "steps": int(len(steps)), "migrations": int(df["migrations"].sum()),
                 "kv_capacity_tokens": self.instances[0].capacity, "model": self.settings.model,
                 "failed_instances": [i.instance_id for i in self.instances if not i.alive]}
        if len(steps) and steps["spec_drafts"].sum():
            d, acc = int(steps["spec_drafts"].sum()), int(steps["spec_accepted_tokens"].sum())
            extra.update({"speculation": "vllm", "spec_drafts": d, "spec_draft_tokens": int(steps["spec_draft_tokens"].sum()),
                          "spec_accepted_tokens": acc, "spec_tau": 1 + acc / d})
        preempt_times = steps.loc[steps["preempted"] > 0, "t"].repeat(steps.loc[steps["preempted"] > 0, "preempted"]) \
            if len(steps) else []
        summary = summarize(df, busy, math.nan, int(steps["preempted"].sum()) if len(steps) else 0, extra,
                            preempt_times=preempt_times)
        config = {"engine": {k: v for k, v in vars(self.settings).items()},
                  "policy": getattr(self.policy, "config", lambda: {"name": self.policy.name})()}
        return RolloutResult(df, timeline, summary, config, pd.DataFrame(columns=["t", "instance", "kind", "request_id"]))

    def recorded_trace(self, with_prompt_ids: bool = True) -> pd.DataFrame:
        """The run as a trace in the project's schema (replayable in the simulator)."""
        reqs = self.rollout.requests
        order = sorted(reqs)
        df = pd.DataFrame({
            "prompt_id": [self.keys[i][0] for i in order],
            "sample_id": [self.keys[i][1] for i in order],
            "prompt_len": [len(self.prompts[reqs[i].group_id]) for i in order],
            "output_len": [reqs[i].generated for i in order],
            "max_tokens": [reqs[i].max_tokens for i in order],
            "output_ids": [list(reqs[i].output_ids) for i in order],
            "prompt_hash": [hashlib.sha256(str(self.prompts[reqs[i].group_id]).encode()).hexdigest()[:16] for i in order],
            "first_dispatch_s": self._rec["first_dispatch_s"][order],
            "finish_s": self._rec["finish_s"][order],
            "finish_reason": [self._reason[i] for i in order],
        })
        if with_prompt_ids:
            df["prompt_ids"] = [list(self.prompts[reqs[i].group_id]) for i in order]
        return df
