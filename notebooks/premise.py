# %% [markdown]
# # The premise on real traces: do responses of one prompt have similar lengths and share text?
# Group statistics of the bundled real rollout (SmolLM2 on GSM8K) and, when `../shared` is present, of the
# Tree-of-Thoughts logs.

# %%
from pathlib import Path

import pandas as pd

from seer import plots
from seer.figures import BUNDLED
from seer.traces.io import load_trace
from seer.traces.stats import trace_stats

traces = {"GSM8K · SmolLM2": load_trace(BUNDLED)}
tot = Path("..") / ".." / "shared" / "data" / "tot" / "gpt-4_0.7_naive_cot_sample_100_start900_end1000.json"
for candidate in (tot, Path.cwd().parent / "shared" / "data" / "tot" / tot.name):
    if candidate.exists():
        from seer.traces.converters import convert

        traces["ToT game24 CoT · GPT-4"] = convert(str(candidate), "tot")
        break

# %%
stats = pd.DataFrame({name: trace_stats(t) for name, t in traces.items()}).T
stats[
    [
        "groups",
        "samples",
        "mean_len",
        "eta2",
        "within_cv",
        "rho_first_max_rest",
        "ngram4_in_group",
        "ngram4_other_group",
    ]
]

# %%
plots.length_cdf(traces)

# %%
plots.length_heatmap(traces["GSM8K · SmolLM2"], prompts=90)
