"""What `seer run` refuses before an engine starts: a model config it cannot use, a KV cache past the machine's
memory, and a trace a real engine cannot replay as recorded (each in one line naming the file and row)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np

from seer.errors import SeerInputError

if TYPE_CHECKING:
    from seer.real.run import RunSpec


def model_config(model_dir) -> dict:
    """The model's config.json, read once for the checks below."""
    where = f"{model_dir}/config.json"
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise SeerInputError(f"{where}: unreadable model config ({exc})") from None
    if not isinstance(cfg, dict):
        raise SeerInputError(f"{where}: not a model config (a JSON object)")
    return cfg


def model_vocab(cfg: dict, where: str) -> int:
    """The model's vocabulary size (replayed prompts draw ids from 3 on), checked before an engine starts.
    (Whether --max-model-len fits the model is vLLM's to say: rope scaling, the tokenizer's length and an
    environment variable all move its limit; `host.EngineHost` turns its refusal into one line.)"""
    vocab, positions = cfg.get("vocab_size", 2048), cfg.get("max_position_embeddings")
    if type(vocab) is not int or vocab < 4:
        raise SeerInputError(f"{where}: vocab_size must be an integer >= 4, not {vocab!r}")
    if positions is not None and (type(positions) is not int or positions < 1):
        raise SeerInputError(f"{where}: max_position_embeddings must be an integer >= 1, not {positions!r}")
    return vocab


def check_kv_blocks(spec: RunSpec) -> None:
    from seer.real.engine import EngineSettings

    block = EngineSettings.block_size
    if spec.kv_blocks is not None and (spec.kv_blocks - 1) * block < spec.max_model_len:
        # vLLM keeps one block aside and refuses a cache that cannot hold one sequence of the model's length
        raise SeerInputError(
            f"--kv-blocks {spec.kv_blocks} ({block} tokens each) cannot hold one sequence of --max-model-len "
            f"{spec.max_model_len}; use at least {-(-spec.max_model_len // block) + 1} blocks or a shorter length"
        )


def check_kv_memory(spec: RunSpec, cfg: dict) -> None:
    """--kv-blocks past this machine's memory is refused before an engine tries to allocate it (on CPU engines;
    in-process engines share one process, Ray actors may sit on other nodes, so each is held to one engine)."""
    from seer.real.engine import EngineSettings

    if spec.kv_blocks is None or spec.gpus_per_instance:
        return
    layers, heads = cfg.get("num_hidden_layers"), cfg.get("num_attention_heads")
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg.get("hidden_size")
    head_dim = cfg.get("head_dim") or (
        hidden // heads if type(hidden) is int and type(heads) is int and heads else None
    )
    if not all(type(v) is int and v > 0 for v in (layers, kv_heads, head_dim)):
        return  # vLLM reads shapes this check does not know; it has its own say
    per_block = 2 * layers * kv_heads * head_dim * 2 * EngineSettings.block_size  # K and V, 2 bytes a value (least)
    engines = spec.instances if spec.launch == "inproc" else 1
    need = spec.kv_blocks * per_block * engines
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > memory:
        raise SeerInputError(
            f"--kv-blocks {spec.kv_blocks:,}: {engines} engine(s) of this model would hold at least "
            f"{need / 2**30:,.1f} GiB of KV cache, and this machine has {memory / 2**30:,.1f} GiB"
        )


def check_replayable(trace, spec: RunSpec) -> None:
    """What a real engine cannot replay as recorded, refused naming the trace's row: a prompt plus its output past
    the context. Arrival times are ignored (a synchronous rollout issues everything at the start) and empty
    responses replayed as one token, each said in a warning."""
    import warnings

    plen, out = (trace[c].to_numpy() for c in ("prompt_len", "output_len"))
    over = np.flatnonzero(plen + np.maximum(out, 1) > spec.max_model_len)
    if len(over):
        i = int(over[0])
        raise SeerInputError(
            f"{spec.replay}, row {_row(trace, i)}: prompt_len {int(plen[i]):,} plus output_len {int(out[i]):,} "
            f"exceed --max-model-len {spec.max_model_len:,}"
        )
    if "arrival_s" in trace.columns and len(trace) and float(trace["arrival_s"].max()) > 0:
        warnings.warn(
            f"{spec.replay}: arrival_s is ignored; a synchronous rollout issues every request at the start",
            stacklevel=2,
        )
    empty = int(np.count_nonzero(out == 0))
    if empty:
        warnings.warn(
            f"{spec.replay}: {empty:,} response(s) of output_len 0 are replayed as one token (an engine samples at "
            "least one), and recorded so",
            stacklevel=2,
        )


def _row(trace, i: int) -> int:
    """The file's row (from 1) of the frame's i-th row: the frame keeps the file's index through --limit."""
    label = trace.index[i]
    return (int(label) if isinstance(label, (int, np.integer)) else i) + 1
