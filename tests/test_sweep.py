"""`seer sweep`: the same table through the process pool and through Ray; an interrupted sweep resumes."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from conftest import run_seer

from seer.cli.study_cmds import table_number
from seer.sweep import cell_key, cells, load_config, run_sweep

CONFIG = """
[sweep]
presets = ["qwen2-vl-72b"]
policies = ["verl", "context"]
seeds = [0, 1]
prompts = 12
[sweep.params]
chunk_size = [4096, 8192]
"""


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(CONFIG)
    return str(path)


def test_pool_and_ray_give_the_same_table(config, tmp_path):
    pool = run_sweep(config, str(tmp_path / "pool"), workers=2, progress=False)
    # verl takes no chunk_size: it runs once per seed, context once per seed and chunk size
    assert len(pool) == 6 and set(pool["policy"]) == {"verl", "context"}
    assert pool.loc[pool.policy == "verl", "param_chunk_size"].isna().all()
    # integers stay integers beside the missing ones, and a metric no cell has is still a float column
    assert str(pool["param_chunk_size"].dtype) == "Int64" and pool["spec_tau"].dtype == "float64"
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        via_ray = run_sweep(config, str(tmp_path / "ray"), use_ray=True, progress=False)
    finally:
        ray.shutdown()
    pd.testing.assert_frame_equal(pool, via_ray)
    assert pool.equals(pd.read_parquet(tmp_path / "pool" / "sweep.parquet"))


def test_interrupted_sweep_resumes(config, tmp_path):
    out = tmp_path / "s"
    first = run_sweep(config, str(out), workers=2, progress=False)
    grid = cells(load_config(config))
    kept = [out / "cells" / f"{cell_key(c)}.json" for c in grid[:4]]
    stamps = [os.stat(p).st_mtime_ns for p in kept]
    for c in grid[6:]:  # as if the sweep had been stopped after five cells, the sixth cut short mid-write
        (out / "cells" / f"{cell_key(c)}.json").unlink()
    (out / "cells" / f"{cell_key(grid[5])}.json").write_text('{"makespan_s": 12')
    # a fifth edited by hand to hold an integer no results table holds: computed again, not a crash at the end
    edited = out / "cells" / f"{cell_key(grid[4])}.json"
    edited.write_text(edited.read_text().replace('"seed": ', f'"seed": {10**29}, "was": ', 1))
    (out / "sweep.parquet").unlink()
    with pytest.warns(UserWarning, match="damaged cell result"):
        again = run_sweep(config, str(out), workers=2, progress=False)
    pd.testing.assert_frame_equal(first, again)
    assert [os.stat(p).st_mtime_ns for p in kept] == stamps  # finished cells were reused, not recomputed


def test_the_sweep_table_keeps_four_figures_and_whole_numbers_above_a_thousand():
    # 3 significant figures printed 1,801.06 s as 1.8e+03
    assert [table_number(x) for x in (1801.06, 123.456, 1.23456, 0.5)] == ["1,801", "123.5", "1.235", "0.5"]


def test_sweep_cli_and_bad_config(config, tmp_path):
    res = run_seer("sweep", config, "--out", str(tmp_path / "o"), "--workers", "2", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    res = run_seer("sweep", config, "--out", str(tmp_path / "o"))
    assert res.returncode == 0 and "(6 cells: 6 read back from an earlier run, 0 computed;" in res.stdout
    table = pd.read_parquet(tmp_path / "o" / "sweep.parquet")
    assert all(table_number(x) in res.stdout for x in table["makespan_s"]) and "e+0" not in res.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[sweep]\npresets = []\n")
    res = run_seer("sweep", str(bad))
    assert res.returncode == 2 and "presets" in res.stderr and res.stderr.count("\n") == 1


def _alive_after(pids: list[int], seconds: float) -> list[int]:
    """The processes still alive (zombies, which only wait to be reaped, are not) once `seconds` have passed, or
    once none is left."""
    import time

    deadline = time.time() + seconds
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.2)
    return [p for p in pids if os.path.exists(f"/proc/{p}") and "Z" not in open(f"/proc/{p}/stat").read().split()[2]]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the pool's workers")
def test_pool_workers_die_with_a_killed_sweep(config, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "seer", "sweep", config, "--out", str(tmp_path / "k"), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    workers = []
    while time.time() < deadline and len(workers) < 2:
        workers = _children(proc.pid)
        time.sleep(0.2)
    assert workers, "the sweep never started its pool"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    alive = _alive_after(workers, 10)
    assert not alive, f"orphaned pool workers {alive}"


def test_an_edited_preset_is_not_served_from_the_cells_of_the_old_one(config, tmp_path, monkeypatch):
    import seer.sweep as sweep

    out = tmp_path / "s"
    run_sweep(config, str(out), workers=2, progress=False)
    before = set(os.listdir(out / "cells"))
    assert len(before) == 6
    monkeypatch.setattr(sweep, "preset_fingerprint", lambda preset: "as if its TOML had changed")
    run_sweep(config, str(out), workers=2, progress=False)
    assert len(set(os.listdir(out / "cells")) - before) == 6  # every cell computed again, under new names


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the pool's workers")
@pytest.mark.parametrize("sig, said", [("SIGINT", "interrupted"), ("SIGTERM", "terminated")])
def test_ctrl_c_or_sigterm_stops_a_sweep_at_once(tmp_path, sig, said):
    """SIGINT used to let the pool finish every submitted cell (tens of seconds) before the results were dropped.
    SIGTERM stops it the same way (the workers, which inherit the CLI's SIGTERM handler, must still die of it)."""
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "long.toml"
    config.write_text('[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["verl", "context"]\nseeds = [0, 1, 2]\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "seer", "sweep", str(config), "--out", str(tmp_path / "k"), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    workers = []
    while time.time() < deadline and not workers:
        workers = _children(proc.pid)
        time.sleep(0.2)
    assert workers, "the sweep never started its pool"
    time.sleep(2.0)
    proc.send_signal(getattr(signal, sig))
    sent = time.time()
    _, err = proc.communicate(timeout=60)
    assert time.time() - sent < 10, f"took {time.time() - sent:.0f} s to stop"
    assert proc.returncode != 0 and said in err and "Traceback" not in err
    alive = _alive_after(workers, 10)
    assert not alive, f"pool workers {alive} outlived the sweep"


def test_a_worker_that_dies_fails_the_sweep_instead_of_hanging(tmp_path):
    """A cell's process killed from outside (the OOM killer) must end the sweep with an error, never wait."""
    import subprocess
    import sys

    (tmp_path / "k.toml").write_text(
        '[sweep]\npresets = ["moonlight"]\npolicies = ["verl"]\nseeds = [0, 1, 2]\nprompts = 4\n'
    )
    script = f"""
import os, signal
import seer.sweep as sw
run_cell = sw.run_cell
def dying(cell):
    if cell["seed"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_cell(cell)
sw.run_cell = dying
try:
    sw.run_sweep({str(tmp_path / "k.toml")!r}, {str(tmp_path / "out")!r}, workers=2, progress=False)
except Exception as exc:
    print(type(exc).__name__)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "BrokenProcessPool", proc.stderr[-2000:]


def test_a_changed_policy_is_computed_again_and_reuse_is_counted(tmp_path, monkeypatch):
    """A cell's stored name covers the code it comes from: a policy of one's own edited after a sweep gave the
    old cell's numbers, and said nothing of reusing it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "sweep_policy_of_mine.py"
    module.write_text('from seer.policies.baselines import VerlPolicy\n\nclass Mine(VerlPolicy):\n    name = "mine"\n')
    config = tmp_path / "mine.toml"
    config.write_text('[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["sweep_policy_of_mine.Mine"]\nprompts = 4\n')
    out = tmp_path / "s"
    assert run_sweep(str(config), str(out), workers=1, progress=False).attrs["reused"] == 0
    assert run_sweep(str(config), str(out), workers=1, progress=False).attrs["reused"] == 1
    module.write_text(module.read_text() + "# edited\n")
    assert run_sweep(str(config), str(out), workers=1, progress=False).attrs["reused"] == 0
    assert len(os.listdir(out / "cells")) == 2


@pytest.mark.parametrize(
    "edit",
    [
        {"makespan_s": "abc"},  # became NaN in the table
        {"requests": 1.5},  # made the column float
        {"preemptions": True},
        {"efficiency": [1]},
        {"seed": 7},  # another cell's row under this one's name
    ],
)
def test_a_stored_cell_with_values_no_cell_computes_is_computed_again(config, tmp_path, edit):
    import json

    out = tmp_path / "s"
    first = run_sweep(config, str(out), workers=2, progress=False)
    path = out / "cells" / f"{cell_key(cells(load_config(config))[0])}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.warns(UserWarning, match="damaged cell result"):
        again = run_sweep(config, str(out), workers=2, progress=False)
    pd.testing.assert_frame_equal(first, again)
    assert again.attrs["reused"] == 5


def test_sweep_refusals_before_any_folder(config, tmp_path, monkeypatch):
    from seer.errors import SeerInputError

    out = tmp_path / "s"
    with pytest.raises(SeerInputError, match="--workers sizes the local process pool"):
        run_sweep(config, str(out), use_ray=True, workers=2, progress=False)  # ran, ignoring --workers
    twice = tmp_path / "twice.toml"
    twice.write_text('[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["context", "context:chunk_size=8192"]\n')
    with pytest.raises(SeerInputError, match="'context' and 'context:chunk_size=8192' are one configuration"):
        run_sweep(str(twice), str(out), progress=False)  # every cell ran twice
    unread = tmp_path / "unread.toml"
    unread.write_text(
        '[sweep]\npresets = ["qwen2-vl-72b"]\npolicies = ["divided"]\n[sweep.params]\nimbalance_threshold = [1, 64]\n'
    )
    with pytest.raises(SeerInputError, match="imbalance_threshold tunes placement=cache-aware"):
        run_sweep(str(unread), str(out), progress=False)  # two cells with the same numbers
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(SeerInputError, match="RAY_ADDRESS=127.0.0.1:1: no Ray cluster answers there"):
        run_sweep(config, str(out), progress=False)  # hung, retrying, with an empty cells folder
    assert not out.exists()


def test_a_cell_says_which_bound_and_acceptance_its_efficiency_is_against():
    """seer's efficiency is against a bound at 1 + gamma_max tokens a step, with acceptance from the parametric
    model: the sweep table dropped both, so its efficiency read as comparable with verl's."""
    from seer.sweep import run_cell

    cell = {"preset": "qwen2-vl-72b", "seed": 0, "prompts": 2, "params": {}}
    verl, seer = run_cell({**cell, "policy": "verl"}), run_cell({**cell, "policy": "seer"})
    assert verl["bound_tokens_per_step"] == 1 and verl["speculation"] is None
    assert seer["bound_tokens_per_step"] > 1 and seer["speculation"].startswith("parametric model")


def test_an_output_path_through_a_file_is_refused_before_any_cell(config, tmp_path, capsys):
    from seer.cli import main

    (tmp_path / "afile").write_text("mine")
    for out in ("afile", "afile/sub"):  # each cell warned it was damaged, then the folder could not be made
        assert main(["sweep", str(config), "--out", str(tmp_path / out)]) == 2
        err = capsys.readouterr().err
        assert err == f"seer: error: {tmp_path / out}: {tmp_path / 'afile'} is not a folder\n", err


def test_a_sweep_interrupted_before_its_first_cell_leaves_no_folders(config, tmp_path, monkeypatch):
    def interrupted(todo, workers):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr("seer.sweep._run_local", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(str(config), str(tmp_path / "a" / "b" / "sw"), workers=1)
    assert os.listdir(tmp_path) == [os.path.basename(config)]  # a/b/sw/cells was left, every folder empty
