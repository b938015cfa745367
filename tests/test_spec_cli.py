"""`seer spec bench` and `seer compare` with the seer policy, as a user runs them."""

from __future__ import annotations

import json

import pytest
from conftest import cli_error, run_seer, token_trace


def test_spec_bench_json_and_files(tmp_path):
    path = tmp_path / "tok.parquet"
    token_trace(4, groups=4, G=6).to_parquet(path)
    out = tmp_path / "bench"
    res = run_seer(
        "spec", "bench", "--trace", str(path), "--refs", "0,1,5", "--topk", "1,2", "--json", "--out", str(out)
    )
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    grid = {(r["refs"], r["topk"]): r for r in rows if r["drafter"] == "group-suffix"}
    assert set(grid) == {(n, k) for n in (0, 1, 5) for k in (1, 2)}
    for r in rows:
        assert {"refs", "topk", "tau", "accepted_per_draft"} <= set(r)
        assert r["tau"] >= 1.0
    assert grid[(5, 1)]["refs_used"] == 5
    # more references, longer accepted drafts
    assert grid[(0, 1)]["tau"] < grid[(1, 1)]["tau"] < grid[(5, 1)]["tau"]
    assert any(r["drafter"] == "ngram" for r in rows)
    assert (out / "bench.json").exists() and (out / "bench.parquet").exists()
    assert json.loads((out / "bench.json").read_text()) == rows


def test_spec_bench_table_labels_its_acceptance_column_and_leaves_undefined_ratios_undefined(tmp_path, capsys):
    from seer.cli import main

    path = tmp_path / "tok.parquet"
    token_trace(4, groups=2, G=3).to_parquet(path)
    assert (
        main(["spec", "bench", "--trace", str(path), "--refs", "1", "--topk", "4,1", "--out", str(tmp_path / "a")]) == 0
    )
    header = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("refs n"))
    assert "acc/draft (top-4)" in header  # the column shows the first --topk listed, not top-1
    empty = token_trace(4, groups=2, G=3)
    empty["output_len"], empty["output_ids"] = 0, [[] for _ in range(len(empty))]
    empty.to_parquet(tmp_path / "empty.parquet")
    out = tmp_path / "b"
    assert main(["spec", "bench", "--trace", str(tmp_path / "empty.parquet"), "--refs", "0", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "nan" not in table and "n/a" in table
    for row in json.loads((out / "bench.json").read_text()):  # 0 / 0 is no 0: null, as tau is
        assert row["drafts"] == 0 and row["accepted_per_draft"] is None and row["accepted_per_step"] is None


def test_spec_bench_on_tree_of_thoughts_cot(shared_data, tmp_path):
    trace = tmp_path / "cot.parquet"
    log = shared_data / "tot" / "gpt-4_0.7_naive_cot_sample_100_start900_end1000.json"
    assert run_seer("trace", "convert", str(log), "--from", "tot", "-o", str(trace)).returncode == 0
    res = run_seer("spec", "bench", "--trace", str(trace), "--groups", "6", "--json", "--out", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    rows = [r for r in json.loads(res.stdout) if r["drafter"] == "group-suffix"]
    for k in (1, 2, 4):
        taus = [next(r["tau"] for r in rows if r["refs"] == n and r["topk"] == k) for n in (0, 1, 5, 15)]
        assert taus == sorted(taus) and taus[0] < taus[-1], (k, taus)
    for n in (0, 1, 5, 15):
        taus = [next(r["tau"] for r in rows if r["refs"] == n and r["topk"] == k) for k in (1, 2, 4)]
        assert taus == sorted(taus), (n, taus)


def test_spec_bench_bad_input(tmp_path):
    path = tmp_path / "len.csv"
    token_trace(5, groups=2, G=2).drop(columns=["output_ids", "prompt_ids"]).to_csv(path, index=False)
    out = tmp_path / "bench"
    res = run_seer("spec", "bench", "--trace", str(path), "--out", str(out))
    assert res.returncode == 2 and "output_ids" in res.stderr and res.stderr.count("\n") == 1
    tok = tmp_path / "tok.parquet"
    token_trace(5, groups=2, G=2).to_parquet(tok)
    res = run_seer("spec", "bench", "--trace", str(tok), "--refs", "0,x", "--out", str(out))
    assert res.returncode == 2 and "--refs" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["len.csv", "tok.parquet"]  # nothing written


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--groups", "10"], "--groups 10: "),  # silently capped at the trace's 2
        (["--groups", "0", "--seed", "5"], "--seed draws the --groups sample"),  # the same output as --seed 0
        (["--seed", "5"], "every one of the trace's 2 groups is replayed"),  # the default 20 takes all 2
    ],
)
def test_spec_bench_refuses_a_group_count_or_seed_that_changes_nothing(tmp_path, capsys, argv, said):
    tok = tmp_path / "tok.parquet"
    token_trace(5, groups=2, G=2).to_parquet(tok)
    assert said in cli_error(capsys, "spec", "bench", "--trace", str(tok), *argv, "--out", str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_compare_shows_the_gain_of_grouped_speculation(tmp_path):
    path = tmp_path / "tok.parquet"
    token_trace(6, groups=4, G=8).to_parquet(path)
    cluster = tmp_path / "c.toml"
    cluster.write_text(
        '[cluster]\nmodel = "qwen2.5-7b"\ninstances = 2\nkv_capacity_tokens = 4096\nmax_num_seqs = 16\n'
        "max_num_batched_tokens = 512\nmax_tokens = 200\n"
    )
    res = run_seer(
        "compare",
        "--trace",
        str(path),
        "--cluster",
        str(cluster),
        "--policies",
        "verl,context,seer,seer:scope=own",
        "--json",
        "--out",
        str(tmp_path / "cmp"),
    )
    assert res.returncode == 0, res.stderr
    rows = {r["policy"]: r for r in json.loads(res.stdout)}
    assert rows["seer"]["throughput_tok_s"] > rows["context"]["throughput_tok_s"]
    assert rows["seer"]["spec_tau"] > rows["seer:scope=own"]["spec_tau"] > 1.0
    assert "exact replay" in rows["seer"]["speculation"]
    assert (tmp_path / "cmp" / "seer_scope-own" / "summary.json").exists()
