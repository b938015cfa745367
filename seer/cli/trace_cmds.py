"""`seer trace convert | synth | stats | validate`: rollout traces."""

from __future__ import annotations

import argparse
import os

from seer.cli.common import int_at_least, number, print_json, print_table
from seer.errors import SeerInputError


def cmd_convert(args) -> int:
    import pandas as pd

    from seer.traces.converters import convert, parse_mapping
    from seer.traces.io import check_trace_output, save_trace, validate_trace

    check_trace_output(args.out)  # before the input is read
    if os.path.exists(args.path) and os.path.exists(args.out) and os.path.samefile(args.path, args.out):
        raise SeerInputError(f"-o {args.out}: is the input itself; write the converted trace elsewhere")
    if args.prompts is not None and args.source != "tot":  # else ignored without a word
        raise SeerInputError(f"--prompts is the prompt file of --from tot, not of --from {args.source}")
    if args.map and args.source not in ("csv", "jsonl"):
        raise SeerInputError(f"--map renames the columns of --from csv or jsonl, not of --from {args.source}")
    mapping = parse_mapping(args.map)
    df = convert(args.path, args.source, mapping=mapping, prompts=args.prompts)
    if args.max_tokens is not None:
        lengths = df["output_len"] if "output_len" in df.columns else pd.Series(dtype=object)
        # numbers only: a column of text or booleans is the file's fault, which validate_trace names below
        numeric = pd.api.types.is_numeric_dtype(lengths) and not pd.api.types.is_bool_dtype(lengths)
        longer = df.index[lengths > args.max_tokens] if numeric else []
        if len(longer):  # the flag is at fault, not the file (named by request: converting may reorder rows)
            pid, sid, n = df.loc[longer[0], ["prompt_id", "sample_id", "output_len"]].tolist()  # Python values
            raise SeerInputError(
                f"--max-tokens {args.max_tokens:,} is below the output_len {n:,} of prompt {pid!r} sample {sid} in "
                f"{args.path}"
            )
        df["max_tokens"] = args.max_tokens
    df = validate_trace(df, args.path)
    meta = {"source": args.source, "converted_from": str(args.path)}
    if "output_ids" in df.columns:
        meta["tokenizer"] = "smollm2"
    save_trace(df, args.out, meta=meta)
    summary = {"out": str(args.out), "groups": int(df["prompt_id"].nunique()), "samples": len(df)}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {args.out}: {summary['groups']:,} groups, {summary['samples']:,} samples")
    return 0


def cmd_synth(args) -> int:
    from seer.traces.io import check_trace_output, save_trace
    from seer.traces.stats import trace_stats
    from seer.traces.synth import SynthConfig, preset_config, synthesize

    out = args.out if args.out is not None else f"{args.preset or 'synth'}.parquet"  # '' is refused, not replaced
    check_trace_output(out)  # before the generator runs: its warnings would otherwise precede the error
    knobs = dict(
        prompts=args.prompts,
        group_size=args.group_size,
        mean_len=args.mean_len,
        eta2=args.eta2,
        within_cv=args.within_cv,
        max_tokens=args.max_tokens,
        prompt_mean=args.prompt_mean,
        prompt_cv=args.prompt_cv,
        seed=args.seed,
    )
    if args.preset:
        cfg = preset_config(args.preset, **knobs)
    else:
        cfg = SynthConfig(**{k: v for k, v in knobs.items() if v is not None})
    df = synthesize(cfg, progress=None)
    save_trace(df, out, meta={"source": "synth", "preset": args.preset, "config": cfg.__dict__})
    stats = trace_stats(df, ngrams=False)
    if args.json:
        print_json({"out": out, **stats})
    else:
        print(
            f"wrote {out}: {stats['groups']:,} groups x G={cfg.group_size}, {stats['samples']:,} samples, "
            f"mean {stats['mean_len']:,.0f} tokens, eta2 {number(stats['eta2'], '.3f')}, within-group CV "
            f"{number(stats['within_cv'], '.3f')}"
        )
    return 0


def cmd_stats(args) -> int:
    from seer.traces.io import load_trace
    from seer.traces.stats import trace_stats

    df = load_trace(args.path)
    if args.no_ngrams and "output_ids" not in df.columns:
        raise SeerInputError(f"--no-ngrams: {args.path} has no output_ids, so there are no n-gram statistics to skip")
    stats = trace_stats(df, ngrams=not args.no_ngrams)
    if args.json:
        print_json(stats)
    else:
        print_table(f"{args.path}", stats)
    return 0


def cmd_validate(args) -> int:
    from seer.traces.io import load_trace

    df = load_trace(args.path)
    summary = {
        "path": str(args.path),
        "valid": True,
        "groups": int(df["prompt_id"].nunique()),
        "samples": len(df),
        "columns": [str(c) for c in df.columns],
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"{args.path}: valid, {summary['groups']:,} groups, {summary['samples']:,} samples, "
            f"columns: {', '.join(summary['columns'])}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from seer.traces.converters import SOURCES

    trace = sub.add_parser(
        "trace",
        help="convert, synthesise, validate and measure rollout traces",
        description="Work with rollout traces (Parquet, CSV or JSONL in seer's schema).",
    )
    tsub = trace.add_subparsers(dest="trace_command", required=True, metavar="ACTION")

    p = tsub.add_parser(
        "convert",
        help="convert a public trace into seer's schema",
        description="Convert a trace. Sources: tot (Tree-of-Thoughts sample logs, tokenised with SmolLM2), "
        "mooncake, azure, or any csv/jsonl with --map.",
    )
    p.add_argument("path", help="input file")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="input format")
    p.add_argument("-o", "--out", required=True, help="output trace (.parquet, .csv or .jsonl)")
    p.add_argument(
        "--map",
        action="append",
        metavar="COLUMN=SOURCE",
        help="for csv/jsonl: take schema COLUMN from SOURCE column (repeatable)",
    )
    p.add_argument(
        "--prompts",
        help="for tot: the prompt file (default: 24.csv or data_100_random_text.txt beside the log, or where a clone"
        " of tree-of-thought-llm keeps it)",
    )
    p.add_argument("--max-tokens", type=int_at_least(1), help="set max_tokens on every row")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_convert)

    p = tsub.add_parser(
        "synth",
        help="generate a synthetic grouped trace",
        description="Generate groups whose lengths share a group-level factor. A --preset sets every "
        "knob from a paper setup; explicit knobs override it.",
    )
    p.add_argument("--preset", help="paper setup (see `seer presets`)")
    p.add_argument("-o", "--out", help="output trace (default: PRESET.parquet)")
    p.add_argument("--prompts", type=int, help="number of prompts (groups)")
    p.add_argument("--group-size", "-G", type=int, help="samples per prompt (G)")
    p.add_argument("--mean-len", type=float, help="mean output length in tokens")
    p.add_argument("--eta2", type=float, help="share of length variance explained by the group, in [0, 1)")
    p.add_argument("--within-cv", type=float, help="mean within-group coefficient of variation, in (0, 3]")
    p.add_argument("--max-tokens", type=int, help="generation cap")
    p.add_argument("--prompt-mean", type=float, help="mean prompt length (log-normal)")
    p.add_argument("--prompt-cv", type=float, help="prompt length CV (0 = all equal)")
    p.add_argument("--seed", type=int_at_least(0), help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the trace statistics as JSON")
    p.set_defaults(func=cmd_synth)

    p = tsub.add_parser(
        "stats",
        help="statistics that test the Seer premise on a trace",
        description="Group-structure statistics: eta2, within/across-group CV, probe-vs-max rank "
        "correlation, straggler share, and 4-gram sharing when the trace has tokens.",
    )
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-ngrams", action="store_true", help="skip the 4-gram sharing statistics")
    p.set_defaults(func=cmd_stats)

    p = tsub.add_parser(
        "validate",
        help="check a trace against the schema",
        description="Check a trace; exit 2 with one line on the first problem.",
    )
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_validate)
