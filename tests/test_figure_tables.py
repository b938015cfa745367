"""The Parquet tables `seer figures` writes beside each figure hold plain values, one column per quantity."""

from __future__ import annotations

from types import SimpleNamespace

NO_BAR = SimpleNamespace(update=lambda n: None)


def test_fig7_table_keeps_every_metric_and_names_preset_and_group_size_apart():
    """Fig 7's table kept only throughput for the re-run group size (makespan and tail NaN although they were
    measured) and held the plot's two-line label as `workload`."""
    from seer import plots
    from seer.figures import _per_group_size, _simulate_grid

    setups, _, grid = _simulate_grid(["qwen2-vl-72b"], 4, NO_BAR)
    per_g = _per_group_size(setups, grid, NO_BAR)
    assert per_g[["throughput_tok_s", "makespan_s", "tail_s"]].notna().all().all()
    assert (per_g["workload"] == "qwen2-vl-72b").all()
    assert not any("\n" in str(v) for col in per_g.columns for v in per_g[col])
    assert sorted(set(per_g["group_size"])) == [8, 16]
    assert (per_g["prompts"] * per_g["group_size"]).nunique() == 1  # the same requests at both group sizes
    native = per_g[per_g["group_size"] == 16].set_index("policy")
    assert native.loc["seer", "makespan_s"] == grid.set_index("policy").loc["seer", "makespan_s"]
    # the figure still reads as before: one tick per (workload, G), one bar series per policy
    from seer.figures import FIG7_POLICIES, _bar_labels

    ax = plots.throughput_bars(_bar_labels(per_g)).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Qwen2-VL\nG=8", "Qwen2-VL\nG=16"]
    assert len(ax.containers) == len(FIG7_POLICIES)
