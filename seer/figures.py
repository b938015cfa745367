"""`seer figures`: regenerate the paper-style figure set from the bundled trace, the paper presets and any
recorded real runs (PNG + PDF each)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from seer import plots
from seer.fileio import staged_files
from seer.progress import progress_bar

BUNDLED = Path(__file__).resolve().parent / "data" / "gsm8k_smollm2.parquet"
PRESETS = ("moonlight", "qwen2-vl-72b", "kimi-k2")
POLICIES = ("verl", "divided", "context", "oracle", "seer")
FIG7_POLICIES = ("verl", "divided", "context", "seer")
SHORT = {"moonlight": "Moonlight", "qwen2-vl-72b": "Qwen2-VL", "kimi-k2": "Kimi-K2"}
PAPER_T4 = {"moonlight": (1.41, 1.47, 1.90), "qwen2-vl-72b": (1.42, 1.56, 2.04), "kimi-k2": (1.16, 1.27, 1.53)}


def _metrics(summary) -> dict:
    """The numbers the throughput and time figures draw from one run's summary."""
    return {k: summary[k] for k in ("throughput_tok_s", "makespan_s", "tail_s")}


def _simulate_grid(presets, prompts, bar) -> tuple[dict, dict, pd.DataFrame]:
    """Every policy on every preset: (setups, results by (preset, policy), throughput/makespan/tail table)."""
    from seer.experiment import Setup, run

    setups = {p: Setup.from_preset(p, prompts=prompts) for p in presets}
    results, table = {}, []
    for p, setup in setups.items():
        for pol in POLICIES:
            res = run(setup, pol)
            results[(p, pol)] = res
            table.append({"workload": p, "policy": pol, **_metrics(res.summary)})
            bar.update(1)
    return setups, results, pd.DataFrame(table)


def _per_group_size(setups, table: pd.DataFrame, bar) -> pd.DataFrame:
    """Fig 7: every workload at both group sizes the paper uses (8 and 16), with the same number of requests.
    One row per (workload, group_size, policy), with every metric of its run; the plot label is made when
    drawing (`_bar_labels`), so the table holds plain values."""
    from seer.experiment import Setup, run

    rows = []
    for p, setup in setups.items():
        cfg = setup.synth
        for g in (8, 16):
            if g == cfg.group_size:  # the grid already ran the preset as it is
                prompts = cfg.prompts
                sub = table[table.workload == p].set_index("policy")
                got = {pol: _metrics(sub.loc[pol]) for pol in FIG7_POLICIES}
            else:
                prompts = max(1, cfg.prompts * cfg.group_size // g)
                other = Setup.from_preset(p, prompts=prompts, group_size=g)
                got = {pol: _metrics(run(other, pol).summary) for pol in FIG7_POLICIES}
            for pol in FIG7_POLICIES:
                rows.append({"workload": p, "group_size": g, "prompts": prompts, "policy": pol, **got[pol]})
        bar.update(1)
    return pd.DataFrame(rows)


def _bar_labels(per_g: pd.DataFrame) -> pd.DataFrame:
    """Fig 7's table with `workload` as the two-line tick label the plot groups its bars by."""
    labels = [f"{SHORT.get(w, w)}\nG={g}" for w, g in zip(per_g["workload"], per_g["group_size"])]
    return per_g.assign(workload=labels)


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
    """Write every figure under `out` (PNG, PDF, and a Parquet table of what each draws); returns the files
    written. They are made aside and moved in together: an interrupted run leaves the earlier set."""
    work = len(presets) * (len(POLICIES) + 1) + 3 + len(runs)
    bar = progress_bar(progress, total=work, desc="figures", unit="step")
    try:
        with staged_files(out) as tmp:
            names = [os.path.basename(f) for f in _draw(str(tmp), presets, prompts, runs, bar)]
    finally:
        bar.close()
    if not runs:  # a parity plot left from an earlier run would sit beside figures it was not made with
        for ext in ("png", "pdf", "parquet"):
            (Path(out) / f"parity_sim_vs_real.{ext}").unlink(missing_ok=True)
    return [f"{out}/{n}" for n in names]


def _lengths(traces: dict) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"source": k, "output_len": t["output_len"]}) for k, t in traces.items()])


def _draw(out: str, presets, prompts, runs, bar) -> list[str]:
    from seer.fidelity import fidelity
    from seer.studies.spec_bench import acceptance_table
    from seer.traces.io import load_trace

    written: list[str] = []
    bundled = load_trace(BUNDLED)
    setups, results, t = _simulate_grid(presets, prompts, bar)
    traces = {p: s.trace for p, s in setups.items()}
    cdf = {"GSM8K · SmolLM2 (real)": bundled, **traces}
    written += plots.save(plots.length_cdf(cdf), f"{out}/fig2_length_cdf", _lengths(cdf))
    hm = traces.get("qwen2-vl-72b", next(iter(traces.values())))
    shown = plots.heatmap_prompts(hm)
    hm_data = hm.loc[hm["prompt_id"].isin(set(shown)), ["prompt_id", "sample_id", "output_len"]]  # what is drawn
    written += plots.save(plots.length_heatmap(hm), f"{out}/fig4_length_heatmap", hm_data)
    bar.update(1)
    rows = acceptance_table(bundled, refs=(0, 1, 3, 7), topk=(1, 2, 4), progress=False)
    written += plots.save(plots.tau_table(rows), f"{out}/table2_tau", pd.DataFrame(rows))
    bar.update(1)
    per_g = _per_group_size(setups, t, bar)
    written += plots.save(plots.throughput_bars(_bar_labels(per_g)), f"{out}/fig7_throughput", per_g)
    tt = t[t.policy.isin(["verl", "context", "seer"])]
    written += plots.save(plots.time_bars(tt), f"{out}/fig8_total_tail", tt)
    abl = _ablation(presets, results)
    written += plots.save(plots.ablation(abl), f"{out}/table4_ablation", abl)
    q = "qwen2-vl-72b" if "qwen2-vl-72b" in presets else presets[0]
    b = results[(q, "verl")].summary
    orc = pd.DataFrame(
        [
            {
                "workload": q,  # the table says which preset the figure drew (qwen2-vl-72b when listed)
                "variant": pol,
                "throughput_norm": results[(q, pol)].summary["throughput_tok_s"] / b["throughput_tok_s"],
                "tail_norm": results[(q, pol)].summary["tail_s"] / b["tail_s"],
            }
            for pol in ("verl", "divided", "context", "oracle")
        ]
    )
    written += plots.save(plots.oracle_comparison(orc), f"{out}/fig12_oracle", orc)
    pair = {f"verl ({q})": results[(q, "verl")], f"seer ({q})": results[(q, "seer")]}
    timelines = pd.concat([r.timeline.assign(run=k) for k, r in pair.items()], ignore_index=True)
    written += plots.save(plots.kv_timeline(pair), f"{out}/fig3_9_kv_timeline", timelines)
    written += plots.save(plots.kv_timeline(pair, metric="running"), f"{out}/fig3_9_running", timelines)
    bar.update(1)
    par = []
    for run_dir in runs:
        f = fidelity(run_dir)
        name = Path(run_dir).name
        par.append({"label": f["policy"] if name == f["policy"] else f"{f['policy']} ({name})", **f})
        bar.update(1)
    if par:
        flat = pd.DataFrame([{k: v for k, v in r.items() if isinstance(v, (str, int, float))} for r in par])
        written += plots.save(plots.parity(par), f"{out}/parity_sim_vs_real", flat)
    return written
