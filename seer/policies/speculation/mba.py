"""Draft budgets: Seer's MBA rule (Algorithm 1) and the acceptance statistics it runs on.

T_SD(B, g) = (D(B, g) + T(B, g)) / E[tokens per step], E = 1 + sum_{i=1..g} beta[i], where beta[i] is the
probability that the i-th draft token of a step is accepted (so all before it were too) and T(B, g) the
time of a step in which B sequences each verify 1 + g tokens. With beta[i] = alpha**i this is the
Leviathan et al. formula the paper quotes, (1 - alpha)(D + T) / (1 - alpha**(g+1)).

MBA: g* = argmin_g T_SD(B, g) over 0..gamma_max; total budget g*·B; speculation off when that budget is
below the number of probes; otherwise probes start at 1 and each further unit goes to probes or to the
others by the benefit rule, probes preferred by a factor lambda. The paper writes the benefit of raising
a class from g to g+1 as B·(beta[g] - beta[g+1]) ("paper"); the conventional marginal gain is
B·beta[g+1] ("marginal"). Both are here; the SD study in docs/speculation.md compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

StepTime = Callable[[int, int], float]  # (batch, draft tokens per sequence) -> seconds of one verify step

BENEFITS = ("marginal", "paper")


def expected_tokens(beta: Sequence[float], gamma: int) -> float:
    """Tokens a sequence advances per step with `gamma` draft tokens (bonus token included)."""
    return 1.0 + float(sum(beta[1 : gamma + 1]))


def t_sd(batch: int, gamma: int, beta: Sequence[float], step_time: StepTime, draft_time_s: float = 0.0) -> float:
    """Expected seconds per generated token of a sequence in a batch of `batch` with `gamma` drafts."""
    cost = step_time(batch, gamma) + (draft_time_s if gamma > 0 else 0.0)
    return cost / expected_tokens(beta, gamma)


def best_gamma(
    batch: int, beta: Sequence[float], step_time: StepTime, gamma_max: int = 8, draft_time_s: float = 0.0
) -> int:
    """argmin over g in 0..gamma_max of T_SD(batch, g); ties go to the smaller g."""
    # `t_sd` written out with a running sum of beta (the policy evaluates this at every event): same arithmetic
    best, best_t = 0, step_time(batch, 0) / expected_tokens(beta, 0)
    tail = 0.0
    for g in range(1, gamma_max + 1):
        tail += beta[g] if g < len(beta) else 0.0  # a short beta counts as zeros, as `expected_tokens`' slice does
        t = (step_time(batch, g) + draft_time_s) / (1.0 + tail)
        if t < best_t * (1 - 1e-9):
            best, best_t = g, t
    return best


def mba(
    n_probes: int,
    n_others: int,
    beta: Sequence[float],
    step_time: StepTime,
    gamma_max: int = 8,
    lam: float = 2.0,
    benefit: str = "marginal",
    draft_time_s: float = 0.0,
) -> tuple[int, int]:
    """(gamma for probes, gamma for the others) by Seer's Algorithm 1. `beta[0]` must be 1."""
    if benefit not in BENEFITS:
        raise ValueError(f"benefit must be one of {BENEFITS}")
    b_h, b_l = n_probes, n_others
    batch = b_h + b_l
    if batch == 0:
        return 0, 0
    beta = list(beta) + [0.0] * max(0, gamma_max + 2 - len(beta))
    g_star = best_gamma(batch, beta, step_time, gamma_max, draft_time_s)
    budget = g_star * batch
    if g_star == 0 or budget < b_h:
        return 0, 0

    def gain(g: int) -> float:
        return beta[g + 1] if benefit == "marginal" else beta[g] - beta[g + 1]

    g_h, g_l = (1, 0) if b_h else (0, 0)
    left = budget - b_h
    while left > 0:
        if b_h and b_h * gain(g_h) > lam * b_l * gain(g_l) and g_h < gamma_max and left >= b_h:
            g_h, left = g_h + 1, left - b_h
        elif b_l and g_l < gamma_max and left >= b_l:
            g_l, left = g_l + 1, left - b_l
        elif b_h and g_h < gamma_max and left >= b_h and not b_l:
            g_h, left = g_h + 1, left - b_h
        else:
            break
    return g_h, g_l


@dataclass
class AcceptanceStats:
    """Online acceptance from the engines' counters: per draft position i, `tried[i-1]` request-steps
    reached it (budget >= i and the first i-1 tokens accepted) and `accepted[i-1]` accepted it.

    The conditional rate alpha_i = accepted / tried is shrunk towards the pooled rate over all positions
    (weight `prior_weight` observations), so a position rarely tried borrows from the others and budgets
    can grow past what has been tried; with no observations at all alpha is `prior_alpha`. beta[i] is
    the product alpha_1 ... alpha_i. Counts decay by `decay` at every `update` (a sliding window).
    """

    gamma_max: int = 8
    prior_alpha: float = 0.5
    prior_weight: float = 8.0
    decay: float = 0.8

    def __post_init__(self):
        self.tried = [0.0] * self.gamma_max
        self.accepted = [0.0] * self.gamma_max
        self._last_tried: list[int] = []
        self._last_accepted: list[int] = []

    def update(self, tried_total: Sequence[int], accepted_total: Sequence[int]) -> None:
        """Fold in cumulative counts (as engines report them); only the increase since the last call counts."""
        for i in range(self.gamma_max):
            t = tried_total[i] if i < len(tried_total) else 0
            a = accepted_total[i] if i < len(accepted_total) else 0
            lt = self._last_tried[i] if i < len(self._last_tried) else 0
            la = self._last_accepted[i] if i < len(self._last_accepted) else 0
            self.tried[i] = self.decay * self.tried[i] + (t - lt)
            self.accepted[i] = self.decay * self.accepted[i] + (a - la)
        self._last_tried = list(tried_total)
        self._last_accepted = list(accepted_total)

    def pooled(self) -> float:
        """Acceptance rate over all positions (the i.i.d. alpha of Leviathan et al.)."""
        t, a = sum(self.tried), sum(self.accepted)
        w = self.prior_weight
        return (a + w * self.prior_alpha) / (t + w)

    def alphas(self) -> list[float]:
        pooled, w = self.pooled(), self.prior_weight
        return [(a + w * pooled) / (t + w) for t, a in zip(self.tried, self.accepted)]

    def beta(self) -> list[float]:
        """[1, beta_1, ..., beta_gamma_max]: probability that the first i draft tokens are all accepted."""
        out = [1.0]
        for alpha in self.alphas():
            out.append(out[-1] * alpha)
        return out
