"""`seer simulate` and `seer compare`: policies in the simulator."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from types import SimpleNamespace

from seer.cli.common import (
    int_at_least,
    name_list,
    print_json,
    refuse_unused_policy_flags,
    refuse_unused_seed,
    safe_name,
    setup_from_args,
    shared_policy_params,
    workload_args,
    workload_name,
)
from seer.cli.summary import print_summary
from seer.errors import SeerInputError
from seer.fileio import atomic_dir, check_output_dir, inside, json_safe
from seer.schema import MAX_ITERATIONS


def load_cost_model(args):
    """`--cost-model FILE`: a step model from `seer calibrate` in place of the cluster's roofline model, loaded
    (and refused in one line) before the workload is read or generated; `priced_on` completes it."""
    if getattr(args, "cost_model", None) is None:
        return None
    from seer.sim.stepfit import StepFit

    return StepFit.load(args.cost_model)


def priced_on(model, setup):
    """The loaded step model with the cluster's KV bytes per token, which still price global-pool transfers."""
    if model is not None:
        model.kv_bytes_per_token = setup.cluster.cost_model().kv_bytes_per_token
    return model


def cost_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cost-model",
        metavar="TOML",
        help="price steps with a model from `seer calibrate` (a real engine's measured steps) instead of the "
        "cluster's roofline model; it has no lower bound, so efficiency is n/a",
    )


def note_one_rollout(over_issuing: list[str], where: str) -> None:
    """Over-issue means something only across iterations: said where one rollout runs it."""
    print(
        f"seer: {', '.join(over_issuing)} over-issue(s) and carry requests into the next iteration; {where} this is "
        "one rollout without carry-over, and the requests it aborts at its target are not generated "
        "(`seer compare --preset ... --iterations N` runs iterations)",
        file=sys.stderr,
    )


def cmd_simulate(args) -> int:
    from seer.core import traits_of
    from seer.experiment import run
    from seer.policies import make_policy

    shared = shared_policy_params(args)
    policy = make_policy(args.policy, shared)  # fail on a bad spec before loading anything
    refuse_unused_policy_flags([args.policy], shared)
    # everything that can be refused is, before the workload is read or generated (a generator's warning
    # would otherwise come before the error line)
    out = (
        args.out
        if args.out is not None
        else os.path.join("out", "simulate", safe_name(f"{workload_name(args)}-{args.policy}"))
    )
    check_output_dir(out)
    cost = load_cost_model(args)
    setup = setup_from_args(args)
    refuse_unused_seed(args, setup, [args.policy], [policy])
    if traits_of(policy).over_issue > 1:
        note_one_rollout([args.policy], "in `seer simulate`")
    result = run(setup, policy, exact=args.exact, progress=None, cost=priced_on(cost, setup))
    result.save(out)
    if args.json:
        print_json(dict(result.summary))
    else:
        cl = setup.cluster
        print_summary(f"{setup.name} on {cl.name} ({cl.instances} instances), policy {args.policy}", result.summary)
        print(f"results: {out}/ (requests.parquet, timeline.parquet, events.parquet, summary.json)")
    return 0


def _iterations(args, setup, names: list[str], shared: dict, out) -> list[dict]:
    """Every policy over RL iterations; writes iterations.parquet and trained_lengths.parquet."""
    import pandas as pd

    from seer.experiment import iterations_summary, run_iterations

    if setup.synth is None:
        raise SeerInputError("--iterations needs --preset (each iteration draws fresh groups from its generator)")
    tables, lengths, summaries = [], {}, []
    requests = setup.synth.prompts * setup.synth.group_size
    for spec in names:
        table, trained = run_iterations(
            setup, spec, iterations=args.iterations, shared=shared, progress=None, exact=args.exact
        )
        tables.append(table)
        lengths[spec] = trained
        summaries.append(iterations_summary(spec, table, trained, requests))
    pd.concat(tables, ignore_index=True).to_parquet(os.path.join(out, "iterations.parquet"), index=False)
    trained = pd.concat([t.assign(policy=p) for p, t in lengths.items()], ignore_index=True)
    trained = trained[["policy", *(c for c in trained.columns if c != "policy")]]
    trained.to_parquet(os.path.join(out, "trained_lengths.parquet"), index=False)
    return summaries


def _compare_plan(args) -> SimpleNamespace:
    """The checked policies, output folder and step model: everything `seer compare` can refuse is refused here,
    before the workload is read or generated (a generator's warning would otherwise come before the error)."""
    from seer.core import traits_of
    from seer.policies import make_policy

    names = name_list(args.policies, "--policies")
    if not names:
        raise SeerInputError(f"--policies names no policy: {args.policies!r}")
    folders = [safe_name(p) for p in names]
    twice = sorted({p for p, f in zip(names, folders) if folders.count(f) > 1})
    if twice:
        raise SeerInputError(
            f"--policies lists {', '.join(map(repr, twice))} more than once (or under names that make the same folder)"
        )
    shared = shared_policy_params(args)
    policies = [make_policy(p, shared) for p in names]  # fail on a bad spec before loading or running anything
    refuse_unused_policy_flags(names, shared)
    out = args.out if args.out is not None else os.path.join("out", "compare", safe_name(workload_name(args)))
    # a policy that over-issues (partial rollout) is measured over iterations, which need fresh groups
    over_issuing = [n for n, p in zip(names, policies) if traits_of(p).over_issue > 1]
    over_iterations = args.iterations > 1 or bool(over_issuing and args.preset)
    if over_iterations and not args.preset:
        raise SeerInputError("--iterations needs --preset (each iteration draws fresh groups from its generator)")
    if over_iterations and args.cost_model:
        raise SeerInputError("--cost-model prices one rollout; it does not combine with --iterations")
    check_output_dir(out)
    return SimpleNamespace(
        names=names,
        folders=folders,
        policies=policies,
        shared=shared,
        over_issuing=over_issuing,
        over_iterations=over_iterations,
        out=out,
        cost=load_cost_model(args),
    )


def cmd_compare(args) -> int:
    import pandas as pd

    from seer.core import traits_of
    from seer.experiment import check_groups, compare_table, rollout_groups, run

    plan = _compare_plan(args)
    setup = setup_from_args(args)
    refuse_unused_seed(args, setup, plan.names, plan.policies)
    for policy in plan.policies:  # a target no rollout of this workload can meet: refused before any policy runs
        check_groups([policy], rollout_groups(setup, traits_of(policy).over_issue, plan.over_iterations))
    if plan.over_issuing and not plan.over_iterations:  # a note, not a refusal: said once the workload is read
        note_one_rollout(plan.over_issuing, "on a --trace")
    cost, out, over_iterations = priced_on(plan.cost, setup), plan.out, plan.over_iterations
    with atomic_dir(out) as tmp:  # the folder is replaced whole: never a mix of two runs
        if over_iterations:
            summaries = _iterations(args, setup, plan.names, plan.shared, tmp)
        else:
            summaries = []
            for spec, folder, policy in zip(plan.names, plan.folders, plan.policies):
                result = run(setup, policy, exact=args.exact, progress=None, cost=cost)
                result.write_into(_subfolder(tmp, folder))
                summaries.append({**result.summary, "policy": spec})
        rows = compare_table(summaries)
        (tmp / "compare.json").write_text(json.dumps(json_safe(rows), indent=2))
        pd.DataFrame(rows).drop(columns=["mode"], errors="ignore").to_parquet(tmp / "compare.parquet", index=False)
    if args.json:
        print_json(rows)
        return 0
    _print_compare(setup, rows, args.iterations)
    files = "iterations.parquet, trained_lengths.parquet" if over_iterations else "one folder per policy"
    print(f"results: {out}/ (compare.json, compare.parquet, {files})")
    return 0


def _subfolder(root, name: str):
    """A new folder `name` inside `root` (refused if the name would lead outside it)."""
    path = inside(root, os.path.join(root, name))
    path.mkdir()
    return path


def _print_compare(setup, rows: list[dict], iterations: int) -> None:
    cl = setup.cluster
    per = f", means over {iterations} iterations" if "iterations" in rows[0] else ""
    counts = {r["requests"] for r in rows}
    # a policy that over-issues (partial) holds more requests than the others: each row's count, not the first's
    held = (
        f"{rows[0]['requests']:,} requests"
        if len(counts) == 1
        else "requests " + ", ".join(f"{r['policy']} {r['requests']:,}" for r in rows)
    )
    print(f"{setup.name} on {cl.name} ({cl.instances} instances x {cl.tp * cl.dp} GPUs), {held} per iteration{per}")
    width = max(16, max(len(r["policy"]) for r in rows) + 2)
    spec = any("spec_tau" in r for r in rows)
    dec = 1 if max(r["makespan_s"] for r in rows) < 100 else 0
    print(
        f"{'policy':<{width}}{'tok/s':>10}{'x verl':>8}{'makespan s':>12}{'tail s':>9}{'tail -%':>9}{'eff':>7}"
        f"{'preempt':>9}{'migr':>8}" + (f"{'SD tau':>8}" if spec else "")
    )
    for r in rows:
        eff = "n/a" if not _finite(r["efficiency"]) else f"{100 * r['efficiency']:.0f}%"
        x, cut, tau = r["speedup_vs_verl"], r["tail_reduction"], r.get("spec_tau")
        line = (  # "-" where a column has no value (no verl row to compare with, no speculation)
            f"{r['policy']:<{width}}{r['throughput_tok_s']:>10,.0f}{f'{x:.2f}' if _finite(x) else '-':>8}"
            f"{r['makespan_s']:>12,.{dec}f}{r['tail_s']:>9,.{dec}f}{f'{round(100 * cut)}%' if _finite(cut) else '-':>9}"
            f"{eff:>7}{r['preemptions']:>9,}{r['migrations']:>8,}"
        )
        if spec:
            line += f"{f'{tau:.2f}' if _finite(tau) else '-':>8}"
        print(line)
    for r in rows:  # one rollout of an over-issuing policy: its rate is over less work than the others'
        if r.get("aborted_requests"):
            print(
                f"{r['policy']}: {r['aborted_requests']:,} of {r['requests']:,} requests aborted unfinished at its "
                "target, so its makespan covers less work than the other rows' (tok/s counts what it generated)"
            )
    speculating = [r for r in rows if r.get("speculation")]
    if len({r["speculation"] for r in speculating}) == 1:
        print(f"speculation: {speculating[0]['speculation']}")
    else:  # in table order, each named by its policy
        for r in speculating:
            print(f"speculation ({r['policy']}): {r['speculation']}")


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate one rollout on a cluster under a policy",
        description="Replay a trace (or a paper preset's synthetic workload) in the SimPy cluster simulator.",
    )
    workload_args(p)
    p.add_argument(
        "--policy", default="verl", help="scheduling policy, NAME[:KEY=VALUE...] (see `seer policies`; default verl)"
    )
    cost_model_arg(p)
    p.add_argument("--out", help="result folder (default out/simulate/WORKLOAD-POLICY)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "compare",
        help="simulate several policies on one workload and compare them",
        description="Run each policy on the same workload and cluster; print one table and save every result.",
    )
    workload_args(p)
    p.add_argument(
        "--policies",
        default="verl,divided,context,oracle",
        help="comma-separated (default verl,divided,context,oracle); NAME:KEY=VALUE sets a parameter of "
        "one entry, e.g. seer:scope=own (parameters: `seer policies`)",
    )
    p.add_argument(
        "--iterations",
        type=int_at_least(1, MAX_ITERATIONS),
        default=1,
        help="RL iterations to run (needs --preset; partial rollout carries requests between them; the "
        "table shows per-iteration means)",
    )
    cost_model_arg(p)
    p.add_argument("--out", help="result folder (default out/compare/WORKLOAD)")
    p.add_argument("--json", action="store_true", help="print a list of per-policy summaries as JSON")
    p.set_defaults(func=cmd_compare)
