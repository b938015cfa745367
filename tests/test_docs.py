"""The commands the README and docs show: every `seer` subcommand and flag they name exists, every benchmark script
they run exists and takes the flags shown, and none reads the developers' `../shared` folder (a user has cloned
only this repository). Running them is the docs audit's job; this catches a renamed flag or script at once."""

import argparse
import ast
import re
import shlex
from pathlib import Path

import pytest

from seer.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(text: str) -> list[str]:
    """Commands in fenced blocks (a trailing backslash continues a line) and in inline code spans."""
    found = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            found.append(line.strip().removeprefix("$ "))
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return [c for c in found if c.startswith(("seer ", "python benchmarks/"))]


def _words(command: str) -> list[str]:
    command = command.split(" #")[0].split(" | ")[0].split(" > ")[0]
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote in an abridged example
        words = command.split()
    return [w.strip("[]") for w in words]


def _flags(words: list[str]) -> list[str]:
    return [w.split("=")[0] for w in words if re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?", w)]


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _script_options(path: Path) -> set[str]:
    """The option strings of every `add_argument` call in a script."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            out |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return out


SHOWN = [(doc.name, c) for doc in DOCS for c in _commands(doc.read_text())]


def test_the_docs_show_commands_to_check():
    assert len([c for _, c in SHOWN if c.startswith("seer ")]) > 40
    assert len([c for _, c in SHOWN if c.startswith("python benchmarks/")]) > 10


@pytest.mark.parametrize("doc, command", SHOWN, ids=[f"{d}:{c[:60]}" for d, c in SHOWN])
def test_a_command_the_docs_show_exists_with_its_flags(doc, command):
    assert "../shared" not in command and "/shared/" not in command, f"{doc}: {command}"
    words = _words(command)
    if words[0] == "python":
        script = ROOT / words[1]
        assert script.is_file(), f"{doc}: {command}: no {words[1]}"
        unknown = set(_flags(words[2:])) - _script_options(script) - {"--help"}
        assert not unknown, f"{doc}: {command}: {words[1]} takes no {', '.join(sorted(unknown))}"
        return
    parser, path = build_parser(), ["seer"]
    for word in words[1:]:
        choices = _subparsers(parser)
        if word not in choices:
            break
        parser = choices[word]
        path.append(word)
    rest = words[len(path) :]
    if _subparsers(parser) and rest and not rest[0].startswith("-"):
        raise AssertionError(f"{doc}: {command}: `{' '.join(path)}` has no subcommand {rest[0]}")
    unknown = set(_flags(rest)) - _options(parser)
    assert not unknown, f"{doc}: {command}: `{' '.join(path)}` takes no {', '.join(sorted(unknown))}"


def test_the_check_finds_a_wrong_flag_and_a_missing_script():
    with pytest.raises(AssertionError, match="takes no --no-such-flag"):
        test_a_command_the_docs_show_exists_with_its_flags("x.md", "seer simulate --no-such-flag 3")
    with pytest.raises(AssertionError, match="no benchmarks/gone.py"):
        test_a_command_the_docs_show_exists_with_its_flags("x.md", "python benchmarks/gone.py --x")
    with pytest.raises(AssertionError, match="has no subcommand simulate"):
        test_a_command_the_docs_show_exists_with_its_flags("x.md", "seer trace simulate --trace t.parquet")
    with pytest.raises(AssertionError, match="shared"):
        test_a_command_the_docs_show_exists_with_its_flags("x.md", "seer spec bench --trace ../shared/data/t.parquet")
