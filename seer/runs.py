"""A recorded real run (the folder `seer run` writes), read and checked before anything uses it.

Every problem is one line naming the folder and the file: a missing file, JSON that does not parse or lacks a
field of the right type and range, a Parquet file that cannot be read or lacks a column, a measured value that is
not a finite number >= 0 (a duration must be > 0, a count whole), a trace that breaks the schema, no request, a
request the trace lacks, one given twice or one without its record, or settings that make no policy or cluster the
simulator can run. Files that contradict each other are refused too: a step on an instance the run did not have,
one starting after the run ended, a KV usage above 1, an empty recorded prompt, two different instance counts.
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
from seer.policies import make_policy
from seer.schema import INT_LIMIT, check_types, show
from seer.sim.cluster import ClusterConfig
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
# columns fidelity reads when a run recorded them (older runs lack some)
OPTIONAL_STEP_COLUMNS = (
    "preempted",
    "sched_tokens",
    "sched_kv_tokens",
    "attn_pairs",
    "score_pairs",
    "logits",
    "spec_draft_tokens",
    "spec_accepted_tokens",
)
TRACE_COLUMNS = ("prompt_id", "sample_id", "prompt_len", "output_len", "max_tokens")
REQUEST_COLUMNS = ("prompt_id", "sample_id", "finish_s")
# measured counts: whole numbers (a fraction of a request or token is a damaged file)
COUNT_COLUMNS = frozenset(STEP_COLUMNS + OPTIONAL_STEP_COLUMNS + ("chunks", "preemptions")) - {
    "t",
    "duration_s",
    "kv_usage",
    "attn_pairs",
    "score_pairs",
}


def _count_problem(key: str, value, least: int = 1) -> str | None:
    """A phrase when `value` is not an integer in [least, INT_LIMIT] (None when it is)."""
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= INT_LIMIT:
        return f"{key} must be an integer from {least} to 2**53, not {show(value)}"
    return None


@dataclass(frozen=True)
class RunSettings:
    """The fields of run.json that replaying a run needs (the file holds more)."""

    policy: str
    instances: int
    max_num_seqs: int
    max_model_len: int
    max_tokens: int
    chunk_size: int | None = None

    def problems(self) -> list[str]:
        """Out-of-range fields (after `check_types`): every count a run used is >= 1."""
        keys = ("instances", "max_num_seqs", "max_model_len", "max_tokens", "chunk_size")
        found = [_count_problem(k, getattr(self, k)) for k in keys if getattr(self, k) is not None]
        return [p for p in found if p]


@dataclass
class RecordedRun:
    """A `seer run` folder: its settings, measured steps, recorded trace and results."""

    path: str
    settings: RunSettings
    raw: dict
    steps: pd.DataFrame
    trace: pd.DataFrame
    result: RolloutResult
    cluster: ClusterConfig


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
    _checked(run_dir)


def _checked(run_dir: str) -> tuple[RunSettings, dict]:
    """The run's settings and summary, each field the readers use checked."""
    if not os.path.isdir(run_dir):
        what = "is a file, not a run folder" if os.path.exists(run_dir) else "no such run folder"
        raise SeerInputError(f"{run_dir}: {what}")
    missing = [f for f in RUN_FILES if not os.path.exists(os.path.join(run_dir, f))]
    if missing:
        raise SeerInputError(
            f"{run_dir}: not a recorded run (missing {', '.join(missing)}); record one with `seer run`"
        )
    spec = settings(run_dir)
    summary = _json(run_dir, "summary.json").get("summary")
    if not isinstance(summary, dict):
        raise SeerInputError(f"{run_dir}: summary.json lacks its summary table")
    for key in ("makespan_s", "kv_capacity_tokens"):
        if key not in summary:
            raise SeerInputError(f"{run_dir}: summary.json lacks {key}")
        if not isinstance(summary[key], (int, float)):
            raise SeerInputError(f"{run_dir}: summary.json {key} must be a number, not {show(summary[key])}")
    if "instances" in summary and summary["instances"] != spec.instances:  # two files, two different runs
        raise SeerInputError(
            f"{run_dir}: summary.json says {show(summary['instances'])} instances and run.json {spec.instances}"
        )
    for key in ("makespan_s", "kv_capacity_tokens"):  # a recorded run took time and held KV
        value = summary[key]
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf
        if isinstance(value, bool) or not (number > 0 and math.isfinite(number)):
            raise SeerInputError(f"{run_dir}: summary.json {key} must be a finite number > 0, not {value!r:.40}")
    problem = _count_problem("kv_capacity_tokens", summary["kv_capacity_tokens"])  # the simulator's int64 blocks
    if problem:
        raise SeerInputError(f"{run_dir}: summary.json {problem}")
    return spec, summary


def settings(run_dir: str) -> RunSettings:
    """run.json's fields that a replay uses, checked."""
    raw = _json(run_dir, "run.json")
    keys = [f.name for f in dataclasses.fields(RunSettings)]
    missing = [k for k in keys if k not in raw and k != "chunk_size"]
    if missing:
        raise SeerInputError(f"{run_dir}: run.json lacks {', '.join(missing)}")
    record = RunSettings(**{k: raw[k] for k in keys if k in raw})
    problems = check_types(record) or record.problems()
    if problems:
        raise SeerInputError(f"{run_dir}: run.json: {'; '.join(problems)}")
    return record


def _measured_values(
    run_dir: str, name: str, df: pd.DataFrame, columns: tuple[str, ...], positive=(), most: dict | None = None
) -> None:
    """Measured columns are numbers, finite and >= 0 (> 0 for `positive`), counts whole numbers up to 2**53, and
    the columns in `most` at most its (limit, what the limit is): a fit or a replay of anything else fails far
    from the cause, or silently reports nonsense."""
    for col in columns:
        values = df[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise SeerInputError(f"{run_dir}: {name} column '{col}' holds {values.dtype}, not numbers")
        v = values.to_numpy(dtype=float)
        whole = col in COUNT_COLUMNS
        top, what = (most or {}).get(col, (INT_LIMIT, "2**53") if whole else (math.inf, ""))
        bad = ~np.isfinite(v) | ((v <= 0) if col in positive else (v < 0)) | (v > top)
        if whole:
            bad |= v != np.floor(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            least = "> 0" if col in positive else ">= 0"
            need = f"(must be a whole number {least}, at most {what})" if whole else f"(must be finite and {least})"
            need += f" and at most {what}" if what and not whole else ""
            raise SeerInputError(f"{run_dir}: {name} row {i + 1}, column '{col}': {v[i]} {need}")


def _requests(run_dir: str, trace: pd.DataFrame, makespan: tuple[float, str]) -> None:
    """requests.parquet: every request of the trace, once, finished within the run."""
    requests = _parquet(run_dir, "requests.parquet", REQUEST_COLUMNS)
    if not len(requests):  # every error and mean of a replay would be NaN
        raise SeerInputError(f"{run_dir}: requests.parquet has no rows (the run finished no request)")
    counts = tuple(c for c in ("chunks", "preemptions") if c in requests)
    finish = {"finish_s": makespan}
    _measured_values(run_dir, "requests.parquet", requests, ("finish_s", *counts), ("finish_s",), finish)
    ids = requests[["prompt_id", "sample_id"]]
    unknown = ~pd.MultiIndex.from_frame(ids).isin(pd.MultiIndex.from_frame(trace[["prompt_id", "sample_id"]]))
    for bad, why in ((unknown, "is not in trace.parquet"), (ids.duplicated().to_numpy(), "repeats an earlier row")):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            pid, sid = ids["prompt_id"].tolist()[i], ids["sample_id"].tolist()[i]  # Python values, repr'd plainly
            raise SeerInputError(f"{run_dir}: requests.parquet row {i + 1} (prompt {pid!r}, sample {sid}) {why}")
    if len(requests) < len(trace):  # a request without its record: every mean over requests would leave it out
        keys = trace[["prompt_id", "sample_id"]]
        lost = ~pd.MultiIndex.from_frame(keys).isin(pd.MultiIndex.from_frame(ids))
        i = int(np.flatnonzero(lost)[0])
        pid, sid = keys["prompt_id"].tolist()[i], keys["sample_id"].tolist()[i]
        raise SeerInputError(
            f"{run_dir}: requests.parquet has no row for prompt {pid!r}, sample {sid} (trace.parquet row {i + 1})"
        )


def _cluster(run_dir: str, spec: RunSettings, kv_capacity_tokens: int) -> ClusterConfig:
    """The simulated twin of the run's cluster and its policy, checked here so that nothing (`seer figures`'
    hours of work included) runs before a run the simulator cannot replay is refused."""
    name = spec.policy.split(":", 1)[0].strip()
    if (
        "." in name
    ):  # registered names have no dots: this one would be imported: a data file must not make seer run code
        raise SeerInputError(
            f"{run_dir}: run.json names policy {name!r}, a class to import; seer imports no code a data file names "
            f"(replay the run's trace with `seer simulate --trace {run_dir}/trace.parquet --cluster PRESET "
            f"--policy {name}`)"
        )
    try:
        make_policy(spec.policy, {"chunk_size": spec.chunk_size})
    except SeerInputError as exc:
        raise SeerInputError(f"{run_dir}: run.json policy: {exc}") from None
    try:
        return ClusterConfig(
            name="fidelity",
            model="qwen2.5-1.5b",  # only names the roofline shape, which the step model replaces
            instances=spec.instances,
            kv_capacity_tokens=kv_capacity_tokens,
            block_size=32,
            max_num_seqs=spec.max_num_seqs,
            max_num_batched_tokens=max(2048, spec.max_model_len),
            prefix_cache=True,
            max_tokens=spec.max_tokens,
        )
    except ValueError as exc:
        raise SeerInputError(f"{run_dir}: its settings make no cluster the simulator can run ({exc})") from None


def _one_step_at_a_time(run_dir: str, steps: pd.DataFrame, makespan: float) -> None:
    """An engine runs one step at a time: a step on an instance that starts before its previous one ended (a row
    copied, two runs' steps in one file) is refused, as its time would count twice."""
    order = np.lexsort((steps["t"].to_numpy(), steps["instance"].to_numpy()))
    inst = steps["instance"].to_numpy()[order]
    start = steps["t"].to_numpy(np.float64)[order]
    end = start + steps["duration_s"].to_numpy(np.float64)[order]
    slack = 1e-9 * max(makespan, 1.0)  # the recorder's float sums
    clash = (inst[1:] == inst[:-1]) & (start[1:] < end[:-1] - slack)
    if clash.any():
        k = int(np.flatnonzero(clash)[0])
        first, second = sorted((int(order[k]) + 1, int(order[k + 1]) + 1))
        raise SeerInputError(
            f"{run_dir}: steps.parquet rows {first} and {second} overlap on instance {int(inst[k])} (one starts at "
            f"{start[k + 1]:.6g} s, before the other ends at {end[k]:.6g} s); an engine runs one step at a time"
        )


def _fits(run_dir: str, trace: pd.DataFrame, cluster: ClusterConfig) -> None:
    """Every recorded request fits the recorded KV cache: a run cannot have held more than it had."""
    cap = cluster.instance_config().kv_capacity_tokens
    need = (trace["prompt_len"] + trace["output_len"]).to_numpy()
    if len(need) and need.max() > cap:
        i = int(need.argmax())
        raise SeerInputError(
            f"{run_dir}: trace.parquet row {i + 1} (prompt {trace['prompt_id'].iloc[i]!r}, sample "
            f"{trace['sample_id'].iloc[i]}) held {int(need[i]):,} tokens of KV, more than summary.json's "
            f"kv_capacity_tokens ({cluster.kv_capacity_tokens:,}; {cap:,} in whole blocks of {cluster.block_size})"
        )


def load_run(run_dir: str) -> RecordedRun:
    """Every file of a run folder, checked."""
    spec, summary = _checked(run_dir)
    # a step or a request cannot outlast the run (the slack: float rounding in the sums that made the makespan)
    makespan = (float(summary["makespan_s"]) * (1 + 1e-9), f"summary.json's makespan_s, {summary['makespan_s']}")
    trace = validate_trace(_parquet(run_dir, "trace.parquet", TRACE_COLUMNS), f"{run_dir}/trace.parquet")
    if (trace["prompt_len"] < 1).any():  # a real engine refuses an empty prompt: the file was edited or damaged
        i = int(np.flatnonzero((trace["prompt_len"] < 1).to_numpy())[0])
        raise SeerInputError(f"{run_dir}: trace.parquet row {i + 1}, column 'prompt_len': a recorded prompt is >= 1")
    _requests(run_dir, trace, makespan)  # before the steps: a cut trace is named as such, not by a step's count
    steps = _parquet(run_dir, "steps.parquet", STEP_COLUMNS)
    columns = STEP_COLUMNS + tuple(c for c in OPTIONAL_STEP_COLUMNS if c in steps)
    # no step preempts more requests than the run has (a larger count also makes fidelity's array of times vast),
    # runs on an instance the run did not have, starts after the run ended or fills more than the KV cache
    most = {
        "duration_s": makespan,
        "t": makespan,
        "preempted": (len(trace), f"{len(trace)} (the requests in trace.parquet)"),
        "instance": (spec.instances - 1, f"{spec.instances - 1} (run.json's instances, from 0)"),
        "running": (spec.max_num_seqs, f"{spec.max_num_seqs} (run.json's max_num_seqs)"),
        "kv_usage": (1.0, "1 (the whole KV cache)"),
    }
    _measured_values(run_dir, "steps.parquet", steps, columns, ("duration_s",), most)
    _one_step_at_a_time(run_dir, steps, makespan[0])
    for name in ("timeline.parquet", "events.parquet"):  # what RolloutResult reads, each named when it is bad
        if name == "timeline.parquet" or os.path.exists(os.path.join(run_dir, name)):
            _parquet(run_dir, name, ())
    try:
        result = RolloutResult.load(run_dir)
    except SeerInputError as exc:
        raise SeerInputError(f"{run_dir}: {exc}") from None
    except (KeyError, ValueError, OSError) as exc:
        raise SeerInputError(f"{run_dir}: unreadable results ({type(exc).__name__})") from None
    cluster = _cluster(run_dir, spec, summary["kv_capacity_tokens"])
    _fits(run_dir, trace, cluster)
    return RecordedRun(run_dir, spec, _json(run_dir, "run.json"), steps, trace, result, cluster)
