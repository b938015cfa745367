from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEER_SHARED", ROOT.parent / "shared"))

# Real-engine tests run vLLM in this process: one OpenMP thread, engine core in-process, logs on stderr, and
# vLLM's / torch's caches inside the project (nothing written elsewhere). Set before anything imports torch.
_CACHE = ROOT / "out" / "test-cache"
for _key, _value in (
    ("OMP_NUM_THREADS", "1"),
    ("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
    ("VLLM_CPU_KVCACHE_SPACE", "1"),
    ("VLLM_LOGGING_STREAM", "ext://sys.stderr"),
    ("VLLM_CACHE_ROOT", str(_CACHE / "vllm")),
    ("TORCHINDUCTOR_CACHE_DIR", str(_CACHE / "inductor")),
    ("HF_HOME", str(_CACHE / "hf")),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: public data is read from there, never committed here."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data}")
    return data


def run_seer(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess, as a user would (`env`: variables added to this process's environment)."""
    return subprocess.run(
        [sys.executable, "-m", "seer", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=600,
        env={**os.environ, **env} if env else None,
    )


def cli_error(capsys, *argv: str) -> str:
    """Run the CLI in this process; it must refuse the input with status 2 and exactly one line, which it returns."""
    from seer.cli import main

    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("seer: error: "), captured.err
    return lines[0]


def token_trace(
    seed: int, groups: int, G: int, vocab: int = 6, base_len: int = 40, noise: float = 0.15
) -> pd.DataFrame:
    """Groups whose samples are noisy copies of a group text (shared phrasing, different lengths)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(groups):
        base = rng.integers(0, vocab, size=base_len * 2).tolist()
        prompt = rng.integers(0, vocab, size=5).tolist()
        for s in range(G):
            n = int(rng.integers(base_len // 2, base_len * 2))
            out = [t if rng.random() > noise else int(rng.integers(0, vocab)) for t in base[:n]]
            rows.append(
                {
                    "prompt_id": p,
                    "sample_id": s,
                    "prompt_len": len(prompt),
                    "output_len": len(out),
                    "prompt_ids": prompt,
                    "output_ids": out,
                    "max_tokens": 200,
                }
            )
    return pd.DataFrame(rows)
