"""Drafter speed: tokens appended + drafted per second by the group suffix drafter, single-threaded pure
Python (no compiled code, no numpy in the hot path), on one core.

Workload: the groups of a trace with token ids replayed the way a rollout feeds the drafter. All samples of
a group advance together, one verification step each in turn: draft up to --gamma tokens from the group's
index (scope group), accept the prefix that matches the recorded output, append the 1 + accepted tokens.
Also timed alone: appends (every output token once) and drafts. Medians of --repeats runs.

    python benchmarks/drafter_speed.py [--trace cot.parquet] [--groups 20] [--repeats 5]

Without --trace it converts ../shared/data/tot/gpt-4_0.7_naive_cot_sample_100_start900_end1000.json.
Writes out/bench/drafter_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from seer.fileio import write_text_atomic
from seer.policies.speculation import DraftConfig, GroupDrafter, accepted_length
from seer.traces.io import load_trace

DEFAULT_LOG = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "shared",
    "data",
    "tot",
    "gpt-4_0.7_naive_cot_sample_100_start900_end1000.json",
)


def load_groups(path: str | None, groups: int) -> list[tuple[list[int], list[list[int]]]]:
    if path:
        df = load_trace(path)
    else:
        from seer.traces.converters import convert

        df = convert(DEFAULT_LOG, "tot")
    out = []
    for _pid, sub in list(df.sort_values(["prompt_id", "sample_id"]).groupby("prompt_id", sort=True))[:groups]:
        out.append((list(map(int, sub["prompt_ids"].iloc[0])), [list(map(int, o)) for o in sub["output_ids"]]))
    return out


def rollout_replay(groups, gamma: int, config: DraftConfig) -> dict:
    """Interleaved draft + append over every group; returns counts and seconds."""
    appended = drafted = proposals = steps = accepted = 0
    m = config.max_match
    t0 = time.perf_counter()
    for prompt, outs in groups:
        d = GroupDrafter(config)
        for i in range(len(outs)):
            d.add_request(i, 0, prompt)
        g = [0] * len(outs)
        active = list(range(len(outs)))
        while active:
            still = []
            for i in active:
                out, pos = outs[i], g[i]
                budget = min(gamma, len(out) - pos - 1)
                a = 0
                if budget > 0:
                    ctx = out[pos - m : pos] if pos >= m else prompt[max(0, len(prompt) - (m - pos)) :] + out[:pos]
                    draft = d.propose(i, ctx, budget)
                    proposals += 1
                    drafted += len(draft)
                    a = accepted_length(draft, out[pos : pos + budget])
                d.append(i, out[pos : pos + 1 + a])
                appended += 1 + a
                accepted += a
                steps += 1
                g[i] = pos + 1 + a
                if g[i] < len(out):
                    still.append(i)
                else:
                    d.finish(i)
            active = still
    sec = time.perf_counter() - t0
    return {
        "seconds": sec,
        "appended": appended,
        "drafted": drafted,
        "proposals": proposals,
        "steps": steps,
        "accepted": accepted,
    }


def appends_only(groups, config: DraftConfig) -> tuple[float, int]:
    t0, n = time.perf_counter(), 0
    for prompt, outs in groups:
        d = GroupDrafter(config)
        for i, out in enumerate(outs):
            d.add_request(i, 0, prompt)
            for j in range(0, len(out), 4):  # the paper batches a few tokens per append
                d.append(i, out[j : j + 4])
            n += len(out)
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", help="trace with prompt_ids and output_ids (default: the converted ToT CoT log)")
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--gamma", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="out/bench/drafter_speed.json")
    args = ap.parse_args()
    groups = load_groups(args.trace, args.groups)
    config = DraftConfig(scope="group")
    runs = [rollout_replay(groups, args.gamma, config) for _ in range(args.repeats)]
    app = [appends_only(groups, config) for _ in range(args.repeats)]
    r = runs[0]
    rate = statistics.median((x["appended"] + x["drafted"]) / x["seconds"] for x in runs)
    append_rate = statistics.median(n / s for s, n in app)
    result = {
        "implementation": "pure Python (dict-of-lists m-gram index, one core)",
        "groups": len(groups),
        "requests": sum(len(o) for _, o in groups),
        "gamma": args.gamma,
        "repeats": args.repeats,
        "appended_tokens": r["appended"],
        "drafted_tokens": r["drafted"],
        "proposals": r["proposals"],
        "tau": r["appended"] / r["steps"],
        "appended_plus_drafted_tok_per_s": rate,
        "us_per_proposal_incl_append": statistics.median(x["seconds"] / x["proposals"] * 1e6 for x in runs),
        "append_only_tok_per_s": append_rate,
        "seconds_median": statistics.median(x["seconds"] for x in runs),
    }
    write_text_atomic(args.out, json.dumps(result, indent=2))
    print(
        f"{result['requests']:,} requests in {result['groups']} groups, gamma {args.gamma}, tau {result['tau']:.2f}; "
        f"medians of {args.repeats}"
    )
    print(
        f"  appended + drafted: {rate:,.0f} tokens/s  ({r['appended']:,} appended + {r['drafted']:,} drafted "
        f"in {result['seconds_median']:.2f} s; {result['us_per_proposal_incl_append']:.1f} us per step incl. append)"
    )
    print(f"  appends alone:      {append_rate:,.0f} tokens/s")
    print(f"  goal >= 200,000 tokens/s appended + drafted: {'met' if rate >= 200_000 else 'NOT met'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
