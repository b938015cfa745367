"""Where the simulator's draft acceptance comes from.

- `ExactReplay` (the trace carries `output_ids`): drafts come from the real `GroupDrafter`, fed with the
  tokens the group has produced so far; a draft token is accepted only when it equals the recorded next
  token. The drafter is refreshed at the end of every decode epoch (in exact mode: every step), so within
  an epoch it is frozen, as Seer's asynchronous draft server is between fetches; it never sees a token
  before that token was generated.
- `ParametricAcceptance` (length-only traces): draft token i is accepted with probability alpha(n)**i
  (geometric), where n is the number of other responses of the group that are finished or ahead of the
  request. alpha(n) interpolates the paper's Table 2 linear column (tau 1.70 / 2.04 / 2.32 / 2.53 for
  n = 0 / 1 / 5 / 15 on Qwen2-VL-72B), converted to alpha assuming 8-token drafts. It is a model, and
  every result produced with it says so in `summary["speculation"]`. A draw is a hash of (seed, request, the
  token its step starts at, draft position) (`spec_kernels.draw`), so a fast epoch and `--exact`'s single steps
  draw the same numbers.

Both answer `plan(...)`: for each running row and each of the next `horizon` steps, the draft budget
offered, the tokens drafted, the tokens accepted and the tokens the row advances (0 once its chunk ends).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from seer.policies.speculation import DraftConfig, GroupDrafter, accepted_length
from seer.sim.spec_kernels import GOLDEN, MIX1, MIX2, UNIT_BITS, ahead_counts, parametric_plan

# Table 2 (linear drafts): tau for n other in-group references, as alpha with gamma = 8 (bisection of
# tau = (1 - a**9) / (1 - a)); see docs/speculation.md.
TABLE2_ALPHA = ((0, 0.412), (1, 0.511), (5, 0.572), (15, 0.609))


@dataclass
class Plan:
    """Per row x step: budget offered, drafted tokens (verify q = 1 + drafted), accepted, advance."""

    budget: np.ndarray
    drafted: np.ndarray
    accepted: np.ndarray
    advance: np.ndarray


def _flat(seqs: list[list[int]]) -> tuple[np.ndarray, list[int]]:
    """The sequences back to back as one int64 array, and where each starts in it."""
    starts = np.cumsum([0] + [len(x) for x in seqs[:-1]]).tolist() if seqs else []
    return np.concatenate([np.asarray(x, np.int64) for x in seqs] + [np.zeros(0, np.int64)]), starts


def _common_prefix(a: list[int], b: list[int]) -> list[int]:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]


class ExactReplay:
    """Exact acceptance from recorded output tokens and the project's group drafter."""

    def __init__(
        self,
        config: DraftConfig,
        outputs: Mapping[int, Sequence[int]],
        group_of: Mapping[int, int],
        prompts: Mapping[int, Sequence[int]] | None = None,
        own_prompts: Mapping[int, Sequence[int]] | None = None,
    ):
        """`prompts`: by group, the prompt its samples share; `own_prompts`: by request, its own (a trace converted
        from multi-turn or agentic data has samples whose prompts differ). A group's drafter index holds what all
        its samples' prompts begin with, and each request's draft context reads its own prompt."""
        self.config = config
        self.drafter = GroupDrafter(config)
        self.outputs = {rid: list(map(int, toks)) for rid, toks in outputs.items()}
        self.own = {rid: list(map(int, p)) for rid, p in (own_prompts or {}).items()}
        self.prompts = {gid: list(map(int, p)) for gid, p in (prompts or {}).items()}
        for rid, p in self.own.items():
            gid = group_of[rid]
            if gid not in self.prompts:
                self.prompts[gid] = p
            elif p != self.prompts[gid]:  # the usual case: one prompt for the whole group
                self.prompts[gid] = _common_prefix(self.prompts[gid], p)
        self._appended = {rid: 0 for rid in outputs}
        for rid in sorted(outputs):
            gid = group_of[rid]
            self.drafter.add_request(rid, gid, self.prompts.get(gid))
        self.label = f"exact replay of output_ids (drafter scope {config.scope}, top-{config.topk})"
        self.check: list | None = None  # tests: collect (rid, position, token) of every accepted draft token
        # the recorded tokens flat, for the compiled plan: per request id, where its output and its group's
        # prompt start in them and how long each is
        rids, gids = sorted(self.outputs), sorted(self.prompts)
        self._truth, out_at = _flat([self.outputs[r] for r in rids])
        # the groups' shared prompts, then the requests' own where they differ from it
        mine = [r for r in rids if r in self.own and self.own[r] != self.prompts[group_of[r]]]
        self._prompt_tokens, prompt_at = _flat([self.prompts[g] for g in gids] + [self.own[r] for r in mine])
        at_of = {("g", g): a for g, a in zip(gids, prompt_at)} | {
            ("r", r): a for r, a in zip(mine, prompt_at[len(gids) :])
        }
        self._at = np.zeros((max(rids, default=-1) + 1, 4), np.int64)
        for rid, at in zip(rids, out_at):
            prompt, key = self._prompt(rid, group_of[rid]), ("r", rid) if rid in mine else ("g", group_of[rid])
            self._at[rid] = at, len(self.outputs[rid]), at_of.get(key, 0), len(prompt)

    def _prompt(self, rid: int, gid: int) -> list[int]:
        """The prompt request `rid` was generated from (its group's when the trace gives none of its own)."""
        return self.own.get(rid) or self.prompts.get(gid, [])

    def commit(self, rid: int, generated: int) -> None:
        done = self._appended.get(rid)
        if done is None or generated <= done:
            return
        self.drafter.append(rid, self.outputs[rid][done:generated])
        self._appended[rid] = min(generated, len(self.outputs[rid]))

    def commit_many(self, rids: np.ndarray, generated: np.ndarray) -> None:
        for rid, g in zip(rids.tolist(), generated.tolist()):
            self.commit(rid, g)

    def finish(self, rid: int) -> None:
        self.drafter.finish(rid)

    def _context(self, rid: int, g: int) -> list[int]:
        m, out = self.config.max_match, self.outputs[rid]
        if g >= m:
            return out[g - m : g]
        prompt = self._prompt(rid, self.drafter.group_of(rid))
        return prompt[max(0, len(prompt) - (m - g)) :] + out[:g]

    def plan(
        self, rids: np.ndarray, generated: np.ndarray, remaining: np.ndarray, gammas: np.ndarray, horizon: int
    ) -> Plan:
        """Every row's `horizon` steps in one compiled pass per drafter index (`plan_reference` step by step in
        Python, which the tests' `check` hook uses)."""
        if self.check is not None or not self.drafter.compiled:
            return self.plan_reference(rids, generated, remaining, gammas, horizon)
        rids = np.asarray(rids, np.int64)
        rows = np.empty((len(rids), 7), np.int64)
        rows[:, :4] = self._at[rids]
        rows[:, 4], rows[:, 5], rows[:, 6] = generated, remaining, gammas
        b, d, a, adv = self.drafter.replay(rids.tolist(), rows, self._truth, self._prompt_tokens, horizon)
        return Plan(b, d, a, adv)

    def plan_reference(
        self, rids: np.ndarray, generated: np.ndarray, remaining: np.ndarray, gammas: np.ndarray, horizon: int
    ) -> Plan:
        """`plan` with `GroupDrafter.propose` and `accepted_length`, row by row and step by step."""
        B = len(rids)
        b = np.zeros((B, horizon), np.int64)
        d = np.zeros((B, horizon), np.int64)
        a = np.zeros((B, horizon), np.int64)
        adv = np.zeros((B, horizon), np.int64)
        propose = self.drafter.propose
        for r, (rid, g, left, gam) in enumerate(
            zip(rids.tolist(), generated.tolist(), remaining.tolist(), gammas.tolist())
        ):
            out = self.outputs[rid]
            for s in range(horizon):
                if left <= 0:
                    break
                budget = min(gam, left - 1)
                acc = 0
                if budget > 0:
                    draft = propose(rid, self._context(rid, g), budget, budget)
                    acc = accepted_length(draft, out[g : g + budget])
                    b[r, s], d[r, s], a[r, s] = budget, len(draft), acc
                    if self.check is not None and acc:
                        self.check.append((rid, g, tuple(draft.tokens), acc))
                adv[r, s] = 1 + acc
                g += 1 + acc
                left -= 1 + acc
        return Plan(b, d, a, adv)


class ParametricAcceptance:
    """Geometric acceptance alpha(n)**i for length-only traces (a model; see the module docstring)."""

    def __init__(
        self,
        group_of: Mapping[int, int],
        alpha_table: Sequence[tuple[float, float]] = TABLE2_ALPHA,
        seed: int = 0,
        scope: str = "group",
    ):
        n = max(group_of) + 1 if group_of else 0
        group = np.array([group_of[r] for r in range(n)], dtype=np.int64)
        sizes = np.bincount(group) if n else np.zeros(0, np.int64)
        width = int(sizes.max()) if n else 0
        # group-major slots: a group's members sit side by side, so counting the others ahead of a row reads one
        # or two cache lines, not one per member (the count runs for every row of every speculative epoch)
        self.width = width
        self.slot = np.zeros(n, np.int64)
        fill = np.zeros(len(sizes), np.int64)
        for rid, gid in enumerate(group.tolist()):
            self.slot[rid] = gid * width + fill[gid]
            fill[gid] += 1
        # padding slots keep 0 tokens and never finish, so they are never ahead of anyone
        self.progress = np.zeros(len(sizes) * width, np.int64)
        self.finished = np.zeros(len(sizes) * width, bool)
        self.xs = np.array([x for x, _ in alpha_table], float)
        self.alphas = np.array([y for _, y in alpha_table], float)
        # alpha for every possible count of others ahead (np.interp elementwise, so the same floats)
        self.alpha_of_n = np.interp(np.arange(width + 1), self.xs, self.alphas)
        self.seed = draw_seed(seed)
        self.own_only = scope == "own"
        pts = ", ".join(f"n={x:g}: {y:.3f}" for x, y in alpha_table)
        who = (
            "n = 0 (scope own: no group references)" if self.own_only else "n = other group responses finished or ahead"
        )
        self.label = (
            f"parametric model (trace has no output_ids): draft token i accepted with probability "
            f"alpha(n)^i, {who}; alpha {pts}"
        )

    def commit(self, rid: int, generated: int) -> None:
        self.progress[self.slot[rid]] = generated

    def expected_advance(self, gamma: int) -> float:
        """Tokens per verify step at the model's best acceptance and `gamma` drafts: (1 - a^(g+1)) / (1 - a).
        An expectation, not a ceiling: a draw can accept every draft token."""
        a = float(self.alpha_of_n[0]) if self.own_only else float(self.alphas.max())
        return (1 - a ** (gamma + 1)) / (1 - a) if a < 1 else float(gamma + 1)

    def commit_many(self, rids: np.ndarray, generated: np.ndarray) -> None:
        self.progress[self.slot[rids]] = generated

    def finish(self, rid: int) -> None:
        self.finished[self.slot[rid]] = True

    def alpha(self, rids: np.ndarray, generated: np.ndarray) -> np.ndarray:
        """Per row, the acceptance rate alpha(n) the plan uses (n from the compiled count, as in `plan`)."""
        if self.own_only:
            return np.full(len(rids), self.alpha_of_n[0])
        return self.alpha_of_n[ahead_counts(rids, generated, self.slot, self.width, self.finished, self.progress)]

    def alpha_reference(self, rids: np.ndarray, generated: np.ndarray) -> np.ndarray:
        """`alpha` in numpy."""
        own = self.slot[rids]
        mem = (own - own % max(self.width, 1))[:, None] + np.arange(self.width)  # B x width: the group's slots
        ahead = self.finished[mem] | (self.progress[mem] > generated[:, None])
        ahead &= mem != own[:, None]
        return np.interp(ahead.sum(axis=1), self.xs, self.alphas)

    def plan(
        self, rids: np.ndarray, generated: np.ndarray, remaining: np.ndarray, gammas: np.ndarray, horizon: int
    ) -> Plan:
        b, a, adv = parametric_plan(
            self.seed,
            np.asarray(rids, np.int64),
            np.asarray(generated, np.int64),
            self.slot,
            self.width,
            self.finished,
            self.progress,
            self.alpha_of_n,
            self.own_only,
            np.asarray(gammas, np.int64),
            np.asarray(remaining, np.int64),
            horizon,
        )
        return Plan(b, b, a, adv)  # the model drafts its whole budget (nothing writes a plan: one array for both)

    def plan_reference(
        self, rids: np.ndarray, generated: np.ndarray, remaining: np.ndarray, gammas: np.ndarray, horizon: int
    ) -> Plan:
        """`plan` in numpy: the reference the compiled kernel must equal (the same draws, the same arrays)."""
        rids, gammas = np.asarray(rids, np.int64), np.asarray(gammas, np.int64)
        alpha = np.full(len(rids), self.alpha_of_n[0]) if self.own_only else self.alpha_reference(rids, generated)
        b, a, adv = (np.zeros((len(rids), horizon), np.int64) for _ in range(3))
        near = remaining <= horizon * (1 + gammas)
        left = np.array(remaining, np.int64)
        position = np.array(generated, np.int64)
        width = max(int(gammas.max()), 1) if len(rids) else 1
        for s in range(horizon):
            live = ~near | (left > 0)
            cap = np.where(live, np.where(near, np.minimum(gammas, np.maximum(left - 1, 0)), gammas), 0)
            u = reference_draws(self.seed, rids, position, width)
            leading = np.cumprod(u < alpha[:, None], axis=1).sum(axis=1)
            b[:, s], a[:, s] = cap, np.minimum(leading, cap)
            adv[:, s] = np.where(live, 1 + a[:, s], 0)
            left -= adv[:, s]
            position += adv[:, s]
        return Plan(b, b.copy(), a, adv)


def _mix64(z: np.ndarray) -> np.ndarray:
    """`spec_kernels.mix64` on uint64 arrays (numpy's array arithmetic wraps modulo 2**64, as the kernel's does)."""
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def draw_seed(seed: int) -> np.uint64:
    """The parametric model's seed as the draws' 64-bit key."""
    return _mix64(np.array([int(seed) & (2**64 - 1)], np.uint64))[0]


def reference_draws(seed: np.uint64, rids: np.ndarray, positions: np.ndarray, count: int) -> np.ndarray:
    """Rows x count: the uniform draws of draft positions 0..count-1 of each row's step starting at `positions`
    (`spec_kernels.draw` / 2**53, exact in a float)."""
    row = _mix64(seed ^ _mix64(np.asarray(rids).astype(np.uint64) + GOLDEN))
    k = (np.asarray(positions).astype(np.uint64)[:, None] << np.uint64(32)) + np.arange(1, count + 1, dtype=np.uint64)
    words = _mix64(row[:, None] + k * GOLDEN) >> np.uint64(64 - UNIT_BITS)
    return words.astype(np.float64) * 2.0**-UNIT_BITS
