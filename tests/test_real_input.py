"""`seer run` and the step-model files it feeds: bad input found from outside, refused in one line before any engine
starts (each case ended in a traceback, a silently changed workload, or an error that named no file or line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, cli_error, run_seer

RECORDING = ROOT / "benchmarks" / "data" / "fidelity" / "kv-verl-2i"


@pytest.fixture
def no_engines(monkeypatch):
    """What is refused must be refused before the driver builds an engine."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("seer run went on to start engines")

    monkeypatch.setattr("seer.real.driver.RealDriver", refuse)


def _trace(tmp_path: Path, **columns) -> str:
    """Two samples of one prompt (lengths overridable per column), written as Parquet."""
    df = pd.DataFrame({"prompt_id": [0, 0], "sample_id": [0, 1], "prompt_len": [10, 10], "output_len": [8, 8]})
    path = tmp_path / "t.parquet"
    df.assign(**columns).to_parquet(path, index=False)
    return str(path)


def _run(capsys, tmp_path, *argv) -> str:
    out = tmp_path / "out"
    line = cli_error(capsys, "run", "--max-tokens", "16", "--max-model-len", "256", *argv, "--out", str(out))
    assert not out.exists()
    return line


def test_a_prompt_with_a_lone_surrogate_is_named_by_its_line(tmp_path, capsys, no_engines):
    (tmp_path / "p.jsonl").write_text('{"question": "fine"}\n{"question": "\\ud800 hi"}\n')
    line = _run(capsys, tmp_path, "--prompts", str(tmp_path / "p.jsonl"))
    assert "p.jsonl, line 2: the prompt holds '\\ud800', a lone surrogate" in line


def test_a_bad_byte_is_named_by_its_line_and_lines_past_the_limit_are_not_read(tmp_path, capsys, no_engines):
    from seer.real.run import read_prompts

    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"question": "a"}\n\n{"question": "b"}\n\xff\xfe\n')
    assert "p.jsonl, line 4: not UTF-8 text" in _run(capsys, tmp_path, "--prompts", str(path))
    assert read_prompts(str(path), 2) == [(1, "a"), (3, "b")]


def test_a_prompt_too_long_for_the_context_is_named_by_its_line(tmp_path, capsys, no_engines):
    path = tmp_path / "p.jsonl"
    path.write_text('{"question": "a"}\n\n\n' + json.dumps({"question": "word " * 400}) + "\n")
    line = _run(capsys, tmp_path, "--model", "smollm2", "--prompts", str(path))
    assert "p.jsonl, line 4: the prompt's" in line and "exceed --max-model-len 256" in line


@pytest.mark.parametrize(
    "columns, said",
    [
        ({"output_len": [8, 250]}, "t.parquet, row 2: prompt_len 10 plus output_len 250 exceed --max-model-len 256"),
    ],
)
def test_a_trace_a_real_engine_cannot_replay_as_recorded_is_refused(columns, said, tmp_path, capsys, no_engines):
    trace = _trace(tmp_path, max_tokens=[300, 300], **columns)
    assert said in _run(capsys, tmp_path, "--model", "dummy:tiny", "--replay", trace)


def test_arrivals_and_empty_responses_are_said_not_silently_changed(tmp_path):
    from seer.real.checks import check_replayable
    from seer.real.run import RunSpec

    df = pd.read_parquet(_trace(tmp_path, output_len=[0, 8], arrival_s=[0.0, 3.0]))
    with pytest.warns(UserWarning) as said:
        check_replayable(df, RunSpec(replay="t.parquet", max_model_len=256))
    messages = [str(w.message) for w in said]
    assert any("arrival_s is ignored" in m for m in messages)
    assert any("1 response(s) of output_len 0 are replayed as one token" in m for m in messages)


def test_a_kv_cache_past_the_machines_memory_is_refused_before_allocating_it(tmp_path, capsys, no_engines):
    line = _run(capsys, tmp_path, "--model", "dummy:tiny", "--replay", _trace(tmp_path), "--kv-blocks", "100000000")
    assert "--kv-blocks 100,000,000: 2 engine(s) of this model would hold at least" in line


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--fail", ""], "--fail takes INSTANCE@SECONDS (e.g. 1@2.5), not ''"),
        (["--launch", "ray", "--kill", ""], "--kill takes INSTANCE@SECONDS"),
    ],
)
def test_an_empty_flag_value_is_refused_not_ignored(argv, said, tmp_path, capsys, no_engines):
    assert said in _run(capsys, tmp_path, "--model", "dummy:tiny", "--replay", _trace(tmp_path), *argv)


def test_an_empty_output_path_is_refused(tmp_path, capsys, no_engines):
    line = cli_error(capsys, "run", "--model", "dummy:tiny", "--replay", _trace(tmp_path), "--out", "")
    assert "the output folder's path is empty (--out '')" in line


def _model_folder(tmp_path: Path, case: str) -> Path:
    from safetensors.numpy import save_file

    folder = tmp_path / case
    folder.mkdir()
    config = {"model_type": "llama", "vocab_size": 100}
    (folder / "config.json").write_text(json.dumps({"vocab_size": 100} if case == "no_type" else config))
    if case == "cut":
        save_file({"w": np.zeros((64, 64), np.float32)}, str(folder / "model.safetensors"))
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.parametrize(
    "case, said",
    [
        ("no_type", "config.json: not a Hugging Face model config (a JSON object with a model_type)"),
        ("no_weights", "no_weights: no model weights (*.safetensors, *.bin, *.pt)"),
        ("cut", "model.safetensors: damaged weights"),
    ],
)
def test_a_model_folder_an_engine_cannot_load_is_refused_before_it_starts(case, said, tmp_path, capsys):
    folder = _model_folder(tmp_path, case)
    assert said in cli_error(capsys, "model", "prepare", str(folder))
    assert said in _run(capsys, tmp_path, "--model", str(folder), "--replay", _trace(tmp_path))


@pytest.mark.parametrize(
    "terms, said",
    [("5", "[calibration] terms must be a list of names, not 5"), ('"overhead_s"', "terms must be a list of names")],
)
def test_a_step_model_with_malformed_terms_is_refused(terms, said, tmp_path, capsys):
    model = tmp_path / "m.toml"
    model.write_text(f"[coefficients]\noverhead_s = 0.01\n\n[calibration]\nterms = {terms}\n")
    run = tmp_path / "run"
    shutil.copytree(RECORDING, run)
    assert said in cli_error(capsys, "fidelity", str(run), "--cost-model", str(model))


def test_empty_paths_are_refused_not_replaced_by_defaults(tmp_path, capsys):
    assert "the step model's path is empty" in cli_error(capsys, "fidelity", str(RECORDING), "--cost-model", "")
    assert "the output trace's path is empty" in cli_error(capsys, "trace", "synth", "--prompts", "2", "-o", "")


def test_calibrate_refuses_an_empty_term(tmp_path, capsys):
    line = cli_error(capsys, "calibrate", str(RECORDING), "--terms", "per_token_s,", "-o", str(tmp_path / "m.toml"))
    assert "--terms 'per_token_s,': an empty item" in line


def test_a_fault_after_the_rollout_ended_is_said(tmp_path):
    out = tmp_path / "r"
    proc = run_seer(
        *("run", "--model", "dummy:tiny", "--replay", _trace(tmp_path), "--max-tokens", "16"),
        *("--max-model-len", "256", "--max-num-seqs", "4", "--fail", "1@100000", "--out", str(out), "--json"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["failed_instances"] == []
    assert "--fail 1@100000: the rollout's last step began before it; the fault was never applied" in proc.stderr


def test_a_local_ray_asked_for_more_cpus_than_the_machine_has_says_so(monkeypatch):
    import os

    import ray

    from seer.real import launch

    started = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(launch, "init_ray", lambda **kwargs: started.update(kwargs))
    cores = os.cpu_count() or 1
    with pytest.warns(UserWarning, match=f"ask for {64 * cores} CPUs and this machine has {cores}"):
        launch.ensure_ray(64 * cores)
    assert started["num_cpus"] == 64 * cores


def test_a_sample_with_a_shorter_prompt_is_still_recognised_by_the_group_drafter():
    from types import SimpleNamespace

    from seer.core import DraftConfig
    from seer.policies.speculation import GroupDrafter
    from seer.real.drafter import proposer_for
    from seer.real.driver import prompt_ids, register_prompts
    from seer.traces.rollout import rollout_from_trace

    trace = pd.DataFrame({"prompt_id": [0, 0], "sample_id": [0, 1], "prompt_len": [20, 12], "output_len": [5, 5]})
    ro, _ = rollout_from_trace(trace, 16)
    prompts = {0: list(range(3, 23))}
    drafter = GroupDrafter(DraftConfig())
    register_prompts(drafter, ro, prompts)
    proposer = proposer_for(drafter)[1](SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=4)))
    for req in ro.requests.values():
        row = np.array(prompt_ids(prompts, req) + [7, 8, 9])  # the engine's row: the sample's prompt, then output
        assert len(prompt_ids(prompts, req)) == req.prompt_len
        assert proposer.group_of(row) == 0, req.prompt_len


def test_only_shards_an_index_names_are_loaded_and_each_must_be_there(tmp_path, capsys):
    from safetensors.numpy import save_file

    folder = _model_folder(tmp_path, "sharded")
    save_file({"w": np.zeros(4, np.float32)}, str(folder / "a.safetensors"))
    (folder / "stale.safetensors").write_bytes(b"half a download")  # vLLM loads only what the index names
    index = {"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "names 'b.safetensors', which is not in the folder" in cli_error(capsys, "model", "prepare", str(folder))
    save_file({"v": np.zeros(4, np.float32)}, str(folder / "b.safetensors"))
    from seer.real.models import check_model

    check_model(str(folder))  # accepted: every named shard whole, the stale file not read


def test_a_step_model_naming_an_unknown_term_is_refused(tmp_path, capsys):
    model = tmp_path / "m.toml"
    model.write_text('[coefficients]\noverhead_s = 0.01\n\n[calibration]\nterms = ["overhead_s", "per_byte_s"]\n')
    assert "terms: unknown term 'per_byte_s'" in cli_error(
        capsys, "fidelity", str(RECORDING), "--cost-model", str(model)
    )
