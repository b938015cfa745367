"""A policy of one's own that breaks the contract, `seer policies` and `seer figures` given odd input: each case
ended in a traceback with exit status 1, ran silently wrong, or wrote where it should not before its check."""

from __future__ import annotations

import json
import os

import pytest
from conftest import ROOT, cli_error

from seer.errors import SeerInputError
from seer.fileio import staged_files

POLICIES = """
import sys
from dataclasses import dataclass
from seer.core import Abort, Dispatch, RolloutStarted, SetSpeculation
from seer.policies.config import ConfiguredPolicy, PolicyConfig


def _first(view):
    return min(view.requests)


class _Once(ConfiguredPolicy):
    name = "once"
    Config = PolicyConfig

    def action(self, view):
        raise NotImplementedError

    def on_event(self, event, view):
        return [self.action(view)] if isinstance(event, RolloutStarted) else []


class UnknownId(_Once):
    def action(self, view):
        return Dispatch(10**6, 0, 16)


class FloatId(_Once):
    def action(self, view):
        return Dispatch(float(_first(view)), 0, 16)


class WordPriority(_Once):
    def action(self, view):
        return Dispatch(_first(view), 0, 16, "high")


class ListAbort(_Once):
    def action(self, view):
        return Abort([1, 2])


class StrInstance(_Once):
    def action(self, view):
        return Dispatch(_first(view), "0", 16)


class ListInstance(_Once):
    def action(self, view):
        return Dispatch(_first(view), [0], 16)


class NoOnEvent(ConfiguredPolicy):
    name = "none"
    Config = PolicyConfig


class WordTraits(UnknownId):
    traits = "fast"


@dataclass(frozen=True)
class NeedsX(PolicyConfig):
    x: int


class Required(UnknownId):
    Config = NeedsX
"""


@pytest.fixture()
def mypol(tmp_path, monkeypatch):
    (tmp_path / "mypol.py").write_text(POLICIES)
    (tmp_path / "quits.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "cls, said",
    [
        ("UnknownId", "dispatched unknown request 1000000"),  # a traceback, exit 1
        ("FloatId", "with request_id 0.0"),  # ran as request 0
        ("WordPriority", "with priority 'high'"),  # a ValueError inside simpy's queue
        ("ListAbort", "aborted unknown request [1, 2]"),  # unhashable type
        ("StrInstance", "with instance '0'"),
        ("ListInstance", "with instance [0]"),  # unhashable type, in the change log before any check
    ],
)
def test_a_policy_that_breaks_the_contract_is_one_line(mypol, capsys, cls, said):
    argv = ["simulate", "--preset", "moonlight", "--prompts", "2", "--instances", "2", "--policy", f"mypol.{cls}"]
    line = cli_error(capsys, *argv, "--out", str(mypol / "o"))
    assert "the policy broke the contract" in line and said in line
    assert not os.path.exists(mypol / "o")


@pytest.mark.parametrize(
    "policy, said",
    [
        ("mypol.NoOnEvent", "not a seer.policies.config.ConfiguredPolicy subclass"),  # an AttributeError in the run
        ("mypol.WordTraits", "traits must be a PolicyTraits"),  # a TypeError from traits_of
        ("quits.X", "cannot import 'quits' (SystemExit"),  # exit status 0 and no output
    ],
)
def test_a_policy_class_that_cannot_serve_is_refused_before_the_run(mypol, capsys, policy, said):
    argv = ["simulate", "--preset", "moonlight", "--prompts", "2", "--policy", policy, "--out", str(mypol / "o")]
    assert said in cli_error(capsys, *argv)


def test_set_speculation_for_unknown_requests_is_a_contract_error():
    from seer.core import RolloutStarted, SetSpeculation
    from seer.experiment import Setup, run
    from seer.loop import PolicyError
    from seer.policies.speculation.policy import SeerPolicy

    class Stray(SeerPolicy):
        def on_event(self, event, view):
            out = super().on_event(event, view)
            return out + [SetSpeculation(0, {10**6: 2}, 0)] if isinstance(event, RolloutStarted) else out

    with pytest.raises(PolicyError, match="draft budget for unknown request 1000000"):  # dropped without a word
        run(Setup.from_preset("moonlight", prompts=2), Stray(), progress=False)


def test_policies_takes_one_bare_name_and_shows_a_required_parameter(mypol, capsys):
    from seer.cli import main

    assert "takes one policy name" in cli_error(capsys, "policies", "")  # '' listed every policy
    assert "takes one policy name" in cli_error(capsys, "policies", "context:chunk_size=4")
    assert main(["policies", "mypol.Required", "--json"]) == 0  # _MISSING_TYPE is not JSON serializable
    (param,) = json.loads(capsys.readouterr().out)["mypol.Required"]["parameters"]
    assert param["name"] == "x" and param["default"] == "(required)"


def test_figures_refuse_an_empty_out_an_empty_preset_and_a_result_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = ROOT / "benchmarks" / "data" / "fidelity" / "gsm8k-verl-2i"
    assert "path is empty" in cli_error(capsys, "figures", "--presets", "moonlight", "--out", "")  # wrote here
    assert "empty item" in cli_error(capsys, "figures", "--presets", "moonlight,,kimi-k2", "--out", "f")
    assert "is a seer result, run or sweep folder" in cli_error(capsys, "figures", "--run", str(run), "--out", str(run))
    assert os.listdir(tmp_path) == []


def test_a_figure_set_is_moved_whole_or_not_at_all(tmp_path):
    (tmp_path / "a.png").write_text("old a")
    (tmp_path / "b.png").mkdir()  # a folder where a file goes: a.png was replaced, then the move failed
    with pytest.raises(SeerInputError, match="b.png: is a folder where a file of this set goes"):
        with staged_files(tmp_path) as tmp:
            (tmp / "a.png").write_text("new a")
            (tmp / "b.png").write_text("new b")
    assert (tmp_path / "a.png").read_text() == "old a"
