"""The simulator's driver: the contract loop (events -> policy -> actions -> engines) on SimPy time."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import simpy
from tqdm import tqdm

from seer.core import (
    Abort, Chunk, ChunkFinished, ClusterView, Dispatch, FinishReason, Policy, RequestPreempted, RequestState,
    RolloutStarted, SetSpeculation, Tick,
)
from seer.metrics import RolloutResult, summarize
from seer.sim.bounds import makespan_lower_bound
from seer.sim.cluster import ClusterConfig
from seer.sim.costmodel import LinearStepModel
from seer.sim.instance import SimInstance, SimulationError
from seer.sim.speculation import ExactReplay, ParametricAcceptance
from seer.traces.rollout import rollout_from_trace


def step_profile(cost):
    """The verify-step time T(batch, q) at mean context `ctx` from a cost model: the 'offline profile' a
    speculation policy's MBA rule reads (`set_step_profile`)."""

    def profile(batch: int, q: int, ctx: float) -> float:
        b, q = float(batch), float(q)
        return float(cost.step_time_sums(b * q, b * (ctx + q), b * q * (ctx + (q + 1) / 2), b * q * (ctx + q) if q > 1 else 0.0))

    return profile


def _token_lists(trace: pd.DataFrame, column: str) -> bool:
    return column in trace.columns and bool(trace[column].notna().all())


class _InstanceViews(Sequence):
    """Instance views built on access: most events need none, so none are built for them."""

    def __init__(self, instances):
        self._instances = instances

    def __len__(self) -> int:
        return len(self._instances)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [inst.view() for inst in self._instances[i]]
        return self._instances[i].view()


class SimDriver:
    """Runs one rollout of a trace on a simulated cluster under a policy."""

    def __init__(self, trace: pd.DataFrame, cluster: ClusterConfig, policy: Policy, exact: bool = False,
                 progress: bool | None = None, tick_s: float | None = None, spec_seed: int = 0,
                 spec_horizon: int = 16, cost=None):
        self.cluster, self.policy, self.exact = cluster, policy, exact
        self.rollout, self.true_len, self.keys = rollout_from_trace(trace, cluster.max_tokens)
        self.env = simpy.Environment()
        self.cost = cost if cost is not None else cluster.cost_model()
        icfg = cluster.instance_config()
        cap = icfg.kv_capacity_tokens
        for req in self.rollout.requests.values():
            need = req.prompt_len + self.true_len[req.request_id]
            if need > cap:
                pid, sid = self.keys[req.request_id]
                raise SimulationError(f"prompt {pid!r} sample {sid}: needs {need:,} tokens of KV, more than an instance "
                                      f"of cluster {cluster.name} holds ({cap:,})")
        if getattr(policy, "needs_oracle", False):
            # the named oracle input: true lengths go to oracle policies only, never through the view
            policy.set_oracle_lengths(dict(self.true_len))
        if getattr(policy, "needs_step_profile", False):
            policy.set_step_profile(step_profile(self.cost))
        self.spec = self._speculation_source(trace, getattr(policy, "drafter_config", None), spec_seed)
        self.instances = [SimInstance(self.env, i, self.cost, icfg, self.true_len, self._on_event, exact,
                                      spec=self.spec, spec_horizon=spec_horizon)
                          for i in range(cluster.instances)]
        self.tick_s = tick_s if tick_s is not None else getattr(policy, "tick_s", None)
        self.progress = progress
        self._bar = None
        self._done = 0
        n = len(self.rollout.requests)
        self._rec = {
            "first_dispatch_s": np.full(n, np.nan), "finish_s": np.full(n, np.nan), "instance": np.full(n, -1),
            "chunks": np.zeros(n, np.int64), "preemptions": np.zeros(n, np.int64), "migrations": np.zeros(n, np.int64),
        }
        self._reason = [""] * n
        self._last_instance = [-1] * n
        self.preemptions = 0

    def _speculation_source(self, trace: pd.DataFrame, config, seed: int):
        """Exact replay when the trace has output token ids, else the parametric acceptance model."""
        if config is None:
            return None
        group_of = {rid: r.group_id for rid, r in self.rollout.requests.items()}
        if not _token_lists(trace, "output_ids"):
            return ParametricAcceptance(group_of, seed=seed, scope=config.scope)
        ids = {(p, int(s)): o for p, s, o in zip(trace["prompt_id"], trace["sample_id"], trace["output_ids"])}
        outputs = {rid: ids[key] for rid, key in enumerate(self.keys)}
        prompts = {}
        if _token_lists(trace, "prompt_ids"):
            pids = {(p, int(s)): o for p, s, o in zip(trace["prompt_id"], trace["sample_id"], trace["prompt_ids"])}
            for rid, key in enumerate(self.keys):
                prompts.setdefault(group_of[rid], pids[key])
        return ExactReplay(config, outputs, group_of, prompts)

    # ---- the loop ---------------------------------------------------------------------------

    def view(self) -> ClusterView:
        return ClusterView(self.env.now, _InstanceViews(self.instances), self.rollout.groups,
                           self.rollout.requests)

    def _act(self, actions) -> None:
        for action in actions or ():
            if isinstance(action, Dispatch):
                req = self.rollout.requests[action.request_id]
                if req.state is not RequestState.WAITING:
                    raise RuntimeError(f"{self.policy.name}: dispatched request {req.request_id} in state {req.state.value}")
                inst = self.instances[action.instance]
                budget = min(action.max_new_tokens, req.remaining_budget)
                req.state, req.instance = RequestState.RUNNING, action.instance
                req.chunks += 1
                rid = req.request_id
                if np.isnan(self._rec["first_dispatch_s"][rid]):
                    self._rec["first_dispatch_s"][rid] = self.env.now
                if self._last_instance[rid] not in (-1, action.instance):
                    self._rec["migrations"][rid] += 1
                self._last_instance[rid] = action.instance
                self._rec["chunks"][rid] += 1
                inst.submit(Chunk(rid, action.instance, budget, req.generated, action.priority), req)
            elif isinstance(action, Abort):
                req = self.rollout.requests[action.request_id]
                if req.state is RequestState.RUNNING:
                    self.instances[req.instance].abort(req.request_id)
                elif req.state is RequestState.WAITING:
                    req.state = RequestState.ABORTED
                    self._reason[req.request_id] = "abort"
                    self._rec["finish_s"][req.request_id] = self.env.now
            elif isinstance(action, SetSpeculation):
                self.instances[action.instance].set_speculation(action.budgets, action.default)
            else:
                raise TypeError(f"unknown action {action!r}")

    def _on_event(self, event) -> None:
        if isinstance(event, ChunkFinished):
            req = self.rollout.requests[event.request_id]
            req.generated += event.new_tokens
            if event.finished:
                req.state, req.finish_reason = RequestState.FINISHED, event.reason
                self._rec["finish_s"][req.request_id] = event.t
                self._rec["instance"][req.request_id] = event.instance
                self._reason[req.request_id] = event.reason.value
                self._done += 1
                if self._bar is not None:
                    self._bar.update(1)
            elif event.reason is FinishReason.ABORT and getattr(self.policy, "abort_is_final", False):
                req.state = RequestState.ABORTED
                self._reason[req.request_id] = "abort"
                self._rec["finish_s"][req.request_id] = event.t
                self._rec["instance"][req.request_id] = event.instance
            else:
                req.state = RequestState.WAITING
        elif isinstance(event, RequestPreempted):
            self.preemptions += 1
            self._rec["preemptions"][event.request_id] += 1
        self._act(self.policy.on_event(event, self.view()))

    def _ticker(self):
        while self._done < len(self.rollout.requests):
            yield self.env.timeout(self.tick_s)
            self._act(self.policy.on_event(Tick(self.env.now), self.view()))

    def run(self) -> RolloutResult:
        wall = time.perf_counter()
        n = len(self.rollout.requests)
        self._bar = tqdm(total=n, desc=f"simulating {self.policy.name}", unit="req", disable=None if self.progress is None else not self.progress)
        try:
            self._act(self.policy.on_event(RolloutStarted(0.0, tuple(self.rollout.groups)), self.view()))
            if self.tick_s:
                self.env.process(self._ticker())
            self.env.run()
        finally:
            self._bar.close()
        allowed = (RequestState.FINISHED, RequestState.ABORTED) if getattr(self.policy, "abort_is_final", False) \
            else (RequestState.FINISHED,)
        unfinished = [r.request_id for r in self.rollout.requests.values() if r.state not in allowed]
        if unfinished:
            raise RuntimeError(f"policy {self.policy.name} left {len(unfinished)} requests unfinished "
                               f"(first: {unfinished[:5]})")
        return self._result(time.perf_counter() - wall)

    def _result(self, wall_s: float) -> RolloutResult:
        reqs = self.rollout.requests
        order = sorted(reqs)
        df = pd.DataFrame({
            "request_id": order,
            "prompt_id": [self.keys[i][0] for i in order],
            "sample_id": [self.keys[i][1] for i in order],
            "group_id": [reqs[i].group_id for i in order],
            "prompt_len": [reqs[i].prompt_len for i in order],
            "output_len": [reqs[i].generated for i in order],
            "max_tokens": [reqs[i].max_tokens for i in order],
            "finish_reason": [self._reason[i] for i in order],
            **{k: v[order] for k, v in self._rec.items()},
        })
        rows = []
        for inst in self.instances:
            for t, kv, running, waiting in inst.stats.timeline:
                rows.append((inst.instance_id, t, kv, running, waiting))
        cap = self.instances[0].view().kv_capacity_tokens
        timeline = pd.DataFrame(rows, columns=["instance", "t", "kv_used_tokens", "running", "waiting"])
        timeline["kv_usage"] = timeline["kv_used_tokens"] / cap
        per_step = 1 + int(getattr(self.policy, "max_draft_tokens", 0)) if self.spec is not None else 1
        if isinstance(self.cost, LinearStepModel):  # a fitted backend profile: no roofline terms to bound with
            bound = {"work_bound_s": math.nan, "longest_request_s": math.nan, "lower_bound_s": math.nan}
        else:
            bound = makespan_lower_bound(self.cost, df["prompt_len"], df["output_len"], self.cluster.instances,
                                         self.cluster.max_num_seqs, self.cluster.max_num_batched_tokens, per_step)
        extra = {
            "policy": self.policy.name, "cluster": self.cluster.name, "mode": "exact" if self.exact else "fast",
            "wall_s": wall_s, "steps": int(sum(i.stats.steps for i in self.instances)),
            "epochs": int(sum(i.stats.epochs for i in self.instances)),
            "recomputed_tokens": int(sum(i.stats.recomputed_tokens for i in self.instances)),
            "migrations": int(df["migrations"].sum()),
            "work_bound_s": float(bound["work_bound_s"]), "longest_request_s": float(bound["longest_request_s"]),
            "kv_capacity_tokens": cap, "bound_tokens_per_step": per_step,
        }
        if self.spec is not None:
            per = sum(inst.stats.spec_by_request for inst in self.instances)
            for col, k in (("spec_steps", 0), ("spec_drafted", 1), ("spec_accepted", 2)):
                df[col] = per[order, k]
            extra.update(self._speculation_summary())
        events = pd.DataFrame([(t, inst.instance_id, kind, rid) for inst in self.instances for t, kind, rid in inst.stats.events],
                              columns=["t", "instance", "kind", "request_id"]).sort_values("t", kind="stable").reset_index(drop=True)
        summary = summarize(df, [i.stats.busy_s for i in self.instances], float(bound["lower_bound_s"]), self.preemptions,
                            extra, preempt_times=events.loc[events.kind == "preempt", "t"])
        config = {"cluster": self.cluster.describe(), "cost_model": self.cost.describe(),
                  "policy": getattr(self.policy, "config", lambda: {"name": self.policy.name})()}
        return RolloutResult(df, timeline, summary, config, events)


    def _speculation_summary(self) -> dict:
        st = [i.stats for i in self.instances]
        steps = sum(s.spec_request_steps for s in st)
        accepted = sum(s.spec_accepted_tokens for s in st)
        drafted = sum(s.spec_drafted_tokens for s in st)
        tried = np.sum([s.spec_tried for s in st], axis=0)
        acc_pos = np.sum([s.spec_accepted for s in st], axis=0)
        n = int(np.flatnonzero(tried).max() + 1) if tried.any() else 0
        return {
            "speculation": self.spec.label,
            "spec_request_steps": int(steps),
            "spec_drafted_tokens": int(drafted),
            "spec_accepted_tokens": int(accepted),
            # mean acceptance length over speculative request-steps, bonus token included
            "spec_tau": (steps + accepted) / steps if steps else float("nan"),
            "spec_acceptance_rate": accepted / drafted if drafted else float("nan"),
            # P(draft position i+1 accepted | the budget reached it and positions 1..i were accepted)
            "spec_alpha_by_position": [float(acc_pos[i] / tried[i]) for i in range(n)],
        }


def simulate(trace: pd.DataFrame, cluster: ClusterConfig, policy: Policy, exact: bool = False,
             progress: bool | None = None, spec_seed: int = 0, cost=None) -> RolloutResult:
    """Run one rollout in the simulator (`cost`: a step-time model other than the cluster's own)."""
    return SimDriver(trace, cluster, policy, exact=exact, progress=progress, spec_seed=spec_seed, cost=cost).run()
