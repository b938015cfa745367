"""Converters from public trace formats to the generic schema.

- `tot`: Tree-of-Thoughts GPT-4 sample logs (JSON list of {idx, ys, infos|accs, usage_so_far}); each
  entry is a group of 10 or 100 samples. Responses are tokenised with SmolLM2's tokenizer, so
  `output_ids` are SmolLM2 ids and lengths are SmolLM2 tokens. Prompts are the task inputs (a Game-of-24
  puzzle from 24.csv, or a creative-writing line from data_100_random_text.txt), tokenised the same way;
  ToT's few-shot prompt template is not part of the logs and is not counted.
- `mooncake`: Kimi production conversation trace (JSONL: timestamp ms, input_length, output_length).
- `azure`: Azure LLM inference trace 2023 (CSV: TIMESTAMP, ContextTokens, GeneratedTokens).
- `csv` / `jsonl`: any table, with a column mapping `schema_name=source_column`.

Single-sample traces (Mooncake, Azure) become groups of one sample.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from seer.errors import SeerInputError, TraceError
from seer.fileio import input_problem
from seer.progress import progress_bar
from seer.traces.io import check_int_column, finite_numbers
from seer.traces.schema import OPTIONAL, REQUIRED, TOKEN_COLUMNS
from seer.traces.tables import read_csv_table, read_jsonl_table, strict_json
from seer.traces.tokenizer import encode_batch

SOURCES = ("tot", "mooncake", "azure", "csv", "jsonl")


def _read_json(path: str):
    problem = input_problem(path)
    if problem:
        raise TraceError(path, problem)
    try:
        with open(path, encoding="utf-8") as fh:
            return strict_json(fh.read())
    except FileNotFoundError:
        raise TraceError(path, "no such file")
    except UnicodeDecodeError as exc:
        raise TraceError(path, f"not valid JSON ({exc})")
    except ValueError as exc:  # strict_json's one-line reasons, JSONDecodeError's with its position
        raise TraceError(path, f"not valid JSON ({exc})") from None


def _tot_task(entries: list) -> str:
    for entry in entries:
        for y in entry.get("ys", []):
            if isinstance(y, str) and "Answer:" in y:
                return "game24"
    return "text"


def _tot_prompt_file(path: str, task: str) -> str | None:
    """The prompt file of a log inside a clone of tree-of-thought-llm (logs/<task>/x.json beside
    src/tot/data/<task>/, or data/<task>/ in the repository's older layout), or next to the log."""
    name, sub = ("24.csv", "24") if task == "game24" else ("data_100_random_text.txt", "text")
    folder = os.path.dirname(os.path.abspath(path))
    repo = os.path.dirname(os.path.dirname(folder))
    for source in (
        os.path.join(folder, name),
        os.path.join(repo, "src", "tot", "data", sub, name),
        os.path.join(repo, "data", sub, name),
    ):
        if os.path.exists(source):
            return source
    return None


def _tot_prompts(path: str, task: str, prompts: str | None) -> list[str]:
    source = prompts or _tot_prompt_file(path, task)
    problem = input_problem(source) if source is not None else None
    if problem and problem != "no such file":
        raise TraceError(source, problem)
    if source is None or not os.path.exists(source):
        name = "24.csv" if task == "game24" else "data_100_random_text.txt"
        where = source or f"{name} next to the log or in the repository's src/tot/data/"
        raise TraceError(path, f"ToT {task} log needs its prompt file, not found: {where} (pass --prompts PATH)")
    try:
        if task == "game24":
            try:
                table = pd.read_csv(source)
                return [str(p) for p in table["Puzzles"]]
            except (KeyError, pd.errors.ParserError, pd.errors.EmptyDataError):
                raise TraceError(source, "expected a CSV with a 'Puzzles' column (ToT's 24.csv)")
        with open(source, encoding="utf-8") as fh:
            return [line.rstrip("\n") for line in fh]
    except UnicodeDecodeError as exc:
        raise TraceError(source, f"not UTF-8 text ({exc.reason})")
    except OSError as exc:
        raise TraceError(source, f"cannot read the prompt file ({exc.strerror or exc})")


def convert_tot(path: str, prompts: str | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Tree-of-Thoughts sample log -> trace with SmolLM2 token ids."""
    entries = _read_json(path)
    if not isinstance(entries, list) or not entries:
        raise TraceError(path, "expected a non-empty JSON list of {idx, ys} entries (a ToT sample log)")
    first: dict[int, int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "idx" not in entry or not isinstance(entry.get("ys"), list):
            raise TraceError(path, "entry lacks 'idx' or a list 'ys'", row=i + 1)
        idx = entry["idx"]
        if type(idx) is not int or idx < 0:  # a line of the prompt file: -1 or 1.7 would pick some other line
            raise TraceError(path, f"idx must be a non-negative integer, not {idx!r}", row=i + 1)
        if idx in first:  # else named later by the converted table's row and its sample_id, which the log has not
            raise TraceError(path, f"idx {idx} is also entry {first[idx]}'s (one entry per prompt)", row=i + 1)
        first[idx] = i + 1
        bad = next((j for j, y in enumerate(entry["ys"]) if not isinstance(y, str)), None)
        if bad is not None:  # str() made a null the text "None" and 1 the text "1"
            raise TraceError(path, f"ys[{bad}] must be a string (a response), not {entry['ys'][bad]!r}", row=i + 1)
        _tot_rewards(entry, path, i + 1)  # refused before the (slow) tokenising
    task = _tot_task(entries)
    prompt_texts = _tot_prompts(path, task, prompts)
    rows = []
    bar = progress_bar(progress, entries, desc="tokenising", unit="group")
    for n, entry in enumerate(bar, 1):
        idx = entry["idx"]
        if idx >= len(prompt_texts):
            raise TraceError(path, f"idx {idx} has no prompt in the prompt file ({len(prompt_texts)} lines)", row=n)
        prompt_ids = encode_batch([prompt_texts[idx]])[0]
        outs = encode_batch(entry["ys"])
        rewards = _tot_rewards(entry, path, 0)
        for j, ids in enumerate(outs):
            row = {
                "prompt_id": idx,
                "sample_id": j,
                "prompt_len": len(prompt_ids),
                "output_len": len(ids),
                "prompt_ids": prompt_ids,
                "output_ids": ids,
            }
            if rewards is not None:
                row["reward"] = float(rewards[j])
            rows.append(row)
    return pd.DataFrame(rows)


def _finite(r) -> bool:
    try:
        return isinstance(r, int | float) and math.isfinite(r)
    except OverflowError:  # an integer beyond float's range
        return False


def _tot_rewards(entry: Mapping, path: str, row: int) -> list | None:
    """The samples' rewards (accs as 0/1, or infos' r), None when the entry has neither; a reward that is not
    a finite number is refused (`row`: the entry's, for the message)."""
    ys = entry.get("ys")
    if isinstance(entry.get("accs"), list):
        rewards, key = [float(bool(a)) for a in entry["accs"]], "accs"
    else:
        infos, key = entry.get("infos"), "infos"
        if not (isinstance(infos, list) and infos and all(isinstance(i, dict) and "r" in i for i in infos)):
            return None
        rewards = [i["r"] for i in infos]
        for j, r in enumerate(rewards):
            if not _finite(r):
                raise TraceError(path, f"infos[{j}]['r'] must be a number, not {r!r}", row=row or None)
    if isinstance(ys, list) and len(rewards) != len(ys):  # which response a reward belongs to is then unknown
        raise TraceError(path, f"{key} has {len(rewards)} values for {len(ys)} responses (ys)", row=row or None)
    return [float(r) for r in rewards]


def convert_mooncake(path: str) -> pd.DataFrame:
    """Mooncake JSONL (timestamp in ms, input_length, output_length) -> single-sample groups."""
    raw = read_jsonl_table(path, id_columns=())
    need = ("timestamp", "input_length", "output_length")
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise TraceError(path, f"missing Mooncake column(s): {', '.join(missing)}")
    lengths = _source_lengths(path, raw, ("input_length", "output_length"))
    stamps = finite_numbers(path, raw["timestamp"], "timestamp", "milliseconds")
    return pd.DataFrame(
        {
            "prompt_id": np.arange(len(raw)),
            "sample_id": 0,
            "prompt_len": lengths["input_length"],
            "output_len": lengths["output_length"],
            "arrival_s": stamps / 1000.0,
        }
    )


def convert_azure(path: str) -> pd.DataFrame:
    """Azure 2023 CSV (TIMESTAMP, ContextTokens, GeneratedTokens) -> single-sample groups."""
    # the toolkit's reader: plain read_csv takes a row with extra fields as an index and shifts its values
    raw = read_csv_table(path, id_columns=(), token_columns=())
    need = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise TraceError(path, f"missing Azure column(s): {', '.join(missing)}")
    lengths = _source_lengths(path, raw, ("ContextTokens", "GeneratedTokens"))
    # in UTC: rows with different UTC offsets are then one series (without it pandas refuses them; naive times,
    # as the published trace has, are unchanged, and only differences are kept)
    col = raw["TIMESTAMP"]
    # numbers are Unix times in seconds (pandas would read them as nanoseconds: a minute apart became 60 ns)
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    stamps = pd.to_datetime(col, errors="coerce", utc=True, **({"unit": "s"} if numeric else {}))
    if stamps.isna().any():
        i = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        v = col.iloc[i]
        shown = repr(v) if isinstance(v, str) else f"{v} (numbers are read as Unix seconds)"
        raise TraceError(path, f"unreadable timestamp {shown}", row=i + 1, column="TIMESTAMP")
    return pd.DataFrame(
        {
            "prompt_id": np.arange(len(raw)),
            "sample_id": 0,
            "prompt_len": lengths["ContextTokens"],
            "output_len": lengths["GeneratedTokens"],
            "arrival_s": (stamps - stamps.min()).dt.total_seconds(),
        }
    )


def _source_lengths(path: str, raw: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """The file's length columns checked as the schema checks lengths, so that a bad value is reported under the
    file's column name, not the schema's."""
    out = raw[list(columns)].copy()
    for col in columns:
        check_int_column(path, out, col)
    return out


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """`['output_len=n_tokens', ...]` -> {'output_len': 'n_tokens'}."""
    mapping = {}
    known = set(REQUIRED) | set(OPTIONAL)
    for item in items or []:
        if "=" not in item:
            raise SeerInputError(f"--map {item!r}: expected SCHEMA_COLUMN=SOURCE_COLUMN")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in known:
            raise SeerInputError(f"--map {item!r}: {key!r} is not a schema column ({', '.join(sorted(known))})")
        if key in mapping:  # the last one would win silently
            raise SeerInputError(f"--map {item!r}: {key} is mapped more than once")
        mapping[key] = value
    return mapping


def convert_table(path: str, fmt: str, mapping: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Any CSV/JSONL table -> trace. Unmapped schema columns are taken by name when present.

    Without `sample_id`, samples are numbered in file order within each prompt; without `prompt_id`,
    every row is its own single-sample group.
    """
    mapping = dict(mapping or {})
    # ids keep the type the file gives them ("007" stays text); CSV text ids become integers only when all are
    ids = (mapping.get("prompt_id", "prompt_id"),)
    # a token column is parsed under the name the file gives it, as the schema's own would be
    tokens = tuple(mapping.get(col, col) for col in TOKEN_COLUMNS)
    raw = read_csv_table(path, ids, tokens) if fmt == "csv" else read_jsonl_table(path, ids)
    absent = [src for src in mapping.values() if src not in raw.columns]
    if absent:
        raise TraceError(
            path,
            f"mapped source column(s) not in the file: {', '.join(absent)} (found: {', '.join(map(str, raw.columns))})",
        )
    out = pd.DataFrame(index=raw.index)
    for col in list(REQUIRED) + list(OPTIONAL):
        src = mapping.get(col, col)
        if src in raw.columns:
            out[col] = raw[src]
    lengths = [c for c in ("prompt_len", "output_len") if c not in out.columns]
    if lengths:
        raise TraceError(
            path,
            f"no {' or '.join(lengths)} column (the file has: {', '.join(map(str, raw.columns)) or 'none'}); "
            f"name the file's with --map, e.g. --map {lengths[0]}=COLUMN",
        )
    used = {mapping.get(col, col) for col in out.columns}
    for col in raw.columns:  # the file's other columns (rewards, timings, ...) are kept under their names
        if col in used or col in out.columns or col in REQUIRED or col in OPTIONAL:
            continue
        if _one_kind(raw[col]):
            out[col] = raw[col]
        else:
            warnings.warn(f"{path}: column {col!r} left out: its values are not all numbers or all text", stacklevel=2)
    if "prompt_id" not in out.columns:
        out["prompt_id"] = np.arange(len(raw))
    if "sample_id" not in out.columns:
        out["sample_id"] = out.groupby("prompt_id", sort=False).cumcount()
    return out


def _one_kind(col: pd.Series) -> bool:
    """Whether a column can be kept as it is in a Parquet trace: numbers, booleans or text, missing values aside."""
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return True
    values = col.dropna()
    return all(isinstance(v, str) for v in values)


def convert(
    path: str, source: str, mapping: Mapping[str, str] | None = None, prompts: str | None = None
) -> pd.DataFrame:
    """Dispatch to the converter for `source`."""
    if source == "tot":
        return convert_tot(path, prompts=prompts)
    problem = input_problem(path)
    if problem:
        raise TraceError(path, problem)
    if source == "mooncake":
        return convert_mooncake(path)
    if source == "azure":
        return convert_azure(path)
    if source in ("csv", "jsonl"):
        return convert_table(path, source, mapping)
    raise SeerInputError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
