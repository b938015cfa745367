"""Model shapes, hardware and parallelism: the inputs of the roofline cost model.

Shapes are read from `seer/presets/models.toml`; everything here is plain arithmetic on them.
Two families: dense decoders with grouped-query attention (Llama/Qwen), and DeepSeek-V3-style models
with multi-head latent attention (MLA) and routed experts (Moonlight, Kimi-K2).
"""

from __future__ import annotations

import importlib.resources
import tomllib
from dataclasses import dataclass, fields

from seer.errors import SeerInputError


@dataclass(frozen=True)
class ModelShape:
    """Architecture numbers that set a step's bytes and FLOPs."""

    name: str
    layers: int
    hidden: int
    q_heads: int
    kv_heads: int = 0  # GQA only
    head_dim: int = 128
    intermediate: int = 0  # dense MLP width (GQA models, and the first dense layers of MoE models)
    vocab: int = 32000
    tied_embeddings: bool = False
    weight_bytes: float = 2.0  # bytes per parameter (bf16 = 2, fp8 = 1)
    kv_dtype_bytes: float = 2.0
    # MLA (attention = "mla")
    attention: str = "gqa"
    kv_lora_rank: int = 0
    rope_dim: int = 0
    q_lora_rank: int = 0
    qk_nope_dim: int = 0
    v_head_dim: int = 0
    # MoE
    n_experts: int = 0
    top_k: int = 0
    n_shared_experts: int = 0
    moe_intermediate: int = 0
    first_dense_layers: int = 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.first_dense_layers if self.n_experts else 0

    @property
    def dense_layers(self) -> int:
        return self.layers - self.moe_layers

    def attention_params(self) -> float:
        """Parameters of one layer's attention block."""
        h = self.hidden
        if self.attention == "mla":
            qk = self.qk_nope_dim + self.rope_dim
            q = (
                (h * self.q_lora_rank + self.q_lora_rank * self.q_heads * qk)
                if self.q_lora_rank
                else h * self.q_heads * qk
            )
            kv_a = h * (self.kv_lora_rank + self.rope_dim)
            kv_b = self.kv_lora_rank * self.q_heads * (self.qk_nope_dim + self.v_head_dim)
            o = self.q_heads * self.v_head_dim * h
            return q + kv_a + kv_b + o
        hd = self.head_dim
        return h * self.q_heads * hd + 2 * h * self.kv_heads * hd + self.q_heads * hd * h

    def expert_params(self) -> float:
        """Parameters of one routed expert in one layer (gate, up, down)."""
        return 3.0 * self.hidden * self.moe_intermediate

    def always_read_params(self) -> float:
        """Parameters every step reads whatever the tokens: all but the routed experts (lm_head included)."""
        dense_mlp = 3.0 * self.hidden * self.intermediate * self.dense_layers
        shared = self.expert_params() * self.n_shared_experts * self.moe_layers
        lm_head = self.vocab * self.hidden
        return self.layers * self.attention_params() + dense_mlp + shared + lm_head

    def total_params(self) -> float:
        embed = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.always_read_params() + embed + self.expert_params() * self.n_experts * self.moe_layers

    def active_params_per_token(self) -> float:
        """Parameters one token multiplies through (FLOPs = 2 x this), lm_head excluded."""
        return (
            self.always_read_params() - self.vocab * self.hidden + self.expert_params() * self.top_k * self.moe_layers
        )

    def experts_touched(self, tokens):
        """Expected distinct routed experts per MoE layer touched by `tokens` tokens (uniform top-k routing)."""
        if not self.n_experts:
            return 0.0
        return self.n_experts * (1.0 - (1.0 - self.top_k / self.n_experts) ** tokens)

    @property
    def kv_bytes_per_token(self) -> float:
        """KV cache bytes one token holds over all layers."""
        if self.attention == "mla":
            return (self.kv_lora_rank + self.rope_dim) * self.kv_dtype_bytes * self.layers
        return 2 * self.kv_heads * self.head_dim * self.kv_dtype_bytes * self.layers

    @property
    def attn_flops_per_pair(self) -> float:
        """FLOPs for one query token attending to one context token, over all layers."""
        if self.attention == "mla":  # absorbed form: scores over latent+rope, values over latent
            return 2.0 * self.q_heads * (2 * self.kv_lora_rank + self.rope_dim) * self.layers
        return 4.0 * self.q_heads * self.head_dim * self.layers


@dataclass(frozen=True)
class Hardware:
    """One accelerator. Peak numbers are the measured ceilings of the calibration profile."""

    name: str = "h100"
    hbm_gbps: float = 2988.0
    bf16_tflops: float = 787.0
    memory_gib: float = 80.0
    link_gbps: float = 450.0  # per-GPU NVLink bandwidth for tensor-parallel all-reduce
    allreduce_latency_us: float = 8.0
    network_gbps: float = 50.0  # per-GPU inter-node bandwidth (400 Gb/s RDMA) for expert all-to-all
    pool_gbps: float = 50.0  # per-GPU share of the global KV pool's RDMA bandwidth


@dataclass(frozen=True)
class Parallelism:
    """How many GPUs one inference instance spans: tensor parallel x data-parallel attention (with EP)."""

    tp: int = 1
    dp: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.dp


def _load_toml(name: str) -> dict:
    return tomllib.loads((importlib.resources.files("seer.presets") / name).read_text())


def model_shapes() -> dict[str, ModelShape]:
    """All shapes in seer/presets/models.toml."""
    known = {f.name for f in fields(ModelShape)}
    out = {}
    for name, table in _load_toml("models.toml").items():
        unknown = set(table) - known
        if unknown:
            raise SeerInputError(f"models.toml [{name}]: unknown key(s) {', '.join(sorted(unknown))}")
        out[name] = ModelShape(name=name, **table)
    return out


def model_shape(name: str) -> ModelShape:
    shapes = model_shapes()
    if name not in shapes:
        raise SeerInputError(f"unknown model {name!r}; known: {', '.join(shapes)}")
    return shapes[name]
