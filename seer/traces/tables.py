"""Reading CSV and JSONL files as tables, cell by cell: what a trace or a table to convert is read with, each
problem a `TraceError` naming the file and the row."""

from __future__ import annotations

import json
import math
import sys

import pandas as pd

from seer.errors import TraceError
from seer.traces.schema import TOKEN_COLUMNS


class _KeyTwice(ValueError):
    pass


def _once_each(pairs: list) -> dict:
    """An object's keys, each once: json keeps the last of a key given twice, without a word."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _KeyTwice(f"key {twice!r} appears twice in an object")
    return obj


def strict_json(text: str):
    """`json.loads`, every failure a ValueError with a one-line reason (a JSONDecodeError keeps its position).

    Also refused: what json accepts but later steps cannot use. A key given twice in an object (json keeps the
    last). A string holding a lone UTF-16 surrogate
    (written as the escape "\\ud800") is not text: encoding it for Parquet or a tokenizer fails far from the file.
    """
    try:
        obj = json.loads(text, object_pairs_hook=_once_each)
    except (json.JSONDecodeError, _KeyTwice):
        raise
    except ValueError:  # the only other one: int() refusing a number past Python's digit limit
        raise ValueError(f"a number has more than {sys.get_int_max_str_digits()} digits") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if "\\u" not in text:  # read from UTF-8 text, a string holds a surrogate only through an escape
        return obj
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise ValueError(f"a string holds {bad!r}, a lone UTF-16 surrogate, which is not text") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    return obj


def read_jsonl_table(path: str, id_columns: tuple[str, ...] = ("prompt_id",)) -> pd.DataFrame:
    """One JSON object per line, values kept as JSON typed them (an id "007" stays a string; id columns are
    kept as objects, so that an id 1.0 among integers is still seen as a float on its own row)."""
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is dropped, as pandas does for CSV
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = len(rows) + 1  # data rows, blank lines skipped: as a schema error names them
                try:
                    obj = strict_json(line)
                except json.JSONDecodeError as exc:
                    raise TraceError(path, f"invalid JSON ({exc.msg})", row=row, line=number) from None
                except ValueError as exc:
                    raise TraceError(path, f"invalid JSON ({exc})", row=row, line=number) from None
                if not isinstance(obj, dict):
                    raise TraceError(path, "each line must be a JSON object", row=row, line=number)
                rows.append(obj)
    except UnicodeDecodeError as exc:
        raise TraceError(path, f"not UTF-8 text ({first_line(exc)})") from None
    if not rows:
        raise TraceError(path, "the file has no rows")
    df = pd.DataFrame(rows)
    for col in id_columns:
        if col in df.columns:  # pandas makes ints and floats one float column: 0, 0, 1.0 would read 0.0, 0.0, 1.0
            df[col] = pd.Series([row.get(col) for row in rows], index=df.index, dtype=object)
    return df


def read_csv_table(
    path: str, id_columns: tuple[str, ...] = ("prompt_id",), token_columns: tuple[str, ...] = TOKEN_COLUMNS
) -> pd.DataFrame:
    """A CSV with one header line; every row must have as many fields as the header. Id columns are read as
    text and become integers only when every value is written as one (so "007" and "7" stay apart); token
    columns are read as ids separated by spaces."""
    import csv

    # a response of 20K tokens is a field past the csv module's limit (128 KiB): seer writes them, so it reads them
    limit = csv.field_size_limit(2**31 - 1)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise TraceError(path, "the file is empty")
            twice = next((name for name in header if header.count(name) > 1), None)
            if twice is not None:  # pandas would read the second as "name.1" and use the first without a word
                raise TraceError(path, f"column {twice!r} appears twice in the header")
            row = 0
            for fields in reader:
                row += bool(fields)  # data rows, blank lines skipped (pandas skips them): as a schema error names them
                if fields and len(fields) != len(header):
                    what = f"has {len(fields)} fields, the header has {len(header)}"
                    # the file line where blank lines make it other than the row's own (the header is line 1)
                    line = reader.line_num if reader.line_num != row + 1 else None
                    raise TraceError(path, what, row=row, line=line)
        df = pd.read_csv(
            path, dtype={c: str for c in (*token_columns, *id_columns)}, keep_default_na=True, index_col=False
        )
        # an id is text: "nan" and "NA" are ids that the CSV writer wrote as they are, only an empty cell is none
        # (read again without pandas' missing-value words, which costs a second parse: only when one was seen)
        ids = [c for c in id_columns if c in df.columns and df[c].isna().any()]
        if ids:
            df[ids] = pd.read_csv(path, usecols=ids, dtype=str, keep_default_na=False, na_values=[""])[ids]
    except pd.errors.EmptyDataError:
        raise TraceError(path, "the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
        raise TraceError(path, f"not a readable CSV file ({first_line(exc)})") from None
    finally:
        csv.field_size_limit(limit)
    for col in id_columns:
        if col in df.columns:
            df[col] = _canonical_ids(path, df[col])
    for col in token_columns:
        if col in df.columns:
            df[col] = [_parse_token_cell(path, i + 1, col, v) for i, v in enumerate(df[col])]
    return df


def _canonical_ids(path: str, col: pd.Series) -> pd.Series:
    """Text ids as integers when every one is written as an integer ("12", "-3"), else unchanged."""
    values = col.dropna()
    if not len(values) or not all(_written_as_int(v) for v in values):
        return col
    # int() refuses more than 4300 digits, and 20 digits are past int64 already: refused here, row named
    long = col.map(lambda v: isinstance(v, str) and len(v.lstrip("-")) > 19)
    if long.any():
        i = int(long.to_numpy().nonzero()[0][0])
        v = col.iloc[i]
        shown = v if len(v) <= 40 else f"{v[:20]}... ({len(v.lstrip('-'))} digits)"
        raise TraceError(path, f"{shown} does not fit a 64-bit integer", row=i + 1, column=str(col.name))
    return col.map(lambda v: int(v) if isinstance(v, str) else v)


def _written_as_int(v: str) -> bool:
    """Whether `v` is "12" or "-3" (ASCII digits, no sign but a minus, no leading zero), as str(int) would write it."""
    digits = v[1:] if v.startswith("-") else v
    return digits.isascii() and digits.isdigit() and (digits == "0" or not digits.startswith("0")) and v != "-0"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _parse_token_cell(path: str, row: int, col: str, value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []  # an empty CSV cell is an empty list; the length check catches a real omission
    tokens = str(value).strip().strip("[]").replace(",", " ").split()
    # ASCII digits only: int() also takes "+1", "1_0" and other scripts' digits, which no tokenizer writes
    digits = "".join(tokens).replace("-", "")
    try:
        if tokens and not (digits.isascii() and digits.isdigit()):
            raise ValueError
        return [int(tok) for tok in tokens]
    except ValueError:
        raise TraceError(path, "token ids must be integers separated by spaces", row=row, column=col) from None
