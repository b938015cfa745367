"""A recorded real run (the folder `seer run` writes), read and checked before anything uses it.

Every problem is one line naming the folder and the file: a missing file, JSON that does not parse or lacks a
field of the right type, a Parquet file that cannot be read or lacks a column, a measured step that is not a
finite number >= 0 (a duration must be > 0), a trace that breaks the schema, or a request the trace lacks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seer.errors import SeerInputError
from seer.metrics import RolloutResult
from seer.schema import check_types
from seer.traces.io import validate_trace

RUN_FILES = ("run.json", "steps.parquet", "trace.parquet", "summary.json", "requests.parquet", "timeline.parquet")
STEP_COLUMNS = (
    "instance",
    "t",
    "duration_s",
    "running",
    "waiting",
    "kv_usage",
    "prompt_tokens",
    "generation_tokens",
    "context_tokens",
)
TRACE_COLUMNS = ("prompt_id", "sample_id", "prompt_len", "output_len", "max_tokens")


@dataclass(frozen=True)
class RunSettings:
    """The fields of run.json that replaying a run needs (the file holds more)."""

    policy: str
    instances: int
    max_num_seqs: int
    max_model_len: int
    max_tokens: int
    chunk_size: int | None = None


@dataclass
class RecordedRun:
    """A `seer run` folder: its settings, measured steps, recorded trace and results."""

    path: str
    settings: RunSettings
    raw: dict
    steps: pd.DataFrame
    trace: pd.DataFrame
    result: RolloutResult


def _json(run_dir: str, name: str) -> dict:
    try:
        with open(os.path.join(run_dir, name), encoding="utf-8") as fh:
            data = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SeerInputError(f"{run_dir}: {name} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SeerInputError(f"{run_dir}: {name} is not a JSON object")
    return data


def _parquet(run_dir: str, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    if os.path.isdir(os.path.join(run_dir, name)):  # pandas would read a folder as a (possibly empty) dataset
        raise SeerInputError(f"{run_dir}: {name} is a folder, not a Parquet file")
    try:
        df = pd.read_parquet(os.path.join(run_dir, name))
    except Exception as exc:  # pyarrow raises many types for a bad file
        raise SeerInputError(f"{run_dir}: {name} is not a readable Parquet file ({type(exc).__name__})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SeerInputError(f"{run_dir}: {name} lacks column(s) {', '.join(missing)}")
    return df


def check_run_dir(run_dir: str) -> None:
    """Refuse, in one line, anything that is not a recorded run folder (cheap: reads no Parquet file)."""
    if not os.path.isdir(run_dir):
        what = "is a file, not a run folder" if os.path.exists(run_dir) else "no such run folder"
        raise SeerInputError(f"{run_dir}: {what}")
    missing = [f for f in RUN_FILES if not os.path.exists(os.path.join(run_dir, f))]
    if missing:
        raise SeerInputError(
            f"{run_dir}: not a recorded run (missing {', '.join(missing)}); record one with `seer run`"
        )
    settings(run_dir)
    summary = _json(run_dir, "summary.json").get("summary")
    if not isinstance(summary, dict) or not all(
        isinstance(summary.get(k), (int, float)) for k in ("makespan_s", "kv_capacity_tokens")
    ):
        raise SeerInputError(f"{run_dir}: summary.json lacks makespan_s or kv_capacity_tokens")
    for key in ("makespan_s", "kv_capacity_tokens"):  # a recorded run took time and held KV
        value = summary[key]
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if isinstance(value, bool) or not (number > 0 and math.isfinite(number)):
            raise SeerInputError(f"{run_dir}: summary.json {key} must be a finite number > 0, not {value!r:.40}")


def settings(run_dir: str) -> RunSettings:
    raw = _json(run_dir, "run.json")
    keys = [f.name for f in dataclasses.fields(RunSettings)]
    missing = [k for k in keys if k not in raw and k != "chunk_size"]
    if missing:
        raise SeerInputError(f"{run_dir}: run.json lacks {', '.join(missing)}")
    record = RunSettings(**{k: raw[k] for k in keys if k in raw})
    problems = check_types(record) or [f"{k} must be >= 1" for k in keys[1:5] if getattr(record, k) < 1]
    if problems:
        raise SeerInputError(f"{run_dir}: run.json: {'; '.join(problems)}")
    return record


def _measured_values(run_dir: str, name: str, df: pd.DataFrame, columns: tuple[str, ...], positive=()) -> None:
    """Measured columns are numbers, finite and >= 0 (> 0 for `positive`): a fit or a replay of anything else
    fails far from the cause, or silently reports nonsense."""
    for col in columns:
        values = df[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise SeerInputError(f"{run_dir}: {name} column '{col}' holds {values.dtype}, not numbers")
        v = values.to_numpy(dtype=float)
        bad = ~np.isfinite(v) | ((v <= 0) if col in positive else (v < 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            need = "> 0" if col in positive else ">= 0"
            raise SeerInputError(f"{run_dir}: {name} row {i + 1}, column '{col}': {v[i]} (must be finite and {need})")


def load_run(run_dir: str) -> RecordedRun:
    """Every file of a run folder, checked."""
    check_run_dir(run_dir)
    steps = _parquet(run_dir, "steps.parquet", STEP_COLUMNS)
    _measured_values(run_dir, "steps.parquet", steps, STEP_COLUMNS, positive=("duration_s",))
    trace = validate_trace(_parquet(run_dir, "trace.parquet", TRACE_COLUMNS), f"{run_dir}/trace.parquet")
    requests = _parquet(run_dir, "requests.parquet", ("prompt_id", "sample_id", "finish_s"))
    _parquet(run_dir, "timeline.parquet", ())
    known = pd.MultiIndex.from_frame(trace[["prompt_id", "sample_id"]])
    unknown = ~pd.MultiIndex.from_frame(requests[["prompt_id", "sample_id"]]).isin(known)
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        pid, sid = requests["prompt_id"].iloc[i], requests["sample_id"].iloc[i]
        raise SeerInputError(
            f"{run_dir}: requests.parquet row {i + 1} (prompt {pid!r}, sample {sid}) is not in trace.parquet"
        )
    try:
        result = RolloutResult.load(run_dir)
    except (KeyError, ValueError, OSError) as exc:
        raise SeerInputError(f"{run_dir}: unreadable results ({type(exc).__name__})") from None
    return RecordedRun(run_dir, settings(run_dir), _json(run_dir, "run.json"), steps, trace, result)
