"""Engine settings of one simulated instance, and the error raised when a workload cannot run on it."""

from __future__ import annotations

from dataclasses import dataclass

from seer.errors import SeerInputError


@dataclass(frozen=True)
class InstanceConfig:
    """Engine settings of one instance (vLLM names where they exist)."""

    kv_capacity_tokens: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    prefix_cache: bool = False
    # "local": a resumed chunk re-prefills its context, unless the prefix cache still holds it (on the instance
    # it left); "pool": its KV is fetched from a global pool (Seer's Mooncake)
    kv_mode: str = "local"
    pool_bytes_per_s: float = 50e9

    def __post_init__(self):
        if self.kv_mode not in ("local", "pool"):
            raise SeerInputError(f"kv_mode must be 'local' or 'pool', not {self.kv_mode!r}")
        if self.max_num_seqs > self.max_num_batched_tokens:
            raise SeerInputError("max_num_seqs must not exceed max_num_batched_tokens")


class SimulationError(SeerInputError):
    """The workload cannot run on this cluster (e.g. one request needs more KV than an instance has)."""
