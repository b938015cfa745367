"""The generic trace schema: one row per sample (request) of a rollout.

Required: `prompt_id` (any hashable: int or str), `sample_id` (int), `prompt_len`, `output_len` (tokens).
Optional: `prompt_ids`, `output_ids` (token-id lists), `max_tokens`, `iteration` (ints), `arrival_s`
(float seconds). Any other column (rewards, timings) is kept as it is.
"""

from __future__ import annotations

REQUIRED = ("prompt_id", "sample_id", "prompt_len", "output_len")
INT_COLUMNS = ("sample_id", "prompt_len", "output_len", "max_tokens", "iteration")
FLOAT_COLUMNS = ("arrival_s",)
TOKEN_COLUMNS = ("prompt_ids", "output_ids")
# token-list column -> the length column it must agree with
TOKEN_LENGTH_OF = {"prompt_ids": "prompt_len", "output_ids": "output_len"}
OPTIONAL = ("prompt_ids", "output_ids", "max_tokens", "iteration", "arrival_s")
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def format_of(path: str) -> str | None:
    """The trace format implied by a file name, or None."""
    lower = str(path).lower()
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    return None
