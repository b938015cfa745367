import json

import pytest
from conftest import run_seer

from seer.metrics import SUMMARY_KEYS, RolloutResult


def test_qwen_verl_shows_the_papers_baseline_picture(tmp_path):
    """Done-when of the simulator: preemptions early, a long tail, the last instance long after the first."""
    proc = run_seer("simulate", "--preset", "qwen2-vl-72b", "--policy", "verl", "--json", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["requests"] == 9600 and s["preemptions"] > 1000
    assert s["preemptions_first_half_share"] > 0.7
    assert s["tail_s"] >= 0.3 * s["makespan_s"]
    assert s["first_instance_done_s"] < 0.7 * s["makespan_s"]
    assert s["makespan_s"] >= s["lower_bound_s"]
    res = RolloutResult.load(tmp_path)
    assert len(res.requests) == 9600 and res.timeline["instance"].nunique() == 16
    assert (res.events.kind == "preempt").sum() == s["preemptions"]


def test_simulate_a_trace_file_on_a_named_cluster(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(
        "prompt_id,sample_id,prompt_len,output_len\n"
        + "".join(f"{p},{s},100,{50 + 7 * p + s}\n" for p in range(6) for s in range(4))
    )
    proc = run_seer(
        "simulate",
        "--trace",
        str(trace),
        "--cluster",
        "moonlight",
        "--instances",
        "2",
        "--policy",
        "least-loaded",
        "--out",
        str(tmp_path / "res"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "makespan" in proc.stdout and "tail" in proc.stdout
    res = RolloutResult.load(tmp_path / "res")
    assert res.summary["requests"] == 24 and res.requests["max_tokens"].unique().tolist() == [65536]


def test_bad_simulate_inputs_exit_2(tmp_path):
    for args, msg in [
        (["simulate", "--policy", "verl"], "exactly one of --trace PATH or --preset NAME"),
        (["simulate", "--trace", "x.parquet"], "--trace needs --cluster"),
        (["simulate", "--preset", "moonlight", "--policy", "magic"], "unknown policy 'magic'"),
        (["simulate", "--preset", "nope"], "unknown preset 'nope'"),
        (["simulate", "--preset", "moonlight", "--cluster", str(tmp_path / "missing.toml")], "no such cluster file"),
    ]:
        proc = run_seer(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert msg in proc.stderr and "Traceback" not in proc.stderr


def test_a_request_too_long_for_the_cluster_is_one_clear_line(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("prompt_id,sample_id,prompt_len,output_len\n0,0,100,5000000\n")
    proc = run_seer("simulate", "--trace", str(trace), "--cluster", "moonlight", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "t.csv, row 1, column 'output_len': output_len 5000000 exceeds max_tokens 65536" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cluster_from_an_edited_toml_copy(tmp_path):
    from importlib.resources import files

    src = (files("seer.presets") / "moonlight.toml").read_text().replace("instances = 32", "instances = 3")
    path = tmp_path / "mine.toml"
    path.write_text(src)
    trace = tmp_path / "t.csv"
    trace.write_text("prompt_id,sample_id,prompt_len,output_len\n" + "".join(f"{p},0,10,20\n" for p in range(6)))
    proc = run_seer("simulate", "--trace", str(trace), "--cluster", str(path), "--json", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["instances"] == 3


def test_compare_prints_one_table_and_saves_every_result(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(
        "prompt_id,sample_id,prompt_len,output_len\n"
        + "".join(f"{p},{s},64,{40 + 300 * (p % 3) + 5 * s}\n" for p in range(12) for s in range(4))
    )
    out = tmp_path / "cmp"
    proc = run_seer(
        "compare",
        "--trace",
        str(trace),
        "--cluster",
        "moonlight",
        "--instances",
        "2",
        "--policies",
        "verl,divided,context,oracle",
        "--chunk-size",
        "128",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["policy"] for r in rows] == ["verl", "divided", "context", "oracle"]
    for r in rows:
        assert set(SUMMARY_KEYS) <= set(r) and r["requests"] == 48
    assert rows[0]["speedup_vs_verl"] == 1.0
    assert rows[1]["preemptions"] == 0 and rows[1]["migrations"] > 0  # 128-token chunks move between instances
    for p in ("verl", "divided", "context", "oracle"):
        assert RolloutResult.load(out / p).summary["policy"] == p
    assert (out / "compare.parquet").exists() and (out / "compare.json").exists()
    table = run_seer(
        "compare",
        "--trace",
        str(trace),
        "--cluster",
        "moonlight",
        "--instances",
        "2",
        "--policies",
        "verl,context",
        "--out",
        str(tmp_path / "c2"),
    )
    assert "x verl" in table.stdout and "context" in table.stdout
    # without a verl row there is nothing to compare with: a dash, not "nan"
    alone = run_seer(
        "compare", "--trace", str(trace), "--cluster", "moonlight", "--instances", "2", "--policies", "context",
        "--out", str(tmp_path / "c3"),
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    row = next(line for line in alone.stdout.splitlines() if line.startswith("context"))
    assert "nan" not in row and row.split()[2] == "-" and row.split()[5] == "-"


def test_compare_partial_over_iterations(tmp_path):
    proc = run_seer(
        "compare",
        "--preset",
        "qwen2-vl-72b",
        "--prompts",
        "24",
        "--instances",
        "2",
        "--policies",
        "verl,partial",
        "--iterations",
        "2",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["policy"]: r for r in json.loads(proc.stdout)}
    assert rows["partial"]["trained_samples"] >= rows["verl"]["trained_samples"] == 2 * 24 * 16
    assert rows["partial"]["trained_mean_len"] < rows["verl"]["trained_mean_len"]
    import pandas as pd

    it = pd.read_parquet(tmp_path / "iterations.parquet")
    assert len(it) == 4 and (it[it.policy == "partial"].carried_requests > 0).all()
    for p, row in rows.items():  # the compare row holds the per-iteration means, not placeholders
        mine = it[it.policy == p]
        assert row["migrations"] == round(mine.migrations.mean())
        assert row["efficiency"] == pytest.approx(mine.efficiency.mean()) and 0 < row["efficiency"] <= 1
    # every trained response once, with the iterations it was issued and trained in: verl trains what it issues
    trained = pd.read_parquet(tmp_path / "trained_lengths.parquet")
    assert list(trained.columns) == ["policy", "prompt_id", "sample_id", "output_len", "issued", "iteration"]
    for p, row in rows.items():
        mine = trained[trained.policy == p]
        assert len(mine) == row["trained_samples"] and mine.output_len.mean() == pytest.approx(row["trained_mean_len"])
        assert not mine.duplicated(["prompt_id", "sample_id"]).any()
        assert set(mine.iteration) == {0, 1} and (mine.issued <= mine.iteration).all()
    verl, partial = (trained[trained.policy == p] for p in ("verl", "partial"))
    assert (verl.issued == verl.iteration).all()
    carried = partial[partial.issued < partial.iteration]  # started in iteration 0, trained in 1
    assert len(carried) and (partial.groupby("prompt_id").iteration.nunique() == 1).all()


def test_a_partial_spec_with_parameters_also_runs_over_iterations(tmp_path, capsys):
    """The mode follows the policy's traits (it over-issues), not the literal name `partial`."""
    from seer.cli import main

    args = ["compare", "--preset", "qwen2-vl-72b", "--prompts", "12", "--instances", "2", "--out", str(tmp_path)]
    assert main([*args, "--policies", "verl,partial:over_issue=2"]) == 0
    assert (tmp_path / "iterations.parquet").is_file() and not (tmp_path / "verl").exists()
    printed = capsys.readouterr().out
    assert "iterations.parquet" in printed
    # the header gave verl's 192 requests for both rows; partial held twice as many
    assert "requests verl 192, partial:over_issue=2 384 per iteration" in printed.splitlines()[0]


def test_a_trace_run_records_its_workload_and_seed_seeds_the_acceptance_draws(tmp_path):
    """--seed with --trace seeds the parametric acceptance model (it was ignored); summary.json says which
    workload and seeds produced it; --prompts does not apply to a trace and is refused."""
    trace = tmp_path / "t.csv"
    trace.write_text(
        "prompt_id,sample_id,prompt_len,output_len\n"
        + "".join(f"{p},{s},100,{300 + 37 * p + s}\n" for p in range(8) for s in range(4))
    )
    base = ["simulate", "--trace", str(trace), "--cluster", "moonlight", "--instances", "2", "--policy", "seer"]
    out = {}
    for seed in ("1", "1", "2"):
        folder = tmp_path / f"r{len(out)}"
        proc = run_seer(*base, "--seed", seed, "--out", str(folder), "--json")
        assert proc.returncode == 0, proc.stderr
        out[len(out)] = json.loads((folder / "summary.json").read_text())
    assert out[0]["summary"]["spec_accepted_tokens"] == out[1]["summary"]["spec_accepted_tokens"]
    assert out[0]["summary"]["spec_accepted_tokens"] != out[2]["summary"]["spec_accepted_tokens"]
    workload = out[2]["config"]["workload"]
    assert workload["trace"] == str(trace) and workload["spec_seed"] == 2 and workload["requests"] == 32
    proc = run_seer(*base, "--prompts", "3", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--prompts sizes a --preset workload" in proc.stderr


def test_preset_runs_record_the_generator_and_its_seed(tmp_path):
    proc = run_seer("simulate", "--preset", "moonlight", "--prompts", "4", "--seed", "3", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    workload = json.loads((tmp_path / "summary.json").read_text())["config"]["workload"]
    assert workload["name"] == "moonlight" and workload["synth"]["seed"] == 3 and workload["synth"]["prompts"] == 4


MY_POLICY = '''
from dataclasses import dataclass

from seer.core import ChunkFinished, Dispatch, RequestState, RolloutStarted
from seer.policies.config import ConfiguredPolicy, PolicyConfig, param


@dataclass(frozen=True)
class ShortestPromptConfig(PolicyConfig):
    budget: int = param(10**9, "tokens per chunk")


class ShortestPrompt(ConfiguredPolicy):
    """Every request at the start, shortest prompt first, round-robin; a cut chunk resumes where it was."""

    name = "shortest-prompt"
    Config = ShortestPromptConfig

    def on_event(self, event, view):
        if isinstance(event, RolloutStarted):
            order = sorted(view.requests, key=lambda r: (view.requests[r].prompt_len, r))
            return [Dispatch(r, i % len(view.instances), self.cfg.budget) for i, r in enumerate(order)]
        if isinstance(event, ChunkFinished) and view.requests[event.request_id].state is RequestState.WAITING:
            return [Dispatch(event.request_id, event.instance, self.cfg.budget)]
        return []


class NotAPolicy:
    pass
'''


def test_a_policy_of_your_own_runs_by_its_module_path(tmp_path):
    """`module.Class` names a ConfiguredPolicy subclass on the Python path: compare, sweep and `seer policies`
    take it like a registered one, parameters included."""
    (tmp_path / "mypol.py").write_text(MY_POLICY)
    env = {"PYTHONPATH": str(tmp_path)}
    args = ["--preset", "moonlight", "--prompts", "4", "--instances", "2"]
    proc = run_seer(
        "compare", *args, "--policies", "verl,mypol.ShortestPrompt:budget=64", "--out", str(tmp_path / "c"), env=env
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["policy"]: r for r in json.loads((tmp_path / "c" / "compare.json").read_text())}
    mine = rows["mypol.ShortestPrompt:budget=64"]
    assert mine["output_tokens"] == rows["verl"]["output_tokens"] and mine["chunks"] > mine["requests"]
    listed = run_seer("policies", "mypol.ShortestPrompt", env=env)
    assert "shortest prompt first" in listed.stdout and "budget" in listed.stdout
    (tmp_path / "badpol.py").write_text("def broken(:\n")
    for name, words in (
        ("mypol.NotAPolicy", "not a seer.policies.config.ConfiguredPolicy"),
        ("nosuch.X", "cannot import"),
        ("badpol.X", "SyntaxError"),
        (".X", "cannot import"),
    ):
        bad = run_seer("simulate", *args, "--policy", name, env=env)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr


def test_a_tail_reduction_a_hair_below_zero_prints_as_0_percent(capsys):
    from types import SimpleNamespace

    from seer.cli.sim_cmds import _print_compare

    row = dict(
        policy="context",
        requests=64,
        throughput_tok_s=1000.0,
        speedup_vs_verl=1.0,
        makespan_s=10.0,
        tail_s=1.0,
        tail_reduction=-2.7e-05,
        efficiency=0.5,
        preemptions=0,
        migrations=0,
    )
    cluster = SimpleNamespace(name="c", instances=1, tp=1, dp=1)
    _print_compare(SimpleNamespace(name="w", cluster=cluster), [row], 1)
    line = capsys.readouterr().out.splitlines()[-1]
    assert " 0%" in line and "-0%" not in line


def test_exact_reaches_the_iterations_path_and_is_recorded(tmp_path, capsys):
    """`compare --exact` with partial on a preset runs iterations: it ran them in fast mode, and nothing said so."""
    import pandas as pd

    from seer.cli import main

    args = ["compare", "--exact", "--preset", "qwen2-vl-72b", "--prompts", "2", "--instances", "2"]
    assert main([*args, "--policies", "verl,partial", "--out", str(tmp_path / "c"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["mode"] for r in rows] == ["exact", "exact"]
    table = pd.read_parquet(tmp_path / "c" / "iterations.parquet")
    assert set(table["mode"]) == {"exact"}


def test_simulate_says_n_a_for_tau_with_nothing_drafted_and_compare_names_each_speculation(tmp_path, capsys):
    import pandas as pd
    from conftest import token_trace

    from seer.cli import main

    empty = tmp_path / "empty.csv"
    rows = [(p, s, 100, 0, 1024) for p in range(2) for s in range(4)]
    pd.DataFrame(rows, columns=["prompt_id", "sample_id", "prompt_len", "output_len", "max_tokens"]).to_csv(empty)
    argv = ["--cluster", "moonlight", "--instances", "2"]
    assert main(["simulate", "--trace", str(empty), *argv, "--policy", "seer", "--out", str(tmp_path / "s")]) == 0
    assert "tau n/a tokens per speculative step" in capsys.readouterr().out  # it printed "tau nan"
    tok = tmp_path / "tok.parquet"
    token_trace(5, groups=2, G=3).to_parquet(tok)
    policies = "seer:scope=global,seer,seer:topk=4"  # the lines were sorted by label and named no policy
    assert main(["compare", "--trace", str(tok), *argv, "--policies", policies, "--out", str(tmp_path / "c")]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("speculation")]
    assert len(lines) == 3 and all(x.startswith(f"speculation ({p}): ") for x, p in zip(lines, policies.split(",")))
    assert "scope global" in lines[0] and "top-4" in lines[2]


def test_one_rollout_of_an_over_issuing_policy_says_what_it_left_ungenerated(tmp_path, capsys):
    """partial on one rollout stops at its target and aborts the rest: its makespan covers less work than verl's,
    which the summary counts and both commands say (the compare table gave partial 1.96x verl for half the work)."""
    import pandas as pd
    from conftest import ROOT

    from seer.cli import main

    workload = [
        "--trace",
        str(ROOT / "seer/data/gsm8k_smollm2.parquet"),
        "--cluster",
        "qwen2-vl-72b",
        "--instances",
        "2",
    ]
    assert main(["simulate", *workload, "--policy", "partial", "--out", str(tmp_path / "s")]) == 0
    printed = capsys.readouterr()
    assert "one rollout without carry-over, and the requests it aborts at its target are not generated" in printed.err
    res = RolloutResult.load(tmp_path / "s")
    aborted = int((res.requests.finish_reason == "abort").sum())
    assert aborted > 0 and res.summary["aborted_requests"] == aborted
    assert f"({aborted:,} aborted unfinished)" in printed.out
    assert main(["compare", *workload, "--policies", "verl,partial", "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr()
    table = pd.read_parquet(tmp_path / "c" / "compare.parquet").set_index("policy")
    assert table.aborted_requests.to_dict() == {"verl": 0, "partial": aborted}
    assert f"partial: {aborted:,} of {res.summary['requests']:,} requests aborted unfinished" in printed.out
    assert "verl:" not in printed.out
