"""Data files checked row by row before any compute: a file with a bad row is refused, naming the count and the first.

    pytest tests/data/test_files.py
"""
from __future__ import annotations

import gzip
import json
import re

import pytest

from forgetting.config import DatasetConfig
from forgetting.data.files import check_file
from forgetting.data.formats import load_rows
from forgetting.errors import ConfigError

ROWS = [{"q": f"question {i}", "a": f"The answer is: {i}"} for i in range(5)]
CFG = DatasetConfig(name="mine", source="hf", path="org/data", query_field="q", response_field="a")


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_every_format_gives_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(ROWS))  # one JSON array, as MetaMathQA-395K.json
    (tmp_path / "d.csv").write_text("q,a\n" + "".join(f"{r['q']},{r['a']}\n" for r in ROWS))
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in ROWS))
    want = [{"query": r["q"], "response": r["a"]} for r in ROWS]
    for name in ("d.parquet", "d.json", "d.csv", "d.jsonl.gz"):
        assert [pair for _, pair in check_file("dataset.path", str(tmp_path / name), CFG)] == want, name
    _jsonl(tmp_path / "part-2.jsonl", ROWS[3:])
    _jsonl(tmp_path / "part-1.jsonl", ROWS[:3])
    assert [pair for _, pair in check_file("dataset.path", str(tmp_path / "part-*.jsonl"), CFG)] == want


@pytest.mark.parametrize("bad,problem", [
    ({"q": "question", "a": ""}, "'a' is empty"),
    ({"q": "question", "a": " \t"}, "'a' is blank"),
    ({"q": 3, "a": "x"}, "'q' is int 3, not a string"),
    ({"q": "question", "a": None}, "'a' is NoneType None, not a string"),
    ({"question": "q", "a": "x"}, "no field 'q' (it has 'question', 'a')"),
    (["q", "a"], "not an object but list"),
])
def test_a_bad_row_refuses_the_file_naming_count_and_first_line(tmp_path, bad, problem):
    path = _jsonl(tmp_path / "d.jsonl", ROWS[:2] + [bad] + ROWS[2:] + [bad])
    with pytest.raises(ConfigError) as err:
        check_file("dataset.path", path, CFG)
    msg = str(err.value)
    assert msg.startswith(f"dataset.path={path!r} is invalid: expected ") and "\n" not in msg
    assert msg.endswith(f"2 of 7 rows are not (first: line 3: {problem})")


def test_blank_lines_keep_line_numbers_and_unparsable_lines_are_bad_rows(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps(ROWS[0]) + "\n\n{\"q\": \"x\", \"a\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(ConfigError, match=r": 1 of 3 rows are not \(first: line 4: not JSON \(Unterminated string"):
        check_file("dataset.path", str(path), CFG)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ConfigError, match=r"empty.jsonl' is invalid: expected rows with .*: it has no rows$"):
        check_file("dataset.path", str(tmp_path / "empty.jsonl"), CFG)


def test_test_rows_need_an_answer_the_pattern_extracts(tmp_path):
    path = _jsonl(tmp_path / "test.jsonl", ROWS + [{"q": "question", "a": "seven"}])
    assert len(check_file("dataset.test_path", path, CFG)) == 6  # as training rows: fine
    with pytest.raises(ConfigError, match=r"1 of 6 rows are not \(first: line 6: its response has no answer "
                                          r"matching dataset.answer_pattern='The answer is: \(\.\+\)'\)"):
        check_file("dataset.test_path", path, CFG, re.compile(CFG.answer_pattern))


def test_rows_loaded_through_datasets_are_checked_too(tmp_path):
    """What check_file cannot read before any compute (a hub dataset) is checked as it loads."""
    path = _jsonl(tmp_path / "d.jsonl", ROWS[:3] + [{"q": "question", "a": ""}])
    cfg = DatasetConfig(name="mine", source="jsonl", path=path, query_field="q", response_field="a")
    with pytest.raises(ConfigError, match=r"1 of 4 rows are not \(first: row 4: 'a' is empty\)"):
        load_rows(cfg)
    test = DatasetConfig(name="mine", source="jsonl", path=path, test_path=_jsonl(tmp_path / "t.jsonl", ROWS[:2]),
                         query_field="q", response_field="a")
    assert load_rows(test, test=True) == [{"query": r["q"], "response": r["a"]} for r in ROWS[:2]]
