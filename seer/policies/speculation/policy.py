"""`seer`: context-aware scheduling on divided rollout, plus adaptive grouped speculative decoding.

Scheduling is `ContextPolicy`'s. On top, the policy sets every instance's draft budgets: after each event
that changes what runs on an instance, and on every tick for fresh acceptance statistics, it runs MBA
(Algorithm 1) with that instance's batch (probes = high priority), the online acceptance estimate from the
engines' counters, and the step-time profile the backend supplies (the named input `set_step_profile`:
the cost model in the simulator, measured step times on a real engine). The drafter configuration
(`drafter_config`) tells the backend how to draft.
"""

from __future__ import annotations

from collections.abc import Callable

from seer.core import ChunkFinished, ClusterView, Dispatch, Event, RolloutStarted, SetSpeculation, Tick
from seer.policies.divided import ContextPolicy
from seer.policies.speculation.drafter import DraftConfig
from seer.policies.speculation.mba import BENEFITS, AcceptanceStats, mba

StepProfile = Callable[[int, int, float], float]  # (batch, tokens per sequence, mean context) -> seconds
MODES = ("adaptive", "fixed", "off")


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
    needs_step_profile = True

    def __init__(self, chunk_size: int = 8192, placement: str = "most-free", starvation_every: int = 32,
                 imbalance_threshold: int = 32, affinity_margin: int = 512, speculation: str = "adaptive",
                 gamma: int = 4, gamma_max: int = 8, lam: float = 2.0, benefit: str = "marginal",
                 scope: str = "group", topk: int = 1, min_prob: float = 0.1, max_match: int = 8, min_match: int = 1,
                 draft_time_s: float = 0.0, tick_s: float = 2.0, prior_alpha: float = 0.5):
        super().__init__(chunk_size, placement, starvation_every, imbalance_threshold, affinity_margin)
        if speculation not in MODES:
            raise ValueError(f"speculation must be one of {', '.join(MODES)}")
        if benefit not in BENEFITS:
            raise ValueError(f"benefit must be one of {', '.join(BENEFITS)}")
        if gamma_max < 1 or gamma < 0 or lam < 1 or tick_s <= 0:
            raise ValueError("need gamma_max >= 1, gamma >= 0, lam >= 1, tick_s > 0")
        self.speculation, self.gamma, self.gamma_max, self.lam, self.benefit = speculation, gamma, gamma_max, lam, benefit
        self.draft_time_s, self.tick_s, self.prior_alpha = draft_time_s, tick_s, prior_alpha
        self.drafter_config = DraftConfig(scope=scope, max_match=max_match, min_match=min_match, min_prob=min_prob,
                                          topk=topk) if speculation != "off" else None
        self._profile: StepProfile | None = None
        self._reset_speculation()

    def _reset_speculation(self) -> None:
        self.acceptance = AcceptanceStats(self.gamma_max, self.prior_alpha)
        self._on: dict[int, set[int]] = {}
        self._probes_on: dict[int, set[int]] = {}
        self._sent: dict[int, tuple] = {}
        self.budget_log: list[tuple[float, int, int, int, int]] = []  # (t, instance, batch, gamma_h, gamma_l)

    def config(self) -> dict:
        return {**super().config(), "speculation": self.speculation, "gamma": self.gamma, "gamma_max": self.gamma_max,
                "lam": self.lam, "benefit": self.benefit, "draft_time_s": self.draft_time_s, "tick_s": self.tick_s,
                "prior_alpha": self.prior_alpha,
                "drafter": self.drafter_config.describe() if self.drafter_config else None}

    @property
    def max_draft_tokens(self) -> int:
        """The largest draft budget this policy ever sets (for makespan lower bounds)."""
        return 0 if self.speculation == "off" else (self.gamma if self.speculation == "fixed" else self.gamma_max)

    def set_step_profile(self, profile: StepProfile) -> None:
        """The backend's verify-step time T(batch, 1 + gamma) at a given mean context (offline profile)."""
        self._profile = profile

    # ---- events --------------------------------------------------------------------------------

    def on_event(self, event: Event, view: ClusterView) -> list:
        if isinstance(event, RolloutStarted):
            self._reset_speculation()
        actions = super().on_event(event, view)
        if self.speculation == "off":
            return actions
        touched: set[int] = set()
        if isinstance(event, ChunkFinished):
            self._on.get(event.instance, set()).discard(event.request_id)
            self._probes_on.get(event.instance, set()).discard(event.request_id)
            touched.add(event.instance)
        for a in actions:
            if isinstance(a, Dispatch):
                self._on.setdefault(a.instance, set()).add(a.request_id)
                if self.is_probe(a.request_id, view):
                    self._probes_on.setdefault(a.instance, set()).add(a.request_id)
                touched.add(a.instance)
        if isinstance(event, Tick):
            n = max((len(iv.spec_tried) for iv in view.instances), default=0)
            tried = [sum(iv.spec_tried[i] for iv in view.instances if i < len(iv.spec_tried)) for i in range(n)]
            accepted = [sum(iv.spec_accepted[i] for iv in view.instances if i < len(iv.spec_accepted)) for i in range(n)]
            self.acceptance.update(tried, accepted)
            touched = set(self._on)
        return actions + self._budgets(view, touched)

    def _budgets(self, view: ClusterView, instances) -> list:
        out = []
        beta = self.acceptance.beta() if self.speculation == "adaptive" else None
        for inst in sorted(instances):
            rids = self._on.get(inst, ())
            probes = frozenset(self._probes_on.get(inst, ()))
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

                def step_time(b: int, g: int) -> float:
                    return profile(b, 1 + g, ctx)

                g_h, g_l = mba(min(len(probes), batch), batch - min(len(probes), batch), beta, step_time,
                               self.gamma_max, self.lam, self.benefit, self.draft_time_s)
            key = (g_h, g_l, probes if g_h != g_l else None)
            if self._sent.get(inst) == key:
                continue
            self._sent[inst] = key
            self.budget_log.append((view.t, inst, batch, g_h, g_l))
            out.append(SetSpeculation(inst, {r: g_h for r in probes} if g_h != g_l else {}, g_l))
        return out
