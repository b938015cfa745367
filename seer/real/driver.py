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
from seer.core.model import write_request
from seer.errors import SeerInputError
from seer.loop import ContractLoop
from seer.metrics import RolloutResult, events_frame, summarize
from seer.real.engine import EngineSettings, VLLMInstance, configure_environment
from seer.real.host import EngineLost

CLOCKS = ("virtual", "wall")
LAUNCHES = ("inproc", "ray")


def _check_options(clock: str, launch: str, kill, drafter) -> None:
    if clock not in CLOCKS:
        raise SeerInputError(f"clock must be one of {', '.join(CLOCKS)}")
    if launch not in LAUNCHES:
        raise SeerInputError(f"launch must be one of {', '.join(LAUNCHES)}")
    if kill is not None and launch != "ray":
        raise SeerInputError("--kill needs --launch ray (engines in their own processes); --fail simulates it")
    if drafter is not None and launch != "inproc":
        raise SeerInputError("the group drafter needs --launch inproc (it shares the driver's process)")


def prompt_ids(prompts: dict, req) -> list[int]:
    """A request's prompt: its group's, up to its own prompt length (a replayed trace's samples of one prompt may
    differ in length; each then has a prefix of the group's longest, which prefix caching shares)."""
    return prompts[req.group_id][: req.prompt_len]


def register_prompts(drafter, rollout: Rollout, prompts: dict) -> None:
    """Every request with the group drafter. A group's index holds the prompt its samples share (the shortest of
    their prefixes), by which the proposer recognises vLLM's rows: every sample's prompt continues it, whereas
    the first sample's could be longer than a sibling's."""
    least: dict[int, int] = {}
    for req in rollout.requests.values():
        least[req.group_id] = min(least.get(req.group_id, req.prompt_len), req.prompt_len)
    for req in rollout.requests.values():
        drafter.add_request(req.request_id, req.group_id, prompts[req.group_id][: least[req.group_id]])


def _check_context(rollout: Rollout, prompts: dict, replay_len: dict | None, max_model_len: int) -> None:
    """Every request's prompt plus output fits the model's context."""
    for req in rollout.requests.values():
        held = len(prompt_ids(prompts, req))
        need = held + (replay_len[req.request_id] if replay_len else req.max_tokens)
        if need > max_model_len:
            pid, sid = req.key
            raise SeerInputError(
                f"prompt {pid!r} sample {sid}: prompt ({held} tokens) plus "
                f"output must fit the model context ({max_model_len}); needs {need}"
            )


class RealDriver(ContractLoop):
    """Runs one rollout on `instances` real vLLM engines under a policy.

    `prompts`: group id -> prompt token ids (each request takes its own prompt length of them). `replay_len`:
    request id -> recorded output length (length replay with `ignore_eos`), or None for real generation up to EOS /
    max_tokens. `fail`: (instance, seconds)
    to take an instance out mid-rollout by aborting its requests (fault injection); `kill`: (instance, seconds)
    to SIGKILL its engine's process (a real failure; needs `launch="ray"`). `launch`: "inproc" (every engine in
    this process) or "ray" (one actor per engine, `cpus`/`gpus` each; with the wall clock they step at once).
    `drafter`: a `GroupDrafter` fed with every token, when the engines draft with the project's group drafter
    (`settings.speculative` names its proposer; in-process engines only).
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
        launch: str = "inproc",
        kill: tuple[int, float] | None = None,
        cpus: int = 1,
        gpus: int = 0,
    ):
        _check_options(clock, launch, kill, drafter)
        super().__init__(rollout, policy)
        configure_environment()
        self.prompts, self.settings = prompts, settings
        self.clock_mode, self.replay_len, self.launch = clock, replay_len, launch
        # (seconds, instance, is a real kill), in time order
        self.faults = sorted([(f[1], f[0], False) for f in [fail] if f] + [(k[1], k[0], True) for k in [kill] if k])
        self.progress_enabled = progress
        _check_context(rollout, prompts, replay_len, settings.max_model_len)
        for req in rollout.requests.values():  # the engines' tokens are appended here as they stream
            write_request(req, output_ids=())
        self.provide(replay_len, self._step_profile)
        self.drafting = drafter
        if drafter is not None:
            register_prompts(drafter, rollout, prompts)
        hosts = [None] * instances
        t0 = time.perf_counter()
        if launch == "ray":
            from seer.real.launch import launch_actors

            hosts = launch_actors(settings, instances, cpus, gpus)
        self.engines = [
            VLLMInstance(i, settings, self.emit, self._prompt_of, replay_len, self._on_tokens, hosts[i])
            for i in range(instances)
        ]
        self.launch_s = time.perf_counter() - t0  # Ray start-up, actors and engines built
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
        return prompt_ids(self.prompts, req)

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
        self._next_tick = self.tick_s or math.inf
        with self.progress(f"rollout {self.policy.name}", self.progress_enabled):
            self.start()
            if self.launch == "ray" and self.clock_mode == "wall":
                self._run_parallel()
            else:
                self._run_in_turn()
        return self._result(time.perf_counter() - wall)

    def _ticks_until(self, t: float) -> None:
        while self._next_tick <= t:
            self._now = max(self._now, self._next_tick)
            self._next_tick += self.tick_s
            self.tick()

    def _faults_until(self, t: float) -> bool:
        """Apply the faults due by time `t`; True when one was."""
        hit = False
        while self.faults and self.faults[0][0] <= t:
            _when, i, kill = self.faults.pop(0)
            self._now = max(self._now, t)
            if kill:
                self.engines[i].kill()  # noticed when the engine next answers
            else:
                self.engines[i].fail()
                hit = True
        return hit

    def _idle_tick(self) -> None:
        """Nothing runs: let a timer-driven policy act, or stop on a policy that left requests behind."""
        if self._next_tick < math.inf:
            self._ticks_until(max(self._now, self._next_tick))
            if any(i.has_work() for i in self.engines):
                return
        self.check_done()

    def _run_in_turn(self) -> None:
        """One step at a time: the instance furthest behind (virtual clocks), or each in turn (wall clock)."""
        while not self.done:
            self._report_idle()
            busy = [i for i in self.engines if i.alive and i.has_work()]
            if not busy:
                self._idle_tick()
                continue
            inst = min(busy, key=lambda i: (i.clock, i.instance_id))
            if self.clock_mode == "wall":
                inst.clock = time.perf_counter() - self._t0
            if self._faults_until(inst.clock):
                continue
            self._ticks_until(inst.clock)
            self._now = max(self._now, inst.clock)
            try:
                inst.step()
            except EngineLost:  # its process died: the policy continues its requests elsewhere
                inst.lost()

    def _run_parallel(self) -> None:
        """Wall clock, engines in their own processes: every busy engine steps at once, and whichever finishes
        first is handled first (Ray's `wait`)."""
        import ray

        pending = {}
        while not self.done:
            now = time.perf_counter() - self._t0
            self._faults_until(now)
            self._ticks_until(now)
            self._now = max(self._now, now)
            self._report_idle()
            for inst in self.engines:
                if inst.alive and inst.has_work() and not inst.stepping:
                    inst.start_step(now)
                    pending[inst._pending] = inst
            if not pending:
                self._idle_tick()
                continue
            due = min([t for t, _i, _k in self.faults[:1]] + [self._next_tick]) - now
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, due) if due < math.inf else None)
            for ref in ready:
                inst = pending.pop(ref)
                if not inst.alive:
                    continue
                try:
                    result = inst.host.result(ref)
                except EngineLost:  # the engine's process died: the policy continues its requests elsewhere
                    self._now = max(self._now, time.perf_counter() - self._t0)
                    inst.lost()
                    continue
                end = time.perf_counter() - self._t0
                self._now = max(self._now, end)
                inst.finish_step(result, end)

    def _report_idle(self) -> None:
        for inst in self.engines:
            if inst.alive and not inst.has_work():
                inst.report_idle()

    def shutdown(self) -> None:
        for inst in self.engines:
            inst.shutdown()
        if self.launch == "ray":
            import ray

            for inst in self.engines:
                try:
                    ray.kill(inst.host.actor, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass

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
        # a row holds until the instance's next one: after its last step an instance is idle, as the simulator's
        # timeline records. On the virtual clock a gap between two steps is idle time too; on the wall clock a
        # gap is also the driver's round trip and the other engines' turns, while requests still run, so no row
        order = steps.sort_values(["instance", "t"], kind="stable")
        end = order["t"] + order["duration_s"]
        following = order.groupby("instance")["t"].shift(-1)
        gap = following > end + 1e-9 if self.clock_mode != "wall" else False
        idle = order.loc[following.isna() | gap, ["instance"]].assign(t=end)
        rows = idle.assign(kv_used_tokens=0, running=0, waiting=0, kv_usage=0.0)
        out = pd.concat([timeline, rows], ignore_index=True)
        return out.sort_values(["instance", "t"], kind="stable").reset_index(drop=True)

    def _overhead_per_step(self, wall_s: float, steps: pd.DataFrame) -> float | None:
        """Driver time per step outside the engines' steps, in µs (stepping one at a time: virtual clocks, or
        in-process engines on the wall clock; with actors stepping at once the engines' time overlaps)."""
        if not len(steps) or (self.launch == "ray" and self.clock_mode == "wall"):
            return None
        return 1e6 * max(0.0, wall_s - float(steps["duration_s"].sum())) / len(steps)

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
            "chunks": int(df["chunks"].sum()),
            "kv_capacity_tokens": cap,
            "model": self.settings.model,
            "failed_instances": [i.instance_id for i in self.engines if not i.alive],
            "launch": self.launch,
            "engine_startup_s": [round(float(i.startup_s), 3) for i in self.engines],
            "launch_s": self.launch_s,
            "driver_overhead_us_per_step": self._overhead_per_step(wall_s, steps),
            "engine_nodes": sorted({i.node for i in self.engines}),
            **self._speculation_summary(steps),
        }
        events = events_frame((t, i.instance_id, kind, rid) for i in self.engines for t, kind, rid in i.events)
        timeline = self._timeline(steps, cap)
        summary = summarize(
            df,
            busy,
            math.nan,
            self.ledger.total_preemptions,
            extra,
            preempt_times=events.loc[events.kind == "preempt", "t"],
            timeline=timeline,
        )
        config = {"engine": dict(vars(self.settings)), "policy": describe_policy(self.policy)}
        return RolloutResult(df, timeline, summary, config, events)

    def recorded_trace(self, with_prompt_ids: bool = True) -> pd.DataFrame:
        """The run as a trace in the project's schema (replayable in the simulator)."""
        reqs = self.rollout.requests
        order = sorted(reqs)
        prompt = [prompt_ids(self.prompts, reqs[i]) for i in order]
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
