"""Behaviour snapshot: every policy's summary on the three paper presets and the bundled trace, through the CLI,
with a hash of each request table (every request's output length, finish time, instance, chunks, ...).

Used to show that a refactor changes no number: take a snapshot before, one after, and diff them.

    python benchmarks/snapshot.py --out out/bench/snapshot-before.json
    python benchmarks/snapshot.py --out out/bench/snapshot-after.json --diff out/bench/snapshot-before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

POLICIES = "verl,least-loaded,divided,context,oracle,streamrl-oracle,seer"
KEYS = (
    "makespan_s",
    "throughput_tok_s",
    "tail_s",
    "lower_bound_s",
    "preemptions",
    "migrations",
    "output_tokens",
    "steps",
    "epochs",
    "spec_tau",
    "requests_sha",
)
WORKLOADS = {
    "moonlight": ["--preset", "moonlight"],
    "qwen2-vl-72b": ["--preset", "qwen2-vl-72b"],
    "kimi-k2": ["--preset", "kimi-k2"],
    "gsm8k-bundled": ["--trace", "seer/data/gsm8k_smollm2.parquet", "--cluster", "qwen2-vl-72b", "--instances", "2"],
}


def compare(args: list[str], policies: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(
            [sys.executable, "-m", "seer", "compare", *args, "--policies", policies, "--json", "--out", tmp],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = json.loads(res.stdout)
        sha = {}  # policy label -> hash of its request table (one folder per policy)
        for folder in Path(tmp).iterdir():
            if (folder / "requests.parquet").exists():
                label = json.loads((folder / "summary.json").read_text())["summary"]["policy"]
                table = pd.read_parquet(folder / "requests.parquet")
                sha[label] = hashlib.sha256(pd.util.hash_pandas_object(table, index=True).values.tobytes()).hexdigest()
    return [{**r, "requests_sha": sha.get(r["policy"], "")[:16]} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--diff", help="an earlier snapshot to compare against")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    args = ap.parse_args()
    snap = {}
    for name in args.workloads.split(","):
        rows = compare(WORKLOADS[name], POLICIES)
        # partial rollout: over iterations on a preset, one rollout on a trace
        rows += compare(WORKLOADS[name] + (["--iterations", "2"] if name != "gsm8k-bundled" else []), "partial")
        snap[name] = {r["policy"]: {k: r.get(k) for k in KEYS} for r in rows}
        print(name, {p: round(v["makespan_s"], 3) for p, v in snap[name].items()}, flush=True)
    with open(args.out, "w") as fh:
        json.dump(snap, fh, indent=1)
    if args.diff:
        with open(args.diff) as fh:
            old = json.load(fh)
        print(f"{'workload':<15}{'policy':<17}{'before s':>12}{'after s':>12}{'diff %':>9}  other keys")
        for name, pols in snap.items():
            for pol, new in pols.items():
                prev = old.get(name, {}).get(pol, {})
                a, b = prev.get("makespan_s"), new["makespan_s"]
                d = 100 * (b - a) / a if a else math.nan
                other = [k for k in KEYS if k != "makespan_s" and prev.get(k) != new.get(k)]
                print(f"{name:<15}{pol:<17}{a:>12.3f}{b:>12.3f}{d:>9.4f}  {','.join(other) or 'identical'}")


if __name__ == "__main__":
    main()
