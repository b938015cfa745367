"""How one rollout's summary reads on a terminal (simulated or real)."""

from __future__ import annotations

import math

from seer.cli.common import number, print_table


def _share(x, digits: int = 0) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.{digits}f}%"


def print_summary(title: str, s: dict) -> None:
    s = {k: (math.nan if v is None else v) for k, v in s.items()}  # saved summaries hold null for NaN
    rows = {
        "makespan": f"{s['makespan_s']:,.1f} s",
        "throughput": f"{s['throughput_tok_s']:,.0f} output tokens/s",
        "tail (last 10% of requests)": f"{s['tail_s']:,.1f} s ({100 * s['tail_share']:.1f}% of rollout)",
        "lower bound": f"{s['lower_bound_s']:,.1f} s (efficiency {_share(s['efficiency'], 1)})",
        "first instance done": f"{s['first_instance_done_s']:,.1f} s",
        "idle per instance": f"{s['idle_s_mean']:,.1f} s ({100 * s['idle_share']:.1f}%)",
        "preemptions": f"{s['preemptions']:,} ({_share(s.get('preemptions_first_half_share'))} in the first half)",
        "requests / output tokens": f"{s['requests']:,} / {s['output_tokens']:,}"
        + (f" ({s['aborted_requests']:,} aborted unfinished)" if s.get("aborted_requests") else ""),
        "simulated in": f"{s['wall_s']:.2f} s wall ({s['mode']} mode)",
    }
    if "resumed_prefill_tokens" in s:  # the simulator's counters
        rows["KV computed again"] = (
            f"{s['recomputed_tokens']:,} tokens after preemptions, {s['resumed_prefill_tokens']:,} by resumed chunks"
        )
    if s.get("backend") == "vllm":
        rows.pop("lower bound")
        rows["simulated in"] = f"{s['wall_s']:.2f} s wall ({s['clock']} clock: makespan in instance time)"
        rows["ran in"] = rows.pop("simulated in")
    tau = number(s.get("spec_tau"), ".2f")  # n/a: no speculative step at all (every response empty)
    if s.get("speculation") and s.get("backend") == "vllm":
        rows["speculative decoding"] = f"tau {tau} over {s['spec_drafts']:,} drafts ({s['speculation_method']})"
    elif s.get("speculation"):
        rows["speculative decoding"] = (
            f"tau {tau} tokens per speculative step, "
            f"{s['spec_accepted_tokens']:,} of {s['spec_drafted_tokens']:,} draft tokens accepted"
        )
        rows["acceptance"] = s["speculation"]
        rows["lower bound"] += f"; {s.get('bound', 'strict')}"
        if math.isfinite(s.get("efficiency_expected", math.nan)):
            rows["bound at expected acceptance"] = (
                f"{s['lower_bound_expected_s']:,.1f} s (efficiency {100 * s['efficiency_expected']:.1f}%; not strict)"
            )
    print_table(title, rows)
