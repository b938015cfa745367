"""Cluster presets: model x hardware x parallelism x engine settings, read from TOML.

A preset file (seer/presets/NAME.toml, or any path) has a [cluster] table; see moonlight.toml for every key.
KV capacity per instance = GPUs x memory x gpu_memory_utilization - weights - activation reserve,
divided by the model's KV bytes per token, rounded down to whole blocks.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass

from seer.errors import SeerInputError
from seer.fileio import input_problem
from seer.presets import load_preset
from seer.schema import check_types
from seer.sim.config import InstanceConfig
from seer.sim.costmodel import CostModel
from seer.sim.shapes import Hardware, Parallelism, model_shape, model_shapes

GIB = 1024**3
GPUS = ("h100", "h800")
MAX_INSTANCES = 100_000


@dataclass(frozen=True)
class ClusterConfig:
    """A rollout cluster: `instances` identical inference instances."""

    name: str
    model: str
    instances: int
    tp: int = 1
    dp: int = 1
    gpu: str = "h100"
    gpu_memory_gib: float = 80.0
    gpu_memory_utilization: float = 0.9
    activation_reserve_gib: float = 4.0  # per GPU: activations, CUDA graphs, fragmentation
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    prefix_cache: bool = False
    kv_mode: str = "local"
    max_tokens: int = 32768  # default generation cap for traces without max_tokens
    link_gbps: float = 450.0
    network_gbps: float = 50.0
    pool_gbps: float = 50.0  # per GPU, into the global KV pool
    kv_capacity_tokens: int | None = None  # set to override the memory arithmetic

    def __post_init__(self):
        problems = check_types(self)
        if not problems:
            problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        out = []
        for key in ("instances", "tp", "dp", "block_size", "max_num_seqs", "max_tokens"):
            if getattr(self, key) < 1:
                out.append(f"{key} must be >= 1, not {getattr(self, key)}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            out.append(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs ({self.max_num_seqs})"
            )
        if self.instances > MAX_INSTANCES:
            out.append(f"instances must be <= {MAX_INSTANCES:,} (a simulated process each), not {self.instances:,}")
        if self.model not in model_shapes():  # refused when built, not when first run
            out.append(f"model must be one of {', '.join(model_shapes())}, not {self.model!r}")
        if self.gpu.lower() not in GPUS:
            out.append(
                f"gpu must be one of {', '.join(GPUS)} (the step model is fitted to H100 profiles; an H800 is "
                f"modelled as an H100), not {self.gpu!r}"
            )
        if not 0 < self.gpu_memory_gib <= 1024:
            out.append(f"gpu_memory_gib must be in (0, 1024], not {self.gpu_memory_gib}")
        for key in ("link_gbps", "network_gbps", "pool_gbps"):  # below 1 Mbit/s, transfers outlast any rollout
            if not getattr(self, key) >= 0.001:
                out.append(f"{key} must be >= 0.001, not {getattr(self, key)}")
        if not 0 < self.gpu_memory_utilization <= 1:
            out.append(f"gpu_memory_utilization must be in (0, 1], not {self.gpu_memory_utilization}")
        if self.activation_reserve_gib < 0:
            out.append(f"activation_reserve_gib must be >= 0, not {self.activation_reserve_gib}")
        if self.kv_mode not in ("local", "pool"):
            out.append(f"kv_mode must be 'local' or 'pool', not {self.kv_mode!r}")
        if self.kv_capacity_tokens is not None and self.kv_capacity_tokens < self.block_size:
            out.append(
                f"kv_capacity_tokens must be at least one block ({self.block_size}), not {self.kv_capacity_tokens}"
            )
        return out

    @property
    def shape(self):
        return model_shape(self.model)

    def hardware(self) -> Hardware:
        return Hardware(
            name=self.gpu,
            memory_gib=self.gpu_memory_gib,
            link_gbps=self.link_gbps,
            network_gbps=self.network_gbps,
            pool_gbps=self.pool_gbps,
        )

    def parallelism(self) -> Parallelism:
        return Parallelism(tp=self.tp, dp=self.dp)

    def weight_bytes_per_instance(self) -> float:
        s = self.shape
        replicated = s.always_read_params() * self.dp
        embed = 0 if s.tied_embeddings else s.vocab * s.hidden * self.dp
        experts = s.expert_params() * s.n_experts * s.moe_layers
        return (replicated + embed + experts) * s.weight_bytes

    def kv_capacity(self) -> int:
        """KV tokens one instance holds."""
        if self.kv_capacity_tokens is not None:
            tokens = self.kv_capacity_tokens
        else:
            gpus = self.tp * self.dp
            free = gpus * (self.gpu_memory_gib * self.gpu_memory_utilization - self.activation_reserve_gib) * GIB
            free -= self.weight_bytes_per_instance()
            if free <= 0:
                raise SeerInputError(f"cluster {self.name}: the weights of {self.model} do not fit in {gpus} GPU(s)")
            tokens = int(free // self.shape.kv_bytes_per_token)
            if tokens < self.block_size:  # else every request was blamed for needing more than an instance holds (0)
                raise SeerInputError(
                    f"cluster {self.name}: block_size {self.block_size:,} is more than the KV memory holds "
                    f"({tokens:,} tokens)"
                )
        return (tokens // self.block_size) * self.block_size

    def cost_model(self) -> CostModel:
        return CostModel(self.shape, self.hardware(), self.parallelism())

    def instance_config(self) -> InstanceConfig:
        return InstanceConfig(
            kv_capacity_tokens=self.kv_capacity(),
            block_size=self.block_size,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            prefix_cache=self.prefix_cache,
            kv_mode=self.kv_mode,
            pool_bytes_per_s=self.pool_gbps * 1e9 * self.tp * self.dp,
        )

    def describe(self) -> dict:
        d = dataclasses.asdict(self)
        d["kv_capacity_tokens"] = self.kv_capacity()
        d["gpus_per_instance"] = self.tp * self.dp
        return d


def _read_preset(name_or_path: str) -> tuple[str, dict]:
    if name_or_path.endswith(".toml") or os.sep in name_or_path or os.path.exists(name_or_path):
        problem = input_problem(name_or_path, "cluster file")
        if problem:
            raise SeerInputError(f"{name_or_path}: {problem}")
        if os.path.isdir(name_or_path):
            raise SeerInputError(f"{name_or_path}: is a folder, not a cluster file")
        try:
            with open(name_or_path, "rb") as fh:
                return os.path.basename(name_or_path).removesuffix(".toml"), tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SeerInputError(f"{name_or_path}: invalid TOML ({exc})") from None
    return name_or_path, load_preset(name_or_path)


def load_cluster(name_or_path: str, **overrides) -> ClusterConfig:
    """The [cluster] table of a preset name or TOML path, with keyword overrides (None = keep)."""
    name, data = _read_preset(name_or_path)
    table = data.get("cluster")
    if not isinstance(table, dict) or not table:
        raise SeerInputError(f"{name_or_path}: no [cluster] table")
    table = dict(table)
    known = [f.name for f in dataclasses.fields(ClusterConfig)]
    unknown = set(table) - set(known)
    if unknown:
        raise SeerInputError(
            f"{name_or_path}: unknown [cluster] key(s) {', '.join(sorted(unknown))}; valid: {', '.join(known)}"
        )
    if "model" not in table:
        raise SeerInputError(f"{name_or_path}: [cluster] needs a model (see `seer presets`)")
    table.setdefault("name", name)
    bad = sorted(set(overrides) - set(known))  # a misspelt keyword from Python
    if bad:
        raise SeerInputError(f"{name_or_path}: unknown cluster key(s) {', '.join(bad)}; valid: {', '.join(known)}")
    table.update({k: v for k, v in overrides.items() if v is not None})
    missing = [
        f.name for f in dataclasses.fields(ClusterConfig) if f.default is dataclasses.MISSING and f.name not in table
    ]
    if missing:
        raise SeerInputError(f"{name_or_path}: [cluster] needs {', '.join(missing)} (see `seer presets`)")
    try:
        cfg = ClusterConfig(**table)
    except ValueError as exc:
        raise SeerInputError(f"{name_or_path}: [cluster] {exc}") from None
    model_shape(cfg.model)  # fail early on an unknown model
    try:
        cfg.kv_capacity()
    except SeerInputError as exc:
        raise SeerInputError(f"{name_or_path}: {exc}") from None
    return cfg
