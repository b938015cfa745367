"""The simulator's driver: the contract loop (`seer.loop`) on SimPy time, over simulated instances."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import simpy

from seer.core import DraftConfig, InstanceChanges, Policy, StepProfile, describe_policy
from seer.loop import ContractLoop, PolicyError, nan_bounds
from seer.metrics import RolloutResult, events_frame, summarize
from seer.sim.bounds import min_prefill_tokens
from seer.sim.cluster import ClusterConfig
from seer.sim.config import SimulationError
from seer.sim.cost_kernels import verify_step_times
from seer.sim.costmodel import CostModel
from seer.sim.instance import SimInstance
from seer.sim.spec_bound import speculative_minimums
from seer.sim.speculation import ExactReplay, ParametricAcceptance
from seer.traces.rollout import rollout_from_trace

IDLE_TICKS = 1000  # ticks in a row with nothing running and nothing dispatched that end a simulation


class CostProfile(StepProfile):
    """The verify-step time T(batch, q) at mean context `ctx` from a cost model: the 'offline profile' a
    speculation policy's MBA rule reads (`set_step_profile`). For the roofline model, `times` prices every q in
    one compiled pass (the same floats as one call per q: tests/test_costmodel.py)."""

    def __init__(self, cost):
        super().__init__(self._one)
        self.cost = cost
        # the compiled form is the roofline model's own formula: a subclass or another model is called per q
        self._params = cost.price_params if type(cost) is CostModel else None

    def _one(self, batch: int, q: int, ctx: float) -> float:
        b, q = float(batch), float(q)
        return float(
            self.cost.step_time_sums(
                b * q, b * (ctx + q), b * q * (ctx + (q + 1) / 2), b * q * (ctx + q) if q > 1 else 0.0
            )
        )

    def times(self, batch: int, q_max: int, ctx: float) -> list[float]:
        if self._params is None:
            return super().times(batch, q_max, ctx)
        return verify_step_times(self._params, int(batch), float(ctx), int(q_max)).tolist()


def _token_lists(trace: pd.DataFrame, column: str) -> bool:
    return column in trace.columns and bool(trace[column].notna().all())


def replays_tokens(trace: pd.DataFrame) -> bool:
    """Whether speculation on this trace replays its recorded tokens (exact replay, nothing drawn at random)
    rather than drawing acceptance from the parametric model."""
    return _token_lists(trace, "output_ids")


def _warn_unread_columns(trace: pd.DataFrame, reads_iterations: bool) -> None:
    """Columns a synchronous rollout does not honour, said rather than silently ignored."""
    if "arrival_s" in trace.columns and len(trace) and float(trace["arrival_s"].max()) > 0:
        warnings.warn(
            f"the trace's arrival_s (up to {float(trace['arrival_s'].max()):,.6g} s) is ignored: a synchronous "
            "rollout has every request at t = 0",
            stacklevel=3,
        )
    iterations = trace["iteration"].nunique() if "iteration" in trace.columns else 0
    if iterations > 1 and not reads_iterations:
        warnings.warn(
            f"the trace's iteration column holds {iterations} iterations; they run as one rollout (only an "
            "over-issuing policy, partial, reads it: carried groups first). Simulate each iteration's rows as a "
            "trace of its own to run them apart",
            stacklevel=3,
        )


class SimDriver(ContractLoop):
    """Runs one rollout of a trace on a simulated cluster under a policy."""

    def __init__(
        self,
        trace: pd.DataFrame,
        cluster: ClusterConfig,
        policy: Policy,
        exact: bool = False,
        progress: bool | None = None,
        tick_s: float | None = None,
        spec_seed: int = 0,
        spec_horizon: int = 16,
        cost=None,
    ):
        rollout, self.true_len = rollout_from_trace(trace, cluster.max_tokens, progress)
        super().__init__(rollout, policy)
        _warn_unread_columns(trace, self.traits.over_issue > 1)
        # an empty recorded response still takes its prefill step and samples its end token, which is not counted
        empty = trace.loc[trace["output_len"] == 0, ["prompt_id", "sample_id"]]
        self.empty = {(p, int(s)) for p, s in zip(empty["prompt_id"], empty["sample_id"])}
        self.cluster, self.exact, self.progress_enabled = cluster, exact, progress
        self.env = simpy.Environment()
        self.cost = cost if cost is not None else cluster.cost_model()
        icfg = cluster.instance_config()
        self._check_fits(icfg.kv_capacity_tokens)
        self.provide(self.true_len, CostProfile(self.cost))
        self.spec = self._speculation_source(trace, self.traits.drafter, spec_seed)
        self.drafting = self.spec
        self.changes = InstanceChanges()  # the instances mark their own changes, so views are re-read only then
        # speculation counts per request (steps, drafted, accepted), added to by whichever instance runs it
        self.spec_counts = np.zeros((max(self.true_len, default=-1) + 1, 3), np.int64)
        # siblings share their prompt's cached blocks; where a trace gives the samples of one prompt different
        # prompt lengths (a partial rollout's carried samples, a user trace), they share the shortest
        reqs, members = rollout.requests, rollout.members.items()
        shared = {g: min(reqs[r].prompt_len for r in m) for g, m in members} if icfg.prefix_cache else {}
        self.engines = [
            SimInstance(
                self.env,
                i,
                self.cost,
                icfg,
                self.true_len,
                self.emit,
                exact,
                spec=self.spec,
                spec_horizon=spec_horizon,
                changes=self.changes,
                spec_counts=self.spec_counts,
                shared_prompt=shared,
            )
            for i in range(cluster.instances)
        ]
        self.tick_s = tick_s if tick_s is not None else self.traits.tick_s
        # events at one instant: every request may finish, be preempted and move a few times over, and every
        # instance may report itself idle
        self._instant, self._at_instant = -1.0, 0
        self._livelock = 100 * (len(self.true_len) + cluster.instances) + 10_000

    @property
    def now(self) -> float:
        return self.env.now

    @property
    def instances(self) -> list[SimInstance]:
        return self.engines

    def _check_fits(self, cap: int) -> None:
        for req in self.rollout.requests.values():
            need = req.prompt_len + self.true_len[req.request_id]
            if need > cap:
                pid, sid = req.key
                raise SimulationError(
                    f"prompt {pid!r} sample {sid}: needs {need:,} tokens of KV, more than an "
                    f"instance of cluster {self.cluster.name} holds ({cap:,})"
                )

    def _speculation_source(self, trace: pd.DataFrame, config: DraftConfig | None, seed: int):
        """Exact replay when the trace has output token ids, else the parametric acceptance model."""
        if config is None:
            return None
        group_of = {rid: r.group_id for rid, r in self.rollout.requests.items()}
        if not replays_tokens(trace):
            acc = ParametricAcceptance(group_of, seed=seed, scope=config.scope)
            default = DraftConfig()  # every drafter setting but scope own/other is a property of real drafts
            ignored = [
                f"{k}={getattr(config, k)}"
                for k in ("topk", "min_prob", "max_match", "min_match", "max_occurrences")
                if getattr(config, k) != getattr(default, k)
            ] + (["scope=global"] if config.scope == "global" else [])
            if ignored:  # said, not silent: a sweep over them would return the same cells
                note = (
                    f"{' and '.join(ignored)} not modelled without output_ids (the parametric model tells only scope "
                    f"own from the others): these results are those of the drafter's defaults, scope "
                    f"{'own' if config.scope == 'own' else 'group'}"
                )
                warnings.warn(note, stacklevel=2)
                acc.label += f"; {note}"
            return acc
        ids = {(p, int(s)): o for p, s, o in zip(trace["prompt_id"], trace["sample_id"], trace["output_ids"])}
        reqs = self.rollout.requests
        outputs = {rid: ids[r.key] for rid, r in reqs.items()}
        own = {}
        if _token_lists(trace, "prompt_ids"):
            pids = {(p, int(s)): o for p, s, o in zip(trace["prompt_id"], trace["sample_id"], trace["prompt_ids"])}
            own = {rid: pids[r.key] for rid, r in reqs.items()}
        return ExactReplay(config, outputs, group_of, own_prompts=own)

    # ---- the run ------------------------------------------------------------------------------

    def _idle(self) -> bool:
        return all(not len(e.run_set) and not e.waiting and not e.loading for e in self.engines)

    def _ticker(self):
        idle_ticks = 0
        while not self.done:
            yield self.env.timeout(self.tick_s)
            dispatched = self.dispatches
            self.tick()
            # ticks alone keep the simulation going: once IDLE_TICKS ticks in a row found nothing running anywhere
            # and dispatched nothing, stop ticking and let the run end (check_done names what the policy left
            # unfinished). A policy may still wait a few ticks on purpose (a back-off); it cannot wait forever.
            idle_ticks = idle_ticks + 1 if self.dispatches == dispatched and self._idle() else 0
            if idle_ticks >= IDLE_TICKS:
                return

    def _record(self, event) -> None:
        # a policy that dispatches and aborts the same requests can cycle without time passing
        if self.env.now != self._instant:
            self._instant, self._at_instant = self.env.now, 0
        self._at_instant += 1
        if self._at_instant > self._livelock:
            raise PolicyError(
                f"policy {self.policy.name} makes no progress: {self._at_instant:,} events at t={self.now:.6g} s "
                "without time passing (does it dispatch and abort the same requests?)"
            )
        super()._record(event)

    def run(self) -> RolloutResult:
        wall = time.perf_counter()
        with self.progress(f"simulating {self.policy.name}", self.progress_enabled):
            self.start()
            if self.tick_s:
                self.env.process(self._ticker())
            self.env.run()
        self.check_done()
        return self._result(time.perf_counter() - wall)

    def _timeline(self, cap: int) -> pd.DataFrame:
        rows = [(i.instance_id, t, kv, run, wait) for i in self.engines for t, kv, run, wait in i.stats.timeline]
        timeline = pd.DataFrame(rows, columns=["instance", "t", "kv_used_tokens", "running", "waiting"])
        timeline["kv_usage"] = timeline["kv_used_tokens"] / cap
        return timeline

    def _bounds(self, df: pd.DataFrame) -> tuple[dict, dict]:
        """(the bound efficiency is measured against, extra summary fields). With speculation the strict bound
        lets every step advance 1 + gamma_max tokens; with exact replay a tighter strict one allows only what the
        drafter's text could at best have accepted (`seer.sim.spec_bound`); the parametric model adds an
        indicative bound at its best expected acceptance (labelled: not strict)."""
        cl = self.cluster
        # a request aborted before its first token (partial rollout) may never have had its prompt prefilled
        unstarted = (df["finish_reason"] == "abort") & (df["output_len"] == 0)
        prompt = df["prompt_len"].where(~unstarted, 0)
        args = (prompt, df["output_len"], cl.instances, cl.max_num_seqs, cl.max_num_batched_tokens)
        prefill = None
        if cl.prefix_cache:
            groups = [self.rollout.requests[r].group_id for r in df["request_id"]]
            prefill = min_prefill_tokens(prompt, groups, cl.block_size)
        if self.spec is None:
            return self.cost.lower_bound(*args, prefill_tokens=prefill) or nan_bounds(), {"bound_tokens_per_step": 1}
        gamma = int(self.traits.max_draft_tokens)
        ceiling = self.cost.lower_bound(*args, 1 + gamma, prefill_tokens=prefill) or nan_bounds()
        extra = {"bound_tokens_per_step": 1 + gamma, "lower_bound_gamma_s": float(ceiling["lower_bound_s"])}
        if isinstance(self.spec, ExactReplay):
            reqs = self.rollout.requests
            steps, kv = speculative_minimums(
                self.spec.outputs,
                {r: q.prompt_len for r, q in reqs.items()},
                {r: q.group_id for r, q in reqs.items()},
                self.spec.prompts,
                self.spec.config.scope,
                gamma,
            )
            order = df["request_id"].tolist()
            best = self.cost.lower_bound_steps(
                prompt,
                df["output_len"],
                [steps[r] for r in order],
                [kv[r] for r in order],
                *args[2:],
                prefill_tokens=prefill,
            )
            if best is not None:  # both are lower bounds: keep the larger of each
                best = {k: max(best[k], ceiling[k]) for k in best}
                extra["bound"] = "strict: the drafter's best case on the recorded tokens"
                return best, extra
        if isinstance(self.spec, ParametricAcceptance):
            k = self.spec.expected_advance(gamma)
            expected = self.cost.lower_bound(*args, k, prefill_tokens=prefill) or nan_bounds()
            extra["lower_bound_expected_s"] = float(expected["lower_bound_s"])
        extra["bound"] = "strict: every step may advance 1 + gamma_max tokens"
        return ceiling, extra

    def _result(self, wall_s: float) -> RolloutResult:
        df = self.ledger.frame()
        if self.empty:
            keys = list(zip(df["prompt_id"], df["sample_id"]))
            df.loc[[k in self.empty for k in keys], "output_len"] = 0
        stats = [i.stats for i in self.engines]
        cap = self.engines[0].view().kv_capacity_tokens
        bound, bound_extra = self._bounds(df)
        extra = {
            "policy": self.policy.name,
            "cluster": self.cluster.name,
            "mode": "exact" if self.exact else "fast",
            "wall_s": wall_s,
            "steps": int(sum(s.steps for s in stats)),
            "epochs": int(sum(s.epochs for s in stats)),
            "recomputed_tokens": int(sum(s.recomputed_tokens for s in stats)),
            "resumed_prefill_tokens": int(sum(s.resumed_prefill_tokens for s in stats)),
            "prefill_tokens": int(sum(s.prefill_tokens for s in stats)),
            "migrations": int(df["migrations"].sum()),
            "chunks": int(df["chunks"].sum()),
            "work_bound_s": float(bound["work_bound_s"]),
            "longest_request_s": float(bound["longest_request_s"]),
            "kv_capacity_tokens": cap,
            **bound_extra,
        }
        if self.spec is not None:
            per = self.spec_counts
            order = df["request_id"].to_numpy()
            for col, k in (("spec_steps", 0), ("spec_drafted", 1), ("spec_accepted", 2)):
                df[col] = per[order, k]
            extra.update(self._speculation_summary())
        events = events_frame((t, i.instance_id, kind, rid) for i in self.engines for t, kind, rid in i.stats.events)
        timeline = self._timeline(cap)
        summary = summarize(
            df,
            [s.busy_s for s in stats],
            float(bound["lower_bound_s"]),
            self.ledger.total_preemptions,
            extra,
            preempt_times=events.loc[events.kind == "preempt", "t"],
            timeline=timeline,
        )
        for key in ("gamma", "expected"):
            if f"lower_bound_{key}_s" in summary and summary["makespan_s"] > 0:
                summary[f"efficiency_{key}"] = summary[f"lower_bound_{key}_s"] / summary["makespan_s"]
        config = {
            "cluster": self.cluster.describe(),
            "cost_model": self.cost.describe(),
            "policy": describe_policy(self.policy),
        }
        return RolloutResult(df, timeline, summary, config, events)

    def _speculation_summary(self) -> dict:
        st = [i.stats for i in self.engines]
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


def simulate(
    trace: pd.DataFrame,
    cluster: ClusterConfig,
    policy: Policy,
    exact: bool = False,
    progress: bool | None = None,
    spec_seed: int = 0,
    cost=None,
) -> RolloutResult:
    """Run one rollout in the simulator (`cost`: a step-time model other than the cluster's own)."""
    return SimDriver(trace, cluster, policy, exact=exact, progress=progress, spec_seed=spec_seed, cost=cost).run()
