"""An option that would change nothing is refused, not silently ignored; and bad input with a small preset is
refused before its workload is generated (the generator's warning would come before the one error line)."""

import json

import pandas as pd
import pytest
from conftest import ROOT, cli_error, run_seer

from seer.cli import main
from seer.metrics import RolloutResult


@pytest.fixture
def one_prompt(tmp_path):
    """The bundled trace cut to its first prompt: a simulation of it takes a moment."""
    trace = pd.read_parquet(ROOT / "seer" / "data" / "gsm8k_smollm2.parquet")
    path = tmp_path / "one_prompt.parquet"
    trace[trace["prompt_id"] == trace["prompt_id"].iloc[0]].to_parquet(path, index=False)
    return str(path)


def _on(trace):
    return ["--trace", trace, "--cluster", "qwen2-vl-72b", "--instances", "2"]


@pytest.mark.parametrize(
    "argv, word",
    [
        (["simulate", "--policy", "verl", "--speculation", "fixed", "--gamma", "8"], "--speculation"),
        (["simulate", "--policy", "verl", "--chunk-size", "64"], "--chunk-size"),
        (["simulate", "--policy", "seer", "--gamma", "8"], "--gamma applies only under --speculation fixed"),
        (["simulate", "--policy", "seer", "--speculation", "adaptive", "--gamma", "8"], "--gamma"),
        (["simulate", "--policy", "seer:gamma=8"], "policy seer:gamma=8: gamma"),
        (["simulate", "--policy", "seer:speculation=off:gamma=2"], "speculation is off"),
        (["simulate", "--policy", "seer", "--speculation", "off", "--spec-topk", "2"], "--spec-topk"),
        (["simulate", "--policy", "seer:scope=own", "--spec-scope", "global"], "sets its own"),
        (["compare", "--policies", "verl,context", "--speculation", "fixed", "--gamma", "8"], "--speculation"),
        (["compare", "--policies", "verl,context", "--spec-topk", "4", "--spec-scope", "own"], "--spec-scope"),
        (["compare", "--policies", "verl,seer", "--gamma", "8"], "--gamma"),
        (["compare", "--policies", "verl,seer:gamma=8"], "gamma"),
    ],
)
def test_an_option_no_listed_policy_uses_is_refused(argv, word, one_prompt, tmp_path, capsys):
    out = tmp_path / "res"
    line = cli_error(capsys, *argv, *_on(one_prompt), "--out", str(out))
    assert word in line
    assert not out.exists()


def test_shared_options_still_apply_to_the_policies_of_a_mixed_list_that_take_them(one_prompt, tmp_path, capsys):
    argv = ["--policies", "verl,seer", "--speculation", "fixed", "--gamma", "8", "--chunk-size", "512"]
    assert main(["compare", *argv, *_on(one_prompt), "--out", str(tmp_path / "c"), "--json"]) == 0
    assert [r["policy"] for r in json.loads(capsys.readouterr().out)] == ["verl", "seer"]
    used = RolloutResult.load(tmp_path / "c" / "seer").config["policy"]
    assert (used["speculation"], used["gamma"], used["chunk_size"]) == ("fixed", 8, 512)
    spec = "seer:speculation=fixed:gamma=8"
    assert main(["simulate", "--policy", spec, *_on(one_prompt), "--out", str(tmp_path / "s"), "--json"]) == 0


@pytest.fixture
def no_engines(monkeypatch):
    """`seer run` refusals must come before a model is prepared, let alone an engine started."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("seer run went on to prepare the model")

    monkeypatch.setattr("seer.real.run.prepare_model", refuse)


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--spec-tokens", "4"], "--spec-tokens"),
        (["--speculation", "none", "--spec-tokens", "4"], "none drafts nothing"),
        (["--policy", "seer", "--spec-tokens", "2"], "--spec-tokens"),
        (["--policy", "seer:gamma=8"], "gamma"),
        (["--policy", "verl", "--chunk-size", "64"], "--chunk-size: no listed policy (verl) takes chunk_size"),
    ],
)
def test_run_refuses_spec_options_it_would_drop_before_any_engine(argv, word, no_engines, tmp_path, capsys):
    out = tmp_path / "r"
    trace = str(ROOT / "seer" / "data" / "gsm8k_smollm2.parquet")
    line = cli_error(capsys, "run", "--model", "dummy:smollm2", "--replay", trace, *argv, "--out", str(out))
    assert word in line
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--cost-model", "bad.toml", "--out", "q2"],
        ["simulate", "--out", "afile"],
        ["compare", "--iterations", "2", "--cost-model", "bad.toml"],
        ["compare", "--cost-model", "bad.toml", "--out", "q2"],
        ["compare", "--out", "afile"],
    ],
)
def test_bad_input_is_refused_before_a_preset_workload_is_generated(argv, tmp_path):
    # kimi-k2 cut to one prompt warns that its length-spread target is out of reach: it must not get that far
    (tmp_path / "bad.toml").write_text("[coefficients]\noverhead_s = -1\n")
    (tmp_path / "afile").write_text("mine\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_seer(*argv, "--preset", "kimi-k2", "--prompts", "1", cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("seer: error: "), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_gamma_that_adaptive_or_no_speculation_ignores_is_refused_in_python():
    from seer.errors import SeerInputError
    from seer.policies import SeerPolicy, make_policy

    with pytest.raises(ValueError, match="gamma is the draft length of speculation=fixed"):
        SeerPolicy(gamma=8)
    with pytest.raises(SeerInputError, match="policy seer:speculation=off: gamma .* speculation is off"):
        make_policy("seer:speculation=off", gamma=2)
    assert SeerPolicy(gamma=8, speculation="fixed").max_draft_tokens == 8
    # a shared value (one set of options serving a list) applies only where it is read: not refused here, and
    # not applied (adaptive drafts up to gamma_max, 8)
    assert make_policy("seer", {"gamma": 3}).max_draft_tokens == 8


@pytest.mark.parametrize("extra", [[], ["--preset", "qwen2-vl-72b", "--prompts", "8"]])
def test_a_partial_target_no_rollout_can_meet_is_refused_before_any_policy_runs(
    extra, one_prompt, tmp_path, capsys, monkeypatch
):
    def ran(*_args, **_kwargs):
        raise AssertionError("a policy ran before partial's target was refused")

    monkeypatch.setattr("seer.experiment.run", ran)
    monkeypatch.setattr("seer.experiment.run_iterations", ran)
    workload = extra or _on(one_prompt)  # one group on the trace; 16 in the preset's first iteration (2 x 8)
    out = tmp_path / "c"
    spec = "partial:target_groups=17" if extra else "partial:target_groups=2"
    line = cli_error(capsys, "compare", "--policies", f"verl,{spec}", *workload, "--out", str(out))
    groups = 16 if extra else 1
    assert f"target_groups={spec.split('=')[1]} is more than the {groups} groups" in line
    assert not out.exists()


def test_compare_in_python_refuses_the_target_before_running(one_prompt, monkeypatch):
    from seer.errors import SeerInputError
    from seer.experiment import Setup, compare

    monkeypatch.setattr("seer.experiment.run", lambda *a, **k: pytest.fail("verl ran"))
    setup = Setup.from_trace(one_prompt, "qwen2-vl-72b", instances=2)
    with pytest.raises(SeerInputError, match="target_groups=3 is more than the 1 groups"):
        compare(setup, ["verl", "partial:target_groups=3"])


@pytest.mark.parametrize("out", ["d.parquet", "d.parquet/x.parquet", "x.txt"])
def test_trace_outputs_are_checked_before_any_work(out, tmp_path):
    # a folder named like a trace, a path under a file... the generator's warning must not come first
    (tmp_path / "d.parquet").mkdir()
    (tmp_path / "d.parquet" / "x.parquet").mkdir()
    synth = run_seer("trace", "synth", "--preset", "kimi-k2", "--prompts", "1", "-o", out, cwd=tmp_path)
    convert = run_seer("trace", "convert", "missing.csv", "--from", "csv", "-o", out, cwd=tmp_path)
    for proc in (synth, convert):
        assert proc.returncode == 2
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(f"seer: error: {out}"), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet"]


@pytest.mark.parametrize(
    "spec, said",
    [
        ("seer:speculation=off:topk=4", "topk configures the drafter, and this one's speculation is off"),
        ("seer:speculation=off:scope=own", "scope configures the drafter"),
        (
            "seer:speculation=fixed:gamma_max=16",
            "gamma_max tunes MBA's adaptive budgets, and this one's speculation is fixed",
        ),
    ],
)
def test_every_setting_a_speculation_mode_never_reads_is_refused(spec, said):
    from seer.errors import SeerInputError
    from seer.policies import make_policy

    with pytest.raises(SeerInputError, match=said):
        make_policy(spec)
    # the same setting under adaptive is read
    policy = make_policy(spec.split(":", 2)[0] + ":" + spec.split(":", 2)[2])
    name, value = spec.rsplit(":", 1)[1].split("=")
    if name == "gamma_max":
        assert policy.max_draft_tokens == int(value)
    else:
        assert str(getattr(policy.traits.drafter, name)) == value


def _sweep(tmp_path, text):
    from seer.sweep import cells, load_config

    path = tmp_path / "s.toml"
    path.write_text('[sweep]\npresets = ["qwen2-vl-72b"]\n' + text)
    return [(c["policy"], c["params"]) for c in cells(load_config(str(path)))]


def test_a_swept_value_reaches_only_the_cells_that_read_it(tmp_path):
    # gamma swept beside fixed speculation: each gamma is a cell (it was refused, checked without the speculation)
    grid = _sweep(tmp_path, 'policies = ["seer"]\n[sweep.params]\nspeculation = ["fixed"]\ngamma = [2, 8]\n')
    assert grid == [("seer", {"gamma": 2, "speculation": "fixed"}), ("seer", {"gamma": 8, "speculation": "fixed"})]
    # adaptive and fixed in one sweep: the adaptive seer runs once, not once per gamma under different labels
    grid = _sweep(tmp_path, 'policies = ["seer", "seer:speculation=fixed"]\n[sweep.params]\ngamma = [2, 8]\n')
    assert grid == [("seer", {}), ("seer:speculation=fixed", {"gamma": 2}), ("seer:speculation=fixed", {"gamma": 8})]


def test_a_sweep_refuses_a_value_no_cell_reads_and_a_target_no_cell_meets_before_running(tmp_path):
    from seer.errors import SeerInputError

    with pytest.raises(SeerInputError, match=r"\[sweep.params\] gamma: no cell reads it \(seer: gamma is the draft"):
        _sweep(tmp_path, 'policies = ["seer"]\n[sweep.params]\ngamma = [2, 8]\n')
    with pytest.raises(SeerInputError, match="target_groups=100000 is more than the 600 groups"):
        _sweep(tmp_path, 'policies = ["verl", "partial:target_groups=100000"]\n')


@pytest.mark.parametrize(
    "argv, tokens, word",
    [
        (["simulate", "--policy", "seer"], True, "the trace has output token ids"),
        (["simulate", "--policy", "verl"], False, "no listed policy (verl) speculates"),
        (["simulate", "--policy", "seer:speculation=off"], False, "speculates"),
        (["compare", "--policies", "verl,context"], False, "no listed policy (verl, context) speculates"),
        (["compare", "--policies", "verl,seer"], True, "output token ids"),
    ],
)
def test_a_seed_that_draws_nothing_is_refused(argv, tokens, word, one_prompt, tmp_path, capsys):
    # with --trace, --seed seeds only the parametric acceptance draws: it ran as if not given
    trace = one_prompt
    if not tokens:
        trace = str(tmp_path / "lengths.parquet")
        pd.read_parquet(one_prompt).drop(columns=["output_ids", "prompt_ids"], errors="ignore").to_parquet(trace)
    out = tmp_path / "res"
    line = cli_error(capsys, *argv, *_on(trace), "--seed", "3", "--out", str(out))
    assert word in line
    assert not out.exists()


def test_a_seed_a_speculating_policy_draws_with_is_taken(one_prompt, tmp_path, capsys):
    trace = str(tmp_path / "lengths.parquet")
    pd.read_parquet(one_prompt).drop(columns=["output_ids", "prompt_ids"], errors="ignore").to_parquet(trace)
    argv = ["compare", "--policies", "verl,seer", *_on(trace), "--seed", "3", "--out", str(tmp_path / "c"), "--json"]
    assert main(argv) == 0
    assert RolloutResult.load(tmp_path / "c" / "seer").config["workload"]["spec_seed"] == 3
