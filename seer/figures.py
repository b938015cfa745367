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
SHORT = {"moonlight": "Moonlight", "qwen2-vl-72b": "Qwen2-VL", "kimi-k2": "Kimi-K2"}
PAPER_T4 = {"moonlight": (1.41, 1.47, 1.90), "qwen2-vl-72b": (1.42, 1.56, 2.04), "kimi-k2": (1.16, 1.27, 1.53)}


def make_figures(out: str, presets=PRESETS, prompts: int | None = None, runs=(), progress: bool | None = None) -> list[str]:
    """Write every figure under `out`; returns the files written."""
    from seer.fidelity import fidelity
    from seer.policies import make_policy
    from seer.policies.speculation.replay import acceptance_table
    from seer.sim.cluster import load_cluster
    from seer.sim.driver import simulate
    from seer.traces.io import load_trace
    from seer.traces.synth import preset_config, synthesize

    os.makedirs(out, exist_ok=True)
    written: list[str] = []
    bundled = load_trace(BUNDLED)
    traces = {p: synthesize(preset_config(p, prompts=prompts)) for p in presets}
    work = len(presets) * (len(POLICIES) + 1) + 3 + len(runs)
    bar = tqdm(total=work, desc="figures", unit="step", disable=None if progress is None else not progress)
    try:
        written += plots.save(plots.length_cdf({"GSM8K · SmolLM2 (real)": bundled, **traces}), f"{out}/fig2_length_cdf")
        hm = traces.get("qwen2-vl-72b", next(iter(traces.values())))
        written += plots.save(plots.length_heatmap(hm), f"{out}/fig4_length_heatmap")
        bar.update(1)
        rows = acceptance_table(bundled, refs=(0, 1, 3, 7), topk=(1, 2, 4), progress=False)
        written += plots.save(plots.tau_table(rows), f"{out}/table2_tau")
        bar.update(1)
        results, table = {}, []
        for p in presets:
            cl = load_cluster(p)
            for pol in POLICIES:
                res = simulate(traces[p], cl, make_policy(pol), progress=False)
                results[(p, pol)] = res
                s = res.summary
                table.append({"workload": p, "policy": pol, "throughput_tok_s": s["throughput_tok_s"],
                              "makespan_s": s["makespan_s"], "tail_s": s["tail_s"]})
                bar.update(1)
        t = pd.DataFrame(table)
        # Fig 7 runs every workload at both group sizes the paper uses (8 and 16), with the same number of requests
        per_g = []
        for p in presets:
            cfg = preset_config(p, prompts=prompts)
            for g in (8, 16):
                if g == cfg.group_size:
                    sub = t[(t.workload == p) & (t.policy.isin(["verl", "divided", "context", "seer"]))]
                    per_g += [{**r, "workload": f"{SHORT.get(p, p)}\nG={g}"} for r in sub.to_dict("records")]
                    continue
                tr = synthesize(preset_config(p, prompts=max(1, cfg.prompts * cfg.group_size // g), group_size=g))
                for pol in ("verl", "divided", "context", "seer"):
                    s = simulate(tr, load_cluster(p), make_policy(pol), progress=False).summary
                    per_g.append({"workload": f"{SHORT.get(p, p)}\nG={g}", "policy": pol, "throughput_tok_s": s["throughput_tok_s"]})
            bar.update(1)
        written += plots.save(plots.throughput_bars(pd.DataFrame(per_g)), f"{out}/fig7_throughput")
        written += plots.save(plots.time_bars(t[t.policy.isin(["verl", "context", "seer"])]), f"{out}/fig8_total_tail")
        abl = []
        for p in presets:
            base = results[(p, "verl")].summary["throughput_tok_s"]
            for k, (pol, step) in enumerate((("divided", "+ divided"), ("context", "+ context"), ("seer", "+ grouped SD"))):
                abl.append({"workload": p, "step": step, "source": "sim",
                            "speedup": results[(p, pol)].summary["throughput_tok_s"] / base})
                if p in PAPER_T4:
                    abl.append({"workload": p, "step": step, "source": "paper", "speedup": PAPER_T4[p][k]})
        written += plots.save(plots.ablation(pd.DataFrame(abl)), f"{out}/table4_ablation")
        q = "qwen2-vl-72b" if "qwen2-vl-72b" in presets else presets[0]
        b = results[(q, "verl")].summary
        orc = pd.DataFrame([{"variant": pol, "throughput_norm": results[(q, pol)].summary["throughput_tok_s"] / b["throughput_tok_s"],
                             "tail_norm": results[(q, pol)].summary["tail_s"] / b["tail_s"]}
                            for pol in ("verl", "divided", "context", "oracle")])
        written += plots.save(plots.oracle_comparison(orc), f"{out}/fig12_oracle")
        written += plots.save(plots.kv_timeline({f"verl ({q})": results[(q, "verl")], f"seer ({q})": results[(q, "seer")]}),
                              f"{out}/fig3_9_kv_timeline")
        written += plots.save(plots.kv_timeline({f"verl ({q})": results[(q, "verl")], f"seer ({q})": results[(q, "seer")]},
                                                metric="running"), f"{out}/fig3_9_running")
        bar.update(1)
        par = []
        for run in runs:
            f = fidelity(run)
            name = Path(run).name
            par.append({"label": f["policy"] if name == f["policy"] else f"{f['policy']} ({name})", **f})
            bar.update(1)
        if par:
            written += plots.save(plots.parity(par), f"{out}/parity_sim_vs_real")
    finally:
        bar.close()
    return written
