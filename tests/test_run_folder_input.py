"""A damaged run folder (`seer run`'s output) is refused in one line naming the file and the field.

Each case is a copy of a committed recording with one change; before these checks each one ended in a traceback
deep in pandas or numba, in NaN results with exit status 0, or in a refusal that did not say which file.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seer.cli import main

RECORDING = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "fidelity" / "kv-verl-2i"


def _json(name, **changes):
    def edit(run: Path) -> None:
        doc = json.loads((run / name).read_text())
        (doc["summary"] if name == "summary.json" else doc).update(changes)
        (run / name).write_text(json.dumps(doc))

    return edit


def _parquet(name, change):
    def edit(run: Path) -> None:
        df = pd.read_parquet(run / name)
        change(df).to_parquet(run / name, index=False)

    return edit


def _set(column, values):
    return lambda df: df.assign(**{column: values(df) if callable(values) else values})


DAMAGE = {
    "finish_text": (_parquet("requests.parquet", _set("finish_s", "x")), "requests.parquet column 'finish_s'"),
    "finish_nan": (_parquet("requests.parquet", _set("finish_s", np.nan)), "requests.parquet row 1, column 'finish_s'"),
    "finish_late": (
        _parquet("requests.parquet", _set("finish_s", lambda df: df["finish_s"] * 1e6)),
        "column 'finish_s'",
    ),
    "no_requests": (_parquet("requests.parquet", lambda df: df.iloc[:0]), "requests.parquet has no rows"),
    "request_twice": (
        _parquet("requests.parquet", lambda df: pd.concat([df, df.iloc[:1]], ignore_index=True)),
        "requests.parquet row 97 (prompt 0, sample 0) repeats an earlier row",
    ),
    "chunks_negative": (_parquet("requests.parquet", _set("chunks", -1)), "requests.parquet row 1, column 'chunks'"),
    "kv_huge": (_json("summary.json", kv_capacity_tokens=10**30), "summary.json kv_capacity_tokens"),
    "kv_fraction": (_json("summary.json", kv_capacity_tokens=3072.5), "summary.json kv_capacity_tokens"),
    "model_len_huge": (_json("run.json", max_model_len=10**30), "run.json: max_model_len"),
    "max_tokens_huge": (_json("run.json", max_tokens=10**30), "run.json: max_tokens"),
    "chunk_negative": (_json("run.json", chunk_size=-5), "run.json: chunk_size"),
    "chunk_zero": (_json("run.json", chunk_size=0), "run.json: chunk_size"),
    "policy_unknown_param": (_json("run.json", policy="context:nonsense=3"), "run.json policy"),
    # `this` prints the Zen of Python when imported: a data file must not make seer import (run) a module
    "policy_imported": (_json("run.json", policy="this.X"), "run.json names policy 'this.X', a class to import"),
    "policy_unknown": (_json("run.json", policy="contxt"), "run.json policy: unknown policy 'contxt'"),
    "step_forever": (_parquet("steps.parquet", _set("duration_s", 1e300)), "steps.parquet row 1, column 'duration_s'"),
    "instance_fraction": (_parquet("steps.parquet", _set("instance", 0.5)), "steps.parquet row 1, column 'instance'"),
    "preempted_vast": (_parquet("steps.parquet", _set("preempted", 10**12)), "steps.parquet row 1, column 'preempted'"),
    # contradictions between the files (each ran with exit status 0 and reported its numbers as the simulator's error)
    "instance_missing": (_parquet("steps.parquet", _set("instance", 9)), "steps.parquet row 1, column 'instance'"),
    "step_after_end": (_parquet("steps.parquet", _set("t", 1e9)), "steps.parquet row 1, column 't'"),
    "kv_usage_five": (_parquet("steps.parquet", _set("kv_usage", 5.0)), "steps.parquet row 1, column 'kv_usage'"),
    "requests_cut": (_parquet("requests.parquet", lambda df: df.iloc[:5]), "requests.parquet has no row for prompt"),
    "trace_cut": (_parquet("trace.parquet", lambda df: df.iloc[:5]), "is not in trace.parquet"),
    "prompt_empty": (_parquet("trace.parquet", _set("prompt_len", 0)), "trace.parquet row 1, column 'prompt_len'"),
    "instances_differ": (_json("summary.json", instances=7), "summary.json says 7 instances and run.json 2"),
    "makespan_text": (_json("summary.json", makespan_s="87"), "summary.json makespan_s must be a number, not '87'"),
    "events_junk": (lambda run: (run / "events.parquet").write_bytes(b"junk"), "events.parquet is not a readable"),
    # audit 7: each ran with exit status 0 and reported confident numbers
    "steps_twice": (
        _parquet("steps.parquet", lambda df: pd.concat([df, df], ignore_index=True)),
        "overlap on instance 0",
    ),
    "max_num_seqs_one": (_json("run.json", max_num_seqs=1), "column 'running'"),
    "kv_below_a_request": (
        _json("summary.json", kv_capacity_tokens=600),
        "held 905 tokens of KV, more than summary.json's kv_capacity_tokens (600; 576 in whole blocks of 32)",
    ),
    "sched_tokens_inf": (
        _parquet("steps.parquet", _set("sched_tokens", np.inf)),
        "steps.parquet row 1, column 'sched_tokens'",
    ),
}


def _damaged(tmp_path: Path, case: str) -> Path:
    run = tmp_path / case
    shutil.copytree(RECORDING, run)
    DAMAGE[case][0](run)
    return run


@pytest.mark.parametrize("case", DAMAGE)
def test_fidelity_refuses_a_damaged_run_in_one_line(tmp_path, capsys, case):
    run = _damaged(tmp_path, case)
    assert main(["fidelity", str(run)]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert captured.out == ""  # nothing ran (an imported module printing, say) before the refusal
    assert err.count("\n") == 1 and err.startswith(f"seer: error: {run}: "), err
    assert DAMAGE[case][1] in err, err


@pytest.mark.parametrize("case", ["policy_unknown_param", "chunk_negative", "kv_fraction"])
def test_figures_refuses_a_run_it_cannot_replay_before_drawing_anything(tmp_path, capsys, monkeypatch, case):
    def draw(*args, **kwargs):
        raise AssertionError("figures were drawn for a run that cannot be replayed")

    monkeypatch.setattr("seer.figures.make_figures", draw)
    run = _damaged(tmp_path, case)
    assert main(["figures", "--run", str(run), "--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and DAMAGE[case][1] in err, err


def test_a_step_starting_at_the_makespan_and_a_full_kv_cache_are_accepted(tmp_path):
    from seer.runs import load_run

    run = tmp_path / "edge"
    shutil.copytree(RECORDING, run)
    makespan = json.loads((run / "summary.json").read_text())["summary"]["makespan_s"]
    steps = pd.read_parquet(run / "steps.parquet")
    steps.loc[steps.index[-1], ["t", "duration_s", "kv_usage"]] = [makespan, 1e-6, 1.0]
    steps.to_parquet(run / "steps.parquet", index=False)
    assert load_run(str(run)).steps["t"].max() == makespan


def test_fidelity_of_a_run_without_output_tokens_or_preemption_times_says_what_it_cannot_tell(tmp_path, capsys):
    # no output tokens: a ZeroDivisionError traceback; no `preempted` column (older runs): "real 0" for 74
    run = tmp_path / "old"
    shutil.copytree(RECORDING, run)
    _parquet("steps.parquet", lambda df: df.drop(columns=["preempted"]))(run)
    recorded = int(pd.read_parquet(run / "requests.parquet")["preemptions"].sum())
    assert recorded > 0
    assert main(["fidelity", str(run)]) == 0
    assert f"real {recorded:,} (median at - of the makespan)" in capsys.readouterr().out
    _parquet("requests.parquet", lambda df: df.drop(columns=["preemptions"]))(run)
    _parquet("trace.parquet", _set("output_len", 0))(run)
    assert main(["fidelity", str(run)]) == 0
    out = capsys.readouterr().out
    assert "throughput n/a" in out and "real unknown (not recorded)" in out


def test_calibrate_refuses_a_copy_of_a_run_and_an_output_that_is_not_toml(tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(RECORDING, copy)
    line = _error(capsys, ["calibrate", str(RECORDING), str(copy), "-o", str(tmp_path / "m.toml")])
    assert "hold the same measured steps" in line
    other = tmp_path / "other"
    shutil.copytree(RECORDING, other)
    before = (other / "steps.parquet").read_bytes()
    # another recorded run's steps were replaced by the model's TOML without a word
    line = _error(capsys, ["calibrate", str(RECORDING), "-o", str(other / "steps.parquet")])
    assert "name one ending in .toml" in line and (other / "steps.parquet").read_bytes() == before
    assert "the path is empty" in _error(capsys, ["calibrate", str(RECORDING), "-o", ""])
    assert not (tmp_path / "m.toml").exists()


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("seer: error: "), err
    return err
