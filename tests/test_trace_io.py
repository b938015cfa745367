import json
import os

import numpy as np
import pandas as pd
import pytest
from conftest import cli_error, run_seer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seer.errors import TraceError
from seer.traces.io import load_trace, save_trace, validate_trace

FORMATS = ["parquet", "csv", "jsonl"]


@st.composite
def traces(draw, tokens=True):
    n_groups = draw(st.integers(1, 5))
    rows = []
    for g in range(n_groups):
        plen = draw(st.integers(0, 50))
        for s in range(draw(st.integers(1, 4))):
            olen = draw(st.integers(0, 30))
            row = {
                "prompt_id": g * 3 + 1,
                "sample_id": s,
                "prompt_len": plen,
                "output_len": olen,
                "max_tokens": 64,
                "arrival_s": draw(st.floats(0, 1e4, allow_nan=False)),
            }
            if tokens:
                ids = st.integers(0, 49151) | st.integers(0, 2**63 - 2)  # vocabularies, and ids past int32
                row["prompt_ids"] = draw(st.lists(ids, min_size=plen, max_size=plen))
                row["output_ids"] = draw(st.lists(ids, min_size=olen, max_size=olen))
            rows.append(row)
    return pd.DataFrame(rows)


def _same(a: pd.DataFrame, b: pd.DataFrame):
    assert list(a.columns) == list(b.columns)
    for col in a.columns:
        if col in ("prompt_ids", "output_ids"):
            assert [list(map(int, x)) for x in a[col]] == [list(map(int, x)) for x in b[col]], col
        elif col == "arrival_s":
            np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-12)
        else:
            assert a[col].tolist() == b[col].tolist(), col


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(df=traces())
def test_every_format_round_trips(tmp_path, fmt, df):
    path = tmp_path / f"t.{fmt}"
    save_trace(df, path, meta={"source": "test"})
    back = load_trace(path)
    _same(validate_trace(df), back)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_parquet_keeps_metadata(tmp_path):
    df = pd.DataFrame({"prompt_id": [1], "sample_id": [0], "prompt_len": [3], "output_len": [4]})
    save_trace(df, tmp_path / "a.parquet", meta={"source": "x", "k": 1})
    _, meta = load_trace(tmp_path / "a.parquet", with_meta=True)
    assert meta == {"source": "x", "k": 1}


BASE = "prompt_id,sample_id,prompt_len,output_len\n0,0,10,5\n0,1,10,7\n1,0,4,3\n"

BAD_CSV = [
    ("prompt_id,sample_id,prompt_len\n0,0,10\n", None, None, "missing required column(s): output_len"),
    (BASE + "1,1,4,abc\n", 4, "output_len", "expected an integer, got 'abc'"),
    (BASE + "1,1,4,-3\n", 4, "output_len", "expected an integer >= 0"),
    (BASE + "1,1,4.5,3\n", 4, "prompt_len", "expected an integer"),
    (BASE + "1,1,4,\n", 4, "output_len", "expected an integer"),
    (BASE + "0,1,10,9\n", 4, "sample_id", "duplicate (prompt_id, sample_id) = (0, 1)"),
    ("prompt_id,sample_id,prompt_len,output_len\n", None, None, "has no rows"),
    (
        "prompt_id,sample_id,prompt_len,output_len,output_ids\n0,0,3,2,5 6 7\n",
        1,
        "output_ids",
        "has 3 tokens but output_len is 2",
    ),
    (
        "prompt_id,sample_id,prompt_len,output_len,output_ids\n0,0,3,2,5 x\n",
        1,
        "output_ids",
        "token ids must be integers",
    ),
    ("prompt_id,sample_id,prompt_len,output_len,max_tokens\n0,0,3,9,8\n", 1, "output_len", "exceeds max_tokens"),
    ("prompt_id,sample_id,prompt_len,output_len,max_tokens\n0,0,3,2,0\n", 1, "max_tokens", "expected an integer >= 1"),
    ("prompt_id,sample_id,prompt_len,output_len,arrival_s\n0,0,3,2,soon\n", 1, "arrival_s", "expected a number"),
]


@pytest.mark.parametrize("text,row,column,message", BAD_CSV)
def test_each_validation_error_names_file_row_and_column(tmp_path, text, row, column, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as info:
        load_trace(path)
    err = info.value
    assert message in str(err)
    assert str(path) in str(err)
    assert (err.row, err.column) == (row, column)
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("empty.csv", "", "the file is empty"),
        ("garbage.parquet", "not parquet at all", "not a readable Parquet file"),
        (
            "bad.jsonl",
            '{"prompt_id": 0, "sample_id": 0, "prompt_len": 1, "output_len": 1}\n{broken\n',
            "row 2: invalid JSON",
        ),
        ("list.jsonl", "[1, 2]\n", "row 1: each line must be a JSON object"),
        (  # blank lines are not rows: the line an editor shows is said too
            "blank.jsonl",
            '\n{"prompt_id": 0, "sample_id": 0, "prompt_len": 1, "output_len": 1}\n\n{broken\n',
            r"row 2 \(line 4\): invalid JSON",
        ),
        ("trace.txt", "whatever", "unknown trace format"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TraceError, match=message):
        load_trace(path)


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nope.parquet")


def test_jsonl_token_length_mismatch(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"prompt_id": "a", "sample_id": 0, "prompt_len": 2, "output_len": 1, "prompt_ids": [1]}) + "\n"
    )
    with pytest.raises(TraceError, match=r"row 1, column 'prompt_ids': has 1 tokens but prompt_len is 2"):
        load_trace(path)


def test_a_failed_save_leaves_no_file(tmp_path):
    bad = pd.DataFrame({"prompt_id": [0, 0], "sample_id": [0, 0], "prompt_len": [1, 1], "output_len": [1, 1]})
    out = tmp_path / "out.parquet"
    with pytest.raises(TraceError):
        save_trace(bad, out)
    assert os.listdir(tmp_path) == []


def test_cli_reports_a_malformed_file_in_one_line_with_status_2(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(BASE + "1,1,4,-3\n")
    for action in ("stats", "validate"):
        proc = run_seer("trace", action, str(path))
        assert proc.returncode == 2
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert lines[0] == f"seer: error: {path}, row 4, column 'output_len': expected an integer >= 0, got -3"


def test_cli_convert_failure_writes_nothing(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("q,n\na,5\na,-1\n")
    out = tmp_path / "out.parquet"
    proc = run_seer(
        "trace", "convert", str(src), "--from", "csv", "--map", "prompt_id=q", "--map", "output_len=n", "-o", str(out)
    )
    assert proc.returncode == 2 and "no prompt_len column (the file has: q, n)" in proc.stderr
    proc = run_seer(
        "trace",
        "convert",
        str(src),
        "--from",
        "csv",
        "--map",
        "prompt_id=q",
        "--map",
        "output_len=n",
        "--map",
        "prompt_len=n",
        "-o",
        str(out),
    )
    assert proc.returncode == 2 and "row 2" in proc.stderr and "expected an integer >= 0" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["in.csv"]


def test_bundled_default_trace_is_valid_and_generated_only():
    from pathlib import Path

    from seer.traces.io import load_trace

    path = Path(__file__).resolve().parents[1] / "seer" / "data" / "gsm8k_smollm2.parquet"
    df = load_trace(path)
    assert df["prompt_id"].nunique() >= 128 and (df.groupby("prompt_id").size() == 8).all()
    assert (df["output_len"] >= df["max_tokens"]).mean() < 0.10  # fewer than 10% hit the cap
    assert [len(x) for x in df["output_ids"]] == df["output_len"].tolist()
    assert "prompt_ids" not in df.columns and "prompt_hash" in df.columns  # no prompt text or tokens


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_byte_order_mark_is_read_as_in_any_editor(tmp_path, suffix):
    """Editors on Windows start UTF-8 files with a byte-order mark; both text formats read past it."""
    text = (
        "prompt_id,sample_id,prompt_len,output_len\n0,0,5,3\n"
        if suffix == "csv"
        else '{"prompt_id": 0, "sample_id": 0, "prompt_len": 5, "output_len": 3}\n'
    )
    path = tmp_path / f"bom.{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    df = load_trace(path)
    assert list(df.columns[:4]) == ["prompt_id", "sample_id", "prompt_len", "output_len"] and len(df) == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["b", "a", "c10", "c9"]) | st.integers(-3, 3),  # prompt ids of either kind
            st.integers(0, 5),  # sample id
            st.integers(0, 40),  # prompt_len
            st.integers(0, 30),  # output_len
            st.integers(30, 64),  # max_tokens
            st.integers(0, 3),  # iteration
        ),
        max_size=40,
    ),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_a_trace_becomes_one_group_per_prompt_with_each_rows_values(rows, text_ids, with_max, with_iter, rnd):
    """rollout_from_trace: groups in prompt_id order, samples in sample_id order, every request carrying its
    own row's key and lengths, a group's cap the largest of its rows' and its iteration the earliest."""
    from seer.traces.rollout import rollout_from_trace

    rows = list({(str(r[0]) if text_ids else INT_IDS.get(r[0], r[0]), r[1]): r for r in rows}.items())  # unique keys
    rnd.shuffle(rows)
    df = pd.DataFrame(
        [dict(zip(("prompt_id", "sample_id"), k)) | dict(zip(FIELDS, r[2:])) for k, r in rows],
        columns=["prompt_id", "sample_id", *FIELDS],
    )
    if not with_max:
        df = df.drop(columns=["max_tokens"])
    if not with_iter:
        df = df.drop(columns=["iteration"])
    ro, true_len = rollout_from_trace(df, 64)
    by_key = {k: r for k, r in rows}
    assert [g.size for g in ro.groups.values()] == [
        sum(1 for k in by_key if k[0] == p) for p in sorted({k[0] for k in by_key})
    ]
    assert [ro.requests[m[0]].key[0] for m in ro.members.values()] == sorted({k[0] for k in by_key})
    for gid, members in ro.members.items():
        group, reqs = ro.groups[gid], [ro.requests[m] for m in members]
        assert [r.key[1] for r in reqs] == sorted(r.key[1] for r in reqs)
        assert group.prompt_len == by_key[reqs[0].key][2]
        assert group.max_tokens == (max(by_key[r.key][4] for r in reqs) if with_max else 64)
        assert group.iteration == (min(by_key[r.key][5] for r in reqs) if with_iter else 0)
        for r in reqs:
            row = by_key[r.key]
            assert type(r.key[0]) is (str if text_ids else int) and type(r.key[1]) is int
            assert (r.prompt_len, r.max_tokens, true_len[r.request_id]) == (
                row[2],
                row[4] if with_max else 64,
                max(1, row[3]),
            )
    assert sorted(r.key for r in ro.requests.values()) == sorted(by_key)


FIELDS = ("prompt_len", "output_len", "max_tokens", "iteration")
INT_IDS = {"b": 5, "a": 4, "c10": 10, "c9": 9}


PARQUET_BASE = {"prompt_id": [0, 0], "sample_id": [0, 1], "prompt_len": [1, 1], "output_len": [1, 1]}
PANDAS_META_MISSING_INDEX = json.dumps(
    {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [],
        "columns": [
            {"name": k, "field_name": k, "pandas_type": "int64", "numpy_type": "int64", "metadata": None}
            for k in PARQUET_BASE
        ],
    }
)


def _write_parquet(path, kind: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(PARQUET_BASE)
    if kind == "pandas_meta_not_json":
        table = table.replace_schema_metadata({b"pandas": b"not json"})
    elif kind == "pandas_meta_missing_index":
        table = table.replace_schema_metadata({b"pandas": PANDAS_META_MISSING_INDEX.encode()})
    elif kind == "ids_not_utf8":
        offsets = pa.array([0, 1, 2], pa.int32()).buffers()[1]
        ids = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"\xff\xfe")])
        table = pa.table({**PARQUET_BASE, "prompt_id": ids})
    elif kind == "binary_output_ids":
        table = pa.table({**PARQUET_BASE, "output_ids": pa.array([b"a", b"b"], pa.binary())})
    pq.write_table(table, path)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("pandas_meta_not_json", ": not a readable Parquet file (JSONDecodeError: Expecting value"),
        ("pandas_meta_missing_index", ": not a readable Parquet file (KeyError: '__index_level_0__')"),
        ("ids_not_utf8", ": not a readable Parquet file (ArrowInvalid: Column 0: In chunk 0: Invalid: Invalid UTF8"),
        ("binary_output_ids", ", row 1, column 'output_ids': expected a list of token ids, got b'a'"),
    ],
)
def test_a_parquet_file_pandas_cannot_take_is_refused_in_one_line(tmp_path, capsys, kind, message):
    path = tmp_path / "t.parquet"
    _write_parquet(path, kind)
    assert cli_error(capsys, "trace", "validate", str(path)).startswith(f"seer: error: {path}{message}")


ROW_TEXT = '"sample_id": 0, "prompt_len": 1, "output_len": 1}'


@pytest.mark.parametrize(
    "name,text,message",
    [
        ("big.jsonl", '{"prompt_id": ' + "7" * 5000 + ", " + ROW_TEXT, "row 1: invalid JSON (a number has more than"),
        ("deep.jsonl", '{"prompt_id": ' + "[" * 100000 + "]" * 100000 + ", " + ROW_TEXT, "row 1: invalid JSON (nested"),
        ("lone.jsonl", '{"prompt_id": "\\ud800", ' + ROW_TEXT, r"row 1: invalid JSON (a string holds '\ud800', a lone"),
        (
            "floats.jsonl",
            "".join(
                f'{{"prompt_id": {p}, "sample_id": {i}, "prompt_len": 1, "output_len": 1}}\n'
                for i, p in enumerate(["0", "0", "1.0"])
            ),
            "row 3, column 'prompt_id': an id must be an integer or a string, not 1.0",
        ),
        (
            "huge.csv",
            "prompt_id,sample_id,prompt_len,output_len\n0,0,1,1\n" + "1" * 5000 + ",0,1,1\n",
            "row 2, column 'prompt_id': 11111111111111111111... (5000 digits) does not fit a 64-bit integer",
        ),
    ],
)
def test_a_text_trace_python_cannot_take_is_refused_in_one_line_naming_the_row(tmp_path, capsys, name, text, message):
    """Numbers past Python's 4300-digit limit, nesting past its recursion limit, a lone surrogate (not text), and
    an id 1.0 among integers reported on its own row, not on the first (pandas makes the column all floats)."""
    path = tmp_path / name
    path.write_text(text + ("\n" if not text.endswith("\n") else ""))
    assert cli_error(capsys, "trace", "validate", str(path)).startswith(f"seer: error: {path}, {message}")


def test_ids_that_read_as_missing_values_round_trip_through_csv(tmp_path):
    # "nan" and "NA" were written as they are and read back as empty ids (refused): a CSV written by seer failed to load
    df = pd.DataFrame({"prompt_id": ["nan", "nan", "NA", "null"], "sample_id": [0, 1, 0, 0], "prompt_len": 5})
    df["output_len"] = [3, 4, 5, 6]
    save_trace(df, tmp_path / "t.csv")
    back = load_trace(tmp_path / "t.csv")
    assert back["prompt_id"].tolist() == ["nan", "nan", "NA", "null"]
    (tmp_path / "e.csv").write_text("prompt_id,sample_id,prompt_len,output_len\n,0,10,20\n")
    with pytest.raises(TraceError, match="prompt_id is empty"):  # an empty cell is still no id
        load_trace(tmp_path / "e.csv")
