"""One result schema for both backends: per-request records, per-instance timelines, and a summary.

Definitions (the paper's where it has one):
- makespan: time from rollout start to the last request's finish; throughput = output tokens / makespan.
- tail time: time spent only on the last 10% of requests to finish, i.e. makespan minus the finish time of
  the last request outside that 10% (Seer section 4.2.2).
- lower bound: the larger of (a) total work over total capacity and (b) the longest request alone, both
  from the backend's step-time model (see `seer.sim.bounds`); efficiency = lower bound / makespan.
- idle time: per instance, time with nothing running before the makespan.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from seer.errors import SeerInputError
from seer.fileio import atomic_dir, json_safe

SUMMARY_KEYS = (
    "makespan_s",
    "throughput_tok_s",
    "tail_s",
    "lower_bound_s",
    "efficiency",
    "preemptions",
    "requests",
    "output_tokens",
)
TAIL_FRACTION = 0.10


def tail_time(finish_s, makespan: float | None = None, fraction: float = TAIL_FRACTION) -> float:
    """Time during which only the last `fraction` of requests (by finish time) were still running."""
    f = np.sort(np.asarray(finish_s, dtype=np.float64))
    if len(f) == 0:
        return 0.0
    end = float(f[-1]) if makespan is None else makespan
    n_tail = max(1, math.ceil(fraction * len(f)))
    if n_tail >= len(f):
        return end
    return end - float(f[len(f) - n_tail - 1])


@dataclass
class RolloutResult:
    """What one rollout produced, whichever backend ran it."""

    requests: pd.DataFrame
    timeline: pd.DataFrame
    summary: dict
    config: dict = field(default_factory=dict)
    events: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EVENT_COLUMNS))

    def save(self, out_dir: str | os.PathLike) -> None:
        """requests.parquet, timeline.parquet, events.parquet and summary.json in `out_dir`, which is replaced
        whole (see `seer.fileio.atomic_dir`)."""
        with atomic_dir(out_dir) as tmp:
            self.write_into(tmp)

    def write_into(self, folder: str | os.PathLike) -> None:
        """The four files into an existing folder (one being built by `atomic_dir`)."""
        folder = Path(folder)
        for name, frame in (("events", self.events), ("requests", self.requests), ("timeline", self.timeline)):
            # an empty frame has untyped (null) columns: written with the types a non-empty one has, so that runs
            # with and without rows (a run without preemptions has no events) concatenate and compare
            schema = EMPTY_SCHEMAS.get(name) if not len(frame) else None
            if schema is not None and list(frame.columns) != schema.names:
                schema = None
            frame.to_parquet(folder / f"{name}.parquet", index=False, schema=schema)
        (folder / "summary.json").write_text(
            json.dumps({"summary": json_safe(self.summary), "config": json_safe(self.config)}, indent=2)
        )

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "RolloutResult":
        """A result folder written by `save`; a missing or unreadable file is named in one line (SeerInputError)."""
        path = os.path.join(out_dir, "summary.json")
        try:
            with open(path, encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError) as exc:
            raise SeerInputError(
                f"{path}: not a readable result summary ({getattr(exc, 'strerror', None) or exc})"
            ) from None
        if not isinstance(meta, dict) or not isinstance(meta.get("summary"), dict):
            raise SeerInputError(f"{path}: no summary table (not written by seer?)")
        events = os.path.join(out_dir, "events.parquet")
        return cls(
            _table(out_dir, "requests.parquet", ("request_id", "finish_s")),
            _table(out_dir, "timeline.parquet", ("instance", "t")),
            meta["summary"],
            meta.get("config", {}),
            _table(out_dir, "events.parquet", ()) if os.path.exists(events) else pd.DataFrame(),
        )


def _table(out_dir, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    path = os.path.join(out_dir, name)
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a missing or bad file
        raise SeerInputError(f"{path}: not a readable result table ({type(exc).__name__})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SeerInputError(f"{path}: lacks column(s) {', '.join(missing)} (another table copied over it?)")
    return df


EVENT_COLUMNS = ["t", "instance", "kind", "request_id"]
_I, _F = pa.int64(), pa.float64()
EMPTY_SCHEMAS = {
    "events": pa.schema([("t", _F), ("instance", _I), ("kind", pa.string()), ("request_id", _I)]),
    "timeline": pa.schema(
        [("instance", _I), ("t", _F), ("kv_used_tokens", _I), ("running", _I), ("waiting", _I), ("kv_usage", _F)]
    ),
}


def mean_running(timeline: pd.DataFrame, makespan: float) -> float:
    """Time-weighted mean of running requests per instance over the rollout (each timeline row holds until
    the instance's next row, the last until the makespan)."""
    if makespan <= 0 or not len(timeline):
        return 0.0
    total, instances = 0.0, 0
    for _, g in timeline.sort_values(["instance", "t"], kind="stable").groupby("instance"):
        t = np.append(g["t"].to_numpy(np.float64), makespan)
        total += float((np.clip(np.diff(t), 0, None) * g["running"].to_numpy(np.float64)).sum())
        instances += 1
    return total / (makespan * instances)


def first_instance_done(timeline: pd.DataFrame, makespan: float, instances: int, failed=()) -> float:
    """When the first instance ran out of work for good: its last timeline row, when that row is idle (nothing
    running or waiting); an instance without rows never had work (0); one still busy at its last row, the makespan.
    (Not the last request that finished on it: an instance that only ran chunks finished elsewhere, or nothing,
    would drop out.) A `failed` instance did not run out of work: it is left out."""
    failed = set(failed)
    live = [i for i in range(instances) if i not in failed]
    if not live:
        return 0.0 if instances <= 0 else makespan
    last = timeline.sort_values(["instance", "t"], kind="stable").groupby("instance").tail(1)
    idle = (last["running"] == 0) & (last["waiting"] == 0)
    done = dict(zip(last["instance"].tolist(), np.where(idle, last["t"], makespan).tolist()))
    return float(min(min(done.get(i, 0.0), makespan) for i in live))


def events_frame(rows) -> pd.DataFrame:
    """Engine events (t, instance, kind, request_id) as one frame in time order (ties keep their order)."""
    return pd.DataFrame(list(rows), columns=EVENT_COLUMNS).sort_values("t", kind="stable").reset_index(drop=True)


def summarize(
    requests: pd.DataFrame,
    busy_s: list[float],
    lower_bound_s: float,
    preemptions: int,
    extra: dict | None = None,
    preempt_times=None,
    timeline: pd.DataFrame | None = None,
) -> dict:
    """The summary dict from per-request records, per-instance busy time and the instances' timeline."""
    finish = requests["finish_s"].to_numpy(dtype=np.float64)
    makespan = float(finish.max()) if len(finish) else 0.0
    tokens = int(requests["output_len"].sum())
    idle = [max(0.0, makespan - b) for b in busy_s]
    out = {
        "makespan_s": makespan,
        "throughput_tok_s": tokens / makespan if makespan > 0 else math.nan,
        "tail_s": tail_time(finish, makespan),
        "lower_bound_s": lower_bound_s,
        # a bound of 0 (nothing to prefill or decode) measures nothing: a makespan of step overheads is not 0% efficient
        "efficiency": lower_bound_s / makespan if makespan > 0 and lower_bound_s > 0 else math.nan,
        "preemptions": int(preemptions),
        "requests": int(len(requests)),
        # requests ended before their response did (partial's stop at the target): a makespan of less work
        "aborted_requests": int((requests["finish_reason"] == "abort").sum()),
        "output_tokens": tokens,
        "instances": len(busy_s),
        "idle_s_mean": float(np.mean(idle)) if idle else 0.0,
        "idle_share": float(np.mean(idle) / makespan) if makespan > 0 and idle else 0.0,
    }
    if timeline is not None:
        failed = (extra or {}).get("failed_instances") or ()
        out["first_instance_done_s"] = first_instance_done(timeline, makespan, len(busy_s), failed)
        out["mean_running"] = mean_running(timeline, makespan)
    out["tail_share"] = out["tail_s"] / makespan if makespan > 0 else math.nan
    pt = np.asarray(preempt_times if preempt_times is not None else [], dtype=np.float64)
    out["preemptions_first_half_share"] = float((pt < makespan / 2).mean()) if len(pt) and makespan > 0 else math.nan
    out.update(extra or {})
    return out
