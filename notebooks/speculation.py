# %% [markdown]
# # Grouped speculative decoding on real tokens
# Acceptance length against the number of group references (the paper's Table 2) on the bundled real rollout,
# then the simulated gain of grouped speculation with exact replay of its tokens.

# %%
import pandas as pd

from seer import plots
from seer.figures import BUNDLED
from seer.policies import make_policy
from seer.policies.speculation.replay import acceptance_table
from seer.sim.cluster import load_cluster
from seer.sim.driver import simulate
from seer.traces.io import load_trace

trace = load_trace(BUNDLED)
rows = acceptance_table(trace, refs=(0, 1, 3, 7), topk=(1, 2, 4), groups=10, progress=False)
pd.DataFrame(rows)[["drafter", "refs", "topk", "tau", "accepted_per_draft"]]

# %%
plots.tau_table(rows)

# %%
cluster = load_cluster("qwen2-vl-72b", instances=2)
small = trace[trace.prompt_id.isin(sorted(trace.prompt_id.unique())[:32])]
runs = {p: simulate(small, cluster, make_policy(p), progress=False).summary for p in ("context", "seer:scope=own", "seer")}
pd.DataFrame({p: {k: s.get(k) for k in ("makespan_s", "throughput_tok_s", "tail_s", "spec_tau")} for p, s in runs.items()}).T
