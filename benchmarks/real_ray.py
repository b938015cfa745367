"""Engines as Ray actors against in-process engines, on one length replay (SmolLM2's shape, random weights).

    python benchmarks/real_ray.py [--prompts 8] [--repeats 3]

Per repeat, four `seer run`s of the same replay on 2 instances, one after another:
- inproc, virtual clock: the recorded makespan stands for two devices in parallel;
- ray, wall clock: two actors with one core each really step at once; the wall makespan is what the virtual
  clock predicts, so (virtual - wall) / wall is the virtual clock's error;
- ray, virtual clock: the same stepping order as the first, so the driver's overhead per step (wall time
  outside the engines' steps) compares actors with in-process engines.
Then `seer fidelity` on the last wall-clock actor run. Medians over repeats; writes out/bench/real_ray.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import pandas as pd
from seer_cli import seer_json as seer

from seer.fileio import write_text_atomic

CONFIGS = {
    "inproc-virtual": ("--launch", "inproc", "--clock", "virtual"),
    "ray-wall": ("--launch", "ray", "--clock", "wall"),
    "ray-virtual": ("--launch", "ray", "--clock", "virtual"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="out/bench/real_ray")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    trace = os.path.join(args.out, "longtail.parquet")
    seer(
        *("trace", "synth", "--prompts", str(args.prompts), "-G", "8", "--mean-len", "160", "--eta2", "0.6"),
        *("--within-cv", "0.5", "--max-tokens", "512", "--prompt-mean", "120", "--seed", "1", "-o", trace),
    )
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for rep in range(args.repeats):
        for name, flags in CONFIGS.items():
            out = os.path.join(args.out, name)
            s = seer(
                *("run", "--model", "dummy:smollm2", "--replay", trace, "--instances", "2", "--policy", "verl"),
                *("--max-num-seqs", "32", "--max-model-len", "1024", *flags, "--out", out),
            )
            s["busy_sum_s"] = float(pd.read_parquet(os.path.join(out, "steps.parquet"))["duration_s"].sum())
            runs[name].append(s)
            print(
                f"{rep} {name:<15} makespan {s['makespan_s']:6.2f} s  wall {s['wall_s']:6.2f} s  "
                f"launch {s['launch_s']:5.1f} s  overhead/step {s['driver_overhead_us_per_step'] or 0:8.0f} µs",
                flush=True,
            )
    fid = seer("fidelity", os.path.join(args.out, "ray-wall"))

    def med(name: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[name])

    virtual, wall = med("inproc-virtual", "makespan_s"), med("ray-wall", "makespan_s")
    report = {
        "virtual_makespan_s": virtual,
        "wall_makespan_s": wall,
        "virtual_clock_error": (virtual - wall) / wall,
        "overhead_us_per_step_inproc": med("inproc-virtual", "driver_overhead_us_per_step"),
        "overhead_us_per_step_ray": med("ray-virtual", "driver_overhead_us_per_step"),
        "launch_s_inproc": med("inproc-virtual", "launch_s"),
        "launch_s_ray": med("ray-wall", "launch_s"),
        "engine_startup_s_ray": statistics.median(x for r in runs["ray-wall"] for x in r["engine_startup_s"]),
        "busy_sum_s_ray_wall": med("ray-wall", "busy_sum_s"),
        "fidelity_ray_wall": {k: fid[k] for k in ("makespan_error", "finish_time_mape", "step_time_mape")},
        "runs": runs,
    }
    write_text_atomic(os.path.join(args.out, "..", "real_ray.json"), json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
