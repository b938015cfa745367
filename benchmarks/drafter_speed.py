"""Drafter speed: tokens appended + drafted per second by the group suffix drafter, compiled (numba, the
default) and the pure-Python reference, side by side with Snowflake's ArcticInference SuffixDecoding (C++ suffix
trees, configured as vLLM configures it) when it is importable, on one core.

Workload: the groups of a trace with token ids replayed the way a rollout feeds the drafter. All samples of
a group advance together, one verification step each: draft up to --gamma tokens from the group's index (scope
group), accept the prefix that matches the recorded output, append the 1 + accepted tokens. Two replays
(--replay): `row`, each sample drafts and appends in turn (a draft sees the tokens its siblings appended earlier
in the same step); `step`, as an engine step runs: every active sample of the group drafts, in one batched call
where the implementation has one, then each appends. Also timed alone: appends (every output token once).
Medians of --repeats runs, the implementations interleaved group by group within each repeat. The compiled index's
first call (numba loads or compiles its kernels, cached on disk) is timed separately, before the timed loops.

    python benchmarks/drafter_speed.py [--trace cot.parquet] [--groups 20] [--repeats 5] [--impl compiled,python,arctic]
        [--replay row,step]

Without --trace it converts ../shared/data/tot/gpt-4_0.7_naive_cot_sample_100_start900_end1000.json.
Writes out/bench/drafter_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from seer_cli import fail, shared_data

from seer.errors import SeerInputError
from seer.fileio import write_text_atomic
from seer.policies.speculation import DraftConfig, GroupDrafter, accepted_length
from seer.traces.io import load_trace

DEFAULT_LOG = shared_data("tot", "gpt-4_0.7_naive_cot_sample_100_start900_end1000.json")


ARCTIC_DEPTH = 24  # the pattern length vLLM's suffix proposer passes (max_tree_depth)
REPLAYS = {
    "row": "row by row (each sample drafts, then appends, in turn)",
    "step": "by step (every active sample drafts in one batched call, then each appends)",
}


def load_groups(path: str | None, groups: int) -> list[tuple[list[int], list[list[int]]]]:
    if path:
        try:
            df = load_trace(path)
        except SeerInputError as e:
            fail(str(e))
    else:
        from seer.traces.converters import convert

        if not os.path.exists(DEFAULT_LOG):
            where = os.path.normpath(DEFAULT_LOG)
            fail(
                f"no --trace given and the default ToT log is not beside this checkout ({where}); pass --trace with a "
                "trace that has output_ids (README: seer trace convert ... --from tot)"
            )
        df = convert(DEFAULT_LOG, "tot")
    missing = [c for c in ("prompt_ids", "output_ids") if c not in df.columns or df[c].isna().any()]
    if missing:
        fail(f"{path or DEFAULT_LOG}: the replay needs token ids; missing or incomplete: {', '.join(missing)}")
    out = []
    for _pid, sub in list(df.sort_values(["prompt_id", "sample_id"]).groupby("prompt_id", sort=True))[:groups]:
        out.append((list(map(int, sub["prompt_ids"].iloc[0])), [list(map(int, o)) for o in sub["output_ids"]]))
    return out


@dataclass(frozen=True)
class Drafting:
    """How `replay` drives one implementation. `start(prompt, n)` -> the state of a group of n samples;
    `propose(state, i, context, budget)` and `propose_rows(state, rows, contexts, budgets)` -> a draft (token ids
    or a `Draft`), one row or every row of a step; `accept(draft, truth)` -> tokens accepted; `append(state, i,
    tokens)`; `stop(state, i)` when sample i is done."""

    start: Callable
    propose: Callable
    propose_rows: Callable
    accept: Callable
    append: Callable
    stop: Callable


def replay(groups, gamma: int, depth: int, how: Drafting, lockstep: bool = False) -> dict:
    """Every group replayed as a rollout feeds a drafter: each step, every active sample drafts up to `gamma` tokens
    from the last `depth` of its context, accepts the prefix its recorded output confirms and appends 1 + accepted.
    Row by row (default) a sample drafts and appends before the next drafts; in `lockstep` every sample of the group
    drafts (one `propose_rows` call), then each appends. Returns counts and seconds."""
    appended = drafted = proposals = steps = accepted = 0
    t0 = time.perf_counter()
    for prompt, outs in groups:
        state = how.start(prompt, len(outs))
        g = [0] * len(outs)
        active = list(range(len(outs)))
        while active:
            if lockstep:
                rows = [i for i in active if len(outs[i]) - g[i] > 1]
                ctxs = [_context(prompt, outs[i], g[i], depth) for i in rows]
                budgets = [min(gamma, len(outs[i]) - g[i] - 1) for i in rows]
                drafts = dict(zip(rows, how.propose_rows(state, rows, ctxs, budgets))) if rows else {}
            still = []
            for i in active:
                out, pos = outs[i], g[i]
                budget = min(gamma, len(out) - pos - 1)
                a = 0
                if budget > 0:
                    draft = drafts[i] if lockstep else how.propose(state, i, _context(prompt, out, pos, depth), budget)
                    proposals += 1
                    drafted += len(draft)
                    a = how.accept(draft, out[pos : pos + budget])
                how.append(state, i, out[pos : pos + 1 + a])
                appended += 1 + a
                accepted += a
                steps += 1
                g[i] = pos + 1 + a
                if g[i] < len(out):
                    still.append(i)
                else:
                    how.stop(state, i)
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


def _context(prompt: list[int], out: list[int], pos: int, depth: int) -> list[int]:
    """The last `depth` tokens before output position `pos` (the prompt's tail while the output is shorter)."""
    return out[pos - depth : pos] if pos >= depth else prompt[max(0, len(prompt) - (depth - pos)) :] + out[:pos]


def group_drafting(config: DraftConfig, compiled: bool = True) -> Drafting:
    """The project's group drafter (scope group: one index per group, fed by every sample)."""

    def start(prompt, n):
        d = GroupDrafter(config, compiled=compiled)
        for i in range(n):
            d.add_request(i, 0, prompt)
        return d

    # the methods themselves, not lambdas around them: a wrapper's call would be counted as the drafter's time
    return Drafting(
        start,
        GroupDrafter.propose,
        GroupDrafter.propose_batch,
        accepted_length,
        GroupDrafter.append,
        GroupDrafter.finish,
    )


def arctic_drafting(depth: int = 24) -> Drafting:
    """ArcticInference's SuffixDecodingCache as vLLM's suffix proposer drives it: one cache per group (the siblings'
    responses are its global cache), the last `depth` tokens as the pattern, max_spec_factor 1.0, min_token_prob
    0.1 (vLLM's defaults). It has no batched call; vLLM's proposer also speculates row by row."""
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    def start(prompt, n):
        cache = SuffixDecodingCache(max_tree_depth=depth, max_cached_requests=10000)
        for i in range(n):
            cache.start_request(i, prompt)
        return cache

    def propose(cache, i, ctx, budget):
        return cache.speculate(i, ctx, max_spec_tokens=budget, max_spec_factor=1.0, min_token_prob=0.1).token_ids

    return Drafting(
        start,
        propose,
        lambda cache, rows, ctxs, budgets: [propose(cache, i, c, b) for i, c, b in zip(rows, ctxs, budgets)],
        prefix_match,  # a linear draft
        SuffixDecodingCache.add_active_response,
        SuffixDecodingCache.stop_request,
    )


def prefix_match(tokens, truth) -> int:
    """`accepted_length` for a linear draft given as a list, done the same way (the whole draft compared first)."""
    n = len(tokens)
    if len(truth) >= n and tokens == list(truth[:n]):
        return n
    n = 0
    for d, t in zip(tokens, truth):
        if d != t:
            break
        n += 1
    return n


def appends_only(groups, config: DraftConfig, compiled: bool = True) -> tuple[float, int]:
    t0, n = time.perf_counter(), 0
    for prompt, outs in groups:
        d = GroupDrafter(config, compiled=compiled)
        for i, out in enumerate(outs):
            d.add_request(i, 0, prompt)
            for j in range(0, len(out), 4):  # the paper batches a few tokens per append
                d.append(i, out[j : j + 4])
            n += len(out)
    return time.perf_counter() - t0, n


def arctic_available() -> str | None:
    """Why ArcticInference cannot be timed here, or None when it can."""
    try:
        import arctic_inference.suffix_decoding  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means the column is skipped
        return f"arctic_inference is not importable ({type(exc).__name__}: {exc})"
    return None


def _rate(run: dict) -> float:
    return (run["appended"] + run["drafted"]) / run["seconds"]


def summarise(runs: list[dict], app: list[tuple[float, int]] | None) -> dict:
    r = runs[0]
    out = {
        "appended_tokens": r["appended"],
        "drafted_tokens": r["drafted"],
        "proposals": r["proposals"],
        "tau": r["appended"] / r["steps"],
        "appended_plus_drafted_tok_per_s": statistics.median(_rate(x) for x in runs),
        "us_per_proposal_incl_append": statistics.median(x["seconds"] / x["proposals"] * 1e6 for x in runs),
        "seconds_median": statistics.median(x["seconds"] for x in runs),
    }
    if app:
        out["append_only_tok_per_s"] = statistics.median(n / s for s, n in app)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", help="trace with prompt_ids and output_ids (default: the converted ToT CoT log)")
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--gamma", type=int, default=8)
    ap.add_argument(
        "--max-occurrences", type=int, default=16, help="occurrences a draft counts (DraftConfig; seer's drafters only)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--impl", default="compiled,python,arctic", help="implementations to time, comma-separated")
    ap.add_argument(
        "--replay",
        default="row",
        help="row (default): the samples of a group draft and append one after another; step: all of them draft (one "
        "batched call), then all append, as an engine step does; or row,step",
    )
    ap.add_argument("--out", default="out/bench/drafter_speed.json")
    args = ap.parse_args()
    replays = [x.strip() for x in args.replay.split(",") if x.strip()]
    if not replays or set(replays) - {"row", "step"}:
        fail(f"--replay: {args.replay!r} is not row, step or row,step")
    impls = [x.strip() for x in args.impl.split(",") if x.strip()]
    if not impls or set(impls) - {"compiled", "python", "arctic"}:
        fail(f"--impl: {args.impl!r} names none or other than compiled, python, arctic")
    groups = load_groups(args.trace, args.groups)
    if args.max_occurrences < 1:
        fail(f"--max-occurrences: {args.max_occurrences} is not >= 1")
    config = DraftConfig(scope="group", max_occurrences=args.max_occurrences)
    skipped = {}
    if "arctic" in impls and (why := arctic_available()):
        skipped["arctic"] = why
        impls.remove("arctic")
        if not impls:
            fail(f"--impl arctic: {why}")
    t0 = time.perf_counter()
    if "compiled" in impls:  # JIT load (or compile) out of the timings: the per-row and the batched kernels
        for lockstep in (False, True):
            replay(groups[:1], args.gamma, config.max_match, group_drafting(config), lockstep)
    first_call_s = time.perf_counter() - t0
    drafting = {
        "compiled": lambda: group_drafting(config, compiled=True),
        "python": lambda: group_drafting(config, compiled=False),
        "arctic": lambda: arctic_drafting(ARCTIC_DEPTH),
    }
    depth = {"compiled": config.max_match, "python": config.max_match, "arctic": ARCTIC_DEPTH}
    timed = {
        (r, k): (lambda part, r=r, k=k: replay(part, args.gamma, depth[k], drafting[k](), lockstep=r == "step"))
        for r in ("row", "step")
        for k in drafting
    }
    runs: dict[tuple, list] = {(r, k): [] for r in replays for k in impls}
    apps: dict[str, list] = {k: [] for k in impls if k != "arctic"}
    for _ in range(args.repeats):
        # interleaved group by group (tens of ms each, the order alternating), so that the machine's drift, which
        # on a shared machine moves rates by a third within seconds, hits every implementation alike
        parts: dict[tuple, list] = {key: [] for key in runs}
        for i, group in enumerate(groups):
            for key in list(runs) if i % 2 == 0 else list(runs)[::-1]:
                parts[key].append(timed[key]([group]))
        for key, got in parts.items():
            runs[key].append({c: sum(x[c] for x in got) for c in got[0]})
        for k in apps:
            apps[k].append(appends_only(groups, config, compiled=k == "compiled"))
    result = {
        "groups": len(groups),
        "requests": sum(len(o) for _, o in groups),
        "gamma": args.gamma,
        "repeats": args.repeats,
        "compiled_first_call_s": first_call_s if "compiled" in impls else None,
        "skipped": skipped,
        "replays": {r: {k: summarise(runs[r, k], apps.get(k)) for k in impls} for r in replays},
    }
    if "row" in replays:
        result["implementations"] = result["replays"]["row"]  # the key earlier versions wrote
    for r, res in result["replays"].items():
        if "arctic" in res:
            for k in res:
                res[k]["x_arctic"] = (
                    res[k]["appended_plus_drafted_tok_per_s"] / res["arctic"]["appended_plus_drafted_tok_per_s"]
                )
                # the same ratio within each repeat (the two ran back to back), so that the machine's drift
                # between repeats cancels: its median and range
                pairs = [_rate(x) / _rate(a) for x, a in zip(runs[r, k], runs[r, "arctic"])]
                res[k]["x_arctic_pairs"] = {"median": statistics.median(pairs), "min": min(pairs), "max": max(pairs)}
    write_text_atomic(args.out, json.dumps(result, indent=2))
    print(
        f"{result['requests']:,} requests in {result['groups']} groups, gamma {args.gamma}; medians of {args.repeats}"
    )
    if result["compiled_first_call_s"] is not None:
        print(f"  compiled index first call (kernels loaded or compiled): {first_call_s:.2f} s, not timed below")
    for r, res in result["replays"].items():
        print(f"  {REPLAYS[r]}:")
        for k, x in res.items():
            extra = f", appends alone {x['append_only_tok_per_s']:,.0f} tok/s" if "append_only_tok_per_s" in x else ""
            ratio = ""
            if "x_arctic" in x and k != "arctic":
                p = x["x_arctic_pairs"]
                ratio = f", {x['x_arctic']:.2f}x arctic (per repeat {p['median']:.2f}, {p['min']:.2f}-{p['max']:.2f})"
            print(
                f"    {k:<9} tau {x['tau']:.2f}: {x['appended_plus_drafted_tok_per_s']:,.0f} appended + drafted tok/s, "
                f"{x['us_per_proposal_incl_append']:.1f} us per step{extra}{ratio}"
            )
    for k, why in skipped.items():
        print(f"  {k}: skipped, {why}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
