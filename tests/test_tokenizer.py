import json

import pytest

from seer.traces import tokenizer as tk

TEXTS = [
    "Hello world",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Steps:\n10 - 4 = 6 (left: 5 6 6)\nAnswer: (10 - 6) * (5 - 4) * 4 = 24",
    "  leading spaces, tabs\tand unicode: héllo 日本語 🎉",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
]


def test_tokenizer_is_built_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEER_CACHE_DIR", str(tmp_path))
    folder = tk.prepare_tokenizer("smollm2")
    assert folder == tmp_path / "tokenizers" / "smollm2"
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    assert tk.prepare_tokenizer("smollm2") == folder
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp  # not rebuilt
    cfg = json.loads((folder / "seer_tokenizer.json").read_text())
    assert cfg["eos_token_id"] == 2 and cfg["vocab_size"] == 49152 and "<|im_start|>" in cfg["chat_template"]


def test_known_ids_and_round_trip():
    tok = tk.load_tokenizer()
    assert tok.get_vocab_size() == 49152
    assert tok.encode("Hello world", add_special_tokens=False).ids == [19556, 905]
    # chat control tokens are single special tokens
    ids = tok.encode("<|im_start|>user", add_special_tokens=False).ids
    assert ids[0] == 1 and tok.id_to_token(2) == "<|im_end|>"
    for text in TEXTS[:4]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == text


def test_unknown_tokenizer_is_an_input_error():
    with pytest.raises(tk.SeerInputError, match="unknown tokenizer"):
        tk.prepare_tokenizer("gpt5")


def test_matches_transformers_gguf_tokenizer(shared_data):
    """Our torch-free build must tokenise exactly like transformers' own GGUF loader."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    gguf_path = tk.smollm2_gguf_path()
    ref = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    ours = tk.load_tokenizer()
    texts = list(TEXTS)
    with open(shared_data / "gsm8k" / "test.jsonl") as fh:
        for i, line in enumerate(fh):
            if i >= 300:
                break
            rec = json.loads(line)
            texts.append(rec["question"] + "\n" + rec["answer"])
    for text in texts:
        assert ours.encode(text, add_special_tokens=False).ids == ref.encode(text, add_special_tokens=False), text
