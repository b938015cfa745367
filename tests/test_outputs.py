"""What the commands write: ids kept as written, files and folders that honour the umask, names that cannot
steer a write out of `--out`, and a `compare` folder that is whole after a SIGKILL (audit D10, D11, D12, D15)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seer.cli import main
from seer.cli.common import safe_name
from seer.errors import SeerInputError
from seer.fileio import inside
from seer.traces.io import load_trace

IDS = [("007", 2), ("7", 4), ("07", 6)]  # three groups that a numeric reading would merge into one


@pytest.mark.parametrize("source", ["jsonl", "csv"])
@pytest.mark.parametrize("target", ["parquet", "csv", "jsonl"])
def test_string_ids_stay_strings_through_every_converter(tmp_path, source, target):
    src = tmp_path / f"in.{source}"
    if source == "jsonl":
        rows = [{"prompt_id": p, "sample_id": 0, "prompt_len": 3, "output_len": n} for p, n in IDS]
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        src.write_text("prompt_id,sample_id,prompt_len,output_len\n" + "".join(f"{p},0,3,{n}\n" for p, n in IDS))
    out = tmp_path / f"out.{target}"
    assert main(["trace", "convert", str(src), "--from", source, "-o", str(out)]) == 0
    got = load_trace(str(out))
    assert sorted(zip(got["prompt_id"], got["output_len"])) == sorted(IDS)


def test_an_empty_id_is_refused_when_the_target_cannot_carry_it(tmp_path, capsys):
    src = tmp_path / "e.jsonl"
    src.write_text('{"prompt_id": "", "sample_id": 0, "prompt_len": 3, "output_len": 2}\n')
    assert main(["trace", "convert", str(src), "--from", "jsonl", "-o", str(tmp_path / "e.csv")]) == 2
    assert "empty prompt_id cannot be written to CSV" in capsys.readouterr().err
    assert not (tmp_path / "e.csv").exists()
    # Parquet carries it: converted, it reads back as the same empty string
    assert main(["trace", "convert", str(src), "--from", "jsonl", "-o", str(tmp_path / "e.parquet")]) == 0
    assert load_trace(str(tmp_path / "e.parquet"))["prompt_id"].tolist() == [""]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_and_folders_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        synth = ["trace", "synth", "--prompts", "4", "-G", "2", "--mean-len", "50", "--max-tokens", "200"]
        assert main([*synth, "-o", str(tmp_path / "t.parquet")]) == 0
        out = tmp_path / "res"
        sim = ["simulate", "--trace", str(tmp_path / "t.parquet"), "--cluster", "moonlight", "--instances", "1"]
        assert main([*sim, "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "t.parquet").st_mode & 0o777 == 0o666 & ~mask
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~mask
    assert os.stat(out / "summary.json").st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("text", ["a/../../b", "../x", "..", "/etc/passwd", "seer:x=/../..", ".hidden", "a\\b", ""])
def test_names_from_command_line_text_stay_inside_the_output(tmp_path, text):
    name = safe_name(text)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert inside(tmp_path, tmp_path / name).parent == tmp_path.resolve()


def test_inside_refuses_a_path_that_leads_out(tmp_path):
    with pytest.raises(SeerInputError, match="outside"):
        inside(tmp_path / "out", tmp_path / "out" / ".." / "x")
    with pytest.raises(SeerInputError, match="outside"):
        inside(tmp_path / "out", "/tmp")


def _consistent(folder: Path) -> bool:
    """compare.json and every policy's own summary.json come from one run."""
    rows = json.loads((folder / "compare.json").read_text())
    for row in rows:
        own = json.loads((folder / safe_name(row["policy"]) / "summary.json").read_text())["summary"]
        if own["makespan_s"] != row["makespan_s"] or own["requests"] != row["requests"]:
            return False
    return len(pd.read_parquet(folder / "compare.parquet")) == len(rows)


def test_a_killed_compare_leaves_the_earlier_result_whole(tmp_path):
    traces = []
    for seed, prompts in ((0, 40), (1, 200)):  # different traces: a mixed folder would disagree with itself
        path = tmp_path / f"t{seed}.parquet"
        synth = ["--prompts", str(prompts), "-G", "8", "--mean-len", "3000", "--max-tokens", "16384"]
        assert main(["trace", "synth", *synth, "--seed", str(seed), "-o", str(path)]) == 0
        traces.append(path)
    out = tmp_path / "cmp"

    def cmd(trace):
        return [sys.executable, "-m", "seer", "compare", "--trace", str(trace), "--cluster", "moonlight"] + [
            "--instances",
            "2",
            "--policies",
            "verl,least-loaded,divided",
            "--out",
            str(out),
        ]

    first = subprocess.run(cmd(traces[0]), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]

    def makespans():
        return [row["makespan_s"] for row in json.loads((out / "compare.json").read_text())]

    before, seen = makespans(), []
    rng = np.random.default_rng(1)
    for _ in range(3):
        proc = subprocess.Popen(cmd(traces[1]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(1.0, 4.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _consistent(out)
        seen.append(makespans())
    again = subprocess.run(cmd(traces[1]), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert _consistent(out) and makespans() != before
    assert all(m in (before, makespans()) for m in seen)  # each kill left the earlier result or the new one
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # leftovers of the killed runs removed


def test_sigterm_during_figures_leaves_no_staging_folder(tmp_path):
    """SIGTERM used to end the process at once (Python's default), leaving the hidden staging folder in `--out`; it
    now unwinds like Ctrl-C: one line, exit 128 + 15, and the folder as it was (here: never created)."""
    out = tmp_path / "figs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seer", "figures", "--presets", "moonlight", "--prompts", "8", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(p.name.startswith(".staged") for p in out.iterdir())):
        if proc.poll() is not None:
            pytest.fail(f"figures ended before it was stopped: {proc.stderr.read()[-500:]}")
        time.sleep(0.1)
    assert out.is_dir(), "figures never started staging"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert err.strip().splitlines()[-1] == "seer: terminated" and "Traceback" not in err
    assert not out.exists(), sorted(p.name for p in out.iterdir())
