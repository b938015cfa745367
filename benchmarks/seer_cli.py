"""The `seer` command run from a benchmark script, in a child process (so each run starts clean)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


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
