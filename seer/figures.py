"""`seer figures`: regenerate the paper-style figure set from the bundled trace, the paper presets and any
recorded real runs (PNG + PDF each)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from seer import plots

BUNDLED = Path(__file__).resolve().parent / "data" / "gsm8k_smollm2.parquet"
PRESETS = ("moonlight", "qwen2-vl-72b", "kimi-k2")
POLICIES = ("verl", "divided", "context", "oracle", "seer")
FIG7_POLICIES = ("verl", "divided", "context", "seer")
SHORT = {"moonlight": "Moonlight", "qwen2-vl-72b": "Qwen2-VL", "kimi-k2": "Kimi-K2"}
PAPER_T4 = {"moonlight": (1.41, 1.47, 1.90), "qwen2-vl-72b": (1.42, 1.56, 2.04), "kimi-k2": (1.16, 1.27, 1.53)}


def _simulate_grid(presets, prompts, bar) -> tuple[dict, dict, pd.DataFrame]:
    """Every policy on every preset: (setups, results by (preset, policy), throughput/makespan/tail table)."""
    from seer.experiment import Setup, run

    setups = {p: Setup.from_preset(p, prompts=prompts) for p in presets}
    results, table = {}, []
    for p, setup in setups.items():
        for pol in POLICIES:
            res = run(setup, pol)
            results[(p, pol)] = res
            s = res.summary
            table.append(
                {
                    "workload": p,
                    "policy": pol,
                    "throughput_tok_s": s["throughput_tok_s"],
                    "makespan_s": s["makespan_s"],
                    "tail_s": s["tail_s"],
                }
            )
            bar.update(1)
    return setups, results, pd.DataFrame(table)


def _per_group_size(setups, table: pd.DataFrame, bar) -> pd.DataFrame:
    """Fig 7: every workload at both group sizes the paper uses (8 and 16), with the same number of requests."""
    from seer.experiment import Setup, run

    rows = []
    for p, setup in setups.items():
        cfg = setup.synth
        for g in (8, 16):
            label = f"{SHORT.get(p, p)}\nG={g}"
            if g == cfg.group_size:
                sub = table[(table.workload == p) & (table.policy.isin(FIG7_POLICIES))]
                rows += [{**r, "workload": label} for r in sub.to_dict("records")]
                continue
            other = Setup.from_preset(p, prompts=max(1, cfg.prompts * cfg.group_size // g), group_size=g)
            for pol in FIG7_POLICIES:
                rows.append(
                    {"workload": label, "policy": pol, "throughput_tok_s": run(other, pol).summary["throughput_tok_s"]}
                )
        bar.update(1)
    return pd.DataFrame(rows)


def _ablation(presets, results) -> pd.DataFrame:
    rows = []
    for p in presets:
        base = results[(p, "verl")].summary["throughput_tok_s"]
        for k, (pol, step) in enumerate((("divided", "+ divided"), ("context", "+ context"), ("seer", "+ grouped SD"))):
            rows.append(
                {
                    "workload": p,
                    "step": step,
                    "source": "sim",
                    "speedup": results[(p, pol)].summary["throughput_tok_s"] / base,
                }
            )
            if p in PAPER_T4:
                rows.append({"workload": p, "step": step, "source": "paper", "speedup": PAPER_T4[p][k]})
    return pd.DataFrame(rows)


def make_figures(
    out: str, presets=PRESETS, prompts: int | None = None, runs=(), progress: bool | None = None
) -> list[str]:
    """Write every figure under `out`; returns the files written."""
    from seer.fidelity import fidelity
    from seer.studies.spec_bench import acceptance_table
    from seer.traces.io import load_trace

    os.makedirs(out, exist_ok=True)
    written: list[str] = []
    bundled = load_trace(BUNDLED)
    work = len(presets) * (len(POLICIES) + 1) + 3 + len(runs)
    bar = tqdm(total=work, desc="figures", unit="step", disable=None if progress is None else not progress)
    try:
        setups, results, t = _simulate_grid(presets, prompts, bar)
        traces = {p: s.trace for p, s in setups.items()}
        written += plots.save(plots.length_cdf({"GSM8K · SmolLM2 (real)": bundled, **traces}), f"{out}/fig2_length_cdf")
        hm = traces.get("qwen2-vl-72b", next(iter(traces.values())))
        written += plots.save(plots.length_heatmap(hm), f"{out}/fig4_length_heatmap")
        bar.update(1)
        rows = acceptance_table(bundled, refs=(0, 1, 3, 7), topk=(1, 2, 4), progress=False)
        written += plots.save(plots.tau_table(rows), f"{out}/table2_tau")
        bar.update(1)
        written += plots.save(plots.throughput_bars(_per_group_size(setups, t, bar)), f"{out}/fig7_throughput")
        written += plots.save(plots.time_bars(t[t.policy.isin(["verl", "context", "seer"])]), f"{out}/fig8_total_tail")
        written += plots.save(plots.ablation(_ablation(presets, results)), f"{out}/table4_ablation")
        q = "qwen2-vl-72b" if "qwen2-vl-72b" in presets else presets[0]
        b = results[(q, "verl")].summary
        orc = pd.DataFrame(
            [
                {
                    "variant": pol,
                    "throughput_norm": results[(q, pol)].summary["throughput_tok_s"] / b["throughput_tok_s"],
                    "tail_norm": results[(q, pol)].summary["tail_s"] / b["tail_s"],
                }
                for pol in ("verl", "divided", "context", "oracle")
            ]
        )
        written += plots.save(plots.oracle_comparison(orc), f"{out}/fig12_oracle")
        pair = {f"verl ({q})": results[(q, "verl")], f"seer ({q})": results[(q, "seer")]}
        written += plots.save(plots.kv_timeline(pair), f"{out}/fig3_9_kv_timeline")
        written += plots.save(plots.kv_timeline(pair, metric="running"), f"{out}/fig3_9_running")
        bar.update(1)
        par = []
        for run_dir in runs:
            f = fidelity(run_dir)
            name = Path(run_dir).name
            par.append({"label": f["policy"] if name == f["policy"] else f"{f['policy']} ({name})", **f})
            bar.update(1)
        if par:
            written += plots.save(plots.parity(par), f"{out}/parity_sim_vs_real")
    finally:
        bar.close()
    return written
