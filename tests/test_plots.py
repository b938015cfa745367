"""Every figure function renders from small fixtures and draws the expected series."""

from __future__ import annotations

import pandas as pd
import pytest

from seer import plots
from seer.policies import make_policy
from seer.sim.cluster import ClusterConfig
from seer.sim.driver import simulate


@pytest.fixture(scope="module")
def results():
    trace = pd.DataFrame(
        [
            {"prompt_id": p, "sample_id": s, "prompt_len": 10, "output_len": 20 + 30 * p + 7 * s, "max_tokens": 200}
            for p in range(3)
            for s in range(4)
        ]
    )
    cl = ClusterConfig(
        name="t",
        model="qwen2.5-1.5b",
        instances=2,
        kv_capacity_tokens=2048,
        max_num_seqs=8,
        max_num_batched_tokens=256,
        max_tokens=200,
    )
    return trace, {p: simulate(trace, cl, make_policy(p), progress=False) for p in ("verl", "context")}


def table(results):
    rows = []
    for w in ("a", "b"):
        for pol, res in results.items():
            s = res.summary
            rows.append(
                {
                    "workload": w,
                    "policy": pol,
                    "throughput_tok_s": s["throughput_tok_s"],
                    "makespan_s": s["makespan_s"],
                    "tail_s": s["tail_s"],
                }
            )
    return pd.DataFrame(rows)


def test_bar_figures(results, tmp_path):
    _trace, res = results
    t = table(res)
    fig = plots.throughput_bars(t)
    assert len(fig.axes[0].containers) == 2  # one bar series per policy
    assert fig.axes[0].get_ylabel() == "throughput (× verl)"
    fig = plots.time_bars(t)
    assert len(fig.axes) == 2 and all(len(ax.containers) == 2 for ax in fig.axes)  # body + tail per workload
    abl = pd.DataFrame(
        [
            {"workload": w, "step": s, "source": src, "speedup": 1.2}
            for w in ("a", "b")
            for s in ("+ divided", "+ context")
            for src in ("paper", "sim")
        ]
    )
    assert len(plots.ablation(abl).axes[0].containers) == 4
    orc = pd.DataFrame(
        {"variant": ["verl", "context", "oracle"], "throughput_norm": [1, 1.2, 1.3], "tail_norm": [1, 0.3, 0.1]}
    )
    assert [len(ax.containers[0]) for ax in plots.oracle_comparison(orc).axes] == [3, 3]
    written = plots.save(plots.throughput_bars(t), str(tmp_path / "f"))
    assert [p.rsplit(".", 1)[1] for p in written] == ["png", "pdf"] and all((tmp_path / p).exists() for p in written)


def test_timelines_lengths_tau_parity(results):
    trace, res = results
    fig = plots.kv_timeline(res)
    assert len(fig.axes) == 2
    assert all(len(ax.lines) == res[k].timeline["instance"].nunique() for ax, k in zip(fig.axes, res))
    assert len(plots.length_cdf({"x": trace, "y": trace}).axes[0].lines) == 2
    assert plots.length_heatmap(trace).axes[0].images[0].get_array().shape == (4, 3)
    rows = [
        {"drafter": "group-suffix", "refs": n, "topk": k, "tau": 1 + n / 10 + k / 20} for n in (0, 1, 5) for k in (1, 2)
    ]
    rows.append({"drafter": "ngram", "refs": 0, "topk": 1, "tau": 1.1})
    ax = plots.tau_table(rows).axes[0]
    assert len(ax.lines) == 3  # two top-k lines and the n-gram reference
    par = [
        {
            "label": "verl",
            "real_makespan_s": 10,
            "sim_makespan_s": 9.5,
            "makespan_error": -0.05,
            "finish_time_mape": 0.06,
            "step_time_mape": 0.1,
        }
    ]
    ax = plots.parity(par).axes[0]
    assert len(ax.collections) == 2  # the +-10% band and one run


def test_seer_figures_cli(tmp_path):
    from conftest import run_seer

    out = tmp_path / "figs"
    res = run_seer("figures", "--out", str(out), "--presets", "qwen2-vl-72b", "--prompts", "24")
    assert res.returncode == 0, res.stderr[-2000:]
    names = {p.stem for p in out.iterdir()}
    assert {
        "fig2_length_cdf",
        "fig4_length_heatmap",
        "table2_tau",
        "fig7_throughput",
        "fig8_total_tail",
        "table4_ablation",
        "fig12_oracle",
        "fig3_9_kv_timeline",
        "fig3_9_running",
    } <= names
    assert len(list(out.glob("*.pdf"))) == len(list(out.glob("*.png"))) == 9
    # the numbers behind each figure
    import pandas as pd

    assert len(list(out.glob("*.parquet"))) == 9
    bars = pd.read_parquet(out / "fig7_throughput.parquet")
    assert {"verl", "seer"} <= set(bars["policy"]) and set(bars["group_size"]) == {8, 16}
    assert bars[["throughput_tok_s", "makespan_s", "tail_s"]].notna().all().all()  # the re-run G too
    (out / "parity_sim_vs_real.png").write_bytes(b"from an earlier run")  # made with other runs: removed
    (out / "notes.txt").write_text("mine")  # not seer's: kept
    assert run_seer("figures", "--out", str(out), "--presets", "qwen2-vl-72b", "--prompts", "8").returncode == 0
    assert not (out / "parity_sim_vs_real.png").exists() and (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in (*tmp_path.iterdir(), *out.iterdir()) if p.name.startswith(".")] == []  # nothing left
    bad = run_seer("figures", "--out", str(tmp_path / "x"), "--run", str(tmp_path / "nope"))
    assert bad.returncode == 2 and "no such run folder" in bad.stderr
