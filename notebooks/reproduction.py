# %% [markdown]
# # Reproduction: Seer's scheduling on the paper presets
# Simulates verl, divided, context, oracle and seer on a paper workload and compares them with the paper's
# Table 4. `SEER_NB_PROMPTS` scales the workload down (the tests use a small one); unset, the preset's size.

# %%
import os

import pandas as pd

from seer import plots
from seer.experiment import Setup, compare

PROMPTS = int(os.environ["SEER_NB_PROMPTS"]) if os.environ.get("SEER_NB_PROMPTS") else None
PRESET = "qwen2-vl-72b"
setup = Setup.from_preset(PRESET, prompts=PROMPTS)
_rows, results = compare(setup, ["verl", "divided", "context", "oracle", "seer"])

# %%
table = pd.DataFrame(
    [
        {"workload": PRESET, "policy": p, **{k: r.summary[k] for k in ("throughput_tok_s", "makespan_s", "tail_s")}}
        for p, r in results.items()
    ]
)
table["x_verl"] = table["throughput_tok_s"] / table.loc[table.policy == "verl", "throughput_tok_s"].iloc[0]
table

# %%
plots.throughput_bars(table)

# %%
paper = {"divided": 1.42, "context": 1.56, "seer": 2.04}
abl = pd.DataFrame(
    [
        {"workload": PRESET, "step": f"+ {p}", "source": src, "speedup": v}
        for p in paper
        for src, v in (("paper", paper[p]), ("sim", float(table.set_index("policy").loc[p, "x_verl"])))
    ]
)
plots.ablation(abl)

# %%
plots.kv_timeline({"verl": results["verl"], "seer": results["seer"]})
