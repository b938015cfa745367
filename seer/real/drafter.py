"""The project's group drafter inside vLLM (`speculative_config={"method": "custom_class", ...}`).

vLLM builds the proposer itself from a class path (`Proposer(vllm_config)`) and hands it batch rows of token
ids with no request ids, so the proposer recognises a row's group by its prompt (the drafter knows every
group's prompt) and drafts from that group's index, which the driver feeds with every token the engines
produce. This needs the engine in the driver's process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`). Budgets are per
instance (the `SetSpeculation` default): a row cannot be told apart from its siblings, so probes get no extra
tokens.

Each run gets its own proposer class bound to its drafter (`proposer_for`), so two runs in one process never
share drafting state.
"""

from __future__ import annotations

import itertools

_RUNS = itertools.count()


class GroupProposer:
    """A vLLM custom drafter backed by a `seer.policies.speculation.GroupDrafter` (the class's `drafter`)."""

    drafter = None  # bound per run by `proposer_for`
    created: list = []

    def __init__(self, vllm_config):
        self.k = int(vllm_config.speculative_config.num_speculative_tokens)
        self.budget = self.k
        self.calls = self.proposed = 0
        self.tried: list[int] = []
        self.accepted_pos: list[int] = []
        self._index: dict | None = None
        type(self).created.append(self)

    def load_model(self, model) -> None:  # the CPU model runner calls this unconditionally
        pass

    def _groups(self) -> dict:
        if self._index is None or len(self._index) != len(self.drafter.prompts):
            self._index = {(len(p), hash(p)): gid for gid, p in self.drafter.prompts.items()}
            self._lengths = sorted({n for n, _ in self._index})
        return self._index

    def group_of(self, row) -> int | None:
        index = self._groups()
        for n in self._lengths:
            if n <= len(row):
                gid = index.get((n, hash(tuple(row[:n].tolist()))))
                if gid is not None:
                    return gid
        return None

    def propose(self, sampled_token_ids, num_tokens_no_spec, token_ids_cpu, slot_mappings=None, **kwargs):
        self.calls += 1
        budget = min(self.k, self.budget)
        sampled_rows = list(sampled_token_ids)  # read twice below (vLLM passes a list)
        drafts: list[list[int]] = [[] for _ in sampled_rows]
        if self.drafter is None or budget <= 0:
            return drafts
        m = self.drafter.config.max_match
        rows, groups, contexts = [], [], []
        for i, sampled in enumerate(sampled_rows):
            n = int(num_tokens_no_spec[i])
            if not len(sampled) or n == 0:
                continue
            row = token_ids_cpu[i, :n]
            gid = self.group_of(row)
            if gid is not None:
                rows.append(i)
                groups.append(gid)
                contexts.append(row[max(0, n - m) :].tolist())
        # the step's rows in one call per group index (nothing is appended between them: the same drafts as row by row)
        found = self.drafter.propose_group_batch(groups, contexts, [budget] * len(rows), [budget] * len(rows))
        for i, d in zip(rows, found):
            tokens = list(d.tokens[:budget]) if all(p == j - 1 for j, p in enumerate(d.parents)) else []
            self.proposed += len(tokens)
            drafts[i] = tokens
        return drafts


def proposer_for(drafter) -> tuple[str, type[GroupProposer]]:
    """A proposer class bound to `drafter` for one run, and the import path vLLM loads it by."""
    name = f"GroupProposer_run{next(_RUNS)}"
    cls = type(name, (GroupProposer,), {"drafter": drafter, "created": []})
    globals()[name] = cls
    return f"{__name__}.{name}", cls
