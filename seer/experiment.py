"""One experiment API for every caller (CLI, figures, sweeps, fidelity, benchmarks, notebooks).

setup = Setup.from_preset("qwen2-vl-72b")                 # the paper's workload on its cluster
setup = Setup.from_trace("trace.parquet", "moonlight", instances=8)
result = run(setup, "context:chunk_size=2048")           # one policy -> RolloutResult
rows, results = compare(setup, ["verl", "context"])      # several, with speed-up and tail reduction vs verl
table, trained = run_iterations(setup, "partial", iterations=5)  # RL iterations (needs a synthetic setup)
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seer.carry import Carry
from seer.core import Policy, traits_of
from seer.errors import SeerInputError
from seer.metrics import RolloutResult
from seer.policies import ConfiguredPolicy, make_policy, unused_shared
from seer.schema import MAX_ITERATIONS
from seer.sim.cluster import ClusterConfig, load_cluster
from seer.sim.driver import replays_tokens, simulate
from seer.traces.rollout import check_output_cap
from seer.traces.synth import SynthConfig, preset_config, synthesize


@dataclass
class Setup:
    """A workload (a trace) on a cluster. `synth` is the generator's config when the trace is synthetic, so that
    RL iterations can draw fresh groups from it."""

    trace: pd.DataFrame
    cluster: ClusterConfig
    name: str
    synth: SynthConfig | None = None
    source: str | None = None  # the trace file it was read from, when it was
    spec_seed: int = 0  # seed of the parametric acceptance model's draws (traces without output_ids)

    def describe(self) -> dict:
        """What the workload was, for the result files: preset knobs (seed included) or the trace file."""
        out = {"name": self.name, "requests": len(self.trace), "spec_seed": self.spec_seed}
        if self.synth is not None:
            out["synth"] = dataclasses.asdict(self.synth)
        if self.source is not None:
            out["trace"] = self.source
        return out

    @classmethod
    def from_preset(
        cls,
        preset: str,
        prompts: int | None = None,
        seed: int | None = None,
        instances: int | None = None,
        cluster: str | None = None,
        **workload,
    ) -> "Setup":
        """A paper preset's synthetic workload on its cluster (or on `cluster`), with workload overrides (None:
        the preset's value)."""
        if not isinstance(preset, str):
            raise SeerInputError(f"preset must be a preset name (see `seer presets`), not {preset!r:.60}")
        cl = _cluster(cluster or preset, instances)  # before the generator can warn of anything
        cfg = preset_config(preset, seed=seed, prompts=prompts, **workload)
        return cls(synthesize(cfg), cl, preset, cfg)

    @classmethod
    def from_trace(
        cls,
        trace: str | os.PathLike | pd.DataFrame,
        cluster: str | ClusterConfig,
        instances: int | None = None,
        name: str | None = None,
        spec_seed: int = 0,
    ) -> "Setup":
        """A trace (a file or a frame) on a cluster preset name, TOML path or config; `spec_seed` seeds the
        parametric acceptance draws when the trace has no output token ids."""
        cluster = _cluster(cluster, instances)  # the small inputs first: a bad one fails before a big read
        _check_seed(spec_seed)
        if not isinstance(trace, (str, os.PathLike, pd.DataFrame)):
            raise SeerInputError(f"trace must be a file path or a DataFrame, not {trace!r:.60}")
        if not isinstance(trace, pd.DataFrame):
            from seer.traces.io import load_trace

            name = name or os.path.splitext(os.path.basename(str(trace)))[0]
            source = str(trace)
            trace = load_trace(trace)
            check_output_cap(trace, cluster.max_tokens, source, "the cluster's cap")
        else:  # a frame is held to the schema a file is (duplicate keys, NaN ids, fractional lengths ran silently)
            from seer.traces.io import validate_trace

            source = None
            label = f"trace frame {name!r}" if name else "the trace frame"
            trace = validate_trace(trace, label)
            check_output_cap(trace, cluster.max_tokens, label, "the cluster's cap")
        return cls(trace, cluster, name or "trace", source=source, spec_seed=spec_seed)

    def with_trace(self, trace: pd.DataFrame) -> "Setup":
        return dataclasses.replace(self, trace=trace)


def _cluster(cluster, instances) -> ClusterConfig:
    """A preset name, TOML path or config, with `instances` (None: its own) checked as the command line checks it."""
    if not isinstance(cluster, (ClusterConfig, str, os.PathLike)):
        raise SeerInputError(f"cluster must be a preset name, a TOML path or a ClusterConfig, not {cluster!r:.60}")
    if instances is not None and (isinstance(instances, bool) or not isinstance(instances, (int, np.integer))):
        raise SeerInputError(f"instances must be an integer >= 1, not {instances!r:.60}")
    if instances is not None and instances < 1:
        raise SeerInputError(f"instances must be >= 1, not {instances}")
    instances = None if instances is None else int(instances)
    if not isinstance(cluster, ClusterConfig):
        return load_cluster(cluster, instances=instances)
    return cluster if instances is None else dataclasses.replace(cluster, instances=instances)


def _check_seed(seed) -> None:
    if type(seed) is not int or seed < 0:
        raise SeerInputError(f"spec_seed must be an integer >= 0, not {seed!r:.60}")


def _check_call(caller: str, setup, shared) -> None:
    """What every entry point takes: a Setup, and shared parameters as a mapping."""
    if not isinstance(setup, Setup):
        raise SeerInputError(f"{caller} takes a Setup (Setup.from_preset or Setup.from_trace), not {setup!r:.60}")
    if shared is not None and not isinstance(shared, Mapping):
        raise SeerInputError(f"{caller}: shared parameters are a mapping (KEY: VALUE), not {shared!r:.60}")


def _refuse_unused(specs: list[str], shared: Mapping | None) -> None:
    """A shared parameter no listed policy reads is refused, as the command line refuses its flag."""
    unused = unused_shared(specs, shared)
    if unused:
        raise SeerInputError(
            f"shared {', '.join(f'{k}={shared[k]!r}' for k in unused)}: no listed policy ({', '.join(specs)}) reads it "
            "(`seer policies NAME` lists what each takes)"
        )


def seed_draws_nothing(trace: pd.DataFrame, policies: Sequence[Policy], specs: Sequence[str]) -> str | None:
    """Why a seed of the parametric acceptance draws would draw nothing in these runs (None: it draws)."""
    if replays_tokens(trace):
        return "the trace has output token ids, so speculation replays them and draws nothing at random"
    if not any(traits_of(p).drafter is not None for p in policies):
        return f"no listed policy ({', '.join(specs)}) speculates, so nothing is drawn at random"
    return None


def as_policy(policy: str | Policy, shared: Mapping | None = None) -> Policy:
    """A policy object from a spec ('context:chunk_size=512'), or the object itself."""
    return make_policy(policy, shared) if isinstance(policy, str) else policy


def run(
    setup: Setup,
    policy: str | Policy,
    shared: Mapping | None = None,
    exact: bool = False,
    progress: bool | None = False,
    cost=None,
    spec_seed: int | None = None,
) -> RolloutResult:
    """Simulate one rollout of the setup under a policy (a fresh object per spec); `spec_seed` (default: the
    setup's) seeds the parametric acceptance draws. The result's config records the workload."""
    _check_call("run", setup, shared)
    if shared and not isinstance(policy, str):
        raise SeerInputError("shared parameters configure a policy spec (NAME:KEY=VALUE), not a policy object")
    if cost is not None and not callable(getattr(cost, "step_time_sums", None)):
        raise SeerInputError(
            f"cost must be a step-time model (StepFit.load(path) reads one from `seer calibrate`), not {cost!r:.60}"
        )
    if shared:
        _refuse_unused([policy], shared)
    policy = as_policy(policy, shared)
    if spec_seed is not None:  # a setup's own seed is kept for the runs that draw; one given here must be used
        _check_seed(spec_seed)
        unused = seed_draws_nothing(setup.trace, [policy], [getattr(policy, "name", type(policy).__name__)])
        if unused:
            raise SeerInputError(f"spec_seed={spec_seed}: {unused}")
        setup = dataclasses.replace(setup, spec_seed=spec_seed)
    result = simulate(
        setup.trace,
        setup.cluster,
        policy,
        exact=exact,
        progress=progress,
        spec_seed=setup.spec_seed,
        cost=cost,
    )
    result.config["workload"] = setup.describe()
    return result


def rollout_groups(setup: Setup, over_issue: float = 1.0, iterations: bool = False) -> int:
    """The groups one rollout of the setup holds: the trace's, or, over RL iterations, the first iteration's (the
    setup's prompts times a policy's over-issue; later ones hold at least as many)."""
    if iterations and setup.synth is not None:
        n = setup.synth.prompts
        return math.ceil(over_issue * n) if over_issue > 1 else n
    return int(setup.trace["prompt_id"].nunique())


def check_groups(policies: Sequence[Policy], groups: int) -> None:
    """Each policy's own refusal of a rollout of `groups` groups, before any of them runs."""
    for policy in policies:
        if isinstance(policy, ConfiguredPolicy):
            policy.check_groups(groups)


def compare_table(summaries: list[dict]) -> list[dict]:
    """One row per policy: its summary plus speed-up and tail reduction against verl (when verl ran)."""
    base = next((s for s in summaries if s["policy"] == "verl"), None)
    rows = []
    for s in summaries:
        row = dict(s)
        # no generated tokens (every response empty): a throughput ratio of 0 / 0 means nothing
        useful = base and base["throughput_tok_s"] > 0
        row["speedup_vs_verl"] = s["throughput_tok_s"] / base["throughput_tok_s"] if useful else math.nan
        row["tail_reduction"] = 1 - s["tail_s"] / base["tail_s"] if base and base["tail_s"] > 0 else math.nan
        rows.append(row)
    return rows


def compare(
    setup: Setup,
    specs: Sequence[str | Policy],
    shared: Mapping | None = None,
    exact: bool = False,
    progress: bool | None = False,
) -> tuple[list[dict], dict[str, RolloutResult]]:
    """Every policy on the same setup: (comparison rows, results by spec, or by name for a policy object).
    Specs are checked before any runs; a name given twice is refused (its results would overwrite)."""
    _check_call("compare", setup, shared)
    if isinstance(specs, str) or not isinstance(specs, Sequence):  # a string would be compared letter by letter
        raise SeerInputError(f"compare takes a list of policies, not {specs!r:.60}")
    specs = list(specs)
    if not specs:
        raise SeerInputError("no policies to compare")
    policies = [as_policy(s, shared) for s in specs]
    strings = [s for s in specs if isinstance(s, str)]
    if shared and strings:
        _refuse_unused(strings, shared)
    # " verl" is verl: the spec's spaces make no other policy (it ran twice, the second overwriting the first)
    labels = [
        s.strip() if isinstance(s, str) else getattr(p, "name", type(p).__name__) for s, p in zip(specs, policies)
    ]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise SeerInputError(f"compare: {', '.join(map(repr, twice))} given more than once")
    check_groups(policies, rollout_groups(setup))
    results = {x: run(setup, p, exact=exact, progress=progress) for x, p in zip(labels, policies)}
    return compare_table([{**r.summary, "policy": x} for x, r in results.items()]), results


# each iteration's summary fields in the iterations table
ITERATION_KEYS = (
    "makespan_s",
    "output_tokens",
    "throughput_tok_s",
    "tail_s",
    "preemptions",
    "migrations",
    "efficiency",
    "requests",
)


def run_iterations(
    setup: Setup,
    spec: str,
    iterations: int = 5,
    shared: Mapping | None = None,
    progress: bool | None = False,
    exact: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Several RL iterations in a row, each needing the setup's number of fresh groups (the paper averages 5).

    Synchronous policies generate every group of an iteration. A policy whose traits say it over-issues
    (`partial`, APRIL) holds over_issue x the groups, stops at the target, and carries unfinished requests,
    with what they generated, into the next iteration. Returns the per-iteration table and every response that
    reached training (`seer.carry.TRAINED_COLUMNS`: its full length, the iteration its prompt was issued in and the
    one it trained in; Seer Fig 10: partial rollout under-represents long outputs). `exact`:
    every step one at a time (the check on the fast path), as in `run`.
    """
    _check_call("run_iterations", setup, shared)
    if setup.synth is None:
        raise SeerInputError("iterations need a synthetic setup (each iteration draws fresh groups from its generator)")
    if type(iterations) is not int or not 1 <= iterations <= MAX_ITERATIONS:  # each one is a whole rollout
        raise SeerInputError(f"iterations must be an integer from 1 to {MAX_ITERATIONS:,}, not {iterations!r}")
    if not isinstance(spec, str):  # each iteration makes a fresh policy from the spec
        raise SeerInputError(f"run_iterations takes a policy spec (NAME:KEY=VALUE), not {type(spec).__name__}")
    cfg, n = setup.synth, setup.synth.prompts
    if (shared or {}).get("target_groups") is not None:  # it was replaced by the setup's prompts without a word
        raise SeerInputError(
            f"run_iterations: every iteration trains on the setup's {n} groups; a partial target of its own goes in "
            "the spec (partial:target_groups=K), not in shared"
        )
    shared = {**(shared or {}), "target_groups": n}
    carrier = Carry()
    rows = []
    for it in range(iterations):
        policy = make_policy(spec, shared)
        over = traits_of(policy).over_issue
        n_new = max(0, math.ceil(over * n) - carrier.groups()) if over > 1 else n
        parts = [carrier.trace] if len(carrier.trace) else []
        if n_new:
            new = synthesize(dataclasses.replace(cfg, prompts=n_new, seed=cfg.seed + 7919 * it))
            new["prompt_id"] += carrier.next_pid
            new["iteration"] = it
            carrier.next_pid += n_new
            parts.append(new)
        trace = pd.concat(parts, ignore_index=True)
        res = simulate(trace, setup.cluster, policy, exact=exact, progress=progress)
        complete, carried = carrier.update(trace, res.requests, it)
        rows.append(
            {
                "iteration": it,
                "policy": spec,
                "mode": "exact" if exact else "fast",
                **{k: res.summary[k] for k in ITERATION_KEYS},  # requests: with over-issue, more than the setup's
                "groups_issued": int(trace["prompt_id"].nunique()),
                "groups_trained": complete,
                "carried_requests": carried,
            }
        )
    return pd.DataFrame(rows), carrier.trained()


def iterations_summary(spec: str, table: pd.DataFrame, trained: pd.DataFrame, requests: int) -> dict:
    """A compare row for a policy run over iterations: per-iteration means. `requests` is the setup's requests
    per iteration; the row holds the mean the iterations ran (more under over-issue) when the table has it."""
    mean = table.mean(numeric_only=True)
    if "requests" in mean:
        requests = round(mean.requests)
    return {
        "policy": spec,
        **({"mode": str(table["mode"].iloc[0])} if "mode" in table and len(table) else {}),
        "iterations": len(table),
        "makespan_s": float(mean.makespan_s),
        "throughput_tok_s": float(mean.throughput_tok_s),
        "tail_s": float(mean.tail_s),
        "preemptions": int(round(mean.preemptions)),
        "output_tokens": int(round(mean.output_tokens)),
        "requests": int(requests),
        "efficiency": float(mean.efficiency),
        "migrations": int(round(mean.migrations)),
        "trained_mean_len": float(trained["output_len"].mean()) if len(trained) else math.nan,
        "trained_samples": int(len(trained)),
    }
