"""The simulator against recorded real runs: `seer calibrate` and `seer fidelity`.

`calibrate(runs)` fits a `StepFit` step-time model to the measured steps of one or more runs (the terms chosen by
held-out error). `fidelity(run, model)` re-simulates a run's trace with the same policy, instances and engine
limits, priced by `model` (a model calibrated elsewhere: transfer) or, without one, by a model fitted to the run's
own steps (self-fit), and reports each metric separately, because errors cancel:
- makespan error: (simulated - real) / real; throughput error likewise (output tokens per second);
- finish-time error: mean |simulated - real| / real over requests (matched by prompt and sample);
- step-time MAPE: the model against every measured step (for a self-fit also cross-validated);
- preemptions: count, and the median time of a preemption as a share of the makespan, real beside simulated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from seer.errors import SeerInputError
from seer.runs import RecordedRun, load_run
from seer.sim.stepfit import REFERENCE, StepFit, measured_steps, step_features


def _measured(recorded: RecordedRun) -> pd.DataFrame:
    steps = measured_steps(recorded.steps)
    if len(steps) < 8:
        raise SeerInputError(f"{recorded.path}: only {len(steps)} measured steps, too few to fit a step-time model")
    return steps


def calibrate(run_dirs: Sequence[str], terms: Sequence[str] | None = None) -> StepFit:
    """A step model fitted to the measured steps of every run in `run_dirs` together."""
    if isinstance(run_dirs, (str, os.PathLike)):  # a path would be read character by character
        raise SeerInputError(f"calibrate takes a list of run folders, not the one path {str(run_dirs)!r}")
    if not run_dirs:
        raise SeerInputError("calibrate: name at least one run folder")
    measured = [_measured(load_run(d)) for d in run_dirs]
    # a copy of a run counts its steps twice, and the cross-validation would test on copies of its training steps
    seen: dict[int, str] = {}
    for d, m in zip(run_dirs, measured):
        key = int(pd.util.hash_pandas_object(m, index=False).sum())
        if key in seen:
            raise SeerInputError(f"calibrate: runs {seen[key]} and {d} hold the same measured steps (one run copied?)")
        seen[key] = str(d)
    steps = pd.concat(measured, ignore_index=True)
    model = StepFit.fit(step_features(steps), steps["duration_s"].to_numpy(np.float64), terms)
    model.meta["runs"] = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    ref = decode_medians(steps)  # the machine's speed while calibrating, to compare the runs it will predict with
    model.meta["reference_batch"] = [int(b) for b in ref.index]
    model.meta["reference_median_s"] = [float(v) for v in ref["median"]]
    model.meta["reference_steps"] = [int(v) for v in ref["n"]]
    return model


def simulate_recorded(recorded: RecordedRun, model: StepFit, progress: bool | None = None):
    """The run's trace simulated with its policy, instances and engine limits, priced by `model`."""
    from seer.experiment import Setup, run
    from seer.policies import make_policy

    tr = recorded.trace[["prompt_id", "sample_id", "prompt_len", "output_len", "max_tokens"]].copy()
    # the run's chunk size where its policy takes one (run.json may record it for any policy)
    policy = make_policy(recorded.settings.policy, {"chunk_size": recorded.settings.chunk_size})
    return run(Setup(tr, recorded.cluster, "fidelity"), policy, cost=model, progress=progress)


def decode_medians(steps: pd.DataFrame, min_steps: int = 20) -> pd.DataFrame:
    """Median duration of the decode-only steps of each batch size recorded at least `min_steps` times: the
    machine's speed on identical work (columns median, n; indexed by batch size)."""
    st = measured_steps(steps)
    dec = st[(st["prompt_tokens"] == 0) & (st["running"] > 0)]
    if "spec_draft_tokens" in dec:
        dec = dec[dec["spec_draft_tokens"] == 0]
    g = dec.groupby("running")["duration_s"]
    out = pd.DataFrame({"median": g.median(), "n": g.size()})
    return out[out["n"] >= min_steps]


def speed_ratio(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, int]:
    """How much slower b ran the same work as a (two `decode_medians` tables): the geometric mean over their common
    batch sizes of b's median over a's, weighted by the smaller count, and the steps compared; (nan, 0) when they
    share no batch size. No step model is involved: a ratio away from 1 is the machine (or engine) running
    identical steps at another speed, which no model fitted to one recording can know when predicting the other."""
    both = a.add_suffix("_a").join(b.add_suffix("_b"), how="inner")
    if both.empty:
        return float("nan"), 0
    w = np.minimum(both["n_a"], both["n_b"]).to_numpy(np.float64)
    log_ratio = np.log(both["median_b"].to_numpy() / both["median_a"].to_numpy())
    return float(np.exp((w * log_ratio).sum() / w.sum())), int(w.sum())


def _reference(model: StepFit) -> pd.DataFrame | None:
    """The decode medians of a model's calibration runs, kept in its meta (None for models without them)."""
    m = model.meta
    if not all(k in m for k in REFERENCE):
        return None
    return pd.DataFrame(
        {"median": np.asarray(m["reference_median_s"], float), "n": np.asarray(m["reference_steps"], int)},
        index=pd.Index(np.asarray(m["reference_batch"], int), name="running"),
    )


def _real_preemptions(recorded: RecordedRun) -> tuple[np.ndarray, int | None]:
    """(the time of every preemption, their count): from the steps where they recorded it; a run recorded before
    steps did has its count in the requests' records only (no times), else it is unknown (None)."""
    steps, requests = recorded.steps, recorded.result.requests
    if "preempted" in steps:
        times = np.repeat(steps["t"].to_numpy(), steps["preempted"].to_numpy(int))
        return times, int(len(times))
    count = int(requests["preemptions"].sum()) if "preemptions" in requests else None
    return np.zeros(0), count


def _finish_mape(real: np.ndarray, sim: np.ndarray) -> float | None:
    """Mean |simulated - real| / real over requests that finished after t = 0 (None: none did)."""
    ok = real > 0
    return float(np.mean(np.abs(sim[ok] - real[ok]) / real[ok])) if ok.any() else None


def _preempt_share(times: np.ndarray, makespan: float) -> float | None:
    """Median preemption time as a share of the makespan (None without preemptions)."""
    return float(np.median(times) / makespan) if len(times) and makespan > 0 else None


def real_prefill_tokens(recorded: RecordedRun) -> int | None:
    """Tokens vLLM's prefills computed in a recorded run (after its prefix-cache hits), the simulator's
    `prefill_tokens`: every scheduled token that was neither a decode position nor a rejected draft. Each
    admission's last prefill token samples one, so admissions (chunks, and resumptions after preemptions) add
    back. None when the recording lacks the scheduled-token counts."""
    steps, requests = recorded.steps, recorded.result.requests
    if "sched_tokens" not in steps or not steps["sched_tokens"].sum() or "chunks" not in requests:
        return None
    admissions = int(requests["chunks"].sum()) + int(requests.get("preemptions", pd.Series(0)).sum())
    rejected = 0
    if "spec_draft_tokens" in steps and "spec_accepted_tokens" in steps:
        rejected = int(steps["spec_draft_tokens"].sum() - steps["spec_accepted_tokens"].sum())
    return int(steps["sched_tokens"].sum() - steps["generation_tokens"].sum()) - rejected + admissions


def fidelity(run_dir: str, model: StepFit | None = None, progress: bool | None = None) -> dict:
    recorded = load_run(run_dir)
    steps = _measured(recorded)
    fitted = model is None
    if fitted:
        model = calibrate([run_dir])
    feats, y = step_features(steps), steps["duration_s"].to_numpy(np.float64)
    step_mape = float(np.mean(np.abs(model.predict(feats) - y) / y))
    real = recorded.result
    sim = simulate_recorded(recorded, model, progress)
    real_ms, sim_ms = float(real.summary["makespan_s"]), float(sim.summary["makespan_s"])
    a = real.requests.set_index(["prompt_id", "sample_id"])["finish_s"]
    b = sim.requests.set_index(["prompt_id", "sample_id"])["finish_s"].reindex(a.index)
    tokens = float(recorded.trace["output_len"].sum())
    real_pt, real_preemptions = _real_preemptions(recorded)
    sim_pt = sim.events.loc[sim.events["kind"] == "preempt", "t"].to_numpy(np.float64)
    ref = None if fitted else _reference(model)
    real_prefill, sim_prefill = real_prefill_tokens(recorded), int(sim.summary["prefill_tokens"])
    ratio, compared = speed_ratio(ref, decode_medians(recorded.steps)) if ref is not None else (None, 0)
    return {
        "run": run_dir,
        "policy": recorded.settings.policy,
        "instances": recorded.settings.instances,
        "steps": int(len(y)),
        "cost_model": "self-fit" if fitted else model.meta.get("source", "given"),
        "real_makespan_s": real_ms,
        "sim_makespan_s": sim_ms,
        "makespan_error": (sim_ms - real_ms) / real_ms,
        # no output tokens: no throughput to be wrong about
        "throughput_error": (tokens / sim_ms - tokens / real_ms) / (tokens / real_ms) if tokens and sim_ms else None,
        "finish_time_mape": _finish_mape(a.to_numpy(), b.to_numpy()),
        "step_time_mape": step_mape,
        "step_time_mape_heldout": model.meta.get("mape_heldout") if fitted else None,
        "real_preemptions": real_preemptions,
        "sim_preemptions": int(sim.summary["preemptions"]),
        "real_preempt_time_share": _preempt_share(real_pt, real_ms),
        "sim_preempt_time_share": _preempt_share(sim_pt, sim_ms),
        # prefill work after prefix-cache hits: how much of the context each admission computed again
        "real_prefill_tokens": real_prefill,
        "sim_prefill_tokens": sim_prefill,
        "prefill_error": (sim_prefill - real_prefill) / real_prefill if real_prefill else None,
        # identical decode steps here against the calibration runs (None: self-fit, or a model without them)
        "speed_ratio": ratio if compared else None,
        "speed_steps": compared,
        "step_model": model.coefficients,
        "terms": list(model.meta.get("terms", [])),
    }
