"""Engine and sampling settings shared by every instance of a real run, and the process environment engines need."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# In-process engines on a small CPU: one OpenMP thread each (two threads on two cores are ~45x slower), the
# engine core in this process (so the group drafter is shared with the driver), and caches kept local.
ENVIRONMENT = (
    ("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
    ("OMP_NUM_THREADS", "1"),
    ("VLLM_CPU_KVCACHE_SPACE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
    ("VLLM_LOGGING_LEVEL", "WARNING"),
    ("VLLM_LOGGING_STREAM", "ext://sys.stderr"),
)


def configure_environment() -> None:
    """Defaults for in-process engines (a variable the user set is kept); call before vLLM is imported."""
    for key, value in ENVIRONMENT:
        os.environ.setdefault(key, value)


@dataclass(frozen=True)
class EngineSettings:
    """Engine and sampling settings shared by every instance of a run."""

    model: str  # a local HF folder
    dummy: bool = False  # config-only model: random weights (length replay)
    max_num_seqs: int = 64
    max_model_len: int = 2048
    block_size: int = 32  # the CPU backend wants multiples of 32
    max_num_batched_tokens: int = 2048
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0  # engine-level: per-request seeds crash the CPU engine under chunked prefill
    stop_token_ids: tuple[int, ...] = ()
    speculative: Mapping | None = None  # vLLM speculative_config
    kv_blocks: int | None = None  # KV blocks per instance (vLLM's num_gpu_blocks_override); None: from memory
    tensor_parallel: int = 1  # devices per instance (GPUs)
    gpu: bool = False  # engines on GPUs: CUDA graphs on (the CPU backend runs eager)

    def engine_args(self) -> dict:
        kw = dict(
            model=self.model,
            skip_tokenizer_init=True,
            dtype="bfloat16",
            max_model_len=self.max_model_len,
            enforce_eager=not self.gpu,
            seed=self.seed,
            max_num_seqs=self.max_num_seqs,
            block_size=self.block_size,
            max_num_batched_tokens=max(self.max_num_batched_tokens, self.max_model_len),
            enable_prefix_caching=True,
            scheduling_policy="priority",
            disable_log_stats=False,
        )
        if self.dummy:
            kw["load_format"] = "dummy"
        if self.kv_blocks is not None:
            kw["num_gpu_blocks_override"] = int(self.kv_blocks)
        if self.tensor_parallel > 1:
            kw["tensor_parallel_size"] = int(self.tensor_parallel)
            kw["distributed_executor_backend"] = "mp"  # the instance's workers inside its actor's devices
        if self.speculative:
            kw["speculative_config"] = dict(self.speculative)
        return kw
