# %% [markdown]
# # Simulator fidelity against a real run
# Uses the recorded run in `SEER_RUN_DIR` when set; otherwise records a small length-replay run on two real
# vLLM instances (random-weight SmolLM2-shaped model) first. Then re-simulates it and plots the parity.

# %%
import os
import subprocess
import sys
import tempfile

import pandas as pd

from seer import plots
from seer.fidelity import fidelity

run_dir = os.environ.get("SEER_RUN_DIR")
if not run_dir:
    work = tempfile.mkdtemp()
    trace = os.path.join(work, "t.parquet")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "seer",
            "trace",
            "synth",
            "--prompts",
            "4",
            "-G",
            "4",
            "--mean-len",
            "48",
            "--max-tokens",
            "256",
            "--prompt-mean",
            "32",
            "-o",
            trace,
        ],
        check=True,
        capture_output=True,
    )
    run_dir = os.path.join(work, "run")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "seer",
            "run",
            "--model",
            "dummy:tiny",
            "--replay",
            trace,
            "--instances",
            "2",
            "--policy",
            "context",
            "--chunk-size",
            "64",
            "--max-model-len",
            "512",
            "--max-num-seqs",
            "8",
            "--out",
            run_dir,
        ],
        check=True,
        capture_output=True,
    )
f = fidelity(run_dir)
pd.Series(
    {k: f[k] for k in ("real_makespan_s", "sim_makespan_s", "makespan_error", "finish_time_mape", "step_time_mape")}
)

# %%
plots.parity([{"label": f["policy"], **f}])
