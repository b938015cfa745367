import pandas as pd
import pytest
from conftest import cli_error, run_seer

from seer.errors import SeerInputError, TraceError
from seer.traces.converters import convert, parse_mapping
from seer.traces.io import load_trace, save_trace, validate_trace
from seer.traces.tokenizer import load_tokenizer


def test_tot_game24_cot_gives_100_groups_of_100_with_smollm2_ids(shared_data):
    path = shared_data / "tot" / "gpt-4_0.7_naive_cot_sample_100_start900_end1000.json"
    df = validate_trace(convert(str(path), "tot"))
    sizes = df.groupby("prompt_id").size()
    assert len(sizes) == 100 and set(sizes) == {100}
    assert sorted(df["prompt_id"].unique()) == list(range(900, 1000))
    tok = load_tokenizer()
    import json

    first = json.loads(path.read_text())[0]
    row = df[(df.prompt_id == 900) & (df.sample_id == 3)].iloc[0]
    assert tok.decode(list(row["output_ids"])) == first["ys"][3]
    assert row["output_len"] == len(row["output_ids"])
    # the prompt is puzzle #901 of 24.csv
    assert tok.decode(list(row["prompt_ids"])) == pd.read_csv(shared_data / "tot" / "24.csv")["Puzzles"][900]
    assert set(df["reward"].unique()) <= {0.0, 1.0}


def test_tot_text_gives_100_groups_of_10(shared_data):
    df = validate_trace(
        convert(str(shared_data / "tot" / "gpt-4_1.0_naive_standard_sample_10_start0_end100.json"), "tot")
    )
    sizes = df.groupby("prompt_id").size()
    assert len(sizes) == 100 and set(sizes) == {10}
    assert df["prompt_len"].min() > 20  # four sentences


@pytest.mark.parametrize("layout", ["src/tot/data/24", "data/24", "logs/game24"])
def test_a_tot_log_finds_its_prompts_where_the_tot_repository_keeps_them(tmp_path, layout):
    """A log converted as it lies in a clone of tree-of-thought-llm (logs/game24/x.json) finds 24.csv in
    src/tot/data/24/ (or the older data/24/, or beside the log) without --prompts."""
    import json

    log = tmp_path / "logs" / "game24" / "x.json"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps([{"idx": 1, "ys": ["4 + 4 = 8\nAnswer: 8 * 3 = 24", "Answer: 24"]}]))
    csv = tmp_path / layout / "24.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text("Rank,Puzzles\n1,1 1 4 6\n2,1 1 11 11\n")
    df = validate_trace(convert(str(log), "tot"))
    assert len(df) == 2 and df["prompt_id"].tolist() == [1, 1]
    assert load_tokenizer().decode(list(df["prompt_ids"].iloc[0])) == "1 1 11 11"
    csv.unlink()
    with pytest.raises(TraceError, match="prompt file"):
        convert(str(log), "tot")


def test_mooncake_and_azure_are_single_sample_groups(shared_data):
    mc = validate_trace(convert(str(shared_data / "mooncake" / "conversation_trace.jsonl"), "mooncake"))
    assert len(mc) == 12031 and mc["prompt_id"].nunique() == 12031 and (mc["sample_id"] == 0).all()
    assert mc["arrival_s"].is_monotonic_increasing and mc["arrival_s"].iloc[0] == 0.0
    assert (mc["prompt_len"].iloc[0], mc["output_len"].iloc[0]) == (6758, 500)
    conv = validate_trace(convert(str(shared_data / "azure2023" / "AzureLLMInferenceTrace_conv.csv"), "azure"))
    code = validate_trace(convert(str(shared_data / "azure2023" / "AzureLLMInferenceTrace_code.csv"), "azure"))
    assert (len(conv), len(code)) == (19366, 8819)
    assert (conv["prompt_len"].iloc[0], conv["output_len"].iloc[0]) == (374, 44)
    assert conv["arrival_s"].min() == 0.0 and 3000 < conv["arrival_s"].max() < 4000  # about an hour


def test_generic_csv_with_mapping_numbers_samples_within_prompts(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("question,plen,n\nq1,5,10\nq2,6,20\nq1,5,30\n")
    df = validate_trace(
        convert(str(src), "csv", parse_mapping(["prompt_id=question", "prompt_len=plen", "output_len=n"]))
    )
    assert df[["prompt_id", "sample_id", "output_len"]].values.tolist() == [["q1", 0, 10], ["q2", 0, 20], ["q1", 1, 30]]


def test_generic_jsonl_by_name(tmp_path):
    src = tmp_path / "x.jsonl"
    src.write_text('{"prompt_id": 1, "prompt_len": 3, "output_len": 2, "output_ids": [5, 6]}\n')
    df = validate_trace(convert(str(src), "jsonl"))
    assert df["sample_id"].tolist() == [0] and list(df["output_ids"][0]) == [5, 6]


def test_a_tables_other_columns_are_kept_unless_they_mix_kinds(tmp_path):
    """README: other columns (rewards, timings) are kept; one that mixes numbers and text cannot go to Parquet,
    so it is left out with a warning naming it."""
    src = tmp_path / "x.jsonl"
    src.write_text(
        '{"prompt_id": 1, "n": 3, "output_len": 2, "reward": 0.5, "tag": "a", "mixed": 1}\n'
        '{"prompt_id": 1, "n": 4, "output_len": 5, "reward": 1, "tag": "b", "mixed": "x"}\n'
    )
    with pytest.warns(UserWarning, match="column 'mixed' left out"):
        df = convert(str(src), "jsonl", {"prompt_len": "n"})
    out = tmp_path / "x.parquet"
    save_trace(df, out)
    back = load_trace(out)
    assert back["reward"].tolist() == [0.5, 1.0] and back["tag"].tolist() == ["a", "b"]
    assert "mixed" not in back.columns and "n" not in back.columns  # a mapped source is not kept twice
    assert back["prompt_len"].tolist() == [3, 4]


def test_bad_mappings_and_sources(tmp_path):
    with pytest.raises(SeerInputError, match="expected SCHEMA_COLUMN=SOURCE_COLUMN"):
        parse_mapping(["output_len"])
    with pytest.raises(SeerInputError, match="not a schema column"):
        parse_mapping(["length=n"])
    src = tmp_path / "x.csv"
    src.write_text("a,b\n1,2\n")
    with pytest.raises(TraceError, match="mapped source column"):
        convert(str(src), "csv", {"output_len": "zzz"})
    bad = tmp_path / "tot.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(TraceError, match="ToT sample log"):
        convert(str(bad), "tot")


def test_cli_convert_then_stats_on_tot(shared_data, tmp_path):
    out = tmp_path / "cot.parquet"
    proc = run_seer(
        "trace",
        "convert",
        str(shared_data / "tot" / "gpt-4_0.7_naive_cot_sample_100_start900_end1000.json"),
        "--from",
        "tot",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert "100 groups, 10,000 samples" in proc.stdout
    df, meta = load_trace(out, with_meta=True)
    assert meta["tokenizer"] == "smollm2" and len(df) == 10000


BIG, DEEP, LONE = "7" * 5000, "[" * 100000 + "]" * 100000, '"\\ud800"'


@pytest.mark.parametrize(
    "source,text,message",
    [
        ("jsonl", f'{{"prompt_id": {BIG}, "prompt_len": 1, "output_len": 1}}\n', "row 1: invalid JSON (a number has"),
        ("jsonl", f'{{"prompt_id": {DEEP}, "prompt_len": 1, "output_len": 1}}\n', "row 1: invalid JSON (nested too"),
        (
            "jsonl",
            f'{{"prompt_id": {LONE}, "prompt_len": 1, "output_len": 1}}\n',
            "row 1: invalid JSON (a string holds",
        ),
        (
            "mooncake",
            f'{{"timestamp": {BIG}, "input_length": 1, "output_length": 1}}\n',
            "row 1: invalid JSON (a number",
        ),
        (
            "mooncake",
            f'{{"timestamp": {DEEP}, "input_length": 1, "output_length": 1}}\n',
            "row 1: invalid JSON (nested",
        ),
        ("tot", f'[{{"idx": {BIG}, "ys": ["Answer: 24"]}}]', ": not valid JSON (a number has more than"),
        ("tot", DEEP, ": not valid JSON (nested too deeply)"),
        ("tot", '[{"idx": 0, "ys": ["Answer: \\ud800"]}]', ": not valid JSON (a string holds '\\ud800', a lone"),
    ],
)
def test_json_that_python_cannot_take_is_refused_in_one_line_naming_the_file(tmp_path, capsys, source, text, message):
    """Numbers past Python's 4300-digit limit, nesting past its recursion limit, a lone surrogate (not text: the
    tokenizer or the Parquet writer would fail on it)."""
    src = tmp_path / ("in.json" if source == "tot" else "in.jsonl")
    src.write_text(text)
    (tmp_path / "24.csv").write_text("Rank,Puzzles\n1,1 1 4 6\n")  # a ToT log's prompts: only the JSON is wrong
    out = tmp_path / "out.parquet"
    line = cli_error(capsys, "trace", "convert", str(src), "--from", source, "-o", str(out))
    assert line.startswith(f"seer: error: {src}{message if message.startswith(':') else ', ' + message}")
    assert not out.exists()


AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def test_azure_rows_with_different_utc_offsets_are_one_series_in_utc(tmp_path):
    src = tmp_path / "az.csv"
    src.write_text(AZURE_HEADER + "2023-11-16 18:15:46+00:00,374,44\n2023-11-16 18:15:50+05:00,396,109\n")
    df = validate_trace(convert(str(src), "azure"))
    assert df["arrival_s"].tolist() == [5 * 3600 - 4.0, 0.0]  # 18:15:50+05:00 is 13:15:50 UTC, the earliest


def test_an_azure_row_with_extra_fields_is_refused_not_shifted(tmp_path, capsys):
    src = tmp_path / "az.csv"
    src.write_text(AZURE_HEADER + "2023-11-16 18:15:46,374,44,5,6\n")
    out = tmp_path / "out.parquet"
    line = cli_error(capsys, "trace", "convert", str(src), "--from", "azure", "-o", str(out))
    assert line == f"seer: error: {src}, row 1: has 5 fields, the header has 3"
    assert not out.exists()


def test_a_mapped_token_column_is_read_as_the_schemas_own(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("q,n,p,toks\n0,3,1,5 6 7\n")
    mapping = parse_mapping(["prompt_id=q", "output_len=n", "prompt_len=p", "output_ids=toks"])
    df = validate_trace(convert(str(src), "csv", mapping))
    assert [list(map(int, ids)) for ids in df["output_ids"]] == [[5, 6, 7]]
