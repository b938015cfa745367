"""`seer spec bench`, `seer figures` and `seer sweep`: studies built on many runs."""

from __future__ import annotations

import argparse
import json
import os

from seer.cli.common import given_twice, int_at_least, int_list, name_list, number, number_in, print_json
from seer.core.traits import MAX_MATCH, MAX_TOPK
from seer.errors import SeerInputError
from seer.fileio import atomic_dir, check_output_dir, check_writable, json_safe
from seer.policies.speculation.policy import MAX_GAMMA

MAX_REFS = 1 << 20


def _bench_groups(args, have: int) -> int:
    """--groups as given (default 20), refusing more groups than the trace has and a --seed that picks nothing."""
    if args.groups is not None and args.groups > have:
        raise SeerInputError(f"--groups {args.groups}: {args.trace} has {have} groups (--groups 0 replays them all)")
    groups = 20 if args.groups is None else args.groups
    if args.seed is not None and (groups == 0 or groups >= have):  # every group replayed: no sample to draw
        raise SeerInputError(
            f"--seed draws the --groups sample; here every one of the trace's {have} groups is replayed"
        )
    return groups


def cmd_spec_bench(args) -> int:
    import pandas as pd

    from seer.studies.spec_bench import acceptance_table
    from seer.traces.io import load_trace

    # refs: other responses of a group, topk: branches per depth; the bounds keep numbers in the index's int64
    refs, topk = int_list(args.refs, "--refs", 0, MAX_REFS), int_list(args.topk, "--topk", 1, MAX_TOPK)
    name = os.path.splitext(os.path.basename(args.trace))[0]
    out = args.out if args.out is not None else os.path.join("out", "spec-bench", name)
    check_output_dir(out)  # before the replay, not after it
    trace = load_trace(args.trace)
    groups = _bench_groups(args, int(trace["prompt_id"].nunique()))
    rows = acceptance_table(
        trace,
        refs=refs,
        topk=topk,
        gamma=args.gamma,
        groups=groups,
        samples=args.samples,
        min_prob=args.min_prob,
        max_match=args.max_match,
        seed=args.seed or 0,
        source=args.trace,
    )
    with atomic_dir(out) as tmp:
        (tmp / "bench.json").write_text(json.dumps(json_safe(rows), indent=2))
        pd.DataFrame(rows).to_parquet(tmp / "bench.parquet", index=False)
    if args.json:
        print_json(rows)
        return 0
    req = rows[0]["requests"]
    print(
        f"{name}: mean acceptance length tau (bonus token included), {req:,} requests replayed, drafts up to "
        f"{args.gamma} tokens deep"
    )
    grid = {(r["refs"], r["topk"]): r for r in rows if r["drafter"] == "group-suffix"}
    # the acceptance column is for the first --topk listed, and says which
    print(f"{'refs n':>8}" + "".join(f"{'top-' + str(k):>10}" for k in topk) + f"{f'acc/draft (top-{topk[0]})':>20}")
    for n in refs:
        used = grid[(n, topk[0])]["refs_used"]
        label = f"{n}" if used == n else f"{n} (->{used})"
        print(
            f"{label:>8}"
            + "".join(f"{_ratio(grid[(n, k)]['tau']):>10}" for k in topk)
            + f"{_ratio(grid[(n, topk[0])]['accepted_per_draft']):>20}"
        )
    ng = next(r for r in rows if r["drafter"] == "ngram")
    print(
        f"{'n-gram':>8}{_ratio(ng['tau']):>10}  (vLLM-style prompt lookup over the request's own context, k = "
        f"{args.gamma})"
    )
    print(f"results: {out}/ (bench.json, bench.parquet)")
    return 0


def _ratio(x: float) -> str:
    """A ratio for the table; n/a where it is undefined (no step or no draft: every response empty)."""
    return number(x, ".2f")


def _check_figure_folder(out: str) -> None:
    """Figures are written into --out beside what is there; refuse, before the work, a folder they cannot go to."""
    if not out:  # '' wrote the figures into the current folder
        raise SeerInputError("the output folder's path is empty (--out '')")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise SeerInputError(f"--out {out}: exists and is not a folder")
    ours = [f for f in (".seer-output", "run.json", "sweep.parquet", "cells") if os.path.exists(os.path.join(out, f))]
    if ours:
        # a result, recorded-run or sweep folder: figures beside its files made it one seer later refused as foreign
        raise SeerInputError(
            f"--out {out}: is a seer result, run or sweep folder (it holds {ours[0]}); write the figures to a folder "
            "of their own"
        )
    check_writable(out)  # figures are staged inside it


def cmd_figures(args) -> int:
    from seer.figures import PRESETS, make_figures
    from seer.presets import presets as known
    from seer.runs import load_run

    presets = list(PRESETS) if args.presets is None else name_list(args.presets, "--presets")
    bad = [p for p in presets if p not in known()]
    if not presets or bad:  # checked before anything is computed or written
        raise SeerInputError(
            f"--presets: {'unknown ' + ', '.join(map(repr, bad)) if bad else 'empty list'}; known: {', '.join(known())}"
        )
    twice = sorted({p for p in presets if presets.count(p) > 1}) + given_twice(args.run or ())
    if twice:  # a preset twice ended in a pandas error after the work; a run twice was drawn twice
        raise SeerInputError(f"figures: {', '.join(map(repr, twice))} given more than once")
    _check_figure_folder(args.out)
    for run in args.run or ():
        load_run(run)  # every file read and checked before hours of figures, not after
    files = make_figures(args.out, presets=presets, prompts=args.prompts, runs=args.run or (), progress=None)
    print(f"wrote {len(files)} files to {args.out}/")
    if not args.run:
        print("no --run given: the sim-vs-real parity plot needs recorded runs (`seer run ... --out DIR`)")
    return 0


def table_number(x: float) -> str:
    """A sweep table's float: whole above 1,000 (1,801 s, not 3 figures' 1.8e+03), else 4 significant figures."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def cmd_sweep(args) -> int:
    from seer.sweep import run_sweep

    out = (
        args.out
        if args.out is not None
        else os.path.join("out", "sweep", os.path.splitext(os.path.basename(args.config))[0])
    )
    table = run_sweep(args.config, out, use_ray=args.ray, workers=args.workers, progress=None)
    if args.json:
        print_json(table.to_dict(orient="records"))
    else:
        shown = table.drop(columns=["speculation"])  # a paragraph per row: said once below the table
        print(shown.to_string(index=False, float_format=table_number))
        labels = table.dropna(subset=["speculation"]).groupby("speculation", sort=False)["policy"].unique()
        for label, policies in labels.items():
            print(f"speculation ({', '.join(policies)}): {label}")
        reused = table.attrs.get("reused", 0)
        ran = f"{reused} read back from an earlier run, {len(table) - reused} computed" if reused else "all computed"
        print(f"results: {out}/sweep.parquet ({len(table)} cells: {ran}; finished cells are kept in {out}/cells/)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    spec = sub.add_parser(
        "spec",
        help="speculative decoding studies on traces with token ids",
        description="Grouped speculative decoding: offline acceptance studies.",
    )
    ssub = spec.add_subparsers(dest="spec_command", required=True, metavar="ACTION")
    p = ssub.add_parser(
        "bench",
        help="acceptance length vs group references and top-k (the paper's Table 2)",
        description="Replay every sampled request's recorded output against drafts from its own "
        "history plus n complete responses of its group; report tau per (n, top-k) and a "
        "vLLM-style n-gram baseline.",
    )
    p.add_argument("--trace", required=True, help="trace with output_ids (e.g. a converted Tree-of-Thoughts log)")
    p.add_argument(
        "--refs", default="0,1,5,15", help=f"reference counts n, comma-separated (default 0,1,5,15; at most {MAX_REFS})"
    )
    p.add_argument(
        "--topk", default="1,2,4", help=f"branches per depth, comma-separated (default 1,2,4; at most {MAX_TOPK})"
    )
    p.add_argument(
        "--gamma",
        type=int_at_least(1, MAX_GAMMA),
        default=8,
        help=f"draft depth per step (default 8, at most {MAX_GAMMA})",
    )
    p.add_argument(
        "--groups",
        type=int_at_least(0),
        help="groups to replay, drawn at random (default 20, as the paper, or all the trace has; 0 = all)",
    )
    p.add_argument("--samples", type=int_at_least(0), default=16, help="samples per group (default 16; 0 = all)")
    p.add_argument("--min-prob", type=number_in(0, 1), default=0.1, help="draft probability cut-off (default 0.1)")
    p.add_argument(
        "--max-match",
        type=int_at_least(1, MAX_MATCH),
        default=8,
        help=f"longest context suffix matched (default 8, at most {MAX_MATCH})",
    )
    p.add_argument("--seed", type=int_at_least(0), help="seed for the group sample (default 0)")
    p.add_argument("--out", help="result folder (default out/spec-bench/TRACE)")
    p.add_argument("--json", action="store_true", help="print a list of {refs, topk, tau, accepted_per_draft, ...}")
    p.set_defaults(func=cmd_spec_bench)

    p = sub.add_parser(
        "figures",
        help="regenerate the paper-style figures (PNG and PDF)",
        description="Length CDF and heatmap, acceptance length vs references (Table 2), throughput and "
        "tail bars, cumulative ablation, oracle comparison, KV timelines, and a sim-vs-real "
        "parity plot for recorded runs.",
    )
    p.add_argument("--out", default="out/figures", help="output folder (default out/figures)")
    p.add_argument("--presets", help="comma-separated paper presets (default all three)")
    p.add_argument("--prompts", type=int_at_least(1), help="prompts per preset workload (default: the paper's)")
    p.add_argument("--run", action="append", help="a recorded real run folder for the parity plot (repeatable)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser(
        "sweep",
        help="a grid of simulations on a process pool or a Ray cluster",
        description="Run presets x policies x parameters x seeds (see seer/sweep.py for the TOML "
        "format). Finished cells are kept, so an interrupted sweep resumes.",
    )
    p.add_argument("config", help="sweep TOML")
    p.add_argument("--out", help="result folder (default out/sweep/CONFIG)")
    p.add_argument("--ray", action="store_true", help="run the cells on Ray (also when RAY_ADDRESS is set)")
    p.add_argument("--workers", type=int_at_least(1), help="local processes (default: one per core)")
    p.add_argument("--json", action="store_true", help="print the table as JSON records")
    p.set_defaults(func=cmd_sweep)
