"""The Python API given bad input, as a notebook would give it: one clear error naming what is wrong, before any
work (each case ran silently wrong, or ended deep in pandas, numpy or simpy, before these checks)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from seer import plots
from seer.core import (
    ChunkFinished,
    Dispatch,
    DraftConfig,
    PolicyTraits,
    RequestState,
    RolloutStarted,
    SetSpeculation,
)
from seer.errors import SeerInputError, TraceError
from seer.experiment import Setup, run
from seer.loop import PolicyError
from seer.policies.speculation import GroupDrafter

COLUMNS = ["prompt_id", "sample_id", "prompt_len", "output_len", "max_tokens"]


@pytest.fixture(scope="module")
def frame():
    trace = pd.read_parquet(ROOT / "seer" / "data" / "gsm8k_smollm2.parquet")
    return trace[trace["prompt_id"].isin(sorted(trace["prompt_id"].unique())[:3])][COLUMNS].reset_index(drop=True)


def _setup(df):
    return Setup.from_trace(df, "qwen2-vl-72b", instances=2)


@pytest.mark.parametrize(
    "column, row, value, said",
    [
        ("sample_id", 1, 0, "duplicate"),  # two rows of one (prompt, sample): both ran
        ("prompt_id", 1, np.nan, "prompt_id"),  # the row was dropped: 23 requests of 24
        ("sample_id", 1, 0.2, "sample_id"),  # truncated to 0
        ("output_len", 1, -5, "output_len"),  # ran as one token
        ("output_len", 1, 10.7, "output_len"),  # ran as 10
        ("prompt_len", 1, -100, "prompt_len"),
    ],
)
def test_a_trace_frame_is_held_to_the_schema_a_file_is(frame, column, row, value, said):
    df = frame.copy()
    if isinstance(value, float) and not np.isnan(value):
        df[column] = df[column].astype(float)
    df.loc[row, column] = value
    with pytest.raises(TraceError, match=said) as got:
        _setup(df)
    assert str(got.value).startswith("the trace frame")


def test_a_cluster_of_the_wrong_type_is_named(frame):
    with pytest.raises(SeerInputError, match="cluster must be a preset name, a TOML path or a ClusterConfig"):
        Setup.from_trace(frame, None)


class _Budgets:
    """Dispatches everything at once and sets a draft budget its traits do not allow."""

    name = "budgets"
    traits = PolicyTraits(drafter=DraftConfig())

    def __init__(self, budget):
        self.budget = budget

    def on_event(self, event, view):
        if not isinstance(event, RolloutStarted):
            return []
        out = [SetSpeculation(0, {}, self.budget)]
        return out + [Dispatch(rid, 0, view.requests[rid].remaining_budget) for rid in view.requests]


@pytest.mark.parametrize("budget", [8, -3, 2.5])
def test_draft_budgets_beyond_the_traits_are_a_contract_error(frame, budget):
    # 8 above max_draft_tokens 0 gave a makespan below its own lower bound (efficiency 1.77); -3 became 0
    with pytest.raises(PolicyError, match="budgets are integers from 0 to its traits' max_draft_tokens"):
        run(_setup(frame), _Budgets(budget))


def test_traits_refuse_a_tick_below_a_millisecond_and_a_negative_draft_cap():
    with pytest.raises(ValueError, match="tick_s must be None or a number of seconds >= 0.001"):
        PolicyTraits(tick_s=1e-9)  # measured: hours of ticks for a rollout of seconds
    with pytest.raises(ValueError, match="max_draft_tokens must be an integer from 0 to 64"):
        PolicyTraits(max_draft_tokens=-1)
    for over in (1e6, True, 0.5):  # 1e6: every iteration generated a million times the groups (partial's cap is 100)
        with pytest.raises(ValueError, match="over_issue must be a number from 1 to 100"):
            PolicyTraits(over_issue=over)
    assert PolicyTraits(over_issue=100).over_issue == 100


def test_shared_parameters_of_no_policy_or_for_an_object_are_refused(frame):
    from seer.experiment import compare
    from seer.policies import make_policy

    setup = _setup(frame)
    with pytest.raises(SeerInputError, match="shared parameter\\(s\\) 'chunk_sise' of no policy"):
        compare(setup, ["verl", "context"], shared={"chunk_sise": 4})
    with pytest.raises(SeerInputError, match="not a policy object"):
        run(setup, make_policy("verl"), shared={"chunk_size": 4})


def test_drafter_settings_a_length_only_trace_cannot_show_are_said(frame):
    with pytest.warns(UserWarning, match="min_prob=0.99 and max_match=1 not modelled without output_ids"):
        run(_setup(frame), "seer:max_match=1:min_prob=0.99")
    # audit 10: scope own kept its own model, but the note said the results were scope group's
    with pytest.warns(UserWarning, match="those of the drafter's defaults, scope own$"):
        mixed = run(_setup(frame), "seer:scope=own:topk=4")
    assert mixed.summary["makespan_s"] == run(_setup(frame), "seer:scope=own").summary["makespan_s"]


def test_a_bad_append_is_named_and_only_it_is_dropped():
    g = GroupDrafter()
    g.add_request(0, 0)
    g.add_request(1, 0)
    g.append(0, [4, 5, 6, 4, 5])
    g.append(1, [7, 8, 2.5])  # checked when the appends are applied, off the per-token path
    with pytest.raises(ValueError, match="tokens appended to sequence 2 were dropped"):
        g.propose(0, [4, 5], 4)
    assert g.tokens(0) == [4, 5, 6, 4, 5]  # the valid appends were lost with the bad one
    assert list(g.propose(0, [4, 5], 4).tokens[:1]) == [6]


def test_drafter_usage_errors_are_plain():
    g = GroupDrafter()
    with pytest.raises(ValueError, match="request ids are integers >= 0"):
        g.add_request(-1, 0, [9, 9, 9])  # its sequence id would have been the prompt's
    g.add_request(0, 0, np.array([9, 9, 9]))  # token lists of a validated trace are arrays
    with pytest.raises(ValueError, match="request 0 is registered in group 0"):
        g.add_request(0, 7)
    with pytest.raises(ValueError, match="as long as each other"):
        g.propose_group_batch([0, 0], [[4]], [4])
    with pytest.raises(ValueError, match="max_depth must be at most"):
        g.propose(0, [9], 10**9)  # a 64 GiB allocation
    with pytest.raises(TypeError, match="needs a DraftConfig"):
        GroupDrafter(None)
    with pytest.raises(ValueError, match="topk must be an integer"):
        DraftConfig(topk=1.5)


def test_a_result_folder_that_is_not_one_is_named(tmp_path, frame):
    from seer.metrics import RolloutResult

    with pytest.raises(SeerInputError, match="summary.json: not a readable result summary"):
        RolloutResult.load(tmp_path)
    res = run(_setup(frame), "verl")
    res.save(tmp_path / "r")
    (tmp_path / "r" / "requests.parquet").write_bytes((tmp_path / "r" / "timeline.parquet").read_bytes())
    with pytest.raises(SeerInputError, match="requests.parquet: lacks column\\(s\\) request_id"):
        RolloutResult.load(tmp_path / "r")


class _Fractional:
    """Dispatches with a budget of 2.5 tokens (it was floored to 2)."""

    name = "fractional"

    def on_event(self, event, view):
        if not isinstance(event, RolloutStarted):
            return []
        return [Dispatch(rid, 0, 2.5) for rid in view.requests]


def test_arguments_of_the_wrong_kind_are_named(frame):
    from seer.experiment import compare, run_iterations
    from seer.fidelity import calibrate
    from seer.traces.synth import SynthConfig

    setup = _setup(frame)
    with pytest.raises(SeerInputError, match="compare takes a list of policies, not 'verl'"):
        compare(setup, "verl")  # compared letter by letter: "unknown policy 'v'"
    preset = Setup.from_preset("qwen2-vl-72b", prompts=4)
    with pytest.raises(SeerInputError, match="iterations must be an integer from 1 to 100,000, not 2.5"):
        run_iterations(preset, "verl", iterations=2.5)
    with pytest.raises(SeerInputError, match="takes a policy spec"):
        run_iterations(preset, _Budgets(0))
    with pytest.raises(SeerInputError, match="spec_seed must be an integer >= 0"):
        run(setup, "seer", spec_seed=-1)
    # a seed given to run is used or refused, as --seed is: verl draws nothing (it ran as if not given)
    with pytest.raises(SeerInputError, match=r"spec_seed=3: no listed policy \(verl\) speculates"):
        run(setup, "verl", spec_seed=3)
    with pytest.raises(SeerInputError, match="seed must be >= 0"):
        SynthConfig(seed=-1).check()
    run_dir = str(ROOT / "benchmarks" / "data" / "fidelity" / "kv-verl-2i")
    with pytest.raises(SeerInputError, match="takes a list of run folders"):
        calibrate(run_dir)
    with pytest.raises(SeerInputError, match="unknown term 'nope'"):
        calibrate([run_dir], terms=["nope"])
    with pytest.raises(PolicyError, match="with max_new_tokens 2.5"):
        run(setup, _Fractional())


def test_misspelt_keywords_and_unknown_models_are_refused_when_given():
    from seer.sim.cluster import ClusterConfig, load_cluster
    from seer.traces.synth import preset_config

    with pytest.raises(SeerInputError, match="unknown cluster key\\(s\\) instancs"):
        load_cluster("qwen2-vl-72b", instancs=3)  # a TypeError from the dataclass
    with pytest.raises(SeerInputError, match="unknown workload key\\(s\\) promts"):
        preset_config("qwen2-vl-72b", promts=3)
    with pytest.raises(ValueError, match="model must be one of"):
        ClusterConfig(name="x", model="nope", instances=1)  # it was refused only when a run began


def test_a_figure_whose_table_cannot_be_written_leaves_no_images(tmp_path):
    import matplotlib.pyplot as plt

    from seer.plots import save

    fig = plt.figure()
    table = pd.DataFrame({"x": [object(), object()]})  # no Parquet type holds it
    with pytest.raises(ValueError, match="the figure's table cannot be written"):
        save(fig, str(tmp_path / "f"), table)
    assert list(tmp_path.iterdir()) == [] and not plt.fignum_exists(fig.number)


def test_a_frame_with_a_column_twice_is_named(frame):
    twice = pd.concat([frame, frame[["output_len"]]], axis=1)  # ended in "'DataFrame' object has no attribute 'dtype'"
    with pytest.raises(TraceError, match="column 'output_len' appears twice"):
        _setup(twice)


@pytest.mark.parametrize(
    "draw, said",
    [
        # normalised to a baseline the table lacks: an empty figure, without a word
        (
            lambda: plots.throughput_bars(_bars().query("policy != 'verl'")),
            "no 'verl' row to normalise to for workload",
        ),
        (lambda: plots.throughput_bars(_bars().head(0)), "throughput_bars: the table has no rows"),
        (lambda: plots.time_bars(_bars().drop(columns="tail_s")), "time_bars: the table has no column"),
        (lambda: plots.ablation(pd.DataFrame(columns=["workload", "step", "speedup", "source"])), "no rows"),
        (lambda: plots.tau_table([]), "tau_table: the table has no column"),
        (lambda: plots.parity([]), "parity: the table has no column"),
        (lambda: plots.kv_timeline({}), "no results"),
        (lambda: plots.length_cdf({"a": pd.DataFrame({"len": [1]})}), r"length_cdf \(a\): the table has no column"),
        (lambda: plots.robustness_heatmap(_bars()), "robustness_heatmap: the table has no column"),
    ],
)
def test_a_figure_of_a_table_it_cannot_draw_is_refused_in_one_line(draw, said):
    # each ended in a KeyError or a numpy error from inside the plotting code, or drew nothing
    with pytest.raises(ValueError, match=said):
        draw()


def _bars() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"workload": w, "policy": p, "throughput_tok_s": t, "makespan_s": 10.0, "tail_s": 2.0}
            for w in ("a", "b")
            for p, t in (("verl", 100.0), ("seer", 150.0))
        ]
    )


def test_a_real_run_of_prompts_needs_a_group_size(tmp_path):
    from seer.real.run import RunSpec, run_rollout

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    for group in (None, 0, 2.5):
        with pytest.raises(SeerInputError, match="group: samples per prompt must be an integer >= 1"):
            run_rollout(RunSpec(model="smollm2", prompts=str(prompts), group=group), str(tmp_path / f"out{group}"))


class _Writer:
    """Dispatches everything to instance 0 and, at its first finished chunk, writes into what it was shown."""

    name = "writer"

    def __init__(self, write):
        self.write = write

    def on_event(self, event, view):
        if isinstance(event, RolloutStarted):
            return [Dispatch(rid, 0, view.requests[rid].remaining_budget) for rid in view.requests]
        if isinstance(event, ChunkFinished):
            self.write(view, event.request_id)
        return []


def _set_generated(view, rid):
    view.requests[rid].generated = 0  # ran to completion and recorded a 0-token response


def _set_state(view, rid):
    view.requests[rid].state = RequestState.WAITING  # a finished request would be dispatched again


def _replace(view, rid):
    view.requests[rid] = view.requests[(rid + 1) % len(view.requests)]


def _drop_member(view, rid):
    del view.members[view.requests[rid].group_id]


def _cached(view, rid):
    view.instances[0].cached_prefix_tokens[rid] = 10**9  # every later reader of this view saw it


@pytest.mark.parametrize(
    "write, error",
    [
        (_set_generated, FrozenInstanceError),
        (_set_state, FrozenInstanceError),
        (_replace, TypeError),
        (_drop_member, TypeError),
        (_cached, TypeError),
    ],
)
def test_what_a_policy_is_shown_it_cannot_change(frame, write, error):
    # before, each write went through silently: the ledger recorded what the policy wrote
    with pytest.raises(error):
        run(Setup.from_trace(frame, "qwen2-vl-72b", instances=1), _Writer(write))


def test_the_api_names_a_wrong_argument_as_the_command_line_would(frame, tmp_path):
    """Audit 7: each ended in an AttributeError or TypeError deep inside (a cost path inside SimPy), or ran while
    the command line refuses the same request."""
    from seer.experiment import compare, run_iterations
    from seer.sim.cluster import load_cluster

    setup = _setup(frame)
    preset = Setup.from_preset("qwen2-vl-72b", prompts=4)
    wrong = [
        (lambda: run(None, "verl"), "run takes a Setup"),
        (lambda: compare(None, ["verl"]), "compare takes a Setup"),
        (lambda: run_iterations(None, "verl", 2), "run_iterations takes a Setup"),
        (lambda: run(setup, "verl", cost="m.toml"), "cost must be a step-time model"),
        (lambda: run(setup, "verl", cost=5), "cost must be a step-time model"),
        (lambda: Setup.from_preset(3), "preset must be a preset name"),
        (lambda: Setup.from_preset("moonlight", cluster=5), "cluster must be a preset name"),
        (lambda: run_iterations(preset, "verl", 2, shared=[1]), "shared parameters are a mapping"),
        (lambda: Setup.from_trace(frame, load_cluster("qwen2-vl-72b"), instances=0), "instances must be >= 1"),
        (lambda: Setup.from_trace(frame, "qwen2-vl-72b", instances="2"), "instances must be an integer"),
        (lambda: Setup.from_trace(frame, "qwen2-vl-72b", spec_seed="a"), "spec_seed must be an integer >= 0"),
        (lambda: Setup.from_trace(frame, "qwen2-vl-72b", spec_seed=-1), "spec_seed must be an integer >= 0"),
        (lambda: Setup.from_trace([1, 2, 3], "qwen2-vl-72b"), "trace must be a file path or a DataFrame"),
        (lambda: Setup.from_trace(b"small.parquet", "qwen2-vl-72b"), "trace must be a file path or a DataFrame"),
        # what the command line refuses as a flag no listed policy reads
        (lambda: run(setup, "verl", shared={"chunk_size": 64}), "shared chunk_size=64: no listed policy \\(verl\\)"),
        (lambda: compare(setup, ["verl"], shared={"chunk_size": 64}), "no listed policy"),
        (lambda: compare(setup, ["verl", " verl"]), "'verl' given more than once"),
        # replaced by the setup's 4 groups without a word
        (lambda: run_iterations(preset, "partial", 1, shared={"target_groups": 100}), "partial:target_groups=K"),
    ]
    for call, said in wrong:
        with pytest.raises(SeerInputError, match=said):
            call()
    # a shared value applies where it is read: one of the listed policies takes it
    rows, _ = compare(setup, ["verl", "context"], shared={"chunk_size": 64})
    assert [r["policy"] for r in rows] == ["verl", "context"]


def test_a_requests_tokens_cannot_be_changed_by_a_reader():
    """An engine resumes a chunk from `output_ids` (the real backend builds its prompt from them): as a list, a
    policy that appended to it changed what the next chunk continued from, and what the run recorded."""
    from seer.core import FinishReason, Group, Request, Rollout
    from seer.core.model import write_request
    from seer.loop import RequestLedger

    ro = Rollout()
    ro.add_group(Group(0, prompt_len=4, max_tokens=8, size=1))
    req = ro.requests[0]
    write_request(req, output_ids=())
    ledger = RequestLedger(ro)
    ledger.dispatch(Dispatch(0, 0, 3), 0.0, "p")
    ledger.chunk_finished(ChunkFinished(1.0, 0, 0, 3, False, FinishReason.CHUNK, (5, 6, 7)), False)
    assert req.output_ids == (5, 6, 7) and req.generated == 3
    with pytest.raises(AttributeError):
        req.output_ids.append(9)
    assert Request(1, 0, 0, 4, 8, output_ids=[1, 2]).output_ids == (1, 2)  # a list given is copied
