"""Bad input, through every command: exit status 2, one line on stderr naming what is wrong, no traceback, and
nothing written. Plus malformed traces generated at random, and result folders under SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seer.cli import main
from seer.errors import SeerInputError
from seer.traces.io import validate_trace

GOOD = "prompt_id,sample_id,prompt_len,output_len\n" + "".join(
    f"{p},{s},20,{30 + p + s}\n" for p in range(3) for s in range(2)
)
ROW = {"prompt_id": 0, "sample_id": 0, "prompt_len": 5, "output_len": 3}


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _cluster(**change) -> str:
    text = (files("seer.presets") / "moonlight.toml").read_text()
    lines = [ln for ln in text.splitlines() if not any(ln.startswith(f"{k} ") for k in change)]
    at = lines.index("[cluster]") + 1
    return "\n".join(lines[:at] + [f"{k} = {v}" for k, v in change.items() if v is not None] + lines[at:]) + "\n"


RECORDING = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "fidelity" / "gsm8k-verl-2i"


def _damaged_run(change):
    """A copy of a committed recording with one file changed by `change(folder)`."""

    def write(path):
        shutil.copytree(RECORDING, path)
        change(Path(path))

    return write


def _edit_steps(folder, edit):
    steps = pd.read_parquet(folder / "steps.parquet")
    edit(steps)
    steps.to_parquet(folder / "steps.parquet")


def _edit_json(name, edit):
    def change(folder):
        data = json.loads((folder / name).read_text())
        edit(data)
        (folder / name).write_text(json.dumps(data))

    return change


# name -> file content (text, or a callable writing the file at a path)
FILES = {
    "good.csv": GOOD,
    "empty.csv": "",
    "header.csv": "prompt_id,sample_id,prompt_len,output_len\n",
    "trace.txt": GOOD,
    "missing_col.csv": "prompt_id,sample_id,prompt_len\n0,0,5\n",
    "negative.csv": "prompt_id,sample_id,prompt_len,output_len\n0,0,5,-3\n",
    "float.csv": "prompt_id,sample_id,prompt_len,output_len\n0,0,5,2.5\n",
    "nan.csv": "prompt_id,sample_id,prompt_len,output_len\n0,0,5,\n",
    "huge.csv": "prompt_id,sample_id,prompt_len,output_len\n0,0,5,99999999999999999999999\n",
    "bool.jsonl": _jsonl([{**ROW, "output_len": True}]),
    "bool_arrival.jsonl": _jsonl([{**ROW, "arrival_s": True}]),
    "list_id.jsonl": _jsonl([{**ROW, "prompt_id": [1, 2]}]),
    "mixed_ids.jsonl": _jsonl([ROW, {**ROW, "prompt_id": "a"}]),
    "float_id.jsonl": _jsonl([{**ROW, "prompt_id": 1.5}]),
    "dup.csv": "prompt_id,sample_id,prompt_len,output_len\n0,0,5,3\n0,0,5,4\n",
    "ragged.csv": "prompt_id,sample_id,prompt_len,output_len\n0,0,5,3,4,4,4\n",
    "badline.jsonl": _jsonl([ROW]) + "not json\n",
    "notobject.jsonl": "[1, 2]\n",
    "tokens_short.jsonl": _jsonl([{**ROW, "output_ids": [1, 2]}]),
    "tokens_text.jsonl": _jsonl([{**ROW, "output_ids": "1 2 3"}]),
    "tokens_float.jsonl": _jsonl([{**ROW, "output_ids": [1, 2.5, 3]}]),
    "tokens_neg.jsonl": _jsonl([{**ROW, "output_ids": [1, -100000, 3]}]),
    "tokens_huge.jsonl": _jsonl([{**ROW, "output_ids": [1, 2**63, 3]}]),
    "tokens_u64.parquet": lambda p: pq.write_table(
        pa.table(
            {**{k: [v] for k, v in ROW.items()}, "output_ids": pa.array([[1, 2**64 - 1, 3]], pa.list_(pa.uint64()))}
        ),
        p,
    ),
    "over_max.csv": "prompt_id,sample_id,prompt_len,output_len,max_tokens\n0,0,5,30,20\n",
    "max0.csv": "prompt_id,sample_id,prompt_len,output_len,max_tokens\n0,0,5,0,0\n",
    "latin1.jsonl": b'{"prompt_id": "\xe9", "sample_id": 0, "prompt_len": 5, "output_len": 3}\n',
    "garbage.parquet": b"\x00\x01not parquet at all",
    "bad_meta.parquet": lambda p: pq.write_table(
        pa.Table.from_pandas(pd.DataFrame([ROW])).replace_schema_metadata({b"seer": b"{not json"}), p
    ),
    "uint_huge.parquet": lambda p: pq.write_table(
        pa.table(
            {"prompt_id": [0], "sample_id": [0], "prompt_len": [5], "output_len": pa.array([2**64 - 1], pa.uint64())}
        ),
        p,
    ),
    "c_four.toml": _cluster(instances='"four"'),
    "c_block0.toml": _cluster(block_size=0),
    "c_tp0.toml": _cluster(tp=0),
    "c_seqs0.toml": _cluster(max_num_seqs=0),
    "c_inst_float.toml": _cluster(instances=2.5),
    "c_gib_str.toml": _cluster(gpu_memory_gib='"80"'),
    "c_yes.toml": _cluster(prefix_cache='"yes"'),
    "c_nomodel.toml": _cluster(model=None),
    "c_unknown.toml": _cluster(bogus=1),
    "c_badmodel.toml": _cluster(model='"gpt-9"'),
    "c_kvneg.toml": _cluster(kv_capacity_tokens=-112),
    "c_mode.toml": _cluster(kv_mode='"remote"'),
    "c_invalid.toml": "[cluster\nmodel = 1\n",
    "c_noinst.toml": _cluster(instances=None),
    "c_gpu.toml": _cluster(gpu='"tpu-v9"'),
    "c_inst_huge.toml": _cluster(instances=1000000000),
    "c_gib_huge.toml": _cluster(gpu_memory_gib=1e30),
    "c_link.toml": _cluster(link_gbps=1e-200),
    "s_negseed.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl"]\nseeds = [-1]\n',
    "s_seed.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl"]\nseed = [5]\n',
    "s_param.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl", "context"]\n'
    "[sweep.params]\nchunk_sise = [1]\n",
    "s_seeds.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl"]\nseeds = ["a"]\n',
    "s_prompts.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl"]\nprompts = "ten"\n',
    "s_scalar.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["context"]\n[sweep.params]\nchunk_size = 4096\n',
    "s_value.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["context"]\n[sweep.params]\nchunk_size = [0]\n',
    "s_preset.toml": '[sweep]\npresets = ["nope"]\npolicies = ["verl"]\n',
    "s_policy.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["magic"]\n',
    "s_empty.toml": "[sweep]\npresets = []\n",
    "s_invalid.toml": "[sweep\n",
    "notes.txt": "a file, not a folder\n",
    "run_noinst": _damaged_run(_edit_json("run.json", lambda d: d.pop("instances"))),
    "run_badjson": _damaged_run(lambda f: (f / "run.json").write_text("{bad")),
    "run_badsteps": _damaged_run(lambda f: (f / "steps.parquet").write_bytes(b"garbage, not Parquet")),
    "run_nocols": _damaged_run(lambda f: pd.DataFrame({"x": [1]}).to_parquet(f / "trace.parquet")),
    "run_kv0": _damaged_run(_edit_json("summary.json", lambda d: d["summary"].update(kv_capacity_tokens=0))),
    "run_mk0": _damaged_run(_edit_json("summary.json", lambda d: d["summary"].update(makespan_s=0))),
    "run_mknan": _damaged_run(_edit_json("summary.json", lambda d: d["summary"].update(makespan_s=float("nan")))),
    "run_mkhuge": _damaged_run(_edit_json("summary.json", lambda d: d["summary"].update(makespan_s=10**400))),
    "run_seqs": _damaged_run(_edit_json("run.json", lambda d: d.update(max_num_seqs="many"))),
    "run_nan": _damaged_run(lambda f: _edit_steps(f, lambda d: d.loc.__setitem__((5, "duration_s"), float("nan")))),
    "run_zero": _damaged_run(lambda f: _edit_steps(f, lambda d: d.__setitem__("duration_s", 0.0))),
    "run_negative": _damaged_run(lambda f: _edit_steps(f, lambda d: d.__setitem__("duration_s", -d["duration_s"]))),
    "run_text": _damaged_run(lambda f: _edit_steps(f, lambda d: d.__setitem__("running", d["running"].astype(str)))),
    "run_folder": _damaged_run(lambda f: ((f / "steps.parquet").unlink(), (f / "steps.parquet").mkdir())),
    "run_lost": _damaged_run(
        lambda f: pd.read_parquet(f / "trace.parquet").query("prompt_id != 0").to_parquet(f / "trace.parquet")
    ),
}

SIM = ["simulate", "--trace", "good.csv", "--cluster", "moonlight"]
CMP = ["compare", "--trace", "good.csv", "--cluster", "moonlight"]
CASES = [  # (arguments, words the one line must contain)
    (["trace", "validate", "nosuch.csv"], "no such file"),
    (["trace", "validate", "."], "directory"),
    (["trace", "validate", "empty.csv"], "empty"),
    (["trace", "validate", "header.csv"], "no rows"),
    (["trace", "validate", "trace.txt"], "unknown trace format"),
    (["trace", "validate", "missing_col.csv"], "output_len"),
    (["trace", "validate", "negative.csv"], "row 1"),
    (["trace", "validate", "float.csv"], "2.5"),
    (["trace", "validate", "nan.csv"], "output_len"),
    (["trace", "validate", "huge.csv"], "64-bit"),
    (["trace", "validate", "tokens_neg.jsonl"], "-100000 is outside 0"),
    (["trace", "validate", "tokens_huge.jsonl"], "9223372036854775808 is outside 0"),
    (["trace", "validate", "tokens_u64.parquet"], "18446744073709551615 is outside 0"),
    (["trace", "validate", "bool.jsonl"], "True"),
    (["trace", "validate", "bool_arrival.jsonl"], "column 'arrival_s': expected a number, got True"),
    (["trace", "validate", "list_id.jsonl"], "prompt_id"),
    (["trace", "validate", "mixed_ids.jsonl"], "mix integers and strings"),
    (["trace", "validate", "float_id.jsonl"], "1.5"),
    (["trace", "validate", "dup.csv"], "duplicate"),
    (["trace", "validate", "ragged.csv"], "7 fields"),
    (["trace", "validate", "badline.jsonl"], "row 2"),
    (["trace", "validate", "notobject.jsonl"], "JSON object"),
    (["trace", "validate", "tokens_short.jsonl"], "2 tokens"),
    (["trace", "validate", "tokens_text.jsonl"], "list of token ids"),
    (["trace", "validate", "tokens_float.jsonl"], "integers"),
    (["trace", "validate", "over_max.csv"], "exceeds max_tokens"),
    (["trace", "validate", "max0.csv"], "max_tokens"),
    (["trace", "validate", "latin1.jsonl"], "UTF-8"),
    (["trace", "validate", "garbage.parquet"], "Parquet"),
    (["trace", "validate", "bad_meta.parquet"], "metadata"),
    (["trace", "validate", "uint_huge.parquet"], "64-bit"),
    (["trace", "stats", "nosuch.parquet"], "no such file"),
    (["trace", "convert", "nosuch.json", "--from", "tot", "-o", "o.parquet"], "nosuch"),
    (["trace", "convert", "good.csv", "--from", "csv", "--map", "prompt_id", "-o", "o.parquet"], "--map"),
    (["trace", "synth", "-G", "1", "-o", "o.parquet"], "group_size"),
    (["trace", "synth", "--prompt-mean", "inf", "-o", "o.parquet"], "prompt_mean"),
    (["trace", "synth", "--within-cv", "0", "-o", "o.parquet"], "within_cv must be > 0"),
    (["trace", "synth", "--preset", "nope", "-o", "o.parquet"], "unknown preset"),
    (
        [
            "trace",
            "synth",
            "--prompts",
            "8",
            "-G",
            "4",
            "--mean-len",
            "100",
            "--max-tokens",
            "1000",
            "-o",
            "dir.parquet",
        ],
        "folder",
    ),
    ([*SIM, "--instances", "0"], "--instances"),
    ([*SIM, "--instances", "-1"], "--instances"),
    ([*SIM, "--instances", "abc"], "--instances"),
    ([*SIM, "--chunk-size", "0"], "--chunk-size"),
    ([*SIM, "--policy", "magic"], "unknown policy 'magic'"),
    ([*SIM, "--policy", "verl:priority=abc"], "priority"),
    ([*SIM, "--policy", "context:chunk_sise=4"], "chunk_sise"),
    ([*SIM, "--policy", "seer:gamma=2.5"], "gamma"),
    ([*SIM, "--policy", "least-loaded:max_in_flight=-1"], "max_in_flight"),
    ([*SIM, "--policy", "divided:max_chunks=0"], "max_chunks must be >= 1, not 0"),
    ([*SIM, "--policy", "partial:target_groups=-1"], "target_groups"),
    ([*SIM, "--policy", "divided:affinity_margin=/../../X"], "affinity_margin"),
    ([*SIM, "--out", "notes.txt"], "not a folder"),
    ([*SIM, "--out", "."], "current folder"),
    (["run", "--model", "dummy:smollm2", "--replay", "good.csv", "--out", "."], "current folder"),  # before vLLM
    (["spec", "bench", "--trace", "good.csv", "--out", "."], "current folder"),
    (["simulate", "--trace", "good.csv"], "--cluster"),
    (["simulate", "--trace", "good.csv", "--preset", "moonlight"], "exactly one"),
    (["simulate", "--preset", "nope"], "unknown preset"),
    (["simulate", "--trace", "good.csv", "--cluster", "."], "folder"),
    ([*CMP, "--policies", ","], "names no policy"),
    ([*CMP, "--policies", "verl,verl"], "more than once"),
    (["compare", "--trace", "seer/data/gsm8k_smollm2.parquet", "--policies", "context:chunk_sise=4"], "chunk_sise"),
    (["compare", "--preset", "moonlight", "--iterations", "0"], "--iterations"),
    (["compare", "--trace", "good.csv", "--cluster", "moonlight", "--iterations", "2"], "--preset"),
    (["spec", "bench", "--trace", "good.csv"], "good.csv: spec bench needs a trace with output_ids"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--groups", "-1"], "--groups"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--max-match", "0"], "--max-match"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--min-prob", "nan"], "--min-prob"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--topk", "0"], "--topk"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--refs", "a,b"], "--refs"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--refs", "1,1,1"], "lists 1 more than once"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--topk", "1,,2"], "comma-separated"),
    (["sweep", "s_seed.toml"], "seed"),
    (["sweep", "s_param.toml"], "chunk_sise"),
    (["sweep", "s_seeds.toml"], "seeds"),
    (["sweep", "s_prompts.toml"], "prompts"),
    (["sweep", "s_scalar.toml"], "list"),
    (["sweep", "s_value.toml"], "chunk_size"),
    (["sweep", "s_preset.toml"], "unknown preset"),
    (["sweep", "s_policy.toml"], "unknown policy"),
    (["sweep", "s_empty.toml"], "presets"),
    (["sweep", "s_invalid.toml"], "TOML"),
    (["sweep", "."], "folder"),
    (["sweep", "nosuch.toml"], "no such"),
    (["sweep", "s_seed.toml", "--workers", "0"], "--workers"),
    (["fidelity", "."], "not a recorded run"),
    (["fidelity", "run_noinst"], "run.json lacks instances"),
    (["fidelity", "run_badjson"], "not valid JSON"),
    (["fidelity", "run_badsteps"], "not a readable Parquet"),
    (["fidelity", "run_mk0"], "makespan_s must be a finite number > 0, not 0"),
    (["fidelity", "run_mknan"], "makespan_s must be a finite number > 0, not nan"),
    (["fidelity", "run_mkhuge"], "makespan_s must be a finite number > 0, not 1000"),
    (["fidelity", "notes.txt"], "notes.txt: is a file, not a run folder"),
    (["fidelity", "run_nocols"], "trace.parquet lacks column"),
    (["fidelity", "run_kv0"], "kv_capacity_tokens must be a finite number > 0, not 0"),
    (["fidelity", "run_seqs"], "max_num_seqs"),
    (["figures", "--run", "run_badsteps", "--out", "figs"], "not a readable Parquet"),
    (["fidelity", "run_nan"], "row 6, column 'duration_s': nan"),
    (["calibrate", "run_zero", "-o", "m.toml"], "column 'duration_s': 0.0 (must be finite and > 0)"),
    (["figures", "--run", "run_negative", "--out", "figs"], "column 'duration_s'"),
    (["fidelity", "run_text"], "column 'running' holds"),
    (["fidelity", "run_lost"], "is not in trace.parquet"),
    (["fidelity", "run_folder"], "steps.parquet is a folder"),
    (["calibrate", "run_badsteps", "-o", "m.toml"], "not a readable Parquet"),
    (["calibrate", "run_zero", "-o", "run_zero/steps.parquet"], "lies inside a run being read"),
    (["calibrate", "run_zero", "run_zero/", "-o", "m.toml"], "run_zero is given more than once"),
    (["calibrate", "run_zero", "--terms", ",,", "-o", "m.toml"], "--terms: names no term"),
    (["calibrate", "run_zero", "--terms", "per_token_s,per_token_s", "-o", "m.toml"], "per_token_s is given twice"),
    ([*SIM, "--policy", "context:pacing=inf"], "pacing must be a finite number"),
    ([*SIM, "--policy", "seer:tick_s=nan"], "tick_s must be a finite number"),
    ([*SIM, "--policy", "seer:tick_s=1e-9"], "tick_s >= 0.001"),
    ([*SIM, "--policy", "seer:gamma_max=65"], "gamma_max <= 64"),
    ([*SIM, "--policy", "seer", "--speculation", "fixed", "--gamma", "99999999999"], "gamma <= 64"),
    (["simulate", "--trace", "good.csv", "--cluster", "c_gpu.toml"], "gpu must be one of h100, h800"),
    (["simulate", "--trace", "good.csv", "--cluster", "c_inst_huge.toml"], "instances must be <= 100,000"),
    ([*SIM, "--instances", "100000000"], "instances must be <= 100,000"),
    (["simulate", "--trace", "good.csv", "--cluster", "c_gib_huge.toml"], "gpu_memory_gib must be in (0, 1024]"),
    (["simulate", "--trace", "good.csv", "--cluster", "c_link.toml"], "link_gbps must be >= 0.001"),
    (["trace", "synth", "--prompts", "2000000000", "-o", "x.parquet"], "at most 100,000,000 samples"),
    ([*SIM, "--policy", "partial:over_issue=-inf"], "over_issue"),
    ([*SIM, "--out", "notes.txt/sub"], "notes.txt is not a folder"),
    (["figures", "--presets", "bogus", "--out", "figs"], "bogus"),
    (["figures", "--run", ".", "--out", "figs"], "not a recorded run"),
    (["run", "--model", "nope", "--replay", "good.csv", "--out", "r"], "unknown model"),
    (["run", "--model", "dummy:tiny", "--replay", "good.csv", "--prompts", "p.jsonl", "--out", "r"], "exactly one"),
    (["run", "--model", "dummy:tiny", "--replay", "good.csv", "--fail", "5@1", "--out", "r"], "only 2 instances"),
    (["run", "--model", "dummy:tiny", "--replay", "good.csv", "--fail", "x", "--out", "r"], "--fail"),
    (
        ["run", "--model", "dummy:tiny", "--replay", "good.csv", "--instances", "1", "--fail", "0@2", "--out", "r"],
        "take out all 1 instance(s)",
    ),
    (["run", "--model", "dummy:tiny", "--replay", "good.csv", "--temperature", "-1", "--out", "r"], "--temperature"),
    (
        ["run", "--model", "dummy:tiny", "--replay", "good.csv", "--max-num-seqs", "4096", "--out", "r"],
        "--max-num-seqs 4,096: vLLM schedules at most 2,048 sequences per step",
    ),
    (
        ["run", "--model", "dummy:tiny", "--replay", "pl0.csv", "--out", "r"],
        "pl0.csv: prompt 0: an empty prompt",
    ),
    (
        ["run", "--model", "dummy:tiny", "--replay", "long.csv", "--out", "r"],
        "long.csv, row 2, column 'output_len': output_len 99999 exceeds max_tokens 512 (--max-tokens",
    ),
    (
        ["run", "--model", "dummy:tiny", "--replay", "good.csv", "--group", "4", "--out", "r"],
        "a --replay trace has",
    ),
    (
        ["run", "--model", "dummy:tiny", "--replay", "good.csv", "--cpus-per-instance", "2", "--out", "r"],
        "needs --launch ray",
    ),
    (
        ["run", "--model", "dummy:tiny", "--replay", "plhuge.csv", "--out", "r"],
        "plhuge.csv, row 1: prompt_len 1,000,000,000,000,000 plus output_len",
    ),
    (["run", "--model", "dummy:tiny", "--prompts", "p.jsonl", "--out", "r"], "tokenizer"),
    (["run", "--model", "dummy:tiny", "--replay", "good.csv", "--policy", "context:nope=1", "--out", "r"], "nope"),
    (["policies", "magic"], "unknown policy"),
    (["frobnicate"], "invalid choice"),
]
CASES += [
    ([*SIM[:3], "--cluster", f"{name}"], word)
    for name, word in [
        ("c_four.toml", "instances"),
        ("c_block0.toml", "block_size"),
        ("c_tp0.toml", "tp"),
        ("c_seqs0.toml", "max_num_seqs"),
        ("c_inst_float.toml", "instances"),
        ("c_gib_str.toml", "gpu_memory_gib"),
        ("c_yes.toml", "prefix_cache"),
        ("c_nomodel.toml", "model"),
        ("c_unknown.toml", "bogus"),
        ("c_badmodel.toml", "gpt-9"),
        ("c_kvneg.toml", "kv_capacity_tokens"),
        ("c_mode.toml", "kv_mode"),
        ("c_invalid.toml", "TOML"),
        ("c_noinst.toml", "needs instances"),
    ]
]
CASES += [
    (["trace", "synth", "--preset", "moonlight", "--seed", "-1", "-o", "x.parquet"], "--seed"),
    (["simulate", "--preset", "qwen2-vl-72b", "--seed", "-1"], "--seed"),
    (["spec", "bench", "--trace", "good.csv", "--seed", "-2"], "--seed"),
    (["sweep", "s_negseed.toml"], "seeds"),
]

# found by trying the CLI on inputs from outside the repository
_TOT = '[{"idx": %s, "ys": ["1 + 1 = 2 Answer: 2"]%s}]'
FILES.update(
    {
        "24.csv": "Rank,Puzzles\n1,1 1 4 6\n",
        "tot_ok.json": _TOT % ("0", ""),
        "tot_negidx.json": _TOT % ("-1", ""),
        "tot_floatidx.json": _TOT % ("1.7", ""),
        "tot_reward.json": _TOT % ("0", ', "infos": [{"r": "bad"}]'),
        "tot_accs.json": _TOT % ("0", ', "accs": [true, false]'),
        "binary.bin": bytes(range(128, 256)) * 4,
        "m_badref.toml": "[coefficients]\noverhead = 0.01\n[calibration]\nreference_batch = 'x'\n"
        "reference_median_s = [0.1]\nreference_steps = [3]\n",
        "ts_len.parquet": lambda path: pd.DataFrame(
            {"prompt_id": [0], "sample_id": [0], "prompt_len": [3], "output_len": pd.to_datetime(["2024-01-01"])}
        ).to_parquet(path),
        "mc_str.jsonl": '{"timestamp": 0, "input_length": "ten", "output_length": 4}\n',
        "nolen.jsonl": '{"a": 1}\n',
        "long.csv": "prompt_id,sample_id,prompt_len,output_len\n0,0,3,4\n0,1,3,99999\n",
        "pl0.csv": "prompt_id,sample_id,prompt_len,output_len\n0,0,0,4\n0,1,0,5\n",
        "plhuge.csv": "prompt_id,sample_id,prompt_len,output_len\n7,0,1000000000000000,4\n",
        "dupcol.csv": "prompt_id,sample_id,prompt_len,output_len,output_len\n0,0,3,4,5\n",
        "s_dup.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl"]\nseeds = [1, 1]\n',
        "s_both.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["context:chunk_size=1024"]\n'
        "[sweep.params]\nchunk_size = [4096, 8192]\n",
    }
)
CASES += [
    (["trace", "convert", "tot_negidx.json", "--from", "tot", "-o", "o.parquet"], "idx must be a non-negative"),
    (["trace", "convert", "tot_floatidx.json", "--from", "tot", "-o", "o.parquet"], "not 1.7"),
    (["trace", "convert", "tot_reward.json", "--from", "tot", "-o", "o.parquet"], "['r'] must be a number"),
    (["trace", "convert", "tot_accs.json", "--from", "tot", "-o", "o.parquet"], "accs has 2 values for 1 responses"),
    (["trace", "convert", "tot_ok.json", "--from", "tot", "--prompts", "binary.bin", "-o", "o.parquet"], "UTF-8"),
    (["trace", "convert", "mc_str.jsonl", "--from", "mooncake", "-o", "o.parquet"], "column 'input_length'"),
    (["trace", "convert", "nolen.jsonl", "--from", "jsonl", "-o", "o.parquet"], "(the file has: a)"),
    (["trace", "validate", "ts_len.parquet"], "got a datetime64"),
    (["run", "--model", "smollm2", "--prompts", "binary.bin", "--out", "r"], "binary.bin, line 1: not UTF-8 text"),
    ([*SIM, "--cost-model", "binary.bin"], "not a TOML step model"),
    ([*SIM, "--cost-model", "m_badref.toml"], "[calibration]"),
    ([*SIM, "--policy", "context:chunk_size=1:chunk_size=2"], "chunk_size is given twice"),
    (["trace", "synth", "--prompt-mean", "1e20", "-o", "o.parquet"], "prompt_mean must be in"),
    (["trace", "synth", "--within-cv", "3.1", "-o", "o.parquet"], "within_cv must be at most 3"),
    (["figures", "--presets", "", "--out", "figs"], "empty list"),
    (["figures", "--out", "notes.txt"], "exists and is not a folder"),
    (["figures", "--presets", "moonlight,moonlight", "--out", "figs"], "'moonlight' given more than once"),
    (["trace", "validate", "dupcol.csv"], "column 'output_len' appears twice"),
    (["simulate", "--trace", "long.csv", "--cluster", "moonlight"], "long.csv, row 2, column 'output_len': output_len"),
    (["sweep", "s_dup.toml"], "seeds lists 1 more than once"),
    (["sweep", "s_both.toml"], "sets chunk_size, which [sweep.params] sweeps"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--out", "notes.txt/sub"], "is not a folder"),
    (
        ["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--max-match", "257"],
        "--max-match: must be in [1, 256]",
    ),
    (
        ["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--topk", "99999999999999999999"],
        "--topk values must be in [1, 256]",
    ),
    (
        ["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--refs", "99999999999999999999"],
        "--refs values must be in [0, ",
    ),
    (
        ["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--gamma", "99999999999999999999"],
        "--gamma: must be in [1, 64]",
    ),
    ([*SIM, "--policy", "seer:max_match=1000"], "max_match <= 256"),
    ([*SIM, "--policy", "seer:topk=99999999999999999999"], "topk <= 256"),
]


# integers no int64 holds, and control characters in names (an audit of the CLI from outside)
FILES.update(
    {
        "c_kv_huge.toml": _cluster(kv_capacity_tokens=10**30),
        "c_dp_huge.toml": _cluster(dp=10**21),
        "c_max_huge.toml": _cluster(max_tokens=10**30),
        "c_name_nl.toml": _cluster(name='"evil\\nsecond line"', kv_capacity_tokens=32),
        "s_seed_huge.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl"]\nseeds = [%d]\n' % 10**29,
        "s_chunks_huge.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["context"]\n'
        "[sweep.params]\nmax_chunks = [%d]\n" % 10**23,
        "len_text.jsonl": _jsonl([ROW, {**ROW, "sample_id": 1, "output_len": "7"}]),
        "arrival_text.jsonl": _jsonl([{**ROW, "arrival_s": "1.5"}]),
        "len_text.parquet": lambda p: pq.write_table(
            pa.table({**{k: [v] for k, v in ROW.items()}, "output_len": ["3"]}), p
        ),
        "tokens_plus.csv": "prompt_id,sample_id,prompt_len,output_len,output_ids\n0,0,5,3,1 +2 3\n",
        "tokens_underscore.csv": "prompt_id,sample_id,prompt_len,output_len,output_ids\n0,0,5,3,1 2_0 3\n",
        "recording": _damaged_run(lambda folder: None),  # an intact copy of a recorded real run
        "m_huge.toml": "[coefficients]\noverhead_s = 1e308\nper_token_s = 1e308\n",
        "s_prompts_many.toml": '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl"]\nprompts = 2000000000\n',
    }
)
CASES += [
    (["simulate", "--trace", "good.csv", "--cluster", "c_kv_huge.toml"], "kv_capacity_tokens must be between -2**53"),
    (
        ["simulate", "--trace", "good.csv", "--cluster", "c_dp_huge.toml"],
        "dp must be between -2**53 and 2**53, not a 22",
    ),
    (["simulate", "--trace", "good.csv", "--cluster", "c_max_huge.toml"], "max_tokens must be between -2**53"),
    (["simulate", "--trace", "good.csv", "--cluster", "c_name_nl.toml"], "of cluster evil\\nsecond line holds"),
    (
        [*SIM, "--policy", "verl:priority=99999999999999999999999"],
        "priority must be between -2**53 and 2**53, not a 23",
    ),
    ([*SIM, "--policy", "verl:priority=" + "9" * 5000], "priority must be an integer, not '999"),
    (["trace", "validate", "len_text.jsonl"], "row 2, column 'output_len': expected an integer, got '7'"),
    (["trace", "validate", "arrival_text.jsonl"], "column 'arrival_s': expected a number, got '1.5'"),
    (["trace", "validate", "len_text.parquet"], "column 'output_len': expected an integer, got '3'"),
    (["trace", "validate", "tokens_plus.csv"], "row 1, column 'output_ids': token ids must be integers"),
    (["trace", "validate", "tokens_underscore.csv"], "row 1, column 'output_ids': token ids must be integers"),
    ([*SIM, "--cost-model", "m_huge.toml"], "m_huge.toml: step model: overhead_s is 1e+308 s per unit"),
    ([*SIM, "--out", "recording"], "recording: holds a recorded real run (run.json, steps.parquet)"),
    (["spec", "bench", "--trace", "seer/data/gsm8k_smollm2.parquet", "--out", "recording"], "a recorded real run"),
    (["sweep", "s_seed_huge.toml"], "seeds must be a non-empty list of integers from 0 to 2**53"),
    (["sweep", "s_chunks_huge.toml"], "max_chunks must be between -2**53 and 2**53"),
    (["sweep", "s_prompts_many.toml"], "at most 100,000,000 samples"),
    (["trace", "validate", "no\nsuch.parquet"], "no\\nsuch.parquet"),
    (["trace", "synth", "--max-tokens", str(10**23), "-o", "x.parquet"], "max_tokens must be between -2**53"),
    (
        ["trace", "convert", "good.csv", "--from", "csv", "--map", "prompt_id=a", "--map", "prompt_id=b", "-o", "o.pq"],
        "--map 'prompt_id=b': prompt_id is mapped more than once",
    ),
    (
        ["trace", "convert", "good.csv", "--from", "csv", "--max-tokens", "31", "-o", "o.parquet"],
        "--max-tokens 31 is below the output_len 32 of prompt 1 sample 1 in good.csv",
    ),
    (["trace", "convert", "good.csv", "--from", "csv", "--max-tokens", str(10**23), "-o", "o.pq"], "at most 2**53"),
    (["trace", "convert", "len_text.jsonl", "--from", "jsonl", "--max-tokens", "5", "-o", "o.pq"], "got '7'"),
    ([*SIM, "--instances", "9" * 5000], "99999... (5,002 characters)"),
]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    for name, content in FILES.items():
        path = tmp_path / name
        if callable(content):
            content(str(path))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    (tmp_path / "dir.parquet").mkdir()
    (tmp_path / "seer" / "data").mkdir(parents=True)
    (tmp_path / "seer" / "data" / "gsm8k_smollm2.parquet").symlink_to(root / "seer" / "data" / "gsm8k_smollm2.parquet")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """`seer ... | head`: the reader going away is not an error."""

    class Closed:
        def write(self, _text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["presets"]) == 0
    assert "error" not in capsys.readouterr().err


def test_there_are_enough_cases():
    assert len(CASES) >= 60


def run_cli(argv) -> int:
    """The command's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, word", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, word, workdir, capsys):
    before = {p.relative_to(workdir) for p in workdir.rglob("*")}
    code = run_cli(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.strip() and err.strip().count("\n") == 0, err
    assert "Traceback" not in err and word in err, (word, err)
    after = {p.relative_to(workdir) for p in workdir.rglob("*")}
    assert after == before, sorted(map(str, after - before))


# ---- malformed traces at random -----------------------------------------------------------

cell = st.one_of(
    st.integers(-5, 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 5), max_size=3),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.fixed_dictionaries({"prompt_id": cell, "sample_id": cell, "prompt_len": cell, "output_len": cell}),
        min_size=0,
        max_size=6,
    )
)
def test_the_validator_refuses_or_returns_a_clean_trace(rows):
    df = pd.DataFrame(rows, columns=["prompt_id", "sample_id", "prompt_len", "output_len"])
    try:
        out = validate_trace(df, "random.jsonl")
    except SeerInputError as exc:
        assert str(exc).startswith("random.jsonl") and "\n" not in str(exc)
        return
    for col in ("sample_id", "prompt_len", "output_len"):
        assert out[col].dtype == np.int64 and (out[col] >= 0).all()
    assert out["prompt_id"].map(type).nunique() == 1
    assert not out.duplicated(["prompt_id", "sample_id"]).any()


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 6), st.integers(0, 6)), min_size=1, max_size=8
    )
)
def test_the_validator_refuses_a_repeated_sample_and_keeps_every_other_trace(rows):
    # the random cells above are refused for their types almost every time: these are well-typed, and collide
    df = pd.DataFrame(rows, columns=["prompt_id", "sample_id", "prompt_len", "output_len"])
    dup = df.duplicated(["prompt_id", "sample_id"])
    if dup.any():
        first = int(np.flatnonzero(dup.to_numpy())[0])
        with pytest.raises(SeerInputError, match=rf"random.jsonl, row {first + 1}, column 'sample_id': duplicate"):
            validate_trace(df, "random.jsonl")
        return
    out = validate_trace(df, "random.jsonl")
    assert out[list(df.columns)].to_numpy().tolist() == df.to_numpy().tolist()


# ---- result folders under SIGKILL ---------------------------------------------------------


def _whole(folder: Path) -> bool:
    """A complete simulate result: every file there and consistent with each other."""
    names = {"requests.parquet", "timeline.parquet", "events.parquet", "summary.json"}
    if not names <= {p.name for p in folder.iterdir()}:
        return False
    summary = json.loads((folder / "summary.json").read_text())["summary"]
    return len(pd.read_parquet(folder / "requests.parquet")) == summary["requests"]


def _policy(folder: Path) -> str:
    return json.loads((folder / "summary.json").read_text())["summary"]["policy"]


def test_a_killed_run_leaves_the_old_result_or_none_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "res"
    trace = tmp_path / "t.parquet"
    assert (
        main(
            [
                "trace",
                "synth",
                "--prompts",
                "200",
                "-G",
                "8",
                "--mean-len",
                "3000",
                "--max-tokens",
                "16384",
                "-o",
                str(trace),
            ]
        )
        == 0
    )
    cmd = [
        sys.executable,
        "-m",
        "seer",
        "simulate",
        "--trace",
        str(trace),
        "--cluster",
        "moonlight",
        "--instances",
        "4",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen([*cmd, "--policy", "verl"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # mid-simulation, most likely
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() or _whole(out)
    old = subprocess.run([*cmd, "--policy", "least-loaded"], capture_output=True, text=True)
    assert old.returncode == 0 and _whole(out), old.stderr[-2000:]
    # killed while writing, the moment its staging folder appears: the earlier result stays (or, between the two
    # renames of the swap, none); a write straight into `out` would leave it part-written, never staged
    staged = 0
    for policy in ("verl", "divided", "verl"):
        proc = subprocess.Popen([*cmd, "--policy", policy], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            if any(p.startswith(f".res.{proc.pid}.") for p in os.listdir(tmp_path)):
                proc.send_signal(signal.SIGKILL)
                staged += proc.wait() == -signal.SIGKILL
                break
            time.sleep(0.001)
        proc.wait()
        assert not out.exists() or (_whole(out) and _policy(out) == "least-loaded")
    assert staged >= 2, f"only {staged} of 3 runs were caught while writing their result"
    done = subprocess.run([*cmd, "--policy", "verl"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _whole(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # leftovers removed
    assert os.stat(out / "summary.json").st_mode & 0o044  # readable by group/others as the umask allows


def test_a_result_folder_holding_a_users_own_files_is_never_replaced(tmp_path, capsys):
    """A folder is replaced only when everything in it is what seer wrote there (its `.seer-output` list): one
    marker file such as summary.json was enough, and `--out proj` deleted the user's notes and data with it."""
    csv = tmp_path / "t.csv"
    csv.write_text(
        "prompt_id,sample_id,prompt_len,output_len,max_tokens\n" + "".join(f"0,{s},10,5,64\n" for s in range(4))
    )
    out = tmp_path / "res"
    sim = ["simulate", "--trace", str(csv), "--cluster", "moonlight", "--instances", "1", "--out", str(out)]
    assert main(sim) == 0 and main(sim) == 0  # seer's own folder is replaced
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(sim) == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    legacy = tmp_path / "proj"  # no list of seer's files, and a folder an older seer never wrote
    (legacy / "data").mkdir(parents=True)
    (legacy / "summary.json").write_text("{}")
    assert main([*sim[:-1], str(legacy)]) == 2
    assert "not a seer result folder" in capsys.readouterr().err
    assert sorted(p.name for p in legacy.iterdir()) == ["data", "summary.json"]
    (legacy / "data").rmdir()
    (legacy / "my_analysis.parquet").write_bytes(b"")  # a user's own Parquet beside an older seer's results
    assert main([*sim[:-1], str(legacy)]) == 2 and (legacy / "my_analysis.parquet").exists()
    (legacy / "my_analysis.parquet").unlink()  # an older seer's folder, only the files seer writes: replaced
    (legacy / "requests.parquet").write_bytes(b"")
    assert main([*sim[:-1], str(legacy)]) == 0 and (legacy / ".seer-output").is_file()
    # inside a compare's per-policy folder too
    cmp = ["compare", *sim[1:-2], "--policies", "verl,divided", "--out", str(tmp_path / "cmp")]
    assert main(cmp) == 0
    (tmp_path / "cmp" / "divided" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(cmp) == 2 and "divided/notes.txt" in capsys.readouterr().err
    assert (tmp_path / "cmp" / "divided" / "notes.txt").read_text() == "mine"


def test_output_paths_that_are_links_inside_results_or_a_dash(tmp_path, capsys):
    """Audit 10: a link was replaced by a folder (its target kept the old result); simulate wrote into a policy's
    folder of a compare result, which then disagreed with compare.parquet; `--out -` made a folder named '-'."""
    csv = tmp_path / "t.csv"
    csv.write_text(
        "prompt_id,sample_id,prompt_len,output_len,max_tokens\n" + "".join(f"0,{s},10,5,64\n" for s in range(4))
    )
    sim = ["simulate", "--trace", str(csv), "--cluster", "moonlight", "--instances", "1", "--out"]
    store = tmp_path / "store" / "res"
    assert main([*sim, str(store), "--policy", "verl"]) == 0
    (tmp_path / "link").symlink_to(store, target_is_directory=True)
    assert main([*sim, str(tmp_path / "link"), "--policy", "context"]) == 0
    assert (tmp_path / "link").is_symlink() and _policy(store) == "context"  # written through the link
    trace_link = tmp_path / "t.parquet"
    (tmp_path / "real.parquet").write_text("")
    trace_link.symlink_to(tmp_path / "real.parquet")
    assert main(["trace", "convert", str(csv), "--from", "csv", "-o", str(trace_link)]) == 0
    assert trace_link.is_symlink() and len(pd.read_parquet(tmp_path / "real.parquet")) == 4
    capsys.readouterr()
    compare = ["compare", "--trace", str(csv), "--cluster", "moonlight", "--policies", "verl,context"]
    assert main([*compare, "--out", str(tmp_path / "cmp")]) == 0
    assert main([*sim, str(tmp_path / "cmp" / "verl")]) == 2
    assert "is inside the seer result folder" in capsys.readouterr().err
    assert main([*sim, "-"]) == 2 and "not standard output" in capsys.readouterr().err
    assert not os.path.exists("-")
