# %% [markdown]
# # Grouped speculative decoding on real tokens
# Acceptance length against the number of group references (the paper's Table 2) on the bundled real rollout,
# then the simulated gain of grouped speculation with exact replay of its tokens.

# %%
import pandas as pd

from seer import plots
from seer.experiment import Setup, compare
from seer.figures import BUNDLED
from seer.studies.spec_bench import acceptance_table
from seer.traces.io import load_trace

trace = load_trace(BUNDLED)
rows = acceptance_table(trace, refs=(0, 1, 3, 7), topk=(1, 2, 4), groups=10, progress=False)
pd.DataFrame(rows)[["drafter", "refs", "topk", "tau", "accepted_per_draft"]]

# %%
plots.tau_table(rows)

# %%
small = trace[trace.prompt_id.isin(sorted(trace.prompt_id.unique())[:32])]
rows, _results = compare(Setup.from_trace(small, "qwen2-vl-72b", instances=2), ["context", "seer:scope=own", "seer"])
pd.DataFrame(rows).set_index("policy")[["makespan_s", "throughput_tok_s", "tail_s", "spec_tau"]]
