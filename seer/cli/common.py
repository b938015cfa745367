"""What several subcommands share: printing, argument types, the workload and policy options."""

from __future__ import annotations

import argparse
import json
import math
import os

from seer.core.traits import MAX_TOPK
from seer.errors import SeerInputError
from seer.fileio import json_safe
from seer.schema import INT_LIMIT, show


def print_json(obj) -> None:
    print(json.dumps(json_safe(obj), indent=2))


def print_table(title: str, items: dict) -> None:
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


def number(x, spec: str) -> str:
    """A value in `spec` format, n/a where there is none (None, NaN or infinite: undefined, as for one group)."""
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def int_at_least(low: int, high: int | None = None):
    """An argparse type: an integer >= low (and <= high)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {show(text)}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range(low, high)}, got {show(value)}")
        if abs(value) > INT_LIMIT:  # past what the int64 arithmetic downstream holds
            raise argparse.ArgumentTypeError(f"must be at most 2**53, got {show(value)}")
        return value

    parse.__name__ = f"integer {_range(low, high)}"
    return parse


def given_twice(paths) -> list[str]:
    """The paths (as given) that name one file or folder with another path of the list, sorted."""
    real = [os.path.realpath(p) for p in paths]
    return sorted({p for p, r in zip(paths, real) if real.count(r) > 1})


def _range(low: int, high: int | None) -> str:
    return f">= {low}" if high is None else f"in [{low}, {high}]"


def number_in(low: float, high: float, low_open: bool = False):
    """An argparse type: a finite number in [low, high] ((low, high] with `low_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high):
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{low:g}, {high:g}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


def name_list(text: str, flag: str) -> list[str]:
    """Comma-separated names; [] for none, and an empty item among names ("a,,b": one left out) refused."""
    names = [x.strip() for x in text.split(",")]
    if any(names) and not all(names):
        raise SeerInputError(f"{flag} has an empty item: {text!r}")
    return [x for x in names if x]


def int_list(text: str, flag: str, low: int = 0, high: int | None = None) -> list[int]:
    """Comma-separated integers >= low (and <= high; an empty item is a typo: refused)."""
    parts = [x.strip() for x in text.split(",")]
    try:
        vals = [int(x) for x in parts] if text.strip() else []
    except ValueError:
        raise SeerInputError(f"{flag} takes comma-separated integers, not {text!r}") from None
    if not vals:
        raise SeerInputError(f"{flag} needs at least one value")
    bad = [v for v in vals if v < low or (high is not None and v > high)]
    if bad:
        raise SeerInputError(f"{flag} values must be {_range(low, high)}, not {bad[0]}")
    return vals


def workload_args(p: argparse.ArgumentParser) -> None:
    """--trace/--preset/--cluster/... and the policy options one command line shares across its policies."""
    p.add_argument("--trace", help="trace file (.parquet, .csv, .jsonl)")
    p.add_argument("--preset", help="paper setup: its synthetic workload and its cluster (see `seer presets`)")
    p.add_argument("--cluster", help="cluster preset name or TOML path (default: the --preset's)")
    p.add_argument("--instances", type=int_at_least(1), help="override the number of instances")
    p.add_argument(
        "--seed",
        type=int_at_least(0),
        help="with --preset: seed of the synthetic workload (default: the preset's); with --trace: seed of the "
        "parametric acceptance draws of policies that speculate, when the trace has no output token ids (default 0)",
    )
    p.add_argument("--prompts", type=int_at_least(1), help="with --preset: number of prompts (groups) per iteration")
    p.add_argument("--chunk-size", type=int_at_least(1), help="tokens per chunk for divided policies (default 8192)")
    p.add_argument("--placement", choices=["most-free", "cache-aware"], help="instance choice of divided policies")
    p.add_argument("--exact", action="store_true", help="advance every decode step (slow; checks the fast path)")
    p.add_argument(
        "--speculation",
        choices=["adaptive", "fixed", "off"],
        help="for seer: draft budgets by MBA (default), a fixed --gamma, or none",
    )
    p.add_argument(
        "--gamma", type=int_at_least(0), help="for seer --speculation fixed: draft tokens per step (default 4)"
    )
    p.add_argument(
        "--spec-scope", choices=["own", "group", "global"], help="for seer: what drafts are drawn from (default group)"
    )
    p.add_argument(
        "--spec-topk",
        type=int_at_least(1, MAX_TOPK),
        help=f"for seer: draft branches per depth (default 1, at most {MAX_TOPK})",
    )


# the policy options one command line shares across its policies: config key -> flag
POLICY_FLAGS = {
    "chunk_size": "--chunk-size",
    "placement": "--placement",
    "speculation": "--speculation",
    "gamma": "--gamma",
    "scope": "--spec-scope",
    "topk": "--spec-topk",
}


def shared_policy_params(args) -> dict:
    """The command line's policy options, applied to every listed policy that takes them (None: not given)."""
    return {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in POLICY_FLAGS.items()}


def refuse_unused_policy_flags(specs: list[str], shared: dict) -> None:
    """Refuse what no policy would use, rather than run as if it had not been given: a shared option (given, not
    None) that none of the listed policies uses (an entry's own ignored values are `policy_config`'s to refuse)."""
    from seer.policies import parse_policy_spec, policy_config, unused_shared

    # an entry's own value that its configuration never reads (gamma without speculation=fixed) is refused there
    unused = unused_shared(specs, shared)
    for key, flag in POLICY_FLAGS.items():
        if key in unused:
            entries = [(parse_policy_spec(s)[1], policy_config(s, shared)[1]) for s in specs]
            raise SeerInputError(_unused(key, flag, specs, entries))


def _unused(key: str, flag: str, specs: list[str], entries: list) -> str:
    """Why no entry uses the shared `key`, in one line."""
    listed = ", ".join(specs)
    takers = [(own, cfg) for own, cfg in entries if key in type(cfg).keys()]
    if not takers:
        return f"{flag}: no listed policy ({listed}) takes {key} (`seer policies NAME` lists what each takes)"
    if all(key in own for own, _ in takers):
        return f"{flag}: every listed policy that takes {key} sets its own ({listed})"
    modes = "/".join(sorted({cfg.speculation for own, cfg in takers if key not in own}))
    need = "--speculation fixed" if key == "gamma" else "--speculation adaptive or fixed"
    return f"{flag} applies only under {need}; the listed policies' speculation is {modes}"


def check_workload_args(args) -> None:
    """The workload options' combinations, refused before anything is read or generated."""
    if bool(args.trace) == bool(args.preset):
        raise SeerInputError("give exactly one of --trace PATH or --preset NAME")
    if args.trace and not args.cluster:
        raise SeerInputError("--trace needs --cluster PRESET (a preset name or a TOML path)")
    if args.trace and args.prompts is not None:
        raise SeerInputError("--prompts sizes a --preset workload; a --trace has its own prompts")


def workload_name(args) -> str:
    """The name `setup_from_args` gives the workload (default output folders), known before it is built."""
    check_workload_args(args)
    return args.preset or os.path.splitext(os.path.basename(args.trace))[0]


def setup_from_args(args):
    """The experiment setup named by --trace/--preset/--cluster/--instances/--seed/--prompts."""
    from seer.experiment import Setup

    check_workload_args(args)
    if args.preset:
        return Setup.from_preset(
            args.preset, prompts=args.prompts, seed=args.seed, instances=args.instances, cluster=args.cluster
        )
    return Setup.from_trace(args.trace, args.cluster, instances=args.instances, spec_seed=args.seed or 0)


def refuse_unused_seed(args, setup, specs: list[str], policies: list) -> None:
    """With --trace, --seed seeds only the parametric acceptance draws: refused where no run draws any (the
    trace's recorded tokens are replayed, or no listed policy speculates), rather than run as if not given."""
    if not args.trace or args.seed is None:
        return
    from seer.experiment import seed_draws_nothing

    unused = seed_draws_nothing(setup.trace, policies, specs)
    if unused:
        raise SeerInputError(f"--seed: {unused} (with --trace, --seed seeds only the parametric acceptance draws)")


def safe_name(text: str) -> str:
    """A folder name from command-line text (a policy spec): no separators, no parent references."""
    out = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in text.replace(":", "_").replace("=", "-"))
    return out.strip(".") or "_"
