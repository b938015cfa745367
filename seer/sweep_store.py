"""A sweep's finished cells on disk: each stored under a hash of everything its result depends on, and read back
checked, so a cell is reused only where computing it again would give the same row."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import warnings
from pathlib import Path

import pandas as pd

from seer.schema import int_problem

SUMMARY_COLUMNS = (
    "makespan_s",
    "throughput_tok_s",
    "tail_s",
    "tail_share",
    "lower_bound_s",
    "efficiency",
    "preemptions",
    "migrations",
    "output_tokens",
    "requests",
    "spec_tau",
    # what the bound and the acceptance are: with speculation the bound lets a step advance 1 + gamma_max tokens,
    # so efficiency compares only between rows with the same value here
    "bound_tokens_per_step",
)
LABEL_COLUMNS = ("speculation",)  # the acceptance model's label (empty without speculation)
COUNT_COLUMNS = ("preemptions", "migrations", "output_tokens", "requests", "bound_tokens_per_step")
FLOAT_COLUMNS = tuple(c for c in SUMMARY_COLUMNS if c not in COUNT_COLUMNS)
ROOT = Path(__file__).resolve().parent  # seer's package folder


def preset_fingerprint(preset: str) -> str:
    """A hash of everything a preset's cell depends on besides the cell itself: the preset's TOML, its
    cluster, the model's shapes, the hardware and the fitted coefficients. An edited preset makes new cells."""
    from seer.fileio import json_safe
    from seer.presets import load_preset
    from seer.sim.cluster import load_cluster

    cluster = load_cluster(preset)
    parts = {
        "preset": load_preset(preset),
        "cluster": cluster.describe(),
        "shape": dataclasses.asdict(cluster.shape),
        "hardware": dataclasses.asdict(cluster.hardware()),
        "cost": cluster.cost_model().describe(),
    }
    return hashlib.sha256(json.dumps(json_safe(parts), sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _seer_sources() -> str:
    """A hash of seer's own source files (the code this process runs: read once)."""
    digest = hashlib.sha256()
    for path in sorted(ROOT.rglob("*.py")):
        digest.update(f"{path.relative_to(ROOT)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def code_fingerprint(spec: str) -> str:
    """A hash of the code a cell of policy `spec` comes from: seer's own source files and, for a policy of one's
    own (`module.Class`), the files defining its classes. A changed simulator or policy makes new cells (a stored
    cell was served after its policy's code had changed)."""
    from seer.policies import make_policy

    digest = hashlib.sha256(_seer_sources().encode())
    files = []
    for cls in type(make_policy(spec)).__mro__:
        try:
            path = Path(inspect.getsourcefile(cls) or "").resolve()
        except TypeError:  # a built-in class
            continue
        if path.is_file() and ROOT not in path.parents and path not in files:
            files.append(path)
    for path in files:
        digest.update(f"{path}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cell_key(cell: dict, fingerprint: str | None = None, code: str | None = None) -> str:
    """The cell's stored name: the cell, its preset's fingerprint and the code's (each computed when not given)."""
    fp = fingerprint if fingerprint is not None else preset_fingerprint(cell["preset"])
    code = code if code is not None else code_fingerprint(cell["policy"])
    payload = json.dumps({**cell, "fingerprint": fp, "code": code}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _problem(row, cell: dict) -> str | None:
    """What makes a stored row unusable for `cell` (None: nothing)."""
    if not isinstance(row, dict):
        return "not a cell's row"
    missing = [k for k in ("preset", "policy", "seed", *SUMMARY_COLUMNS, *LABEL_COLUMNS) if k not in row]
    missing += [f"param_{k}" for k in cell["params"] if f"param_{k}" not in row]
    if missing:
        return f"no {missing[0]}"
    for key in ("preset", "policy", "seed"):
        if row[key] != cell[key] or type(row[key]) is not type(cell[key]):
            return f"{key} {row[key]!r}, where the cell's is {cell[key]!r}"
    for key in SUMMARY_COLUMNS:
        v = row[key]
        if key in COUNT_COLUMNS and (type(v) is not int or v < 0):
            return f"{key} {v!r}, not a count"
        if v is not None and (type(v) not in (int, float) or not math.isfinite(v)):  # json_safe stores NaN as null
            return f"{key} {v!r}, not a number"
    if row["speculation"] is not None and not isinstance(row["speculation"], str):
        return f"speculation {row['speculation']!r}, not a label"
    if any(int_problem(k, v) for k, v in row.items()):  # no cell computes one; the results table could not hold it
        return "an integer out of range"
    return None


def kept_cell(path: str, cell: dict) -> dict | None:
    """A finished cell's row, or None when there is none or it is damaged (it is then computed again)."""
    try:
        with open(path, encoding="utf-8") as fh:
            row = json.load(fh)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError, OSError):
        warnings.warn(f"{path}: damaged cell result; computing it again", stacklevel=2)
        return None
    problem = _problem(row, cell)
    if problem:
        warnings.warn(f"{path}: damaged cell result ({problem}); computing it again", stacklevel=2)
        return None
    return row


def typed(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table whose column types do not depend on which cells ran: a parameter some policies do not
    take stays integer (nullable) rather than float, and a metric with no value anywhere (spec_tau without
    speculation) is float."""
    table = pd.DataFrame(rows)
    for col in table.columns:
        values = [r[col] for r in rows if r.get(col) is not None]
        if col.startswith("param_") and values and all(type(v) is int for v in values):
            table[col] = table[col].astype("Int64")
        elif col in FLOAT_COLUMNS:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype("float64")
    return table
