"""`seer`: context-aware scheduling on divided rollout, plus adaptive grouped speculative decoding.

Scheduling is `ContextPolicy`'s. On top, the policy sets every instance's draft budgets: after each event
that changes what runs on an instance, and on every tick for fresh acceptance statistics, it runs MBA
(Algorithm 1) with that instance's batch (probes = high priority), the online acceptance estimate from the
engines' counters, and the step-time profile the backend supplies (the named input `set_step_profile`:
the cost model in the simulator, measured step times on a real engine). The drafter configuration in its
traits (`PolicyTraits.drafter`) tells the backend how to draft.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from seer.core import (
    ChunkFinished,
    ClusterView,
    Dispatch,
    DraftConfig,
    Event,
    PolicyTraits,
    RolloutStarted,
    SetSpeculation,
    StepProfile,
    Tick,
)
from seer.core.traits import SCOPES
from seer.policies.config import param
from seer.policies.context import ContextConfig, ContextPolicy
from seer.policies.speculation.mba import BENEFITS, AcceptanceStats, mba

MODES = ("adaptive", "fixed", "off")
MBA_KEYS = ("gamma_max", "lam", "benefit", "draft_time_s", "prior_alpha")  # read only by adaptive budgets
DRAFT_KEYS = ("scope", "topk", "min_prob", "max_match", "min_match")  # the drafter's: read unless speculation is off
MAX_GAMMA = 64  # draft tokens per step: as many positions as the simulator's statistics count (SPEC_POSITIONS)


@dataclass(frozen=True)
class SeerConfig(ContextConfig):
    speculation: str = param("adaptive", "draft budgets: MBA (adaptive), a fixed gamma, or none", MODES)
    gamma: int = param(4, "speculation=fixed: draft tokens per step (0-64)")
    gamma_max: int = param(8, "MBA: largest draft budget per sequence (1-64)")
    lam: float = param(2.0, "MBA: priority factor of probes (lambda)")
    benefit: str = param(
        "marginal", "MBA: benefit of one more draft token (marginal, or the paper's literal rule)", BENEFITS
    )
    scope: str = param("group", "drafts come from the request's own text, its group's, or all groups'", SCOPES)
    topk: int = param(1, "draft branches kept per depth (1 = linear drafts; at most 256)")
    min_prob: float = param(0.1, "drop draft tokens whose path probability is below this")
    max_match: int = param(8, "longest context suffix matched (1-256)")
    min_match: int = param(1, "shortest context suffix matched")
    draft_time_s: float = param(0.0, "MBA: drafting time per step (Seer's asynchronous drafter: about 0)")
    tick_s: float = param(2.0, "seconds between budget re-plans with fresh acceptance statistics (>= 0.001)")
    prior_alpha: float = param(0.5, "acceptance prior before any draft was verified")

    def problems(self) -> list[str]:
        out = super().problems()
        if not (1 <= self.gamma_max <= MAX_GAMMA and 0 <= self.gamma <= MAX_GAMMA):
            out.append(f"need 1 <= gamma_max <= {MAX_GAMMA} and 0 <= gamma <= {MAX_GAMMA} (draft tokens per step)")
        if not self.lam >= 1 or not self.tick_s >= 0.001:
            out.append("need lam >= 1 and tick_s >= 0.001 (a re-plan per millisecond at most)")
        if not 0.0 <= self.prior_alpha <= 1.0 or not self.draft_time_s >= 0:
            out.append("need 0 <= prior_alpha <= 1 and draft_time_s >= 0")
        if self.speculation != "off":
            try:
                self.draft_config()
            except ValueError as exc:
                out.append(str(exc))
        return out

    def ignored(self, given) -> dict[str, str]:
        out = super().ignored(given)
        mode = self.speculation
        for key in sorted(given):
            if key == "gamma" and mode != "fixed":  # adaptive budgets come from MBA (gamma_max)
                out[key] = (
                    f"gamma is the draft length of speculation=fixed, and this one's speculation is {mode} "
                    "(set speculation=fixed)"
                )
            elif key in MBA_KEYS and mode != "adaptive":
                out[key] = f"{key} tunes MBA's adaptive budgets, and this one's speculation is {mode}"
            elif key in DRAFT_KEYS and mode == "off":
                out[key] = f"{key} configures the drafter, and this one's speculation is off (nothing drafts)"
        return out

    def draft_config(self) -> DraftConfig:
        return DraftConfig(
            scope=self.scope, max_match=self.max_match, min_match=self.min_match, min_prob=self.min_prob, topk=self.topk
        )


class SeerPolicy(ContextPolicy):
    """Context-aware scheduling + grouped speculative decoding with MBA draft budgets.

    speculation: "adaptive" (MBA), "fixed" (every request drafts `gamma` tokens) or "off" (= context).
    Drafting: `scope` ("group" is Seer's, "own" the per-request baseline, "global" adds a cache of finished
    responses), `topk` branches, `min_prob` cut-off, patterns of `min_match`..`max_match` tokens.
    MBA: `gamma_max`, `lam` (priority factor), `benefit` ("marginal" or the paper's literal "paper"),
    `draft_time_s` (D per step; Seer's asynchronous drafter keeps it near 0). Budgets are re-planned on
    composition changes and every `tick_s` seconds.
    """

    name = "seer"
    Config = SeerConfig

    def __init__(self, config: SeerConfig | None = None, **params):
        super().__init__(config, **params)
        c = self.cfg
        self.speculation, self.gamma, self.gamma_max, self.lam, self.benefit = (
            c.speculation,
            c.gamma,
            c.gamma_max,
            c.lam,
            c.benefit,
        )
        self.draft_time_s, self.tick_s, self.prior_alpha = c.draft_time_s, c.tick_s, c.prior_alpha
        self.drafter_config = c.draft_config() if c.speculation != "off" else None
        self._profile: StepProfile | None = None
        self._reset_speculation()

    def _reset_speculation(self) -> None:
        self.acceptance = AcceptanceStats(self.gamma_max, self.prior_alpha)
        self._beta: list[float] | None = None  # acceptance.beta(), until the next update
        self._running_on: dict[int, set[int]] = {}
        self._probes_on: dict[int, set[int]] = {}
        self._last_budgets: dict[int, tuple] = {}
        self.budget_log: list[tuple[float, int, int, int, int]] = []  # (t, instance, batch, gamma_h, gamma_l)

    @property
    def traits(self) -> PolicyTraits:
        return PolicyTraits(
            needs_step_profile=True,
            tick_s=self.tick_s,
            drafter=self.drafter_config,
            max_draft_tokens=self.max_draft_tokens,
        )

    @property
    def max_draft_tokens(self) -> int:
        """The largest draft budget this policy ever sets (for makespan lower bounds)."""
        return 0 if self.speculation == "off" else (self.gamma if self.speculation == "fixed" else self.gamma_max)

    def set_step_profile(self, profile: StepProfile | Callable[[int, int, float], float] | None) -> None:
        """The backend's verify-step time T(batch, 1 + gamma) at a given mean context (offline profile)."""
        self._profile = None if profile is None else StepProfile.of(profile)

    # ---- events --------------------------------------------------------------------------------

    def on_event(self, event: Event, view: ClusterView) -> list:
        if isinstance(event, RolloutStarted):
            self._reset_speculation()
        actions = super().on_event(event, view)
        if self.speculation == "off":
            return actions
        touched: set[int] = set()
        if isinstance(event, ChunkFinished):
            self._running_on.get(event.instance, set()).discard(event.request_id)
            self._probes_on.get(event.instance, set()).discard(event.request_id)
            touched.add(event.instance)
        for a in actions:
            if isinstance(a, Dispatch):
                self._running_on.setdefault(a.instance, set()).add(a.request_id)
                if self.is_probe(a.request_id, view):
                    self._probes_on.setdefault(a.instance, set()).add(a.request_id)
                touched.add(a.instance)
        if isinstance(event, Tick):
            n = max((len(iv.spec_tried) for iv in view.instances), default=0)
            tried = [sum(iv.spec_tried[i] for iv in view.instances if i < len(iv.spec_tried)) for i in range(n)]
            accepted = [
                sum(iv.spec_accepted[i] for iv in view.instances if i < len(iv.spec_accepted)) for i in range(n)
            ]
            self.acceptance.update(tried, accepted)
            self._beta = None
            touched = set(self._running_on)
        return actions + self._budgets(view, touched)

    def _budgets(self, view: ClusterView, instances) -> list:
        out = []
        if self.speculation == "adaptive" and self._beta is None:
            self._beta = self.acceptance.beta()
        beta = self._beta
        for inst in sorted(instances):
            rids = self._running_on.get(inst, ())
            probes = self._probes_on.get(inst, ())  # a set, copied below only when the budgets name the probes
            batch = len(rids)
            iv = view.instances[inst]
            cap = iv.max_num_seqs
            if cap:
                batch = min(batch, cap)
            if self.speculation == "fixed":
                g_h = g_l = self.gamma
            elif batch == 0:
                g_h = g_l = 0
            else:
                if self._profile is None:
                    raise RuntimeError("seer policy needs a step-time profile: the backend must call set_step_profile")
                ctx = iv.kv_used_tokens / iv.running if iv.running else 0.0
                profile = self._profile
                # every budget's step in one call: MBA asks only for this batch (probes + others) and g <= gamma_max
                times = profile.times(batch, self.gamma_max + 1, ctx)
                g_h, g_l = mba(
                    min(len(probes), batch),
                    batch - min(len(probes), batch),
                    beta,
                    lambda _batch, g: times[g],
                    self.gamma_max,
                    self.lam,
                    self.benefit,
                    self.draft_time_s,
                )
            named = frozenset(probes) if g_h != g_l else None
            key = (g_h, g_l, named)
            if self._last_budgets.get(inst) == key:
                continue
            self._last_budgets[inst] = key
            self.budget_log.append((view.t, inst, batch, g_h, g_l))
            out.append(SetSpeculation(inst, {r: g_h for r in named} if named is not None else {}, g_l))
        return out
