"""The `seer` command line. Bad input exits with status 2 and one line on stderr, never a traceback.

One module per group of subcommands, each holding its parser and its commands: `trace_cmds` (trace ...),
`sim_cmds` (simulate, compare), `real_cmds` (model, run, fidelity), `study_cmds` (spec bench, figures, sweep),
`info_cmds` (presets, policies).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Sequence

from seer import __version__
from seer.errors import PolicyError, SeerInputError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a wrong flag is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {one_line(message)} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    # the subcommands' modules import pandas, numpy and more: imported here, so that `main` can guard it
    from seer.cli import info_cmds, real_cmds, sim_cmds, study_cmds, trace_cmds

    parser = OneLineParser(
        prog="seer", description="Rollout scheduling for synchronous LLM RL: traces, simulation, real engines."
    )
    parser.add_argument("--version", action="version", version=f"seer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (trace_cmds, sim_cmds, study_cmds, real_cmds, info_cmds):
        module.register(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the process is, so that cleanups run as they do for Ctrl-C: a staging folder or a
    half-written output is removed, engines are stopped. (Python's default for SIGTERM ends the process at once.)"""


def _terminate(signum, frame):
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_exception():
    """SIGTERM raises `Terminated` while a command runs, unless the process already handles SIGTERM itself."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def one_line(text: object) -> str:
    """`text` on one line: a newline or other control character (in a path, a name from a file) shown escaped, as
    is an unpaired surrogate, which stderr could not encode."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_warned: set[str] = set()


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    # once per command: Python's own once-per-place rule is reset whenever a library mutes warnings for a moment,
    # and `compare` met the same note about the trace once per policy
    text = one_line(message)
    if text not in _warned:
        _warned.add(text)
        print(f"seer: warning: {text}", file=sys.stderr)


def _interrupt(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or Terminated behind `exc`: a compiled (numba) function interrupted mid-call
    reports a SystemError whose context is the interrupt."""
    while exc is not None:
        if isinstance(exc, (KeyboardInterrupt, Terminated)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _one_line_warning
    _warned.clear()
    try:
        with _sigterm_as_exception():
            args = build_parser().parse_args(argv)  # inside the guard: its imports take most of a second
            try:
                return int(args.func(args) or 0)
            except SystemError as exc:
                raise (_interrupt(exc) or exc) from None
    except SeerInputError as exc:
        print(f"seer: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except PolicyError as exc:  # the message names the policy and what it did
        print(f"seer: error: the policy broke the contract: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`seer ... | head`): nothing more to say
        return 0
    except OSError as exc:  # a file or folder that cannot be read or written: one line too
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"seer: error: {one_line(where + str(exc.strerror or exc))}", file=sys.stderr)
        return 2
    except MemoryError:  # a size no check caught: still one line, not a traceback
        print("seer: error: out of memory: the input asks for more than this machine holds", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seer: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("seer: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM


__all__ = ["build_parser", "main"]
