"""Grouped speculative decoding: the per-group suffix drafter, the MBA budget rule, and the `seer` policy."""

from seer.policies.speculation.drafter import SCOPES, DraftConfig, GroupDrafter
from seer.policies.speculation.mba import AcceptanceStats, best_gamma, mba, t_sd
from seer.policies.speculation.ngram import ngram_propose
from seer.policies.speculation.suffix import Draft, SuffixIndex, accepted_length

__all__ = [
    "SCOPES",
    "AcceptanceStats",
    "Draft",
    "DraftConfig",
    "GroupDrafter",
    "SuffixIndex",
    "accepted_length",
    "best_gamma",
    "mba",
    "ngram_propose",
    "t_sd",
]
