"""Record the real runs the fidelity matrix checks against (`benchmarks/fidelity_matrix.py`), with `seer run`.

    python benchmarks/fidelity_record.py [--only NAME,...] [--prompts test.jsonl]

`--prompts`: GSM8K's test.jsonl (github.com/openai/grade-school-math), needed by gsm8k-verl-2i; beside a developer
checkout, the shared data folder's copy.

Five recordings that differ in policy, instance count, max tokens, KV size and generation (real SmolLM2 text or
a length replay on SmolLM2's shape with random weights):

- gsm8k-verl-2i: the bundled recording's command (real generation, 128 GSM8K questions x 8, verl, 2 instances);
- longtail-verl-4i / longtail-context-4i: one long-tail length replay under verl and context on 4 instances
  (the policy-ranking pair);
- gsm8k-context-3i: a length replay of the bundled trace under context on 3 instances, max 512 tokens;
- kv-verl-2i: a long-tail replay on 2 instances, max 512 tokens, with a KV cache of 96 blocks each, so vLLM
  preempts.

Each run is written under out/fidelity/NAME, then kept small under benchmarks/data/fidelity/NAME (the trace
without token ids; GSM8K's questions are not kept). Recording takes about 50 minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import pandas as pd
from seer_cli import fail, shared_data
from seer_cli import seer_text as seer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "benchmarks", "data", "fidelity")
GSM8K = shared_data("gsm8k", "test.jsonl")
BUNDLED = os.path.join(ROOT, "seer", "data", "gsm8k_smollm2.parquet")
COMMON = ("--max-model-len", "2048")


def recordings(prompts: str, longtail: str) -> dict[str, tuple[tuple[str, ...], dict]]:
    """name -> (seer run arguments, extra environment)."""
    replay = ("--model", "dummy:smollm2", "--replay")
    return {
        "gsm8k-verl-2i": (
            ("--model", "smollm2", "--prompts", prompts, "--limit", "128", "--group", "8", "--instances", "2")
            + ("--policy", "verl", "--max-tokens", "640", "--temperature", "0.6", "--top-p", "0.9")
            + ("--max-num-seqs", "128"),
            {"VLLM_CPU_KVCACHE_SPACE": "4"},
        ),
        "longtail-verl-4i": (
            replay + (longtail, "--instances", "4", "--policy", "verl", "--max-num-seqs", "64"),
            {},
        ),
        "longtail-context-4i": (
            replay
            + (longtail, "--instances", "4", "--policy", "context", "--chunk-size", "128")
            + ("--max-num-seqs", "64"),
            {},
        ),
        "gsm8k-context-3i": (
            replay
            + (BUNDLED, "--limit", "48", "--instances", "3", "--policy", "context", "--max-tokens", "512")
            + ("--max-num-seqs", "48"),
            {},
        ),
        "kv-verl-2i": (
            replay
            + (longtail, "--limit", "12", "--instances", "2", "--policy", "verl", "--max-tokens", "512")
            + ("--max-num-seqs", "32", "--kv-blocks", "96"),
            {},
        ),
    }


def _no_paths(value):
    """Every absolute path in a JSON value reduced to its file name (no machine's folders in committed data)."""
    if isinstance(value, dict):
        return {k: _no_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_paths(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.basename(os.path.normpath(value))
    return value


def strip_local_paths(path: str) -> None:
    if os.path.exists(path):
        with open(path) as fh:
            doc = json.load(fh)
        with open(path, "w") as fh:
            json.dump(_no_paths(doc), fh, indent=2)


def keep_small(run_dir: str, dest: str) -> None:
    """The files `seer fidelity` reads, the trace without token ids."""
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in ("run.json", "summary.json", "steps.parquet", "requests.parquet", "timeline.parquet", "config.json"):
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copy(os.path.join(run_dir, name), tmp)
    trace = pd.read_parquet(os.path.join(run_dir, "trace.parquet"))
    trace.drop(columns=[c for c in ("output_ids", "prompt_ids") if c in trace]).to_parquet(
        os.path.join(tmp, "trace.parquet"), index=False
    )
    for name in ("run.json", "summary.json"):
        strip_local_paths(os.path.join(tmp, name))
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated recording names")
    ap.add_argument("--prompts", default=GSM8K, help="GSM8K test.jsonl (for the real-generation recording)")
    ap.add_argument("--out", default="out/fidelity")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else None
    if (names is None or "gsm8k-verl-2i" in names) and not os.path.isfile(args.prompts):
        fail(f"--prompts {args.prompts}: no such file (GSM8K test.jsonl)")
    os.makedirs(args.out, exist_ok=True)
    longtail = os.path.join(args.out, "longtail.parquet")
    seer(
        *("trace", "synth", "--prompts", "24", "-G", "8", "--mean-len", "160", "--eta2", "0.6", "--within-cv", "0.5"),
        *("--max-tokens", "1024", "--prompt-mean", "120", "--prompt-cv", "0.3", "--seed", "3", "-o", longtail),
    )
    todo = recordings(args.prompts, longtail)
    names = names or list(todo)
    for name in names:
        run_args, env = todo[name]
        out = os.path.join(args.out, name)
        print(f"{name}: seer run {' '.join(run_args)}", flush=True)
        seer("run", *run_args, *COMMON, "--out", out, "--json", env=env)
        keep_small(out, os.path.join(DATA, name))
        summary = json.load(open(os.path.join(out, "summary.json")))["summary"]
        print(f"  makespan {summary['makespan_s']:.1f} s, {summary['steps']} steps, wall {summary['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
