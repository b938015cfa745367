"""Speculative decoding on real vLLM engines: tau and throughput for no speculation, vLLM's ngram drafter and
the project's group drafter (custom_class), on SmolLM2 groups of GSM8K questions.

Each configuration runs `seer run` in its own process (an in-process engine built after an ngram engine in the
same process crashes vLLM's CPU kernel registry). One instance, virtual clock, same prompts, sampling and
seed; throughput = output tokens / makespan (the instance's measured step time).

    python benchmarks/real_spec.py --prompts test.jsonl [--limit 16] [--group 8] [--max-tokens 384] [--spec-tokens 4]

`--prompts`: GSM8K's test.jsonl (github.com/openai/grade-school-math, grade_school_math/data/); beside a developer
checkout, the shared data folder's copy.

Writes out/bench/real_spec.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from seer_cli import fail, shared_data

from seer.fileio import write_text_atomic

PROMPTS_DEFAULT = shared_data("gsm8k", "test.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", help="GSM8K test.jsonl (see the docstring)")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=384)
    ap.add_argument("--spec-tokens", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--out", default="out/bench/real_spec")
    args = ap.parse_args()
    args.prompts = args.prompts or PROMPTS_DEFAULT
    if not os.path.isfile(args.prompts):
        fail(f"--prompts {args.prompts}: no such prompt file (GSM8K's test.jsonl)")
    rows = []
    for method in ("none", "ngram", "group"):
        out = os.path.join(args.out, method)
        cmd = [
            sys.executable,
            "-m",
            "seer",
            "run",
            "--model",
            "smollm2",
            "--prompts",
            args.prompts,
            "--limit",
            str(args.limit),
            "--group",
            str(args.group),
            "--instances",
            "1",
            "--policy",
            "context",
            "--max-tokens",
            str(args.max_tokens),
            "--temperature",
            str(args.temperature),
            "--top-p",
            "0.9",
            "--max-num-seqs",
            "256",
            "--speculation",
            method,
            *(["--spec-tokens", str(args.spec_tokens)] if method != "none" else []),  # refused where nothing drafts
            "--out",
            out,
            "--json",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{method}: {res.stderr[-2000:]}")
        s = json.loads(res.stdout)
        rows.append(
            {
                "method": method,
                "tau": s.get("spec_tau", 1.0),
                "throughput_tok_s": s["throughput_tok_s"],
                "makespan_s": s["makespan_s"],
                "output_tokens": s["output_tokens"],
                "drafts": s.get("spec_drafts", 0),
                "accepted": s.get("spec_accepted_tokens", 0),
            }
        )
        print(
            f"{method:>6}: tau {rows[-1]['tau']:.2f}, {s['throughput_tok_s']:,.0f} tok/s, "
            f"makespan {s['makespan_s']:.1f} s, "
            f"{s['output_tokens']:,} tokens",
            flush=True,
        )
    base = rows[0]["throughput_tok_s"]
    for r in rows:
        r["speedup"] = r["throughput_tok_s"] / base
    write_text_atomic(args.out + ".json", json.dumps({"config": vars(args), "rows": rows}, indent=2))
    print("| drafter | tau | tok/s | × none |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['tau']:.2f} | {r['throughput_tok_s']:,.0f} | {r['speedup']:.2f} |")


if __name__ == "__main__":
    main()
