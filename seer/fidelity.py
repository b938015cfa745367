"""Simulator fidelity against a recorded real run (`seer fidelity RUN_DIR`).

The run's measured steps fit a step-time model of that backend (T = c0 + c_seq·sequences + c_tok·tokens +
c_kv·KV tokens, non-negative least squares on relative error). The run's trace is then re-simulated with the
same policy, instances and engine limits, and three errors are reported separately, because they can cancel:
- makespan error: (simulated - real) / real;
- finish-time error: mean |simulated - real| / real over requests (matched by prompt and sample);
- step-time MAPE: the fitted model against every measured step, in-sample and on a held-out half (the
  model fitted to the other half).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seer.errors import SeerInputError
from seer.runs import load_run


def step_features(steps: pd.DataFrame):
    tokens = (steps["prompt_tokens"] + steps["generation_tokens"]).to_numpy(np.float64)
    seqs = np.maximum(steps["running"].to_numpy(np.float64), 1.0)
    kv = steps["context_tokens"].to_numpy(np.float64) + tokens
    return seqs, tokens, kv


def fidelity(run_dir: str, progress: bool | None = None) -> dict:
    from seer.experiment import Setup, run
    from seer.sim.cluster import ClusterConfig
    from seer.sim.costmodel import LinearStepModel

    recorded = load_run(run_dir)
    spec, steps, trace, real = recorded.raw, recorded.steps, recorded.trace, recorded.result
    steps = steps[(steps["prompt_tokens"] + steps["generation_tokens"]) > 0]
    if len(steps) < 8:
        raise SeerInputError(f"{run_dir}: only {len(steps)} measured steps, too few to fit a step-time model")
    seqs, tokens, kv = step_features(steps)
    y = steps["duration_s"].to_numpy(np.float64)
    model = LinearStepModel.fit(seqs, tokens, kv, y)
    in_mape = float(np.mean(np.abs(model.predict(seqs, tokens, kv) - y) / y))
    half = np.arange(len(y)) % 2 == 0
    held = LinearStepModel.fit(seqs[half], tokens[half], kv[half], y[half])
    out_mape = float(np.mean(np.abs(held.predict(seqs[~half], tokens[~half], kv[~half]) - y[~half]) / y[~half]))

    s = real.summary
    cluster = ClusterConfig(
        name="fidelity",
        model="qwen2.5-1.5b",
        instances=int(spec["instances"]),
        kv_capacity_tokens=int(s["kv_capacity_tokens"]),
        block_size=32,
        max_num_seqs=int(spec["max_num_seqs"]),
        max_num_batched_tokens=max(2048, int(spec["max_model_len"])),
        prefix_cache=True,
        max_tokens=int(spec["max_tokens"]),
    )
    tr = trace[["prompt_id", "sample_id", "prompt_len", "output_len", "max_tokens"]].copy()
    sim = run(
        Setup(tr, cluster, "fidelity"),
        spec["policy"],
        shared={"chunk_size": spec.get("chunk_size")},
        cost=model,
        progress=progress,
    )
    real_ms, sim_ms = float(s["makespan_s"]), float(sim.summary["makespan_s"])
    a = real.requests.set_index(["prompt_id", "sample_id"])["finish_s"]
    b = sim.requests.set_index(["prompt_id", "sample_id"])["finish_s"].reindex(a.index)
    finish = float(np.mean(np.abs(b.to_numpy() - a.to_numpy()) / a.to_numpy()))
    return {
        "run": run_dir,
        "policy": spec["policy"],
        "instances": int(spec["instances"]),
        "steps": int(len(y)),
        "real_makespan_s": real_ms,
        "sim_makespan_s": sim_ms,
        "makespan_error": (sim_ms - real_ms) / real_ms,
        "finish_time_mape": finish,
        "step_time_mape": in_mape,
        "step_time_mape_heldout": out_mape,
        "step_model": model.describe()["coefficients"],
    }
