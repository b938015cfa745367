"""What the benchmark scripts share: the `seer` command run in a child process (so each run starts clean), the
developers' shared data folder as a default input, and the one-line refusal of a bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import NoReturn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data(*parts: str) -> str:
    """A file of the shared data folder beside a developer checkout (`SEER_SHARED`, default ../shared): a default
    input only; a user who cloned this repository alone names the file with the script's flag."""
    return os.path.join(os.environ.get("SEER_SHARED", os.path.join(ROOT, "..", "shared")), "data", *parts)


def fail(message: str) -> NoReturn:
    """One line on stderr, naming the script, and exit status 2, as the seer CLI answers bad input."""
    print(f"{os.path.basename(sys.argv[0])}: {message}", file=sys.stderr)
    raise SystemExit(2)


def seer_text(*args: str, env: dict | None = None) -> str:
    """stdout of `seer ARGS`; a failure ends the benchmark with the command and the end of its stderr."""
    res = subprocess.run(
        [sys.executable, "-m", "seer", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if res.returncode != 0:
        raise SystemExit(f"seer {' '.join(args)}: {res.stderr[-2000:]}")
    return res.stdout


def seer_json(*args: str) -> dict:
    """`seer ARGS --json`, parsed."""
    return json.loads(seer_text(*args, "--json"))
