"""Paper-style figures. Each function takes results or tables and returns a matplotlib Figure (no I/O);
`seer figures` writes them as PNG and PDF.

Sized for a paper column (3.4 in wide per panel), with labelled axes, units and legends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

COLUMN_IN = 3.4
POLICY_COLORS = {
    "verl": "#7f7f7f",
    "verl-lb": "#aaaaaa",
    "least-loaded": "#bcbd22",
    "divided": "#1f77b4",
    "context": "#2ca02c",
    "oracle": "#9467bd",
    "streamrl-oracle": "#8c564b",
    "partial": "#e377c2",
    "seer": "#d62728",
}


def _need(what: str, table, columns: Sequence[str]) -> pd.DataFrame:
    """The table as a frame, or a ValueError naming what is missing: a figure of nothing, or a KeyError from
    deep inside pandas, says less."""
    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what}: the table has no column(s) {', '.join(missing)} (it has: {', '.join(map(str, df.columns))})"
        )
    if not len(df):
        raise ValueError(f"{what}: the table has no rows")
    return df


def _color(policy: str, i: int) -> str:
    return POLICY_COLORS.get(policy.split(":")[0], plt.rcParams["axes.prop_cycle"].by_key()["color"][i % 10])


def _grouped_bars(ax, table: pd.DataFrame, value: str, label_fmt: str = "{:.2f}×"):
    workloads = list(dict.fromkeys(table["workload"]))
    policies = list(dict.fromkeys(table["policy"]))
    width = 0.8 / len(policies)
    x = np.arange(len(workloads))
    for i, pol in enumerate(policies):
        sub = table[table["policy"] == pol].set_index("workload").reindex(workloads)
        bars = ax.bar(x + (i - (len(policies) - 1) / 2) * width, sub[value], width, label=pol, color=_color(pol, i))
        if label_fmt:
            ax.bar_label(
                bars,
                [label_fmt.format(v) if np.isfinite(v) else "" for v in sub[value]],
                fontsize=6,
                rotation=90,
                padding=2,
            )
    ax.set_xticks(x, workloads, fontsize=8)
    return policies


def throughput_bars(table: pd.DataFrame, baseline: str = "verl") -> plt.Figure:
    """Fig 7: output-token throughput per workload, normalised to `baseline`.
    table: workload, policy, throughput_tok_s."""
    t = _need("throughput_bars", table, ("workload", "policy", "throughput_tok_s")).copy()
    base = t[t["policy"] == baseline].set_index("workload")["throughput_tok_s"]
    lacking = [w for w in dict.fromkeys(t["workload"]) if w not in base.index]
    if lacking:
        raise ValueError(
            f"throughput_bars: no {baseline!r} row to normalise to for workload(s) {', '.join(map(str, lacking))}"
        )
    t["norm"] = t["throughput_tok_s"] / t["workload"].map(base)
    fig, ax = plt.subplots(figsize=(COLUMN_IN * 2, 2.6))
    _grouped_bars(ax, t, "norm")
    ax.axhline(1.0, color="black", lw=0.6, ls=":")
    ax.set_ylabel(f"throughput (× {baseline})")
    ax.set_ylim(0, max(1.2, float(np.nanmax(t["norm"])) * 1.35))
    ax.legend(fontsize=7, ncol=min(4, t["policy"].nunique()), loc="upper left")
    ax.set_title("Rollout throughput (output tokens/s), normalised", fontsize=9)
    fig.tight_layout()
    return fig


def time_bars(table: pd.DataFrame) -> plt.Figure:
    """Fig 8: total rollout time with the tail (last 10% of requests) marked. table: workload, policy,
    makespan_s, tail_s."""
    table = _need("time_bars", table, ("workload", "policy", "makespan_s", "tail_s"))
    workloads = list(dict.fromkeys(table["workload"]))
    fig, axes = plt.subplots(1, len(workloads), figsize=(COLUMN_IN * len(workloads) * 0.7, 2.6), squeeze=False)
    for ax, w in zip(axes[0], workloads):
        sub = table[table["workload"] == w]
        x = np.arange(len(sub))
        body = sub["makespan_s"] - sub["tail_s"]
        colors = [_color(p, i) for i, p in enumerate(sub["policy"])]
        ax.bar(x, body, color=colors, label="before the tail")
        ax.bar(x, sub["tail_s"], bottom=body, color=colors, alpha=0.45, hatch="///", label="tail (last 10%)")
        ax.set_xticks(x, sub["policy"], rotation=45, ha="right", fontsize=7)
        ax.set_title(w, fontsize=9)
        ax.set_ylabel("rollout time (s)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def kv_timeline(results: Mapping[str, object], metric: str = "kv_usage") -> plt.Figure:
    """Figs 3 and 9: per-instance KV usage (or running requests) over time, one panel per result.
    results: label -> RolloutResult."""
    if not results:
        raise ValueError("kv_timeline: no results to draw")
    fig, axes = plt.subplots(
        1, len(results), figsize=(COLUMN_IN * len(results), 2.4), squeeze=False, sharey=True, sharex=True
    )
    for ax, (label, res) in zip(axes[0], results.items()):
        tl = res.timeline
        for inst, g in tl.groupby("instance"):
            g = g.sort_values("t")
            y = g[metric] * (100 if metric == "kv_usage" else 1)
            ax.step(g["t"], y, where="post", lw=0.7)
        end = res.summary["makespan_s"]
        tail = res.summary["tail_s"]
        ax.axvspan(end - tail, end, color="grey", alpha=0.15, label="tail (last 10%)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("time (s)")
        ax.legend(fontsize=7, loc="upper right")
    axes[0][0].set_ylabel("KV cache used (%)" if metric == "kv_usage" else "running requests")
    fig.tight_layout()
    return fig


def length_cdf(traces: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Fig 2: CDF of output lengths (log x), one line per trace."""
    if not traces:
        raise ValueError("length_cdf: no traces to draw")
    traces = {label: _need(f"length_cdf ({label})", tr, ("output_len",)) for label, tr in traces.items()}
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.9))
    for label, tr in traces.items():
        x = np.sort(np.maximum(tr["output_len"].to_numpy(), 1))
        ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("output length (tokens)", labelpad=1)
    ax.set_ylabel("CDF")
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2)
    fig.tight_layout()
    return fig


HEATMAP_PROMPTS = 90  # the paper's Fig 4 draws 90 prompts


def heatmap_prompts(trace: pd.DataFrame, prompts: int = HEATMAP_PROMPTS) -> list:
    """The prompt ids Fig 4 draws: the first `prompts` in id order."""
    return list(dict.fromkeys(trace.sort_values(["prompt_id", "sample_id"])["prompt_id"]))[:prompts]


def length_heatmap(trace: pd.DataFrame, prompts: int = HEATMAP_PROMPTS) -> plt.Figure:
    """Fig 4: output length per prompt (x) and sample (y)."""
    trace = _need("length_heatmap", trace, ("prompt_id", "sample_id", "output_len"))
    pids = heatmap_prompts(trace, prompts)
    sub = trace[trace["prompt_id"].isin(set(pids))]
    grid = sub.pivot_table(index="sample_id", columns="prompt_id", values="output_len").reindex(columns=pids)
    fig, ax = plt.subplots(figsize=(COLUMN_IN * 2, 2.2))
    im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("prompt index")
    ax.set_ylabel("response index")
    fig.colorbar(im, ax=ax, label="output tokens")
    fig.tight_layout()
    return fig


def ablation(table: pd.DataFrame) -> plt.Figure:
    """Table 4: cumulative speed-up per workload; table: workload, step, speedup, source (paper / sim)."""
    table = _need("ablation", table, ("workload", "step", "speedup", "source"))
    fig, ax = plt.subplots(figsize=(COLUMN_IN * 2, 2.6))
    steps = list(dict.fromkeys(table["step"]))
    workloads = list(dict.fromkeys(table["workload"]))
    sources = sorted(dict.fromkeys(table["source"]), key=lambda x: x != "paper")  # paper faded, measured on top
    width = 0.8 / (len(steps) * len(sources))
    x = np.arange(len(workloads))
    k = 0
    for s_i, src in enumerate(sources):
        for i, step in enumerate(steps):
            sub = table[(table["step"] == step) & (table["source"] == src)].set_index("workload").reindex(workloads)
            ax.bar(
                x + (k - (len(steps) * len(sources) - 1) / 2) * width,
                sub["speedup"],
                width,
                label=f"{step} ({src})",
                color=plt.cm.viridis(i / max(1, len(steps) - 1)),
                alpha=1.0 if s_i == len(sources) - 1 else 0.45,
                edgecolor="black",
                lw=0.3,
            )
            k += 1
    ax.set_xticks(x, workloads)
    ax.set_ylabel("throughput (× baseline)")
    ax.axhline(1.0, color="black", lw=0.6, ls=":")
    ax.set_ylim(0, float(table["speedup"].max()) * 1.15)
    ax.legend(fontsize=6, ncol=len(sources) * len(steps) // 2 or 1, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.set_title("Cumulative ablation (faded: paper, solid: this simulator)", fontsize=9)
    fig.tight_layout()
    return fig


def oracle_comparison(table: pd.DataFrame) -> plt.Figure:
    """Fig 12: throughput and tail time of scheduling variants, normalised to the baseline.
    table: variant, throughput_norm, tail_norm."""
    table = _need("oracle_comparison", table, ("variant", "throughput_norm", "tail_norm"))
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN_IN * 2, 2.4))
    x = np.arange(len(table))
    axes[0].bar(x, table["throughput_norm"], color=[_color(v, i) for i, v in enumerate(table["variant"])])
    axes[0].set_ylabel("throughput (× baseline)")
    axes[1].bar(x, table["tail_norm"], color=[_color(v, i) for i, v in enumerate(table["variant"])])
    axes[1].set_ylabel("tail time (× baseline)")
    for ax in axes:
        ax.set_xticks(x, table["variant"], rotation=30, ha="right", fontsize=7)
    fig.tight_layout()
    return fig


def tau_table(rows: Sequence[Mapping]) -> plt.Figure:
    """Table 2: mean acceptance length tau vs the number of group references, one line per top-k; rows as
    printed by `seer spec bench --json`."""
    rows = list(rows)
    df = _need(
        "tau_table", [r for r in rows if r.get("drafter", "group-suffix") == "group-suffix"], ("topk", "refs", "tau")
    )
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.4))
    for k, g in df.groupby("topk"):
        g = g.sort_values("refs")
        ax.plot(g["refs"], g["tau"], marker="o", label=f"top-{k}" if k > 1 else "linear")
    ng = [r for r in rows if r.get("drafter") == "ngram"]
    if ng:
        ax.axhline(ng[0]["tau"], color="grey", ls=":", label="n-gram (own context)")
    ax.set_xlabel("other group responses used as reference (n)")
    ax.set_ylabel("mean acceptance length τ")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _share(x) -> str:
    """A fraction as a percentage, n/a where there is none."""
    return "n/a" if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def parity(rows: Sequence[Mapping]) -> plt.Figure:
    """Sim-vs-real parity: simulated against real makespan per run, with the per-metric errors in the legend.
    rows: label, real_makespan_s, sim_makespan_s, makespan_error, finish_time_mape, step_time_mape."""
    rows = _need(
        "parity",
        rows,
        ("label", "real_makespan_s", "sim_makespan_s", "makespan_error", "finish_time_mape", "step_time_mape"),
    ).to_dict("records")
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 3.0))
    hi = max(max(r["real_makespan_s"], r["sim_makespan_s"]) for r in rows) * 1.1
    ax.plot([0, hi], [0, hi], color="black", lw=0.6, label="simulated = real")
    ax.fill_between([0, hi], [0, 0.9 * hi], [0, 1.1 * hi], color="grey", alpha=0.15, label="±10%")
    for i, r in enumerate(rows):
        ax.scatter(
            r["real_makespan_s"],
            r["sim_makespan_s"],
            color=_color(r["label"], i),
            zorder=3,
            label=f"{r['label']}: makespan {100 * r['makespan_error']:+.1f}%, "
            f"finish {_share(r['finish_time_mape'])}, "
            f"step {100 * r['step_time_mape']:.1f}%",
        )
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("real makespan (s)")
    ax.set_ylabel("simulated makespan (s)")
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    return fig


def robustness_heatmap(table: pd.DataFrame, value: str = "x_verl") -> plt.Figure:
    """Throughput x verl per policy (rows) and workload @ instances (columns), annotated.
    table: workload, instances, policy, and `value`."""
    t = _need("robustness_heatmap", table, ("workload", "instances", "policy", value)).copy()
    t["cell"] = t["workload"] + " @" + t["instances"].astype(str)
    cells = list(dict.fromkeys(t["cell"]))
    policies = list(dict.fromkeys(t["policy"]))
    grid = t.pivot_table(index="policy", columns="cell", values=value, aggfunc="first").reindex(
        index=policies, columns=cells
    )
    fig, ax = plt.subplots(figsize=(max(COLUMN_IN, 0.42 * len(cells) + 1.5), 0.38 * len(policies) + 1.6))
    vals = grid.to_numpy(dtype=np.float64)
    span = max(0.05, float(np.nanmax(np.abs(np.log(vals))))) if np.isfinite(vals).any() else 1.0
    im = ax.imshow(np.log(vals), cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
    for (i, j), v in np.ndenumerate(vals):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=5.5)
    ax.set_xticks(range(len(cells)), cells, rotation=90, fontsize=6)
    ax.set_yticks(range(len(policies)), policies, fontsize=7)
    cbar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    ticks = np.linspace(-span, span, 5)
    cbar.set_ticks(ticks, labels=[f"{np.exp(x):.2f}" for x in ticks], fontsize=6)
    cbar.set_label("throughput × verl", fontsize=7)
    ax.set_title("Throughput × verl per workload and load (instances)", fontsize=8)
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, stem: str, data: pd.DataFrame | None = None) -> list[str]:
    """Write `stem`.png and `stem`.pdf (atomically), and `stem`.parquet with the numbers drawn when given; close
    the figure."""
    from seer.fileio import atomic_path

    out = []
    try:
        if data is not None:  # the table first: one that cannot be written leaves no images without their numbers
            with atomic_path(f"{stem}.parquet") as tmp:
                try:
                    data.to_parquet(tmp, index=False)
                except (TypeError, ValueError, pa.ArrowException) as exc:
                    raise ValueError(f"{stem}.parquet: the figure's table cannot be written ({exc})") from None
        for ext in ("png", "pdf"):
            path = f"{stem}.{ext}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=200, format=ext, bbox_inches="tight")
            out.append(path)
    finally:
        plt.close(fig)
    if data is not None:
        out.append(f"{stem}.parquet")
    return out
