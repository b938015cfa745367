"""Partial rollout in the style of APRIL (arXiv 2509.18521), the paper's Partial Rollout baseline (§5.3).

Over-issue: the rollout holds `over_issue` x the groups training needs. Requests run whole (no chunking),
groups round-robin over instances as in veRL, requests carried over from an earlier iteration first
(engine priority 0; new ones 1). As soon as `target_groups` groups have every sample finished, every other
request is aborted; the iteration runner (`seer.experiment.run_iterations`, with `seer.carry`) carries them, with
the tokens they generated, into the next iteration, where they resume by re-prefilling prompt + partial output
(the weights changed, so their KV is stale).
"""

from __future__ import annotations

from dataclasses import dataclass

from seer.core import Abort, ChunkFinished, ClusterView, Dispatch, Event, PolicyTraits, RequestState, RolloutStarted
from seer.core.traits import MAX_OVER_ISSUE
from seer.errors import SeerInputError
from seer.policies.config import ConfiguredPolicy, PolicyConfig, param


@dataclass(frozen=True)
class PartialConfig(PolicyConfig):
    target_groups: int | None = param(None, "groups training needs (default: the rollout's groups / over_issue)")
    over_issue: float = param(2.0, "groups held per group needed")

    def problems(self) -> list[str]:
        # over 100 groups held per group trained on, a rollout of a few groups would hold millions
        bad = not 1 <= self.over_issue <= MAX_OVER_ISSUE
        out = [f"over_issue must be from 1 to {MAX_OVER_ISSUE}"] if bad else []
        if self.target_groups is not None and self.target_groups < 1:
            out.append("target_groups must be >= 1")
        return out


class PartialRolloutPolicy(ConfiguredPolicy):
    """APRIL partial rollout: over-issue, stop at the target group count, carry the rest (aborts are final)."""

    name = "partial"
    Config = PartialConfig

    def __init__(self, config: PartialConfig | None = None, **params):
        super().__init__(config, **params)
        self.target_groups = self.cfg.target_groups
        self.over_issue = self.cfg.over_issue
        self.target = 0
        self.done_groups: list[int] = []
        self._left: dict[int, int] = {}
        self.stopped_at: float | None = None

    @property
    def traits(self) -> PolicyTraits:
        return PolicyTraits(aborts_are_final=True, over_issue=self.over_issue)

    def check_groups(self, groups: int) -> None:
        if self.target_groups is not None and self.target_groups > groups:
            # the target could never be met: every group would train and the over-issue would mean nothing
            raise SeerInputError(
                f"policy {self.name}: target_groups={self.target_groups} is more than the {groups} "
                "groups this rollout holds (at most that many can finish)"
            )

    def on_event(self, event: Event, view: ClusterView) -> list:
        if isinstance(event, RolloutStarted):
            self.check_groups(len(view.groups))
            self.target = self.target_groups or max(1, round(len(view.groups) / self.over_issue))
            self.done_groups, self.stopped_at = [], None
            self._left = {gid: g.size for gid, g in view.groups.items()}
            newest = max((g.iteration for g in view.groups.values()), default=0)
            live = [iv.instance_id for iv in view.instances if iv.alive]
            actions = []
            order = sorted(view.groups, key=lambda g: (view.groups[g].iteration >= newest, g))  # carried first
            for k, gid in enumerate(order):
                prio = 1 if view.groups[gid].iteration >= newest else 0
                for rid in view.members[gid]:
                    actions.append(Dispatch(rid, live[k % len(live)], view.requests[rid].remaining_budget, prio))
            return actions
        if isinstance(event, ChunkFinished) and event.finished and self.stopped_at is None:
            gid = view.requests[event.request_id].group_id
            self._left[gid] -= 1
            if self._left[gid] == 0:
                self.done_groups.append(gid)
                if len(self.done_groups) >= self.target:
                    self.stopped_at = event.t
                    return [
                        Abort(r.request_id)
                        for r in view.requests.values()
                        if r.state in (RequestState.RUNNING, RequestState.WAITING)
                    ]
        return []
