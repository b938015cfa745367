"""Simulator speed: wall time and simulated output tokens per wall-second, per paper preset and policy, at 1x, 2x
and 4x the preset's request count. Medians of --repeats runs.

Two ways to scale: `requests` adds prompts on the same cluster (more load per instance: KV thrashing grows,
so scheduling events grow faster than requests); `cluster` scales prompts and instances together (same load
per instance). Cost should follow scheduling events (epochs + preemptions), not generated tokens.

    python benchmarks/sim_speed.py [--repeats 3] [--scales 1,2,4] [--mode requests,cluster] [--presets ...]
    python benchmarks/sim_speed.py --policies verl,context,seer --scales 1 --mode requests   # every policy
    python benchmarks/sim_speed.py --jit   # the compiled kernels' first-call cost, cold and from the disk cache
    python benchmarks/sim_speed.py --split --policies context,seer --presets kimi-k2 --scales 1 --mode requests
        # also time the policy's own decisions (its `on_event`) and the speculative planning part by part, and
        # count the speculative epochs' shapes (rows, planned and run steps, draws) of the parametric model
    git worktree add /tmp/before 868c219 && \
    python benchmarks/sim_speed.py --against /tmp/before --policies verl,context,seer --presets kimi-k2 --repeats 3
        # this tree against another checkout, run in turn (A B A B ...), each run a fresh process timing the
        # simulation alone after a small warm-up run; medians, the median of the pair ratios and µs per event

"events" = decode epochs + preemptions + chunks (a chunk is one dispatch and one finish). Writes
out/bench/sim_speed.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time

import numpy as np

from seer.experiment import Setup, run
from seer.fileio import write_text_atomic
from seer.policies import make_policy
from seer.sim.speculation import ParametricAcceptance
from seer.traces.synth import preset_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scales", default="1,2,4")
    ap.add_argument("--presets", default="moonlight,qwen2-vl-72b,kimi-k2")
    ap.add_argument("--policies", default="verl", help="comma-separated policies (default verl)")
    ap.add_argument("--jit", action="store_true", help="only measure the compiled kernels' first-call cost")
    ap.add_argument("--mode", default="requests,cluster", help="requests, cluster or both")
    ap.add_argument("--split", action="store_true", help="also time the policy's own on_event calls")
    ap.add_argument("--against", help="another checkout of seer: time each policy there and here, in turn")
    ap.add_argument("--out", default="out/bench/sim_speed.json")
    args = ap.parse_args()
    if args.jit:
        jit_cost()
        return
    if args.against:
        against(args)
        return
    # load the compiled kernels (numba's disk cache) before any timed run: `--jit` reports that cost
    run(Setup.from_preset("moonlight", prompts=8), "seer", progress=False)
    rows = []
    print(
        f"{'preset':<14}{'policy':>8}{'mode':>9}{'scale':>6}{'requests':>10}{'output tokens':>16}"
        f"{'wall s (median)':>17}"
        f"{'Mtok/wall-s':>13}"
        f"{'events':>9}{'sim makespan s':>16}{'µs/event':>10}"
    )
    for mode, name, scale, policy in (
        (m, n, int(x), p)
        for m in args.mode.split(",")
        for n in args.presets.split(",")
        for x in args.scales.split(",")
        for p in args.policies.split(",")
    ):
        base = preset_config(name)
        setup = Setup.from_preset(name, prompts=base.prompts * scale)
        if mode == "cluster":
            setup = Setup.from_trace(setup.trace, setup.cluster, instances=setup.cluster.instances * scale, name=name)
        cluster = setup.cluster
        walls, policy_s, spec_parts, summary = [], [], [], None
        for _ in range(args.repeats):
            pol, clock = timed_policy(policy) if args.split else (policy, None)
            with timed_speculation() if args.split else contextlib.nullcontext() as parts:
                t0 = time.perf_counter()
                summary = run(setup, pol, progress=False).summary
                walls.append(time.perf_counter() - t0)
            policy_s.append(clock[0] if clock else float("nan"))
            spec_parts.append(parts)
        wall = statistics.median(walls)
        row = {
            "preset": name,
            "policy": policy,
            "mode": mode,
            "scale": scale,
            "instances": cluster.instances,
            "requests": summary["requests"],
            "output_tokens": summary["output_tokens"],
            "wall_s_median": wall,
            "wall_s_all": walls,
            "tokens_per_wall_s": summary["output_tokens"] / wall,
            "epochs": summary["epochs"],
            "steps": summary["steps"],
            "preemptions": summary["preemptions"],
            "chunks": summary["chunks"],
            "events": summary["epochs"] + summary["preemptions"] + summary["chunks"],
            "makespan_s": summary["makespan_s"],
        }
        row["us_per_event"] = 1e6 * wall / max(1, row["events"])
        split = ""
        if args.split:
            row["policy_s_median"] = statistics.median(policy_s)
            row["policy_us_per_event"] = 1e6 * row["policy_s_median"] / max(1, row["events"])
            # planning = the acceptance plan (its draws included), the cut and pricing, the statistics
            row["spec_planning_s_median"] = statistics.median(p["plan"] + p["cut"] + p["stats"] for p in spec_parts)
            for part in ("plan", "cut", "stats", "apply"):
                row[f"spec_{part}_s_median"] = statistics.median(p[part] for p in spec_parts)
            row.update(shape_summary(spec_parts[-1]["shapes"]))  # the same every run
            split = f"   policy {row['policy_s_median']:.2f} s ({row['policy_us_per_event']:.1f} µs/event)"
            if row.get("spec_epochs"):
                per = 1e6 / row["spec_epochs"]
                split += (
                    f", speculative planning {row['spec_planning_s_median']:.2f} s over {row['spec_epochs']:,} "
                    f"speculative epochs (µs each: plan {row['spec_plan_s_median'] * per:.0f}; "
                    f"cut and pricing {row['spec_cut_s_median'] * per:.0f}; "
                    f"statistics {row['spec_stats_s_median'] * per:.0f}; apply {row['spec_apply_s_median'] * per:.0f})"
                    f"\n{'':14}shapes: rows median {row['rows_median']:.0f} (10th-90th {row['rows_p10_p90'][0]:.0f}-"
                    f"{row['rows_p10_p90'][1]:.0f}), {row['planned_steps_mean']:.1f} planned steps, "
                    f"{row['planned_row_steps'] / 1e6:.1f}M planned row-steps, {row['draws'] / 1e6:.1f}M draws, "
                    f"{row['run_row_steps'] / 1e6:.1f}M row-steps run"
                )
        rows.append(row)
        print(
            f"{name:<14}{policy:>8}{mode:>9}{scale:>6}{row['requests']:>10,}{row['output_tokens']:>16,}{wall:>17.2f}"
            f"{row['tokens_per_wall_s'] / 1e6:>13.1f}{row['events']:>9,}"
            f"{row['makespan_s']:>16,.0f}{row['us_per_event']:>10.1f}" + split,
            flush=True,
        )
    write_text_atomic(args.out, json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


def timed_policy(spec: str):
    """A fresh policy whose `on_event` calls are timed (seconds summed into the returned one-element list)."""
    pol, clock = make_policy(spec), [0.0]
    inner = pol.on_event

    def on_event(event, view):
        t0 = time.perf_counter()
        try:
            return inner(event, view)
        finally:
            clock[0] += time.perf_counter() - t0

    pol.on_event = on_event
    return pol, clock


@contextlib.contextmanager
def timed_speculation():
    """Time the simulator's speculative planning while the block runs, part by part, and record each speculative
    epoch's shape. Yields a dict: seconds per part ("plan": the acceptance model's plan, its hashed draws inside;
    "cut": the epoch's cut, step sums and pricing; "stats": the acceptance statistics; "apply": advancing the rows)
    and "shapes", one (rows, planned steps, draws, steps run) per epoch of the parametric model, where draws are
    the uniforms the plan evaluated (a step stops at its first rejected draft or its budget)."""
    import seer.sim.instance as instance

    parts = {"plan": 0.0, "cut": 0.0, "stats": 0.0, "apply": 0.0, "shapes": []}
    names = {"plan_spec_epoch": "cut", "count_spec_steps": "stats", "apply_spec_epoch": "apply"}
    saved = {n: getattr(instance, n) for n in names}
    plan = ParametricAcceptance.plan
    planned = []  # the last plan's (rows, steps, draws): its epoch's steps run are known when it is applied

    def timed(fn, part):
        def call(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[part] += time.perf_counter() - t0

        return call

    def planning(self, rids, generated, remaining, gammas, horizon):
        t0 = time.perf_counter()
        out = plan(self, rids, generated, remaining, gammas, horizon)
        parts["plan"] += time.perf_counter() - t0
        draws = int(np.minimum(out.accepted + 1, out.budget).sum())
        planned[:] = [(len(rids), horizon, draws)]
        return out

    def applied(rs, epoch, j, remaining):
        if planned:
            parts["shapes"].append((*planned.pop(), j))
        return saved["apply_spec_epoch"](rs, epoch, j, remaining)

    try:
        for n, part in names.items():
            setattr(instance, n, timed(applied if n == "apply_spec_epoch" else saved[n], part))
        ParametricAcceptance.plan = planning
        yield parts
    finally:
        for n in names:
            setattr(instance, n, saved[n])
        ParametricAcceptance.plan = plan


def shape_summary(shapes: list) -> dict:
    """What the speculative epochs' array work amounts to: epochs, rows (median, 10th-90th percentile), planned
    steps, planned row-steps, the uniforms the plans evaluated, and the row-steps that ran before an event cut the
    epoch."""
    if not shapes:
        return {}
    a = np.array(shapes, dtype=np.int64)
    rows, steps, draws, ran = a.T
    return {
        "spec_epochs": len(a),
        "rows_median": float(np.median(rows)),
        "rows_p10_p90": [float(np.percentile(rows, 10)), float(np.percentile(rows, 90))],
        "planned_steps_mean": float(steps.mean()),
        "planned_row_steps": int((rows * steps).sum()),
        "draws": int(draws.sum()),
        "run_row_steps": int((rows * ran).sum()),
    }


PAIR_PROBE = """
import sys, time
from seer.experiment import Setup, run
preset, policy = sys.argv[1], sys.argv[2]
run(Setup.from_preset(preset, prompts=8), policy, progress=False)  # compiled kernels loaded, not timed
setup = Setup.from_preset(preset)
t0 = time.perf_counter()
s = run(setup, policy, progress=False).summary
wall = time.perf_counter() - t0
print(wall, s["epochs"] + s["preemptions"] + s["chunks"], s["makespan_s"])
"""


def against(args) -> None:
    """Each policy on each preset (1x), here (A) and in the checkout `args.against` (B), alternately."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"A": here, "B": os.path.abspath(args.against)}
    rows = []
    print(f"A = {trees['A']}, B = {trees['B']}; simulation seconds in process, medians of {args.repeats} pairs")
    for name in args.presets.split(","):
        for policy in args.policies.split(","):
            walls: dict[str, list[float]] = {"A": [], "B": []}
            seen: dict[str, set] = {"A": set(), "B": set()}  # side -> {(events, simulated makespan)} over its runs
            for _ in range(args.repeats):
                for side, tree in trees.items():
                    env = {**os.environ, "PYTHONPATH": tree}
                    cmd = [sys.executable, "-c", PAIR_PROBE, name, policy]
                    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
                    if out.returncode:  # one line, as the seer CLI answers bad input
                        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
                        print(f"sim_speed.py: {tree} could not run {policy} on {name}: {last}", file=sys.stderr)
                        raise SystemExit(2)
                    wall, events, makespan = out.stdout.split()[-3:]
                    walls[side].append(float(wall))
                    seen[side].add((int(events), float(makespan)))
            ratios = [a / b for a, b in zip(walls["A"], walls["B"])]
            row = {"preset": name, "policy": policy, "a_s": walls["A"], "b_s": walls["B"]}
            row["ratio_median"] = statistics.median(ratios)
            (row["a_events"], _), (row["b_events"], _) = min(seen["A"]), min(seen["B"])
            # every run of both trees gave the same events and makespan: the same simulation
            row["same_result"] = len(seen["A"]) == 1 and seen["A"] == seen["B"]
            rows.append(row)
            a, b = statistics.median(walls["A"]), statistics.median(walls["B"])
            per = f"µs/event A {1e6 * a / row['a_events']:.0f}  B {1e6 * b / row['b_events']:.0f}"
            same = "" if row["same_result"] else "  (the trees simulate differently: events or makespan differ)"
            print(
                f"{name:<14}{policy:>10}  A {a:8.2f} s   B {b:8.2f} s   A/B {row['ratio_median']:.3f}   {per}{same}",
                flush=True,
            )
    write_text_atomic(args.out, json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


JIT_PROBE = """
import time
t0 = time.perf_counter()
import numpy as np
from seer.sim import batch_kernels, cost_kernels, spec_kernels as k
t1 = time.perf_counter()
a = np.ones(1); i = np.ones(1, np.int64)
b, acc, adv = k.parametric_plan(np.uint64(1), i * 0, i, i * 0, 1, np.zeros(1, bool), i, a, False, i, i, 1)
k.epoch_plan(adv, b, i, i, i, 16, 10)
k.count_steps(b, acc, b, i * 0, 1, np.zeros(4, np.int64), np.zeros(4, np.int64), np.zeros((1, 3), np.int64))
k.ahead_counts(i * 0, i, i * 0, 1, np.zeros(1, bool), i)
bk = batch_kernels
bk.plan_tokens(i, i, i, i, 4, 16)
bk.step_sums(i * 0, i, i, i, i)
bk.apply_step(i * 0, i, i.copy(), i, i.copy())
bk.all_decoding(i, i, i)
bk.advance_decode(i.copy(), i.copy(), i.copy(), 1, 16)
bk.epoch_length(i, i * 0, i, i, 16, 0)
f = np.ones(1)
p = np.ones(len(cost_kernels.PARAMS))
cost_kernels.price_steps(p, f, f, f, f, f)
cost_kernels.verify_step_times(p, 4, 100.0, 3)
k.apply_epoch(adv, adv, 1, i, i.copy(), i.copy(), i.copy())
print(t1 - t0, time.perf_counter() - t1)
"""


def jit_cost() -> None:
    """First call of every simulator kernel in a fresh process: compiled from scratch (an empty numba cache
    directory), then loaded from that disk cache. Timed loops never include either."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold (compile)", "warm (disk cache)"):
            out = subprocess.run([sys.executable, "-c", JIT_PROBE], env=env, capture_output=True, text=True, check=True)
            imp, first = map(float, out.stdout.split())
            print(f"{label:<18} import {imp:.2f} s, first call of the 13 kernels {first:.2f} s")


if __name__ == "__main__":
    main()
