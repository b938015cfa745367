"""StreamRL-Oracle, the comparison system of the Seer paper (§4.1): StreamRL's skewness-aware dispatch fed
ground-truth lengths. Groups stay atomic and non-preemptible: a whole group goes to one instance, each
request runs to completion, and a group is admitted only where the KV of all its requests at their true
final lengths fits. Groups are taken longest-first by length bucket (equal-width buckets of the group's
longest response; FIFO inside a bucket), so long groups run early and at lower concurrency, since each
reserves its true footprint.
"""

from __future__ import annotations

from dataclasses import dataclass

from seer.core import ClusterView, Dispatch, Event, PolicyTraits, RolloutStarted, ceil_div, worst_case_kv
from seer.policies.config import ConfiguredPolicy, PolicyConfig, param
from seer.policies.placement import LoadBook


@dataclass(frozen=True)
class StreamRLConfig(PolicyConfig):
    buckets: int = param(8, "equal-width buckets of a group's true longest response, taken longest first")

    def problems(self) -> list[str]:
        return ["buckets must be >= 1"] if self.buckets < 1 else []


class StreamRLOraclePolicy(ConfiguredPolicy):
    """StreamRL's skewness-aware dispatch with true lengths: atomic groups, longest bucket first."""

    name = "streamrl-oracle"
    Config = StreamRLConfig

    def __init__(self, config: StreamRLConfig | None = None, **params):
        super().__init__(config, **params)
        self.buckets = self.cfg.buckets
        self._true: dict[int, int] | None = None
        self._order: list[int] = []
        self._members: dict[int, tuple[int, ...]] = {}

    @property
    def traits(self) -> PolicyTraits:
        return PolicyTraits(needs_oracle=True)

    def set_oracle_lengths(self, lengths: dict[int, int]) -> None:
        self._true = dict(lengths)

    def on_event(self, event: Event, view: ClusterView) -> list:
        if isinstance(event, RolloutStarted):
            if self._true is None:
                raise RuntimeError("streamrl-oracle needs true lengths: the driver must call set_oracle_lengths")
            self._members = {gid: tuple(view.members[gid]) for gid in view.groups}
            longest = {gid: max(self._true[r] for r in rids) for gid, rids in self._members.items()}
            top = max(longest.values())
            width = max(1, ceil_div(top, self.buckets))
            self._order = sorted(self._members, key=lambda g: (-(longest[g] // width), g))
        if not self._order:
            return []
        book = LoadBook.of(view)
        actions = []
        while self._order:
            gid = self._order[0]
            rids = self._members[gid]
            need = {
                i: sum(
                    worst_case_kv(
                        view.requests[r].context_len, self._true[r] - view.requests[r].generated, book.block[i]
                    )
                    for r in rids
                )
                for i in book.free
            }
            # an empty instance always takes the group, even one larger than the instance: otherwise nothing could
            # ever run it (its requests may then preempt each other)
            fit = [
                i
                for i in book.free
                if (book.free[i] >= need[i] and book.in_flight[i] + len(rids) <= book.limit[i])
                or book.in_flight[i] == 0
                and book.free[i] == max(book.free.values())
            ]
            if not fit:
                break
            inst = max(fit, key=lambda i: (book.free[i], -i))
            self._order.pop(0)
            book.free[inst] -= need[inst]
            book.in_flight[inst] += len(rids)
            book.touch(inst)
            for r in rids:
                req = view.requests[r]
                actions.append(Dispatch(r, inst, self._true[r] - req.generated))
        return actions
