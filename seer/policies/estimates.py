"""L̂_g: what a scheduler can estimate of each group's longest response while the rollout runs.

- "max-finished" (Seer §3.3, literally): the longest finished response of the group, `max_tokens` while none
  has finished. It only grows, and converges to the group's true maximum, but early on it is the length of
  one sample, so a group whose probe happens to be short looks short.
- "order-stat" (default): the same observations read as order statistics. Within a group, log-lengths are
  modelled as normal with a spread sigma pooled online over every group with two or more finished
  responses; the k responses that finished first are taken as the k shortest of G, so the group maximum is
  estimated as max_finished * exp(sigma * (e(G, G) - e(k, G))), e being the expected normal order statistics
  (Blom's approximation). Two observations bound it: no group is shorter than what any of its members has
  already generated, and none is longer than `max_tokens`.

Both are O(1) per event.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

ESTIMATES = ("order-stat", "max-finished")


@lru_cache(maxsize=4096)
def normal_order_stat(k: int, n: int) -> float:
    """E[Z_(k:n)] for standard normals, by Blom's approximation (k = 1 is the smallest)."""
    return NormalDist().inv_cdf((k - 0.375) / (n + 0.25))


class GroupLengthEstimator:
    """Per-group estimates of the longest response, updated as members finish or progress."""

    def __init__(self, rule: str, sizes: dict[int, int], caps: dict[int, int], prior_sigma: float = 0.3):
        if rule not in ESTIMATES:
            raise ValueError(f"estimate must be one of {', '.join(ESTIMATES)}, not {rule!r}")
        self.rule, self.sizes, self.caps = rule, sizes, caps
        self.prior_sigma = prior_sigma
        self.finished_max: dict[int, int] = {}
        self._n: dict[int, int] = {}
        self._s1: dict[int, float] = {}
        self._s2: dict[int, float] = {}
        self._progress: dict[int, int] = {}
        self._ss = 0.0  # pooled within-group sum of squares of log-lengths
        self._dof = 0
        self.estimate: dict[int, int] = dict(caps)

    @property
    def sigma(self) -> float:
        """Pooled within-group spread of log-lengths, with the prior worth two degrees of freedom."""
        return math.sqrt((2 * self.prior_sigma**2 + self._ss) / (2 + self._dof))

    def _group_ss(self, gid: int) -> float:
        n = self._n.get(gid, 0)
        return self._s2[gid] - self._s1[gid] ** 2 / n if n >= 2 else 0.0

    def finished(self, gid: int, length: int) -> int:
        """A member finished with `length` tokens; returns the group's new estimate."""
        self.finished_max[gid] = max(self.finished_max.get(gid, 0), length)
        if self.rule == "order-stat":
            old_ss, old_n = self._group_ss(gid), self._n.get(gid, 0)
            x = math.log(max(1, length))
            self._n[gid] = old_n + 1
            self._s1[gid] = self._s1.get(gid, 0.0) + x
            self._s2[gid] = self._s2.get(gid, 0.0) + x * x
            self._ss += self._group_ss(gid) - old_ss
            self._dof += 1 if old_n >= 1 else 0
        return self._update(gid)

    def progressed(self, gid: int, generated: int) -> int:
        """A member has generated `generated` tokens so far (a lower bound on the group's maximum)."""
        if generated > self._progress.get(gid, 0):
            self._progress[gid] = generated
            if self.rule == "order-stat" and gid in self.finished_max:
                return self._update(gid)
        return self.estimate[gid]

    def _update(self, gid: int) -> int:
        top = self.finished_max[gid]
        if self.rule == "order-stat":
            k, n = self._n[gid], self.sizes[gid]
            if k < n:
                top = top * math.exp(self.sigma * (normal_order_stat(n, n) - normal_order_stat(k, n)))
            top = max(top, self._progress.get(gid, 0))
        self.estimate[gid] = int(min(self.caps[gid], max(self.finished_max[gid], round(top))))
        return self.estimate[gid]
