"""The ninth audit from outside: parameters a configuration never reads, figures written into a sweep's folder,
`model prepare FOLDER --force`, and a long `trace synth` without a word. Each case ran silently or wrote where it
should not."""

from __future__ import annotations

import os

import pytest
from conftest import cli_error

from seer.errors import SeerInputError
from seer.policies import make_policy


@pytest.mark.parametrize(
    "spec, said",
    [
        ("divided:imbalance_threshold=5", "imbalance_threshold tunes placement=cache-aware"),
        ("divided:affinity_margin=100", "affinity_margin tunes placement=cache-aware"),
        ("context:max_chunks=8:admission=worst-case", "max_chunks tunes admission=adaptive"),
        ("seer:backfill=false:admission=worst-case", "backfill tunes admission=adaptive"),
    ],
)
def test_a_parameter_the_configuration_never_reads_is_refused(spec, said):
    with pytest.raises(SeerInputError, match=said):
        make_policy(spec)  # ran as if not given


@pytest.mark.parametrize(
    "spec, read",
    [
        ("divided:placement=cache-aware:imbalance_threshold=5", lambda p: p.placement.imbalance_threshold == 5),
        ("context:max_chunks=8", lambda p: p.admission.max_chunks == 8),
        ("oracle:backfill=false", lambda p: p.admission.backfill is False),
    ],
)
def test_the_same_parameters_are_taken_where_they_are_read(spec, read):
    assert read(make_policy(spec))  # accepted, and reaching the part that reads it


def test_figures_refuse_a_sweep_folder(tmp_path, capsys):
    (tmp_path / "cells").mkdir()  # a sweep then refused its own folder, holding the figures' files
    assert "is a seer result, run or sweep folder (it holds cells)" in cli_error(
        capsys, "figures", "--presets", "moonlight", "--prompts", "1", "--out", str(tmp_path)
    )
    assert os.listdir(tmp_path) == ["cells"]


def test_model_prepare_refuses_force_for_a_folder_of_ones_own(tmp_path, capsys):
    said = cli_error(capsys, "model", "prepare", str(tmp_path), "--force")  # printed the folder, rebuilt nothing
    assert "--force rebuilds a model seer prepares" in said


def test_trace_synth_shows_the_fit_as_it_goes(capsys):
    from seer.traces.synth import SynthConfig, synthesize

    synthesize(SynthConfig(prompts=4, group_size=2), progress=True)
    assert "fitting lengths" in capsys.readouterr().err
    synthesize(SynthConfig(prompts=4, group_size=2))  # a library call stays quiet
    assert capsys.readouterr().err == ""
