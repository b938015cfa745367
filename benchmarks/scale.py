"""Scale: wall time, peak memory and cost per scheduling event of every policy at 10K, 100K and 1M requests.

    python benchmarks/scale.py [--sizes 10000,100000,1000000] [--policies verl,context] [--instances 64]

Each (size, policy) runs in its own process (`/usr/bin/time`-style peak RSS from `resource`), on a synthetic
trace of G = 8 (mean 4,096 tokens, max 32,768, eta2 0.6) on the Moonlight preset with `--instances` instances,
scaled with the trace (64 at 100K) so the load per instance stays the same. Writes out/bench/scale.json and
prints a Markdown table for docs/simulator.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from seer.fileio import write_text_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one(size: int, policy: str, instances: int, out: str) -> dict:
    """Run in a child process: synthesize, simulate, report."""
    from seer.experiment import Setup, run
    from seer.sim.cluster import load_cluster
    from seer.traces.synth import SynthConfig, synthesize

    t0 = time.perf_counter()
    trace = synthesize(SynthConfig(prompts=size // 8, group_size=8, mean_len=4096, max_tokens=32768, seed=0))
    t1 = time.perf_counter()
    setup = Setup(trace, load_cluster("moonlight", instances=instances), "scale")
    summary = run(setup, policy, progress=False).summary
    t2 = time.perf_counter()
    events = summary["epochs"] + summary["preemptions"] + summary["chunks"]  # a chunk: one dispatch, one finish
    return {
        "requests": summary["requests"],
        "policy": policy,
        "instances": instances,
        "synth_s": t1 - t0,
        "simulate_s": t2 - t1,
        "wall_s": t2 - t0,
        "epochs": summary["epochs"],
        "preemptions": summary["preemptions"],
        "chunks": summary["chunks"],
        "events": events,
        "us_per_event": 1e6 * (t2 - t1) / max(1, events),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "makespan_s": summary["makespan_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--policies", default="verl,context")
    ap.add_argument("--per-100k", type=int, default=64, help="instances per 100K requests (default 64)")
    ap.add_argument("--out", default="out/bench/scale.json")
    ap.add_argument("--child", nargs=3, metavar=("SIZE", "POLICY", "INSTANCES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        size, policy, inst = args.child
        print(json.dumps(one(int(size), policy, int(inst), args.out)))
        return
    rows = []
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        inst = max(1, round(args.per_100k * size / 100_000))
        for policy in args.policies.split(","):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(size), policy, str(inst)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if proc.returncode != 0:
                print(f"{size} {policy}: failed\n{proc.stderr[-2000:]}", flush=True)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            write_text_atomic(args.out, json.dumps(rows, indent=2))  # a long run keeps what it measured so far
            print(
                f"{size:>9,} {policy:<10} {inst:>4} inst  simulate {row['simulate_s']:8.1f} s  "
                f"synth {row['synth_s']:6.1f} s  peak {row['peak_rss_gib']:5.2f} GiB  "
                f"{row['us_per_event']:7.1f} µs/event",
                flush=True,
            )
    print("\n| requests | instances | policy | simulate s | synth s | peak RSS GiB | events | µs per event |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['requests']:,} | {r['instances']} | {r['policy']} | {r['simulate_s']:.1f} | {r['synth_s']:.1f} | "
            f"{r['peak_rss_gib']:.2f} | {r['events']:,} | {r['us_per_event']:.1f} |"
        )


if __name__ == "__main__":
    main()
