"""Real vs simulated: verl and context on a long-tail length-replay workload, 4 real vLLM instances (SmolLM2's
shape with random weights), then `seer fidelity` on each run.

    python benchmarks/real_fidelity.py [--prompts 24] [--group 8] [--mean-len 160]

The workload is `seer trace synth` (log-normal lengths with a group factor: a long tail). Writes
out/bench/real_fidelity.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os

from seer_cli import seer_json as seer

from seer.fileio import write_text_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--mean-len", type=float, default=160)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--out", default="out/bench/real_fidelity")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    trace = os.path.join(args.out, "longtail.parquet")
    seer(
        "trace",
        "synth",
        "--prompts",
        str(args.prompts),
        "-G",
        str(args.group),
        "--mean-len",
        str(args.mean_len),
        "--eta2",
        "0.6",
        "--within-cv",
        "0.5",
        "--max-tokens",
        str(args.max_tokens),
        "--prompt-mean",
        "120",
        "--prompt-cv",
        "0.3",
        "-o",
        trace,
    )
    stats = seer("trace", "stats", trace, "--no-ngrams")
    rows = []
    for policy in ("verl", "context"):
        out = os.path.join(args.out, policy)
        run = seer(
            "run",
            "--model",
            "dummy:smollm2",
            "--replay",
            trace,
            "--instances",
            str(args.instances),
            "--policy",
            policy,
            *(("--chunk-size", "128") if policy != "verl" else ()),  # verl does not chunk: seer run refuses it
            "--max-model-len",
            "2048",
            "--max-num-seqs",
            "64",
            "--out",
            out,
        )
        fid = seer("fidelity", out)
        rows.append(
            {
                "policy": policy,
                "real_makespan_s": run["makespan_s"],
                "sim_makespan_s": fid["sim_makespan_s"],
                "makespan_error": fid["makespan_error"],
                "finish_time_mape": fid["finish_time_mape"],
                "step_time_mape": fid["step_time_mape"],
                "step_time_mape_heldout": fid["step_time_mape_heldout"],
                "real_tail_s": run["tail_s"],
                "steps": fid["steps"],
                "wall_s": run["wall_s"],
            }
        )
        print(
            f"{policy}: real {run['makespan_s']:.1f} s, sim {fid['sim_makespan_s']:.1f} s "
            f"({100 * fid['makespan_error']:+.1f}%), finish MAPE {100 * fid['finish_time_mape']:.1f}%, "
            f"step MAPE {100 * fid['step_time_mape']:.1f}%",
            flush=True,
        )
    write_text_atomic(
        args.out + ".json", json.dumps({"config": vars(args), "trace_stats": stats, "rows": rows}, indent=2)
    )
    print("| policy | real makespan s | simulated s | makespan error | finish-time error | step MAPE (held-out) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['policy']} | {r['real_makespan_s']:.1f} | {r['sim_makespan_s']:.1f} | "
            f"{100 * r['makespan_error']:+.1f}% | {100 * r['finish_time_mape']:.1f}% | "
            f"{100 * r['step_time_mape']:.1f}% ({100 * r['step_time_mape_heldout']:.1f}%) |"
        )
    v, c = rows
    print(
        f"context / verl makespan: real {c['real_makespan_s'] / v['real_makespan_s']:.2f}, "
        f"simulated {c['sim_makespan_s'] / v['sim_makespan_s']:.2f}"
    )


if __name__ == "__main__":
    main()
