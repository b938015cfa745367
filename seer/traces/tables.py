"""Reading CSV and JSONL files as tables, cell by cell: what a trace or a table to convert is read with, each
problem a `TraceError` naming the file and the row."""

from __future__ import annotations

import json
import math

import pandas as pd

from seer.errors import TraceError
from seer.traces.schema import TOKEN_COLUMNS


def read_jsonl_table(path: str) -> pd.DataFrame:
    """One JSON object per line, values kept as JSON typed them (an id "007" stays a string)."""
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is dropped, as pandas does for CSV
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(path, f"invalid JSON ({exc.msg})", row=lineno) from None
                if not isinstance(obj, dict):
                    raise TraceError(path, "each line must be a JSON object", row=lineno)
                rows.append(obj)
    except UnicodeDecodeError as exc:
        raise TraceError(path, f"not UTF-8 text ({first_line(exc)})") from None
    if not rows:
        raise TraceError(path, "the file has no rows")
    return pd.DataFrame(rows)


def read_csv_table(path: str, id_columns: tuple[str, ...] = ("prompt_id",)) -> pd.DataFrame:
    """A CSV with one header line; every row must have as many fields as the header. Id columns are read as
    text and become integers only when every value is written as one (so "007" and "7" stay apart)."""
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise TraceError(path, "the file is empty")
            twice = next((name for name in header if header.count(name) > 1), None)
            if twice is not None:  # pandas would read the second as "name.1" and use the first without a word
                raise TraceError(path, f"column {twice!r} appears twice in the header")
            for lineno, fields in enumerate(reader, 1):
                if fields and len(fields) != len(header):
                    raise TraceError(path, f"has {len(fields)} fields, the header has {len(header)}", row=lineno)
        df = pd.read_csv(
            path, dtype={c: str for c in TOKEN_COLUMNS + tuple(id_columns)}, keep_default_na=True, index_col=False
        )
    except pd.errors.EmptyDataError:
        raise TraceError(path, "the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(path, f"not a readable CSV file ({first_line(exc)})") from None
    for col in id_columns:
        if col in df.columns:
            df[col] = _canonical_ids(df[col])
    for col in TOKEN_COLUMNS:
        if col in df.columns:
            df[col] = [_parse_token_cell(path, i + 1, col, v) for i, v in enumerate(df[col])]
    return df


def _canonical_ids(col: pd.Series) -> pd.Series:
    """Text ids as integers when every one is written as an integer ("12", "-3"), else unchanged."""
    values = col.dropna()
    if len(values) and all(v.lstrip("-").isdigit() and str(int(v)) == v for v in values):
        return col.map(lambda v: int(v) if isinstance(v, str) else v)
    return col


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _parse_token_cell(path: str, row: int, col: str, value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []  # an empty CSV cell is an empty list; the length check catches a real omission
    text = str(value).strip().strip("[]").replace(",", " ")
    try:
        return [int(tok) for tok in text.split()]
    except ValueError:
        raise TraceError(path, "token ids must be integers separated by spaces", row=row, column=col)
