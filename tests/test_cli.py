import json
import shlex
from pathlib import Path

import pytest
from conftest import run_seer

from seer.cli import build_parser, main
from seer.traces.io import load_trace
from seer.traces.stats import SUMMARY_KEYS


def _subcommands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield prefix + (name,)
                yield from _subcommands(sub, prefix + (name,))


def test_every_command_has_help(capsys):
    commands = list(_subcommands(build_parser()))
    assert ("trace", "stats") in commands and ("presets",) in commands
    for cmd in [()] + commands:
        with pytest.raises(SystemExit) as info:
            main([*cmd, "--help"])
        assert info.value.code == 0
        assert "usage: seer" in capsys.readouterr().out


def test_synth_preset_then_stats_json(tmp_path):
    out = tmp_path / "q.parquet"
    proc = run_seer("trace", "synth", "--preset", "qwen2-vl-72b", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "600 groups x G=16" in proc.stdout
    assert len(load_trace(out)) == 9600
    proc = run_seer("trace", "stats", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert set(SUMMARY_KEYS) <= set(stats)
    assert stats["groups"] == 600 and abs(stats["mean_len"] - 7615) < 0.05 * 7615
    text = run_seer("trace", "stats", str(out)).stdout
    for key in SUMMARY_KEYS:
        assert key in text


def test_synth_knobs_override_the_preset(tmp_path, capsys):
    out = tmp_path / "m.csv"
    assert (
        main(
            [
                "trace",
                "synth",
                "--preset",
                "moonlight",
                "--prompts",
                "20",
                "-G",
                "4",
                "--eta2",
                "0.8",
                "-o",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 80 and abs(stats["eta2"] - 0.8) < 0.03


def test_wrong_flags_and_inputs_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["trace", "convert", "x.json", "--from", "nonsense", "-o", "y.parquet"])
    assert info.value.code == 2
    capsys.readouterr()
    assert main(["trace", "synth", "--preset", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["trace", "synth", "-G", "1", "-o", str(tmp_path / "x.parquet")]) == 2
    assert not (tmp_path / "x.parquet").exists()


def test_presets_json(capsys):
    assert main(["presets", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {"moonlight", "qwen2-vl-72b", "kimi-k2"} == set(got["presets"])
    assert got["presets"]["qwen2-vl-72b"]["instances"] == 16 and got["presets"]["kimi-k2"]["gpus_per_instance"] == 32
    assert {"verl", "least-loaded"} <= set(got["policies"])


def test_validate_reports_columns(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert (
        main(
            ["trace", "synth", "--prompts", "3", "-G", "2", "--mean-len", "100", "--max-tokens", "1000", "-o", str(out)]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["trace", "validate", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["valid"] and got["samples"] == 6 and "max_tokens" in got["columns"]


def test_the_error_that_architecture_md_shows_is_the_one_seer_prints():
    """docs/architecture.md quotes a refused policy parameter; the quote must stay what the CLI says."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text().splitlines()
    at = next(i for i, line in enumerate(doc) if line.startswith("$ seer compare") and "chunk_sise" in line)
    r = run_seer(*shlex.split(doc[at][len("$ seer ") :]), cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 2
    assert r.stderr.strip() == doc[at + 1]


def test_compare_on_a_trace_of_empty_responses_reports_no_ratios(tmp_path, capsys):
    """Every response empty: throughput is 0 for every policy, so there is no speed-up to report (it was a
    ZeroDivisionError), and with nothing to prefill or decode the bound measures nothing (efficiency n/a)."""
    import pandas as pd

    rows = [
        dict(prompt_id=p, sample_id=s, prompt_len=0, output_len=0, max_tokens=64) for p in range(3) for s in range(2)
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "empty.parquet")
    out = tmp_path / "cmp"
    args = ["--trace", str(tmp_path / "empty.parquet"), "--cluster", "qwen2-vl-72b", "--instances", "2"]
    assert main(["compare", *args, "--policies", "verl,context", "--out", str(out)]) == 0
    rows = json.loads((out / "compare.json").read_text())
    assert all(r["speedup_vs_verl"] is None for r in rows)
    assert all(r["efficiency"] is None for r in rows)
    capsys.readouterr()
    assert main(["simulate", *args, "--out", str(tmp_path / "sim")]) == 0
    assert "efficiency n/a" in capsys.readouterr().out


def _interrupted_inside_compiled_code(args):
    # what numba reports when Ctrl-C lands inside a compiled function: a SystemError around the interrupt
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise SystemError("CPUDispatcher(<function plan_tokens>) returned a result with an exception set")


def test_ctrl_c_inside_compiled_code_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("seer.cli.info_cmds.cmd_presets", _interrupted_inside_compiled_code)
    assert main(["presets"]) == 130  # was a 50-line traceback and exit status 1
    assert capsys.readouterr().err == "seer: interrupted\n"
    monkeypatch.setattr("seer.cli.info_cmds.cmd_presets", lambda args: (_ for _ in ()).throw(SystemError("other")))
    with pytest.raises(SystemError, match="other"):  # a SystemError of its own is not an interrupt
        main(["presets"])


def test_ctrl_c_while_the_command_line_starts_is_one_line(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt  # the subcommands' imports take most of a second

    monkeypatch.setattr("seer.cli.build_parser", interrupted)
    assert main(["presets"]) == 130 and capsys.readouterr().err == "seer: interrupted\n"
