"""The readers turn every format into the same text, vectorised, and planned chunks carry it so
that no chunk reads the original file again."""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from django.core.files.storage import default_storage

from ingestion import readers
from ingestion.models import IngestionBatch, IngestionChunk, RowIssue, SurveyRecord
from ingestion.readers import ReadError, iter_chunks, iter_tables, read_table
from ingestion.services import _local_copy, batch_create, batch_plan, chunk_process, ingest_file
from ingestion.synthetic.generator import generate, write


def _texts(values: list[object]) -> list[str]:
    return readers._xlsx_column(values).to_pylist()


def test_a_spreadsheet_column_with_text_or_blanks_reads_cell_by_cell_as_before() -> None:
    floats = [3.0, -0.0, 0.1, 12.5, 1e-05, 123456789.123, 2.0**60, 1e300, 1 / 3, float("inf"), 4.2e-4, 999999999.5]
    cells: list[object] = [*floats, "", "007", 7, True, False, datetime.date(2024, 1, 31),
                           datetime.datetime(2024, 1, 31, 8, 30), datetime.time(9, 15)]
    rng = np.random.default_rng(3)
    cells += [*(rng.standard_normal(500) * 10.0 ** rng.integers(-6, 12, 500)).tolist(), ""]
    assert _texts(cells) == [readers._cell_text(v) for v in cells]


def test_a_spreadsheet_column_of_numbers_only_is_formatted_by_arrow_as_before() -> None:
    values: list[object] = [3.0, 0.5, 1e-05, 2.5e12]
    assert _texts(values) == pc.cast(pa.array(values, type=pa.float64()), pa.string()).to_pylist()
    assert _texts([12345678901234567, 1]) == ["12345678901234567", "1"]  # integers never pass through a float
    assert _texts(["a", "", "0012"]) == ["a", "", "0012"]
    assert _texts([]) == []


def test_leading_zeros_dates_and_blanks_survive_a_real_workbook(tmp_path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["household_id", "date", "size", "income"])
    ws.append(["00123", datetime.date(2024, 3, 1), 5, 12.75])
    ws.append(["0456", datetime.date(2024, 3, 2), None, 3])
    path = tmp_path / "w.xlsx"
    wb.save(path)
    raw = read_table(path)
    assert raw.headers == ["household_id", "date", "size", "income"]
    assert raw.frame.astype(object).values.tolist() == [["00123", "2024-03-01", "5", "12.75"],
                                                        ["0456", "2024-03-02", "", "3"]]


def _old_json_text(path: Path) -> pd.DataFrame:
    """What the reader gave before: Python's json, a pandas frame, then Arrow's text."""
    frame = pd.DataFrame.from_records(json.loads(path.read_text(encoding="utf-8")))
    return readers._arrow_to_text(pa.Table.from_pandas(frame, preserve_index=False)).frame


TRICKY = [{"a": 'x", {[,]} \\', "b": 1.5, "c": '\\\\"', "d": [1, 2], "e": "é \u2028", "f": None, "g": True},
          {"a": "],[{", "b": 2, "c": "", "d": [], "e": "\\n", "f": "z", "g": False}] * 3


@pytest.mark.parametrize("layout", ["one_line", "compact", "indented", "crlf", "spaced"])
@pytest.mark.parametrize("block", [1, 3, 7, 1 << 20])
def test_a_json_array_reads_as_python_json_did_whatever_its_layout(layout: str, block: int, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    text = {"one_line": json.dumps(TRICKY), "compact": json.dumps(TRICKY, separators=(",", ":")),
            "indented": json.dumps(TRICKY, indent=2, ensure_ascii=False),
            "crlf": json.dumps(TRICKY, indent=1).replace("\n", "\r\n"),
            "spaced": json.dumps(TRICKY).replace("}, {", "}  \t ,\n {")}[layout]
    path = tmp_path / "a.json"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(readers, "_SCAN_BLOCK", block)  # element and escape boundaries across blocks
    raw = read_table(path)
    assert raw.format == "json"
    assert raw.headers == list(TRICKY[0])
    expected = _old_json_text(path)
    assert raw.frame.astype(object).values.tolist() == expected.astype(object).values.tolist()


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "array of objects"),
    ('[{"a": 1}, [1]]', "array of objects"),
    ('[{"a": 1}, 5]', "array of objects"),
    ('[{"a": 1}', "not closed"),
    ('[{"a": "x}]', "not closed"),
    ('[{"a": 1}]]', "unbalanced"),
    ('[{"a": 1} {"a": 2}]', "expected ','"),
])
def test_a_broken_json_array_is_refused_clearly(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(ReadError) as err:
        read_table(path)
    assert err.value.code == "malformed_json" and message in str(err.value)


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json", "ndjson", "parquet"])
def test_chunks_are_the_whole_file_in_order(fmt: str, tmp_path: Path) -> None:
    data, errors = generate(250, seed=4, bad_rate=0.05)
    path = write(data, errors, tmp_path / f"s.{fmt}", fmt)
    whole = read_table(path)
    headers, frames = iter_chunks(path, fmt, 60)
    parts = list(frames)
    # CSV streams at most 60 rows a chunk; a file read whole is cut into equal slices of at most 60.
    assert headers == whole.headers
    assert [len(p) for p in parts] == ([60, 60, 60, 60, 10] if fmt == "csv" else [50] * 5)
    joined = pd.concat(parts, ignore_index=True).astype(object)
    assert joined.values.tolist() == whole.frame.astype(object).values.tolist()


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["xlsx", "json"])
def test_chunks_are_processed_from_the_planned_text_not_the_original(fmt: str, tmp_path: Path,
                                                                     settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_CHUNK_ROWS = 40
    data, errors = generate(100, seed=9, bad_rate=0.05)
    path = write(data, errors, tmp_path / f"s.{fmt}", fmt)
    with path.open("rb") as fh:
        batch = batch_create(fh=fh, original_name=path.name)
    ids = batch_plan(batch.pk, enqueue=False)
    assert len(ids) == 3
    default_storage.delete(batch.file_key)  # a chunk must never need the workbook again
    for chunk_id in ids:
        assert chunk_process(chunk_id)
    batch = IngestionBatch.objects.get(pk=batch.pk)
    assert batch.status == "succeeded" and batch.rejected == errors["row_number"].nunique()
    assert SurveyRecord.objects.filter(batch=batch).count() == batch.accepted == 100 - batch.rejected
    assert not IngestionChunk.objects.filter(batch=batch).exclude(status="done").exists()


def test_a_column_arrow_cannot_type_falls_back_to_cell_by_cell() -> None:
    assert _texts([True, False]) == ["1", "0"]
    assert _texts([1, 2.5]) == ["1", "2.5"]
    assert _texts(["a", None]) == ["a", ""]
    assert _texts([2**70, 1]) == [str(2**70), "1"]  # beyond int64: text, not an overflow


@pytest.mark.parametrize(("rows", "limit", "sizes"), [
    (100_000, 20_000, [12_500] * 8),  # not 5 of 20k: two or four workers finish together
    (300_000, 20_000, [20_000] * 15),
    (40_000, 20_000, [5_000] * 8),
    (9_000, 20_000, [9_000]),  # small files stay whole
    (300, 100, [100] * 3),
    (0, 100, []),
])
def test_a_file_read_whole_is_cut_into_balanced_chunks(rows: int, limit: int, sizes: list[int]) -> None:
    import pyarrow as pa

    from ingestion.readers import _slices

    table = pa.table({"0": pa.array(range(rows))})
    parts = list(_slices(table, limit))
    assert [p.num_rows for p in parts] == sizes
    assert [v for p in parts for v in p.column(0).to_pylist()] == list(range(rows))


@pytest.mark.django_db
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_empty_lines_between_rows_keep_the_row_numbers_a_spreadsheet_shows(tmp_path: Path, newline: str) -> None:
    """Arrow skips empty lines; a spreadsheet shows them as rows.  They are kept as rows (reported
    as missing their required fields), so every later row keeps its number; an empty line inside a
    quoted value stays part of the value, and empty lines after the last row are no rows."""
    data, _ = generate(8, seed=3, bad_rate=0.0)
    data.loc[5, "household_size"] = 0  # an error to find, on spreadsheet row 7 before the edit
    path = write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    lines = [line + newline for line in path.read_text(encoding="utf-8").splitlines()]
    village = lines[0].rstrip().split(",").index("Village")
    cells = next(csv.reader([lines[2]]))
    cells[village] = "Upper" + newline + newline + "Kabale"  # an empty line inside a quoted value
    buf = io.StringIO()
    csv.writer(buf, lineterminator=newline).writerow(cells)
    lines[2] = buf.getvalue()
    # Row 4 and row 5 are empty lines: the data rows from there move down two rows.
    edited = [*lines[:3], newline, newline, *lines[3:], newline, newline]
    path.write_text("".join(edited), encoding="utf-8", newline="")
    batch = ingest_file(path)
    assert batch.row_count == 10 and (batch.accepted, batch.rejected) == (7, 3)
    errors = set(RowIssue.objects.filter(batch=batch, severity="error").values_list("row_number", "field", "rule"))
    assert (9, "household_size", "range") in errors  # row 7 before the two empty lines
    assert {r for r, _, k in errors if k == "required"} == {4, 5}
    assert SurveyRecord.objects.filter(batch=batch, row_number=3).get().village == "Upper" + newline + newline + "Kabale"
    assert sorted(SurveyRecord.objects.filter(batch=batch).values_list("row_number", flat=True)) == [2, 3, 6, 7, 8, 10, 11]


@pytest.mark.django_db
@pytest.mark.parametrize(("rows", "bad"), [(60, 30), (20_000, 17_000)])  # the second past Arrow's first 8 MB block
def test_a_row_that_does_not_line_up_with_the_header_is_rejected_alone_in_its_place(
        tmp_path: Path, settings, rows: int, bad: int) -> None:  # type: ignore[no-untyped-def]
    """A stray unquoted delimiter (domain.md's 'stray comma' in an id, unquoted) refuses that row,
    reported at its spreadsheet row; every other row is stored under its own number."""
    settings.RTV_CHUNK_ROWS = 25 if rows < 100 else 5_000
    data, _ = generate(rows, seed=4, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    lines = path.read_text(encoding="utf-8").split("\n")
    at = bad - 1  # spreadsheet row `bad` is line bad - 1 (0-based, the header is line 0)
    cells = lines[at].split(",")
    cells[3] = cells[3][:6] + "," + cells[3][6:]  # HouseHoldID with a comma, unquoted
    lines[at] = ",".join(cells)
    path.write_text("\n".join(lines), encoding="utf-8")
    batch = ingest_file(path)
    assert batch.status == "succeeded", batch.error
    assert (batch.row_count, batch.accepted, batch.rejected) == (rows, rows - 1, 1)
    issues = list(RowIssue.objects.filter(batch=batch, severity="error").values_list("row_number", "rule"))
    assert issues == [(bad, "ragged_row")]
    stored = dict(SurveyRecord.objects.filter(batch=batch, row_number__in=[bad - 1, bad + 1])
                  .values_list("row_number", "household__household_id"))
    assert stored == {bad - 1: lines[bad - 2].split(",")[3], bad + 1: lines[bad].split(",")[3]}


def _records(rows: int = 5, seed: int = 4) -> list[dict[str, object]]:
    data, _ = generate(rows, seed=seed, bad_rate=0.0)
    return json.loads(data.to_json(orient="records"))


def _write_records(records: list[dict[str, object]], path: Path, encoding: str = "utf-8", bom: bytes = b"") -> Path:
    """The records as a JSON array, NDJSON or Parquet file, by ``path``'s suffix."""
    if path.suffix == ".parquet":
        pd.DataFrame(records).to_parquet(path)
        return path
    text = json.dumps(records) if path.suffix == ".json" else "\n".join(json.dumps(r) for r in records)
    path.write_bytes(bom + text.encode(encoding))
    return path


def _errors(batch: IngestionBatch) -> set[tuple[int, str, str]]:
    return set(RowIssue.objects.filter(batch=batch, severity="error").values_list("row_number", "field", "rule"))


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["json", "ndjson"])
@pytest.mark.parametrize(("value", "rejected"), [("four", 1), ("4", 0)])
def test_a_json_value_of_another_type_is_judged_in_its_row_and_the_rest_is_stored(
        fmt: str, value: str, rejected: int, tmp_path: Path) -> None:
    """Arrow gives a field one type; a file in which one record's household size is text ("four"
    or "4") among numbers is read as text, like a CSV: that row alone meets the validator, and
    every other value reads exactly as it does when the file is consistent."""
    records = _records()
    plain = read_table(_write_records(records, tmp_path / f"plain.{fmt}"))
    records[3]["household_size"] = value
    path = _write_records(records, tmp_path / f"mixed.{fmt}")
    raw = read_table(path)
    expected = plain.frame.astype(object)
    column = plain.headers.index("household_size")
    expected.iloc[3, column] = value
    assert raw.headers == plain.headers
    assert raw.frame.astype(object).values.tolist() == expected.values.tolist()
    batch = ingest_file(path)
    assert batch.status == "succeeded", batch.error
    assert (batch.accepted, batch.rejected) == (5 - rejected, rejected)
    assert _errors(batch) == ({(5, "household_size", "type")} if rejected else set())


def test_json_numbers_read_as_text_keep_the_typed_readers_text(tmp_path: Path) -> None:
    numbers = [4, 4.5, 4.0, 1e-05, 1e20, -0.25, None]
    path = _write_records([{"n": n, "m": "x" if i == 2 else n} for i, n in enumerate(numbers)], tmp_path / "n.json")
    raw = read_table(path)
    typed = raw.frame[0].tolist()  # a field of numbers only: Arrow's types
    assert typed[:3] == ["4", "4.5", "4"] and typed[-1] == ""
    assert raw.frame[1].tolist() == [*typed[:2], "x", *typed[3:]]


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["json", "ndjson", "parquet"])
def test_nested_values_are_kept_as_json_text_and_never_stop_the_file(fmt: str, tmp_path: Path) -> None:
    """KoBo exports carry objects (``_validation_status``) and lists of objects (``_attachments``)
    beside the survey's fields: they read as JSON text, and the mapped fields are stored."""
    records = _records()
    for i, record in enumerate(records):
        record["_validation_status"] = {"uid": "approved"} if i % 2 else {}
        record["_attachments"] = [{"filename": f"p{i}.jpg", "id": i}]
        record["_tags"] = ["a", "b"]
    path = tmp_path / f"k.{fmt}"
    _write_records(records, path)
    raw = read_table(path)
    frame = raw.frame.astype(object)
    attachments = frame[raw.headers.index("_attachments")].tolist()
    assert [json.loads(v) for v in attachments] == [[{"filename": f"p{i}.jpg", "id": i}] for i in range(5)]
    assert frame[raw.headers.index("_tags")].tolist() == ["a b"] * 5
    assert json.loads(frame[raw.headers.index("_validation_status")][1]) == {"uid": "approved"}
    batch = ingest_file(path)
    assert batch.status == "succeeded", batch.error
    assert (batch.accepted, batch.rejected) == (5, 0)


@pytest.mark.django_db
def test_an_error_inside_a_local_copy_reaches_the_caller_as_itself() -> None:
    """Arrow's ArrowNotImplementedError is a NotImplementedError: raised by the caller's block, it
    must not be taken for storage without local paths (which made the copy yield twice)."""
    key = default_storage.save("temp/test-local-copy.txt", io.BytesIO(b"x"))
    try:
        with pytest.raises(pa.ArrowNotImplementedError), _local_copy(key) as path:
            assert path.read_bytes() == b"x"
            raise pa.ArrowNotImplementedError("no kernel")
    finally:
        default_storage.delete(key)


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["json", "ndjson", "parquet"])
def test_booleans_read_as_1_and_0_like_a_spreadsheets(fmt: str, tmp_path: Path) -> None:
    records = _records()
    for i, record in enumerate(records):
        record["latrine_constructed"] = i != 2
    path = tmp_path / f"b.{fmt}"
    _write_records(records, path)
    raw = read_table(path)
    assert raw.frame[raw.headers.index("latrine_constructed")].tolist() == ["1", "1", "0", "1", "1"]
    batch = ingest_file(path)
    assert (batch.status, batch.accepted, batch.rejected) == ("succeeded", 5, 0)
    stored = SurveyRecord.objects.filter(batch=batch).order_by("row_number").values_list("values__latrine_constructed", flat=True)
    assert list(stored) == [1, 1, 0, 1, 1]


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
@pytest.mark.parametrize(("encoding", "bom"), [("utf-8", b"\xef\xbb\xbf"), ("utf-16", b""), ("utf-16-le", b""),
                                               ("utf-16-be", b"")])
def test_a_json_file_with_a_byte_order_mark_or_in_utf16_reads_as_utf8(fmt: str, encoding: str, bom: bytes,
                                                                      tmp_path: Path) -> None:
    records = _records(3)
    records[0]["village"] = "Kabalé"
    plain = read_table(_write_records(records, tmp_path / f"plain.{fmt}"))
    raw = read_table(_write_records(records, tmp_path / f"marked.{fmt}", encoding, bom))
    assert raw.headers == plain.headers
    assert raw.frame.astype(object).values.tolist() == plain.frame.astype(object).values.tolist()


def test_a_json_file_with_zero_bytes_that_is_not_utf16_is_refused_as_an_encoding(tmp_path: Path) -> None:
    path = tmp_path / "z.json"
    path.write_bytes(b'[{"a": "\x00\x00\x00\x00\x00\x00\x00\x00"}]')
    with pytest.raises(ReadError) as err:
        read_table(path)
    assert err.value.code == "bad_encoding"


def _bad_row_after_an_empty_line(tmp_path: Path, cluster: str) -> str:
    """A CSV whose spreadsheet row 2 has ``cluster``, row 4 is an empty line and row 7 a household
    of 999."""
    data, _ = generate(6, seed=4, bad_rate=0.0)
    data.loc[4, "household_size"] = 999
    data.loc[0, "cluster"] = "CLUSTER"
    path = write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    lines = path.read_text(encoding="utf-8").replace("CLUSTER", cluster).splitlines(keepends=True)
    lines.insert(3, "\n")
    return "".join(lines)


@pytest.mark.django_db
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1"])
@pytest.mark.parametrize("cluster", ["Clus 5 west", 'Clus 5" west', 'Clus 5"', '"Clus ""5"" west"'])
def test_an_empty_line_keeps_later_row_numbers_whatever_the_encoding_and_quotes(
        encoding: str, cluster: str, tmp_path: Path) -> None:
    """A quote inside an unquoted value (an inch mark) is a character, as Arrow reads it, not the
    start of a quoted value: the empty line after it is still a row, in UTF-16 as in UTF-8."""
    path = tmp_path / "q.csv"
    path.write_bytes(_bad_row_after_an_empty_line(tmp_path, cluster).encode(encoding))
    batch = ingest_file(path)
    assert batch.status == "succeeded", batch.error
    assert (7, "household_size", "range") in _errors(batch)
    assert {r for r, _, k in _errors(batch) if k == "required"} == {4}
    stored = dict(SurveyRecord.objects.filter(batch=batch).values_list("row_number", "cluster"))
    assert sorted(stored) == [2, 3, 5, 6, 8]
    assert stored[2] == next(csv.reader([cluster]))[0]


CSV_QUOTES = [
    'h1,h2,h3\n1,Clus 5" west,c\n\n2,x,y\n',
    'h1,h2,h3\n1,a5",c\n\n2,"x\n\ny",z\n\n3,q,r\n',
    'h1,h2,h3\n1,"ab"c",d\n\n2,x,y\n',  # after its closing quote a value goes on unquoted
    'h1,h2,h3\n1,"ab""c",d\n\n2,"",""\n\n3,"""",x\n',
    'h1,h2,h3\n1,"a\n\nb",d\n2,x,y\n\n',
    'h1,h2,h3\n1, "a,b\n\n2,x,y\n',  # a quote after a space is text
    'h1,h2,h3\r\n1,"a\r\n\r\nb"",""c",d\r\n\r\n2,x 1"",y\r\n\r\n3,"z""",w\r\n',
]


@pytest.mark.parametrize("text", CSV_QUOTES)
@pytest.mark.parametrize("block", [1, 2, 3, 5, 1 << 20])
def test_empty_lines_are_rows_exactly_where_the_csv_parser_sees_them(text: str, block: int, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the quotes, every empty line the parser reads between rows is a row of empty cells
    (Python's csv module agrees with Arrow on quotes), across any cut of the file into blocks."""
    monkeypatch.setattr(readers, "_BLANK_SCAN_BLOCK", block)
    path = tmp_path / "q.csv"
    path.write_bytes(text.encode())
    rows = list(csv.reader(io.StringIO(text, newline="")))[1:]
    while rows and not rows[-1]:
        rows.pop()
    assert read_table(path).frame.values.tolist() == [row or ["", "", ""] for row in rows]


HEADER = "District,Cluster,Village,HouseHoldID,HouseholdSize\n"


def _csv_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "e.csv"
    path.write_bytes(data)
    return path


def test_utf8_with_one_stray_byte_is_refused_naming_its_row_not_read_as_latin_1(tmp_path: Path) -> None:
    """Read as Latin-1, every accent of the file would be garbled ("KamwÃ©nge"): refused instead,
    saying where the bad byte is (the row as a spreadsheet numbers it)."""
    text = HEADER.encode() + "Rukungiri,C1,Kamwénge,RUK-ABC-DEF-G1,5\n".encode() + b"Rukungiri,C1,V\xff1,RUK-ABC-DEF-G2,5\n"
    with pytest.raises(ReadError) as err:
        read_table(_csv_bytes(tmp_path, text))
    assert err.value.code == "bad_encoding"
    at = text.index(b"\xff")
    assert "row 3" in str(err.value) and f"byte {at}" in str(err.value)


def test_a_stray_byte_past_the_first_mib_of_a_utf8_file_is_refused_too(tmp_path: Path) -> None:
    rows = "".join(f"Rukungiri,C1,Kamwénge,RUK-ABC-DEF-G{i},5\n" for i in range(30_000)).encode()
    text = HEADER.encode() + rows + b"Rukungiri,C1,V\xe91,RUK-ABC-DEF-G2,5\n"
    assert len(text) > 1 << 20
    with pytest.raises(ReadError) as err:
        read_table(_csv_bytes(tmp_path, text))
    assert err.value.code == "bad_encoding" and "row 30002" in str(err.value)


@pytest.mark.parametrize(("village", "encoding"), [
    ("Kyamu’gyera “Upper” – €5", "cp1252"),  # Excel's "ANSI" CSV: 0x92 is ’, not a control character
    ("Kabalé", "cp1252"),
])
def test_a_single_byte_file_reads_as_windows_1252(village: str, encoding: str, tmp_path: Path) -> None:
    path = _csv_bytes(tmp_path, (HEADER + f"Rukungiri,C1,{village},RUK-ABC-DEF-G1,5\n").encode(encoding))
    raw = read_table(path)
    assert raw.encoding == "cp1252" and raw.frame.loc[0, 2] == village
    _, tables = readers.iter_tables(path, "csv", 10)
    assert [t.column(2).to_pylist() for t in tables] == [[village]]


def test_a_single_byte_file_with_a_byte_windows_1252_leaves_undefined_reads_as_latin_1(tmp_path: Path) -> None:
    path = _csv_bytes(tmp_path, HEADER.encode() + b"Rukungiri,C1,Kabal\xe9\x81,RUK-ABC-DEF-G1,5\n")
    raw = read_table(path)
    assert raw.encoding == "latin-1" and raw.frame.loc[0, 2] == "Kabalé\x81"


@pytest.mark.parametrize("end", ["\n", ""])
def test_a_small_latin_1_file_whose_only_accent_is_at_its_very_end_is_read(end: str, tmp_path: Path) -> None:
    """The allowance for a character cut at the end of a sample is for a sample, not a whole file."""
    text = HEADER + "Rukungiri,C1,V1,RUK-ABC-DEF-G1,5\nRukungiri,C1,V2,RUK-ABC-DEF-G2,5\nRukungiri,C1,Kaf\xe9" + end
    raw = read_table(_csv_bytes(tmp_path, text.replace("Kaf\xe9", "V3,RUK-ABC-DEF-G3,Kaf\xe9").encode("latin-1")))
    assert raw.frame.loc[2, 4] == "Kafé"


@pytest.mark.django_db
@pytest.mark.parametrize("row", [3, 40])
def test_a_zero_byte_rejects_its_row_wherever_it_is(row: int, tmp_path: Path) -> None:
    """A zero byte early in the file is treated as one later is: its row is rejected, the rest stored."""
    data, _ = generate(40, seed=5, bad_rate=0.0)
    data.loc[row - 2, "cluster"] = "CLUSTERNUL"
    path = write(data, data.iloc[0:0], tmp_path / "n.csv", "csv")
    path.write_bytes(path.read_bytes().replace(b"CLUSTERNUL", b"C\x001"))
    assert (path.read_bytes().index(b"\x00") < 4096) == (row == 3)
    batch = ingest_file(path)
    assert (batch.status, batch.accepted, batch.rejected) == ("succeeded", 39, 1)
    assert _errors(batch) == {(row, "cluster", "invalid_characters")}


def test_a_file_of_zero_and_control_bytes_is_still_refused_as_binary(tmp_path: Path) -> None:
    with pytest.raises(ReadError) as err:
        read_table(_csv_bytes(tmp_path, bytes(range(256)) * 40))
    assert err.value.code == "bad_encoding"


@pytest.mark.django_db
def test_a_binary_parquet_column_nobody_maps_never_stops_the_file(tmp_path: Path) -> None:
    """A GeoParquet ``geometry`` column (WKB, not UTF-8) reads as base64 text; bytes that are UTF-8
    read as that text."""
    import base64
    import struct

    import pyarrow.parquet as pq

    data, _ = generate(4, seed=5, bad_rate=0.0)
    wkb = [struct.pack("<bIdd", 1, 1, 30.0 + i, -0.5 - i) for i in range(4)]
    table = pa.Table.from_pandas(data, preserve_index=False)
    table = table.append_column("geometry", pa.array(wkb, pa.binary()))
    table = table.append_column("note", pa.array([b"ok"] * 4, pa.binary()))
    path = tmp_path / "g.parquet"
    pq.write_table(table, path)
    raw = read_table(path)
    assert raw.frame[raw.headers.index("geometry")].tolist() == [base64.b64encode(v).decode() for v in wkb]
    assert raw.frame[raw.headers.index("note")].tolist() == ["ok"] * 4
    batch = ingest_file(path)
    assert (batch.status, batch.accepted, batch.rejected) == ("succeeded", 4, 0)


def _sheet(ws, rows: list[list[object]]) -> None:  # type: ignore[no-untyped-def]
    for row in rows:
        ws.append(row)


XLSX_ROWS: list[list[object]] = [["District", "Cluster", "Village", "HouseHoldID", "HouseholdSize"],
                                 ["Rukungiri", "C1", "V1", "RUK-ABC-DEF-G1", 5],
                                 ["Rukungiri", "C1", "V1", "RUK-ABC-DEF-G2", 6]]


@pytest.mark.parametrize("first", ["hidden", "chart", "empty"])
def test_a_workbook_is_read_from_its_first_visible_worksheet_with_data(first: str, tmp_path: Path) -> None:
    """A hidden ``choices`` list, a chart sheet or an empty "Instructions" sheet before the data
    is passed over."""
    from openpyxl import Workbook
    from openpyxl.chart import BarChart, Reference

    wb = Workbook()
    before = wb.active
    before.title = "Instructions"
    data = wb.create_sheet("Data")
    _sheet(data, XLSX_ROWS)
    if first == "hidden":
        _sheet(before, [["list_name", "name", "label"], ["yn", "1", "Yes"]])
        before.sheet_state = "hidden"
        wb.active = 1
    elif first == "chart":
        wb.remove(before)
        chart = BarChart()
        chart.add_data(Reference(data, min_col=5, min_row=1, max_row=3), titles_from_data=True)
        wb.create_chartsheet("Chart", 0).add_chart(chart)
    path = tmp_path / "w.xlsx"
    wb.save(path)
    raw = read_table(path)
    assert raw.headers == XLSX_ROWS[0]
    assert raw.frame.values.tolist() == [[str(v) for v in row] for row in XLSX_ROWS[1:]]


def test_a_merged_range_of_cells_holds_its_value_in_every_cell(tmp_path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    _sheet(wb.active, [*XLSX_ROWS, ["Mitooma", "C2", "V", "MIT-ABC-DEF-G1", 4], [None, "C2", "V", "MIT-ABC-DEF-G2", 4]])
    wb.active.merge_cells("A4:A5")
    wb.active.merge_cells("B2:C3")
    path = tmp_path / "m.xlsx"
    wb.save(path)
    frame = read_table(path).frame
    assert frame[0].tolist() == ["Rukungiri", "Rukungiri", "Mitooma", "Mitooma"]
    assert frame.loc[:1, 1:2].values.tolist() == [["C1", "C1"], ["C1", "C1"]]  # B2:C3 from B2


def test_a_sheet_made_wide_by_a_stray_cell_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """One value at column XFD would make every row 16,384 cells wide (about 1 GB per thousand rows)."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["District", "Cluster", "Village", "HouseHoldID", "HouseholdSize"])
    ws.append(["Kanungu", "C", "V", "KAN-A-B-K1", 4])
    ws["XFD1"] = "stray"
    path = tmp_path / "wide.xlsx"
    wb.save(path)
    with pytest.raises(ReadError) as err:
        read_table(path)
    assert err.value.code == "too_many_columns" and "16384 columns" in str(err.value)


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_a_header_only_csv_has_no_rows_with_or_without_a_final_line_break(tmp_path: Path, ending: bytes) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(b"District,Cluster,Village,HouseHoldID,HouseholdSize" + ending)
    raw = read_table(path)
    assert raw.headers[:2] == ["District", "Cluster"] and len(raw.frame) == 0
    headers, frames = iter_chunks(path, "csv", 10)
    assert headers == raw.headers and sum(len(f) for f in frames) == 0


@pytest.mark.django_db
def test_an_excel_error_cell_reads_as_its_text_as_a_csv_export_gives_it(tmp_path: Path) -> None:
    """#DIV/0! in a number column is a type finding at its row, not an unanswered question."""
    from openpyxl import load_workbook

    data, _ = generate(6, seed=8, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "e.xlsx", "xlsx")
    wb = load_workbook(path)
    ws = wb.worksheets[0]
    col = next(c.column for c in ws[1] if c.value == "TimeToOPD")
    ws.cell(row=3, column=col).value = "#DIV/0!"
    ws.cell(row=3, column=col).data_type = "e"
    ws.cell(row=5, column=col).value = "#N/A"
    ws.cell(row=5, column=col).data_type = "e"
    wb.save(path)
    raw = read_table(path)
    column = raw.frame.iloc[:, raw.headers.index("TimeToOPD")].tolist()
    assert column[1] == "#DIV/0!" and column[3] == "#N/A"  # rows 3 and 5 as the spreadsheet numbers them
    ingest_file(path)
    found = set(RowIssue.objects.filter(field="time_to_opd", severity="error").values_list("row_number", "rule"))
    assert found == {(3, "type"), (5, "type")}


@pytest.mark.django_db
def test_a_workbook_whose_formulas_were_never_calculated_is_refused_naming_the_cells(tmp_path: Path) -> None:
    """A program (openpyxl here) writes formulas without their results; calamine reads each as
    empty, which would store every such value as unanswered.  The file is refused, naming cells and
    the fix; nothing of it is stored."""
    from openpyxl import load_workbook

    data, _ = generate(6, seed=8, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "p.xlsx", "xlsx")
    wb = load_workbook(path)
    ws = wb.worksheets[0]
    col = next(c.column for c in ws[1] if c.value == "HouseholdSize")
    for row in range(2, 8):
        ws.cell(row=row, column=col).value = f"=2+{row}"
    wb.save(path)
    with pytest.raises(ReadError) as err:
        read_table(path)
    assert err.value.code == "formulas_without_values"
    letter = ws.cell(row=2, column=col).column_letter
    assert f"{letter}2 (=2+2)" in str(err.value) and "6 formula cell(s)" in str(err.value)
    assert "save it" in str(err.value)
    with pytest.raises(ReadError):
        ingest_file(path)
    batch = IngestionBatch.objects.get()
    assert batch.status == "failed" and batch.error.startswith("formulas_without_values")
    assert not SurveyRecord.objects.exists()


def _workbook_with_cell_e2(path: Path, cell: str, after_sheets: str = "") -> Path:
    """A generated three-row workbook whose cell E2 (household size, row 2) is ``cell``'s XML, and
    with ``after_sheets`` written into workbook.xml after its sheet list."""
    import zipfile

    data, _ = generate(3, seed=9, bad_rate=0.0)
    write(data, data.iloc[0:0], path, "xlsx")
    with zipfile.ZipFile(path) as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    parts["xl/worksheets/sheet1.xml"] = sheet.replace(re.search(r'<c r="E2"[^>]*>.*?</c>', sheet).group(0), cell).encode()
    parts["xl/workbook.xml"] = parts["xl/workbook.xml"].replace(b"</sheets>", b"</sheets>" + after_sheets.encode())
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in parts.items():
            zf.writestr(name, blob)
    return path


@pytest.mark.parametrize(("cell", "read_as"), [
    ('<c r="E2"><f>2+5</f><v>7</v></c>', "7"),  # Excel, LibreOffice: the result saved
    ('<c r="E2"><f t="shared" ref="E2:E4" si="0">2+5</f><v>7</v></c>', "7"),
    ('<c r="E2" t="str"><f>IF(A2="","",A2)</f><v></v></c>', ""),  # Excel's empty-text result
    ('<c r="E2"><f>2+5</f><v /></c>', None),  # openpyxl: no result
    ('<c r="E2"><f>2+5</f></c>', None),
    ('<c s="0" r="E2">\n  <f>2+5</f>\n  <v></v>\n</c>', None),  # another order, pretty-printed
    ('<c r="E2"><f t="shared" si="0"/></c>', None),
])
def test_formulas_read_as_their_saved_results_and_a_workbook_without_them_is_refused(
        tmp_path: Path, cell: str, read_as: str | None) -> None:
    path = _workbook_with_cell_e2(tmp_path / "s.xlsx", cell)
    if read_as is None:
        with pytest.raises(ReadError) as err:
            read_table(path)
        assert err.value.code == "formulas_without_values" and "E2" in str(err.value)
    else:
        raw = read_table(path)
        assert raw.headers[4] == "HouseholdSize" and raw.frame.iloc[0, 4] == read_as


@pytest.mark.parametrize(("cell", "flag", "read_as"), [
    # XlsxWriter: a placeholder 0 for every formula, and a flag asking the opener to recalculate.
    ('<c r="E2"><f>2+5</f><v>0</v></c>', '<calcPr calcId="124519" fullCalcOnLoad="1"/>', None),
    ('<c r="E2" t="str"><f>A2</f><v></v></c>', '<calcPr fullCalcOnLoad="true"/>', None),
    ('<c r="E2"><f>2+5</f><v>0</v></c>', '<x:calcPr x:fullCalcOnLoad="1"/>', None),
    # Saved by Excel or LibreOffice: calculated, the flag gone; a result of 0 is a result.
    ('<c r="E2"><f>2-2</f><v>0</v></c>', '<calcPr calcId="191029"/>', "0"),
    # The flag without a formula in the data sheet: nothing is a placeholder.
    ('<c r="E2"><v>7</v></c>', '<calcPr calcId="124519" fullCalcOnLoad="1"/>', "7"),
])
def test_a_workbook_asking_to_be_recalculated_on_opening_has_placeholders_not_results(
        tmp_path: Path, cell: str, flag: str, read_as: str | None) -> None:
    """XlsxWriter saves each formula with the value 0 and marks the workbook to be recalculated when
    opened; calamine would read every such cell as 0, a plausible answer stored without a word."""
    if flag.startswith("<x:"):
        flag = flag.replace("/>", ' xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main"/>')
    path = _workbook_with_cell_e2(tmp_path / "w.xlsx", cell, after_sheets=flag)
    if read_as is None:
        with pytest.raises(ReadError) as err:
            read_table(path)
        assert err.value.code == "formulas_without_values" and "E2" in str(err.value)
        assert "placeholders" in str(err.value) and "save it" in str(err.value)
    else:
        raw = read_table(path)
        assert raw.headers[4] == "HouseholdSize" and raw.frame.iloc[0, 4] == read_as


@pytest.mark.django_db
@pytest.mark.parametrize(("layout", "mixed_types"), [
    ("null\n{a}\n{b}\n", False),
    ("\ufeff \n null \n{a}\n{b}\n", False),  # a byte order mark and blank lines before it
    ("{a}\nnull\n{b}\n", False),
    ("null\n{a}\n{b}\n", True),  # Python's reader (a field of two types) takes it the same way
])
def test_a_null_line_in_ndjson_is_a_rejected_row_in_its_place_not_a_crash(
        tmp_path: Path, layout: str, mixed_types: bool) -> None:
    """pyarrow 26's JSON reader kills the process on a first record of null (a worker, or the web
    server in the embedded run).  Read as a row of empty cells, as Arrow reads a later one, it is
    rejected alone and the rest stored."""
    a, b = _records(2, seed=12)
    if mixed_types:
        b["household_size"] = "five"
    path = tmp_path / "n.ndjson"
    path.write_bytes(layout.replace("{a}", json.dumps(a)).replace("{b}", json.dumps(b)).encode("utf-8"))
    assert len(read_table(path).frame) == 3
    batch = ingest_file(path)
    assert (batch.row_count, batch.accepted + batch.rejected) == (3, 3)
    assert batch.rejected == (2 if mixed_types else 1)


@pytest.mark.parametrize(("layout", "element", "shown"), [
    ("[null, {a}, {b}]", 1, "null"),
    ("[{a}, null, {b}]", 2, "null"),
    ("[{a},\n  {b},\n  5\n]", 3, "5"),
    ('[{a}, "x{{]", {b}]', 2, '"x{{]"'),
])
def test_an_array_element_that_is_not_an_object_is_refused_by_its_place(
        tmp_path: Path, layout: str, element: int, shown: str) -> None:
    a, b = _records(2, seed=12)
    path = tmp_path / "n.json"
    path.write_bytes(layout.replace("{a}", json.dumps(a)).replace("{b}", json.dumps(b)).encode("utf-8"))
    with pytest.raises(ReadError) as err:
        read_table(path)
    assert err.value.code == "malformed_json"
    assert f"element {element} is not an object ({shown})" in str(err.value)


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
def test_a_json_file_in_latin_1_is_refused_as_an_encoding_not_a_failed_plan(tmp_path: Path, fmt: str) -> None:
    record = b'{"District": "Kanungu", "Cluster": "Caf\xe9", "Village": "V", "HouseHoldID": "KAN-A-B-K1", "HouseholdSize": 4}'
    path = tmp_path / f"l1.{fmt}"
    path.write_bytes(b"[" + record + b"]" if fmt == "json" else record + b"\n")
    with pytest.raises(ReadError) as err:
        _, tables = iter_tables(path, fmt, 100)
        list(tables)
    assert err.value.code == "bad_encoding"


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
@pytest.mark.parametrize("records", [
    [b'{"District": "Kanungu", "Caf\xe9": 1, "HouseHoldID": "KAN-A-B-K1"}'],  # a field's name, not a value
    # Types that change between records send the file to the slower reader, which must say the same.
    [b'{"District": "Kanungu", "HouseholdSize": 4}', b'{"District": "Kanungu", "HouseholdSize": "four", "Caf\xe9": 1}'],
])
def test_a_json_field_name_that_is_not_utf8_is_refused_as_an_encoding_not_a_failed_plan(
        tmp_path: Path, fmt: str, records: list[bytes]) -> None:
    """Found by fuzzing the readers: Arrow read the name, then could not give it back (UnicodeDecodeError),
    and the batch failed as "plan_failed" with Python's words."""
    path = tmp_path / f"k.{fmt}"
    path.write_bytes(b"[" + b",".join(records) + b"]" if fmt == "json" else b"\n".join(records) + b"\n")
    with pytest.raises(ReadError) as err:
        _, tables = iter_tables(path, fmt, 100)
        list(tables)
    assert err.value.code == "bad_encoding" and "UTF-8" in str(err.value)


@pytest.mark.django_db
def test_formulas_that_give_empty_text_below_the_data_make_no_rows(tmp_path: Path) -> None:
    """A sheet whose formulas were copied down past the data: Excel saves each such cell with the
    value "" and calamine counts those rows into the sheet.  They are not rows of the file (no
    phantom rejected rows); a blank row between data rows still is one, as the spreadsheet numbers it."""
    import zipfile

    data, _ = generate(3, seed=9, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "f.xlsx", "xlsx")
    with zipfile.ZipFile(path) as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    # The third data row moves from row 4 to row 5; row 4 holds only a formula giving "".
    last = re.search(r'<row r="4">.*?</row>', sheet).group(0)
    moved = re.sub(r'r="([A-Z]*)4"', r'r="\g<1>5"', last)
    formula = '<row r="4"><c r="A4" t="str"><f>""</f><v></v></c></row>'
    below = "".join(f'<row r="{r}"><c r="A{r}" t="str"><f>IF(B{r}="","",B{r})</f><v></v></c>'
                    f'<c r="D{r}" t="str"><f>""</f><v></v></c></row>' for r in range(6, 40))
    sheet = sheet.replace(last, formula + moved).replace("</sheetData>", below + "</sheetData>")
    parts["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in parts.items():
            zf.writestr(name, blob)
    raw = read_table(path)
    assert len(raw.frame) == 4  # rows 2, 3, the blank row 4 and row 5: nothing from the formulas below
    batch = ingest_file(path)
    assert (batch.row_count, batch.accepted, batch.rejected) == (4, 3, 1)
    assert set(RowIssue.objects.filter(batch=batch, severity="error").values_list("row_number", flat=True)) == {4}


@pytest.mark.django_db
@pytest.mark.parametrize("chunk_rows", [2, 1000])
def test_a_csv_ending_in_lines_of_delimiters_has_no_rows_after_its_data(  # type: ignore[no-untyped-def]
        tmp_path: Path, chunk_rows: int, settings) -> None:
    """Excel saves formulas copied down past the data as lines of commas: not rows of the survey,
    wherever the chunks fall.  A line of commas between data rows is still a row, at its number."""
    settings.RTV_CHUNK_ROWS = chunk_rows
    data, _ = generate(3, seed=9, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "c.csv", "csv")
    lines = path.read_text().splitlines()
    commas = "," * (len(lines[0].split(",")) - 1)
    path.write_text("\n".join([*lines[:3], commas, lines[3], *([commas] * 7), " " + commas]) + "\n")
    raw = read_table(path)
    assert len(raw.frame) == 4
    _, frames = iter_chunks(path, "csv", chunk_rows)
    assert sum(len(f) for f in frames) == 4
    batch = ingest_file(path)
    assert (batch.row_count, batch.accepted, batch.rejected) == (4, 3, 1)
    assert set(RowIssue.objects.filter(batch=batch, severity="error").values_list("row_number", flat=True)) == {4}


def test_a_duration_cell_reads_as_excel_shows_it(tmp_path: Path) -> None:
    """Excel shows a duration as [h]:mm:ss ("30:00:00"), and a finding on it should quote that, not
    Python's "1 day, 6:00:00"."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["household_id", "TimeToOPD"])
    ws.append(["A-1", datetime.timedelta(days=1, hours=6)])
    ws.append(["A-2", datetime.timedelta(minutes=45, seconds=30)])
    ws.append(["A-3", 30])
    path = tmp_path / "d.xlsx"
    wb.save(path)
    assert read_table(path).frame[1].tolist() == ["30:00:00", "0:45:30", "30"]


def test_a_value_nested_thousands_deep_is_refused_by_its_column_not_a_failed_plan(tmp_path: Path) -> None:
    (record,) = _records(1, seed=12)
    path = tmp_path / "deep.json"
    text = json.dumps([record])[:-2] + ', "extra": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}]"
    path.write_text(text)
    with pytest.raises(ReadError) as err:
        _, tables = iter_tables(path, "json", 100)
        list(tables)
    assert err.value.code == "nested_too_deep" and "'extra'" in str(err.value)
