"""One rule for every progress bar (seer.progress): True shows it, False hides it, None shows it only on a
terminal (a test's captured stderr is not one)."""

import pandas as pd
import pytest

from seer.experiment import Setup, run
from seer.progress import progress_bar
from seer.traces.rollout import rollout_from_trace
from seer.traces.stats import trace_stats
from seer.traces.synth import SynthConfig, synthesize


def _trace() -> pd.DataFrame:
    return synthesize(SynthConfig(prompts=3, group_size=2, mean_len=40, max_tokens=200))


CALLS = {
    "setting up": lambda p: rollout_from_trace(_trace(), 200, progress=p),
    "n-gram sharing": lambda p: trace_stats(
        _trace().assign(output_ids=[list(range(i, i + 12)) for i in range(6)]), progress=p
    ),
    "simulating": lambda p: run(Setup.from_preset("moonlight", prompts=2), "verl", progress=p),
}


@pytest.mark.parametrize("desc", sorted(CALLS))
@pytest.mark.parametrize("progress, shown", [(True, True), (False, False), (None, False)])
def test_a_long_call_shows_its_bar_as_asked(capsys, desc, progress, shown):
    capsys.readouterr()
    CALLS[desc](progress)
    err = capsys.readouterr().err
    assert (desc in err) is shown, err[-300:]


def test_the_bar_counts_what_it_is_given(capsys):
    assert list(progress_bar(True, range(3), desc="counting")) == [0, 1, 2]
    assert "3/3" in capsys.readouterr().err
    assert progress_bar(False, total=5).disable


def test_a_command_writing_to_a_pipe_draws_no_bar(tmp_path, capsys):
    """sweep, figures and run forced their bars on (progress=True): a log or a pipe got every frame."""
    from seer.cli import main

    cfg = tmp_path / "s.toml"
    cfg.write_text('[sweep]\npresets = ["moonlight"]\npolicies = ["verl"]\nseeds = [0]\nprompts = 2\n')
    assert main(["sweep", str(cfg), "--workers", "1", "--out", str(tmp_path / "sw")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "cell/s" not in err, err[-300:]
