"""Bad input found by trying sweeps, trace conversion and the simulation flags from outside: each case ended in a
traceback, hung, or ran silently wrong before its check (one clear line, exit status 2, or the right reading)."""

from __future__ import annotations

import json
import os
import warnings

import pandas as pd
import pytest
from conftest import ROOT, cli_error

from seer.sweep import load_config, run_sweep
from seer.traces.converters import convert
from seer.traces.io import load_trace, save_trace

SWEEP = '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["context"]\nprompts = 2\n'


def _toml(tmp_path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


def test_a_swept_value_is_kept_as_its_configuration_reads_it(tmp_path):
    # 4096 and "8192" made a results column of two types: every cell ran, then the table could not be written
    config = _toml(tmp_path, SWEEP + '[sweep.params]\nchunk_size = [4096, "8192"]\n')
    table = run_sweep(config, str(tmp_path / "out"), workers=1, progress=False)
    assert table["param_chunk_size"].tolist() == [4096, 8192] and str(table["param_chunk_size"].dtype) == "Int64"
    with pytest.raises(Exception, match="lists a value more than once"):  # one cell under two spellings
        load_config(_toml(tmp_path, SWEEP + '[sweep.params]\nchunk_size = [4096, "4096"]\n'))


@pytest.mark.parametrize(
    "text, said",
    [
        ('prompts = 2\n[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["context"]\n', "top-level key"),
        (SWEEP + "[params]\nchunk_size = [1, 2]\n", "unknown top-level key\\(s\\) params"),
    ],
)
def test_keys_outside_the_sweep_table_are_refused(tmp_path, text, said):
    with pytest.raises(Exception, match=said):  # dropped: the sweep ran the preset's full size, or one cell
        load_config(_toml(tmp_path, text))


def test_a_kept_cell_that_is_not_a_cells_row_is_computed_again(tmp_path):
    config = _toml(tmp_path, SWEEP)
    first = run_sweep(config, str(tmp_path / "out"), workers=1, progress=False)
    (cell,) = os.listdir(tmp_path / "out" / "cells")
    (tmp_path / "out" / "cells" / cell).write_text('{"foo": 1}')  # valid JSON: it became a row of NaNs
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        again = run_sweep(config, str(tmp_path / "out"), workers=1, progress=False)
    assert any("damaged cell result" in str(w.message) for w in said)
    assert list(again.columns) == list(first.columns) and again["makespan_s"].tolist() == first["makespan_s"].tolist()


def test_a_csv_with_responses_past_the_csv_field_limit_reads_back(tmp_path):
    ids = list(range(30_000))  # 168K characters in one cell: refused as "field larger than field limit"
    df = pd.DataFrame({"prompt_id": [0, 0], "sample_id": [0, 1], "prompt_len": 3, "output_len": len(ids)})
    df["output_ids"] = [ids, ids]
    save_trace(df, tmp_path / "t.csv")
    assert load_trace(tmp_path / "t.csv")["output_ids"].iloc[1][-1] == ids[-1]


def test_numeric_azure_timestamps_are_unix_seconds(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1700000000,374,44\n1700000060.5,1,1\n")
    assert convert(str(path), "azure")["arrival_s"].tolist() == [0.0, 60.5]  # 60 s apart read as 60 ns


def test_a_json_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt_id":0,"sample_id":0,"prompt_len":10,"output_len":5,"output_len":7}\n')
    with pytest.raises(Exception, match="key 'output_len' appears twice"):  # the last one won, without a word
        load_trace(path)


def test_tot_responses_must_be_text(tmp_path):
    log, prompts = tmp_path / "tot.json", tmp_path / "p.txt"
    log.write_text(json.dumps([{"idx": 0, "ys": ["a", 1, None]}]))  # became the texts "1" and "None"
    prompts.write_text("hello\n")
    with pytest.raises(Exception, match=r"ys\[1\] must be a string"):
        convert(str(log), "tot", prompts=str(prompts))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_or_a_loop_of_links_is_named_not_waited_on(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.toml")  # each of these blocked until something wrote to the pipe
    os.mkfifo(tmp_path / "pipe.jsonl")
    os.symlink(tmp_path / "loop.parquet", tmp_path / "loop.parquet")  # said "no such file"
    pipe, trace, loop = (str(tmp_path / n) for n in ("pipe.toml", "pipe.jsonl", "loop.parquet"))
    out = str(tmp_path / "o")
    assert "not a regular file" in cli_error(capsys, "sweep", pipe, "--out", out)
    assert "not a regular file" in cli_error(
        capsys, "simulate", "--trace", trace, "--cluster", "moonlight", "--out", out
    )
    assert "not a regular file" in cli_error(capsys, "simulate", "--preset", "moonlight", "--cluster", pipe)
    assert "not a regular file" in cli_error(capsys, "simulate", "--preset", "moonlight", "--cost-model", pipe)
    assert "loop of links" in cli_error(capsys, "trace", "validate", loop)


@pytest.mark.parametrize(
    "argv, said",
    [
        (["simulate", "--preset", "qwen2-vl-72b", "--prompts", "2", "--out", ""], "path is empty"),
        (["compare", "--preset", "qwen2-vl-72b", "--prompts", "2", "--policies", "verl", "--out", ""], "path is empty"),
        (["spec", "bench", "--trace", str(ROOT / "seer" / "data" / "gsm8k_smollm2.parquet"), "--out", ""], "empty"),
        # partial:over_issue=1e6 ran for ever; 1e30 blamed the synthesiser's prompts
        (["compare", "--preset", "qwen2-vl-72b", "--prompts", "2", "--policies", "partial:over_issue=1e6"], "1 to 100"),
    ],
)
def test_flags_out_of_reach_are_refused(capsys, tmp_path, monkeypatch, argv, said):
    monkeypatch.chdir(tmp_path)  # an --out '' taken as the default folder would land here
    assert said in cli_error(capsys, *argv)
    assert not os.listdir(tmp_path)


def test_a_sweep_to_an_empty_path_and_a_huge_coefficient_are_refused(tmp_path, capsys):
    config = _toml(tmp_path, SWEEP)
    assert "path is empty" in cli_error(capsys, "sweep", config, "--out", "")
    model = tmp_path / "m.toml"
    model.write_text("[coefficients]\noverhead_s = 1" + "0" * 400 + "\n")  # OverflowError: int too large
    assert "must be a number of seconds" in cli_error(
        capsys, "simulate", "--preset", "moonlight", "--cost-model", str(model)
    )


def test_iterations_past_any_run_are_refused(capsys):
    from seer.cli import main

    with pytest.raises(SystemExit) as stop:  # 2**53 iterations ran for ever
        main(["compare", "--preset", "qwen2-vl-72b", "--policies", "verl", "--iterations", "9007199254740992"])
    assert stop.value.code == 2 and "must be in [1, 100000]" in capsys.readouterr().err


def test_lengths_past_two_to_the_53_are_refused(tmp_path):
    path = tmp_path / "t.jsonl"  # stats gave cv 0 and a max one short: the float statistics had rounded them
    path.write_text(
        "".join(
            json.dumps({"prompt_id": 0, "sample_id": i, "prompt_len": 3, "output_len": 2**62 + i}) + "\n"
            for i in range(3)
        )
    )
    with pytest.raises(Exception, match=r"row 1, column 'output_len': 4611686018427387904 is more than 2\*\*53"):
        load_trace(path)


def test_a_block_larger_than_the_kv_memory_names_the_cluster(tmp_path, capsys):
    text = (ROOT / "seer" / "presets" / "kimi-k2.toml").read_text().replace("block_size = 16", "block_size = 100000000")
    (tmp_path / "cl.toml").write_text(text)  # every request was blamed for needing more KV than an instance holds (0)
    said = cli_error(
        capsys, "simulate", "--preset", "qwen2-vl-72b", "--prompts", "2", "--cluster", str(tmp_path / "cl.toml")
    )
    assert "block_size 100,000,000 is more than the KV memory holds" in said


def test_flags_a_command_would_ignore_or_misread_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"prompt_id": [0], "sample_id": [0], "prompt_len": [3], "output_len": [4]}).to_csv(
        "t.csv", index=False
    )
    (tmp_path / "tot.json").write_text(json.dumps([{"idx": 0, "ys": ["a"]}]))
    assert "empty item" in cli_error(capsys, "compare", "--preset", "qwen2-vl-72b", "--policies", "verl,,context")
    assert "is the input itself" in cli_error(capsys, "trace", "convert", "t.csv", "--from", "csv", "-o", "t.csv")
    assert "--prompts is the prompt file of --from tot" in cli_error(
        capsys, "trace", "convert", "t.csv", "--from", "csv", "--prompts", "nope.txt", "-o", "x.parquet"
    )
    assert "--map renames the columns of --from csv or jsonl" in cli_error(
        capsys, "trace", "convert", "tot.json", "--from", "tot", "--map", "output_len=x", "-o", "x.parquet"
    )
    assert sorted(os.listdir(tmp_path)) == ["t.csv", "tot.json"]


def test_a_sweep_does_not_write_into_a_folder_of_other_files(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="holds files that are not a sweep's"):
        run_sweep(_toml(tmp_path, SWEEP), str(tmp_path / "mine"), workers=1, progress=False)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_a_tot_log_with_an_idx_twice_names_the_entries(tmp_path):
    log, prompts = tmp_path / "tot.json", tmp_path / "p.txt"
    log.write_text(json.dumps([{"idx": 0, "ys": ["a", "b"]}, {"idx": 1, "ys": ["q"]}, {"idx": 0, "ys": ["x"]}]))
    prompts.write_text("hello\nworld\n")
    with pytest.raises(Exception, match=r"tot.json, row 3: idx 0 is also entry 1's"):  # said row 5, column sample_id
        convert(str(log), "tot", prompts=str(prompts))


@pytest.mark.parametrize(
    "name, text",
    [
        ("t.jsonl", '\n{"prompt_id": 0, "sample_id": 0, "prompt_len": 3, "output_len": 4}\n\n{"prompt_id": 0, oops}\n'),
        ("t.csv", "prompt_id,sample_id,prompt_len,output_len\n\n0,0,3,4\n\n0,1,3\n"),
    ],
)
def test_a_file_with_blank_lines_names_a_malformed_row_as_a_schema_error_would(tmp_path, name, text):
    # the second data row: a parse error counted file lines (row 4) where a schema error counts data rows (row 2);
    # the line an editor shows is said beside it (data line 4; the CSV's header is line 1 and not a row)
    (tmp_path / name).write_text(text)
    line = 4 if name.endswith(".jsonl") else 5
    with pytest.raises(Exception, match=rf"{name}, row 2 \(line {line}\):"):
        load_trace(tmp_path / name)
