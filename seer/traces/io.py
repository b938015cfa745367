"""Reading, validating and writing traces as Parquet, CSV or JSONL.

Every problem is reported as a `TraceError` naming the file, the row (1-based, header excluded) and
the column. Writes are atomic.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seer.errors import SeerInputError, TraceError
from seer.fileio import atomic_path, check_writable, input_problem
from seer.schema import INT_LIMIT
from seer.traces.schema import (
    FLOAT_COLUMNS,
    INT_COLUMNS,
    REQUIRED,
    TOKEN_COLUMNS,
    TOKEN_LENGTH_OF,
    format_of,
)
from seer.traces.tables import first_line, read_csv_table, read_jsonl_table

META_KEY = b"seer"


def _read_raw(path: str, fmt: str) -> tuple[pd.DataFrame, dict]:
    if fmt == "parquet":
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise TraceError(path, f"not a readable Parquet file ({type(exc).__name__}: {first_line(exc)})")
        meta = {}
        raw_meta = (table.schema.metadata or {}).get(META_KEY)
        if raw_meta:
            try:
                meta = json.loads(raw_meta)
            except (ValueError, UnicodeDecodeError):
                raise TraceError(path, "its seer metadata is not JSON") from None
            if not isinstance(meta, dict):
                raise TraceError(path, "its seer metadata is not a JSON object")
        try:
            table.validate(full=True)  # text not UTF-8: pandas keeps Arrow strings, and would fail on first use
            df = table.to_pandas()
        except (pa.ArrowException, ValueError, KeyError, TypeError) as exc:
            # a readable file pandas cannot convert: its pandas metadata is not JSON (ValueError), names a column
            # it lacks (KeyError) or is not the shape pandas expects (TypeError)
            raise TraceError(path, f"not a readable Parquet file ({type(exc).__name__}: {first_line(exc)})") from None
        return df, meta
    if fmt == "csv":
        return read_csv_table(path), {}
    if fmt == "jsonl":
        return read_jsonl_table(path), {}
    raise AssertionError(fmt)


def _show(value) -> str:
    """repr of a cell without numpy's type wrapper (np.int64(3) -> 3)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


INT64_MAX = 2**63 - 1


def _booleans(values: pd.Series) -> pd.Series:
    """Where a column holds JSON true/false: pandas would read them as 1/0, but no length or time is a boolean."""
    if values.dtype == bool or values.dtype == object:
        return values.map(lambda v: isinstance(v, (bool, np.bool_)))
    return pd.Series(False, index=values.index)


def finite_numbers(path: str, values: pd.Series, col: str, expected: str) -> pd.Series:
    """The column as float64, refusing (row and column named) a cell that is not a finite number or is a boolean."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.astype("float64").fillna(0.0)) | _booleans(values)
    if not bad.any():
        bad = _number_text(values)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(path, f"expected {expected}, got {_show(values.iloc[i])}", row=i + 1, column=col)
    return numeric.astype("float64")


def _number_text(values: pd.Series) -> pd.Series:
    """Where a column of numbers holds them as text ("7"): a typed file (Parquet, JSON) with a damaged column, as
    a boolean would be. Asked only once every cell reads as a number: CSV numbers arrive as numbers, and a CSV
    column with other text in it is refused at that text."""
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        return values.map(lambda v: isinstance(v, str)).astype(bool)
    return pd.Series(False, index=values.index)


def _refuse_dates(path: str, values: pd.Series, col: str, expected: str) -> None:
    """pandas reads a date or duration column as nanoseconds: never a length, and not seconds either."""
    kind = getattr(values.dtype, "kind", "O")
    if kind in "mM" or isinstance(values.dtype, pd.DatetimeTZDtype | pd.PeriodDtype):
        raise TraceError(path, f"expected {expected}, got a {values.dtype} column", column=col)


def check_int_column(path: str, df: pd.DataFrame, col: str, minimum: int = 0) -> None:
    """Refuse a column that is not whole numbers >= `minimum` fitting int64 (naming row and column); else make it
    int64 in place."""
    values = df[col]
    _refuse_dates(path, values, col, "an integer")
    flags = _booleans(values)
    if flags.any():
        i = int(np.flatnonzero(flags.to_numpy())[0])
        raise TraceError(path, f"expected an integer, got {_show(values.iloc[i])}", row=i + 1, column=col)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna()
    as_float = numeric.astype("float64")
    bad |= ~np.isfinite(as_float.fillna(0.0)) | (as_float.fillna(0.0) % 1 != 0)
    if not bad.any():
        bad = _number_text(values)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(path, f"expected an integer, got {_show(values.iloc[i])}", row=i + 1, column=col)
    low = numeric < minimum
    if low.any():
        i = int(np.flatnonzero(low.to_numpy())[0])
        raise TraceError(path, f"expected an integer >= {minimum}, got {_show(values.iloc[i])}", row=i + 1, column=col)
    # a float or uint64 column can hold values that do not fit int64
    if numeric.dtype == np.int64:
        high = pd.Series(False, index=numeric.index)
    elif numeric.dtype.kind == "u":
        high = numeric > np.uint64(INT64_MAX)
    else:
        high = numeric.astype("float64") >= 2.0**63
    if high.any():
        i = int(np.flatnonzero(high.to_numpy())[0])
        raise TraceError(path, f"{_show(values.iloc[i])} does not fit a 64-bit integer", row=i + 1, column=col)
    df[col] = numeric.astype("int64")
    if col != "prompt_id":  # counts past 2**53 lose their last digits in the float statistics (stats said cv 0)
        over = df[col].to_numpy() > INT_LIMIT
        if over.any():
            i = int(np.flatnonzero(over)[0])
            raise TraceError(path, f"{_show(values.iloc[i])} is more than 2**53", row=i + 1, column=col)


def _check_ids(path: str, df: pd.DataFrame) -> None:
    """prompt_id: one scalar type per trace, integers or strings (never lists, floats or booleans)."""
    ids = df["prompt_id"]
    if ids.dtype.kind in "iu":  # integer columns (Parquet, CSV): only the range can be wrong
        df["prompt_id"] = _checked_int64(path, ids)
        return
    kinds = ids.map(
        lambda v: (
            "int"
            if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
            else "str"
            if isinstance(v, str)
            else type(v).__name__
        )
    )
    bad = ~kinds.isin(["int", "str"])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(
            path, f"an id must be an integer or a string, not {_show(ids.iloc[i])}", row=i + 1, column="prompt_id"
        )
    if kinds.nunique() > 1:
        i = int(np.flatnonzero((kinds != kinds.iloc[0]).to_numpy())[0])
        raise TraceError(
            path,
            f"ids mix integers and strings ({_show(ids.iloc[0])} and {_show(ids.iloc[i])}): use one type",
            row=i + 1,
            column="prompt_id",
        )
    if kinds.iloc[0] == "int":
        df["prompt_id"] = _checked_int64(path, ids)


def _checked_int64(path: str, ids: pd.Series) -> pd.Series:
    if ids.dtype == np.int64:
        return ids
    if ids.dtype.kind == "u":
        high = ids > np.uint64(INT64_MAX)
    else:
        high = ids.map(lambda v: not -INT64_MAX - 1 <= int(v) <= INT64_MAX)
    if high.any():
        i = int(np.flatnonzero(high.to_numpy())[0])
        raise TraceError(path, f"{_show(ids.iloc[i])} does not fit a 64-bit integer", row=i + 1, column="prompt_id")
    return ids.astype("int64")


def _check_token_lists(path: str, df: pd.DataFrame) -> None:
    """Token-list columns hold lists of ids as long as their length column; normalised to int64 arrays."""
    for col, length_col in TOKEN_LENGTH_OF.items():
        if col not in df.columns:
            continue
        cells = df[col].tolist()
        lengths = df[length_col].to_numpy()
        for i, cell in enumerate(cells):
            if cell is None or (isinstance(cell, float) and math.isnan(cell)):
                raise TraceError(path, "token list is empty (null)", row=i + 1, column=col)
            # bytes are a sequence of ints to Python, but a binary column holds text or data, never token ids
            if isinstance(cell, str | bytes | bytearray | memoryview) or not hasattr(cell, "__len__"):
                raise TraceError(path, f"expected a list of token ids, got {_show(cell)}", row=i + 1, column=col)
            if not all(isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)) for t in cell):
                raise TraceError(path, "token ids must be integers", row=i + 1, column=col)
            if len(cell) != lengths[i]:
                raise TraceError(
                    path, f"has {len(cell)} tokens but {length_col} is {lengths[i]}", row=i + 1, column=col
                )
        df[col] = [_token_array(path, c, i + 1, col) for i, c in enumerate(cells)]


def _token_array(path: str, cell, row: int, col: str) -> np.ndarray:
    """A checked token list as int64: ids are vocabulary indices, from 0 to 2**63 - 2 (the drafter's limit)."""

    def refuse(bad) -> TraceError:
        return TraceError(
            path, f"token id {_show(bad)} is outside 0 .. 2**63 - 2 (ids are vocabulary indices)", row=row, column=col
        )

    if isinstance(cell, np.ndarray) and cell.dtype.kind == "u" and len(cell) and cell.max() >= INT64_MAX:
        raise refuse(int(cell.max()))  # a cast to int64 would wrap it
    try:
        arr = np.asarray(cell, dtype=np.int64)
    except OverflowError:
        raise refuse(next(int(t) for t in cell if not -INT64_MAX - 1 <= int(t) <= INT64_MAX)) from None
    if len(arr) and (arr.min() < 0 or arr.max() == INT64_MAX):
        raise refuse(int(arr.min()) if arr.min() < 0 else INT64_MAX)
    return arr


def validate_trace(df: pd.DataFrame, path: str = "<trace>") -> pd.DataFrame:
    """Check a trace against the schema and return it with normalised dtypes.

    Raises `TraceError` at the first problem found, naming row and column.
    """
    if len(df) == 0:
        raise TraceError(path, "the trace has no rows")
    twice = next((name for name in df.columns if list(df.columns).count(name) > 1), None)
    if twice is not None:  # df[name] would be a frame, and the checks below would fail on it with a library error
        raise TraceError(path, f"column {twice!r} appears twice")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise TraceError(
            path, f"missing required column(s): {', '.join(missing)} (found: {', '.join(map(str, df.columns))})"
        )
    df = df.reset_index(drop=True).copy()
    nulls = df["prompt_id"].isna()
    if nulls.any():
        raise TraceError(
            path, "prompt_id is empty", row=int(np.flatnonzero(nulls.to_numpy())[0]) + 1, column="prompt_id"
        )
    _check_ids(path, df)
    for col in INT_COLUMNS:
        if col in df.columns:
            check_int_column(path, df, col, minimum=1 if col == "max_tokens" else 0)
    for col in FLOAT_COLUMNS:
        if col in df.columns:
            _refuse_dates(path, df[col], col, "seconds as a number")
            df[col] = finite_numbers(path, df[col], col, "a number")
    dup = df.duplicated(subset=["prompt_id", "sample_id"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise TraceError(
            path,
            f"duplicate (prompt_id, sample_id) = ({_show(df['prompt_id'].iloc[i])}, {_show(df['sample_id'].iloc[i])})",
            row=i + 1,
            column="sample_id",
        )
    _check_token_lists(path, df)
    if "max_tokens" in df.columns:
        over = df["output_len"] > df["max_tokens"]
        if over.any():
            i = int(np.flatnonzero(over.to_numpy())[0])
            raise TraceError(
                path,
                f"output_len {df['output_len'].iloc[i]} exceeds max_tokens {df['max_tokens'].iloc[i]}",
                row=i + 1,
                column="output_len",
            )
    return df


def load_trace(path: str | os.PathLike, with_meta: bool = False):
    """Read and validate a trace (format from the file extension).

    Returns the DataFrame, or (DataFrame, metadata dict) with `with_meta=True`.
    """
    path = str(path)
    problem = input_problem(path)
    if problem:
        raise TraceError(path, problem)
    if os.path.isdir(path):
        raise TraceError(path, "is a directory, not a trace file")
    fmt = format_of(path)
    if fmt is None:
        raise TraceError(path, "unknown trace format: use .parquet, .csv or .jsonl")
    if os.path.getsize(path) == 0:
        raise TraceError(path, "the file is empty")
    df, meta = _read_raw(path, fmt)
    df = validate_trace(df, path)
    return (df, meta) if with_meta else df


def _token_cell_text(cell) -> str:
    return " ".join(str(int(t)) for t in cell)


def check_trace_output(path: str | os.PathLike) -> str:
    """Refuse, before any work, a trace output `save_trace` could not write: an unknown extension, an existing
    folder, or a place nothing can be written to. Returns the format."""
    path = str(path)
    if not path:
        raise SeerInputError("the output trace's path is empty (-o '')")
    fmt = format_of(path)
    if fmt is None:
        raise TraceError(path, "unknown output format: use .parquet, .csv or .jsonl")
    if os.path.isdir(path):
        raise TraceError(path, "is a folder; name the trace file to write")
    check_writable(os.path.dirname(os.path.abspath(path)) if os.path.lexists(path) else path)
    return fmt


def save_trace(df: pd.DataFrame, path: str | os.PathLike, meta: Mapping | None = None) -> None:
    """Validate and write a trace atomically; the format follows the extension."""
    path = str(path)
    fmt = check_trace_output(path)
    df = validate_trace(df, path)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            table = pa.Table.from_pandas(_for_arrow(df), preserve_index=False)
            if meta:
                merged = dict(table.schema.metadata or {})
                merged[META_KEY] = json.dumps(dict(meta)).encode()
                table = table.replace_schema_metadata(merged)
            pq.write_table(table, tmp)
        elif fmt == "csv":
            if (df["prompt_id"] == "").any():
                i = int(np.flatnonzero((df["prompt_id"] == "").to_numpy())[0])
                raise TraceError(
                    path,
                    "an empty prompt_id cannot be written to CSV (it reads back as missing)",
                    row=i + 1,
                    column="prompt_id",
                )
            out = df.copy()
            for col in TOKEN_COLUMNS:
                if col in out.columns:
                    out[col] = [_token_cell_text(c) for c in out[col]]
            out.to_csv(tmp, index=False)
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                for rec in df.to_dict(orient="records"):
                    fh.write(json.dumps({k: _jsonable(v) for k, v in rec.items()}) + "\n")


def _for_arrow(df: pd.DataFrame) -> pd.DataFrame:
    """Token lists as int32 where every id of the column fits (half the file), else int64."""
    out = df.copy()
    for col in TOKEN_COLUMNS:
        if col in out.columns:
            cells = [np.asarray(c, dtype=np.int64) for c in out[col]]
            top = max((int(c.max()) for c in cells if len(c)), default=0)
            low = min((int(c.min()) for c in cells if len(c)), default=0)
            dtype = np.int32 if np.iinfo(np.int32).min <= low and top <= np.iinfo(np.int32).max else np.int64
            out[col] = [c.astype(dtype) for c in cells]
    return out


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v
