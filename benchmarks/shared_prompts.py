"""Long shared prompts, short outputs, prefix caching on: how many requests each policy runs at once.

    python benchmarks/shared_prompts.py [--policies verl,divided,context,oracle] [--out out/bench/shared_prompts.json]

4 groups x 16 samples of a 12,000-token prompt with 1-39 output tokens (uniform, seed 0), on two qwen2.5-1.5b
instances of 65,536 KV tokens (16-token blocks) with the prefix cache. The samples of a group on one instance hold
the prompt's blocks once, so the memory holds many more of them than their worst cases add up to. Prints and
writes each policy's makespan, mean running requests, preemptions and prefill work (docs/scheduling.md).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from seer.experiment import Setup, run
from seer.fileio import write_text_atomic
from seer.sim.cluster import ClusterConfig


def workload() -> tuple[pd.DataFrame, ClusterConfig]:
    rng = np.random.default_rng(0)
    rows = [(g, s, 12_000, int(rng.integers(1, 40)), 64) for g in range(4) for s in range(16)]
    trace = pd.DataFrame(rows, columns=["prompt_id", "sample_id", "prompt_len", "output_len", "max_tokens"])
    cluster = ClusterConfig(
        name="shared-prompts",
        model="qwen2.5-1.5b",
        instances=2,
        kv_capacity_tokens=65_536,
        block_size=16,
        max_num_seqs=256,
        prefix_cache=True,
        max_tokens=64,
    )
    return trace, cluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="verl,divided,context,oracle")
    ap.add_argument("--out", default="out/bench/shared_prompts.json")
    args = ap.parse_args()
    trace, cluster = workload()
    rows = {}
    print(f"{'policy':<10}{'makespan s':>12}{'mean running':>14}{'preemptions':>13}{'prefill tokens':>16}")
    for policy in args.policies.split(","):
        s = run(Setup(trace, cluster, "shared-prompts"), policy, progress=False).summary
        keys = ("makespan_s", "mean_running", "preemptions", "prefill_tokens")
        rows[policy] = {k: s[k] for k in keys}
        print(
            f"{policy:<10}{s['makespan_s']:>12.3f}{s['mean_running']:>14.1f}{s['preemptions']:>13}{s['prefill_tokens']:>16,}"
        )
    write_text_atomic(args.out, json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
