"""Simulator speed: wall time and simulated output tokens per wall-second, per paper preset, policy verl,
at 1x, 2x and 4x the preset's request count. Medians of --repeats runs.

Two ways to scale: `requests` adds prompts on the same cluster (more load per instance: KV thrashing grows,
so scheduling events grow faster than requests); `cluster` scales prompts and instances together (same load
per instance). Cost should follow scheduling events (epochs + preemptions), not generated tokens.

    python benchmarks/sim_speed.py [--repeats 3] [--scales 1,2,4] [--mode requests,cluster] [--presets ...]

Writes out/bench/sim_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from seer.experiment import Setup, run
from seer.fileio import write_text_atomic
from seer.traces.synth import preset_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scales", default="1,2,4")
    ap.add_argument("--presets", default="moonlight,qwen2-vl-72b,kimi-k2")
    ap.add_argument("--policy", default="verl")
    ap.add_argument("--mode", default="requests,cluster", help="requests, cluster or both")
    ap.add_argument("--out", default="out/bench/sim_speed.json")
    args = ap.parse_args()
    rows = []
    print(
        f"{'preset':<14}{'mode':>9}{'scale':>6}{'requests':>10}{'output tokens':>16}{'wall s (median)':>17}"
        f"{'Mtok/wall-s':>13}"
        f"{'events':>9}{'sim makespan s':>16}{'ms/event':>10}"
    )
    for mode, name, scale in (
        (m, n, int(x)) for m in args.mode.split(",") for n in args.presets.split(",") for x in args.scales.split(",")
    ):
        base = preset_config(name)
        setup = Setup.from_preset(name, prompts=base.prompts * scale)
        if mode == "cluster":
            setup = Setup.from_trace(setup.trace, setup.cluster, instances=setup.cluster.instances * scale, name=name)
        cluster = setup.cluster
        walls, summary = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            summary = run(setup, args.policy).summary
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        row = {
            "preset": name,
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
            "makespan_s": summary["makespan_s"],
            "ms_per_event": 1e3 * wall / max(1, summary["epochs"] + summary["preemptions"]),
        }
        rows.append(row)
        print(
            f"{name:<14}{mode:>9}{scale:>6}{row['requests']:>10,}{row['output_tokens']:>16,}{wall:>17.2f}"
            f"{row['tokens_per_wall_s'] / 1e6:>13.1f}{row['epochs'] + row['preemptions']:>9,}"
            f"{row['makespan_s']:>16,.0f}{row['ms_per_event']:>10.3f}",
            flush=True,
        )
    write_text_atomic(args.out, json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
