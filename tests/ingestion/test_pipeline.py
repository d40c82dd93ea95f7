"""Generated files in every format ingest the same way; injected errors are rejected, nothing else is."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ingestion.models import IngestionBatch, RowIssue, SurveyRecord
from ingestion.readers import ReadError
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from quality.rules import forget_rules
from rtv.selectors import forget_schema

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def generated() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(600, seed=11, bad_rate=0.05)


def ingest(path: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    from io import StringIO

    out = StringIO()
    call_command("ingest_file", str(path), "--json", *extra, stdout=out)
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json", "ndjson", "parquet"])
def test_every_format_ingests_the_same_rows_labels_and_errors(fmt: str, generated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, errors = generated
    path = tmp_path / f"survey.{fmt}"
    write(data, errors, path, fmt)
    summary = ingest(path)
    assert summary["rows"] == 600
    assert summary["rejected"] == errors["row_number"].nunique() > 0
    assert summary["accepted"] == 600 - summary["rejected"]
    assert sum(summary["label_counts"].values()) == summary["accepted"]
    # Exactly the injected (row, field, rule) triples are errors: no more, no fewer.
    found = set(RowIssue.objects.filter(severity="error").values_list("row_number", "field", "rule"))
    expected = set(errors[["row_number", "field", "rule"]].itertuples(index=False, name=None))
    assert found == expected


def test_formats_agree_with_each_other_on_label_counts(generated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, errors = generated
    counts = []
    for fmt in ("csv", "parquet"):
        path = tmp_path / f"s.{fmt}"
        write(data, errors, path, fmt)
        counts.append(ingest(path)["label_counts"])
    assert counts[0] == counts[1]


def test_bulk_writes_use_a_constant_number_of_queries_whatever_the_row_count(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    from quality.reference import stored_reference
    from quality.rules import active_rules

    # Groups too small for their own statistics read the stored ones, once per process and while
    # they last (RTV_QUALITY_REFERENCE_SECONDS): kept for the test, as a worker keeps them.
    settings.RTV_QUALITY_REFERENCE_SECONDS = 3600
    # An upload just before: each measured batch closes with another's chunks within its window,
    # and looks for late duplicates among them (a fixed number of queries too).
    data, errors = generate(10, seed=3, bad_rate=0.0)
    ingest_file(write(data, errors, tmp_path / "before.csv", "csv"))
    counts = []
    for rows in (50, 1000):
        data, errors = generate(rows, seed=rows, bad_rate=0.0)
        path = tmp_path / f"n{rows}.csv"
        write(data, errors, path, "csv")
        stored_reference(active_rules())
        forget_schema()  # both runs read the contract and the rules from the database
        forget_rules()
        with CaptureQueriesContext(connection) as ctx:
            ingest_file(path)
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]
    assert SurveyRecord.objects.count() == 1060


def test_records_go_to_postgresql_by_copy(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    if connection.vendor != "postgresql":
        pytest.skip("COPY is the PostgreSQL path; SQLite uses bulk_create")

    statements: list[str] = []
    original = psycopg.Cursor.copy

    def spy(self, statement, *args, **kwargs):  # type: ignore[no-untyped-def]
        statements.append(str(statement))
        return original(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", spy)
    data, errors = generate(200, seed=5, bad_rate=0.05)
    write(data, errors, tmp_path / "s.csv", "csv")
    ingest_file(tmp_path / "s.csv")
    tables = " ".join(statements)
    assert "ingestion_surveyrecord" in tables and "ingestion_rowissue" in tables


def test_an_unreadable_file_fails_clearly_and_is_recorded(tmp_path: Path) -> None:
    bad = tmp_path / "broken.xlsx"
    bad.write_bytes(b"this is not a workbook")
    with pytest.raises(ReadError) as exc:
        ingest_file(bad)
    assert exc.value.code == "malformed_xlsx"
    batch = IngestionBatch.objects.get()
    assert batch.status == "failed" and batch.error.startswith("malformed_xlsx")


def test_an_unsupported_extension_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "survey.docx"
    path.write_bytes(b"x")
    with pytest.raises(ReadError) as exc:
        ingest_file(path)
    assert exc.value.code == "unsupported_format"


def test_the_original_file_is_kept_under_raw_with_its_lineage(generated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from django.core.files.storage import default_storage

    data, errors = generated
    path = tmp_path / "lineage.csv"
    write(data, errors, path, "csv")
    batch = ingest_file(path)
    assert batch.file_key.startswith("raw/") and default_storage.exists(batch.file_key)
    assert default_storage.open(batch.file_key).read() == path.read_bytes()
    assert len(batch.sha256) == 64 and batch.size_bytes == path.stat().st_size
    assert batch.row_count == 600 and batch.column_count == 75
    assert [c["field"] for c in batch.header_mapping][11:13] == ["vsla_profits_ugx", "vsla_profits_usd"]
    assert SurveyRecord.objects.filter(batch=batch).exclude(row_number=None).count() == batch.accepted


def test_a_file_missing_a_required_column_rejects_rows_naming_the_field(tmp_path: Path) -> None:
    data, _ = generate(20, seed=1)
    frame = data.drop(columns=["village"])
    path = tmp_path / "novillage.json"
    frame.to_json(path, orient="records")
    summary = ingest(path)
    assert summary["rejected"] == 20
    assert set(RowIssue.objects.values_list("field", "rule").distinct()) >= {("village", "required")}


def test_unknown_columns_are_ignored_and_recorded_in_the_mapping(tmp_path: Path) -> None:
    data, _ = generate(10, seed=2)
    data["enumerator_note"] = "x"
    path = tmp_path / "extra.parquet"
    data.to_parquet(path)
    batch = ingest_file(path)
    assert batch.accepted == 10
    assert {"position": 75, "header": "enumerator_note", "field": None} in batch.header_mapping


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_files_collection_times_are_stored_and_local_times_read_as_kampala_time(tmp_path: Path, fmt: str) -> None:
    """A device always sends an offset; a file may not (a spreadsheet's date cell): its times are
    Uganda's (UTC+3), a date alone that day's midnight.  The records keep them (temporal features)."""
    from datetime import datetime

    data, _ = generate(5, seed=3, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    given = ["2026-03-05T10:00:00+03:00", "2026-03-05 10:00", "2026-03-05", "2026-03-05T07:30:00Z", ""]
    if fmt == "csv":
        frame["collected_at"] = given
        frame.to_csv(path, index=False)
    else:  # date cells, as Excel stores them (no time zone), and an empty cell
        frame["collected_at"] = [datetime(2026, 3, 5, 10), datetime(2026, 3, 5, 10), datetime(2026, 3, 5),
                                 datetime(2026, 3, 5, 10, 30), None]
        path = tmp_path / "a.xlsx"
        frame.to_excel(path, index=False)
    batch = ingest_file(path)
    assert (batch.accepted, batch.rejected) == (5, 0)
    stored = dict(SurveyRecord.objects.filter(batch=batch).values_list("row_number", "collected_at"))
    expected = ["2026-03-05T07:00:00Z", "2026-03-05T07:00:00Z", "2026-03-04T21:00:00Z", "2026-03-05T07:30:00Z", None]
    assert [None if stored[r] is None else stored[r].isoformat().replace("+00:00", "Z") for r in range(2, 7)] == expected


def test_excels_own_renderings_of_a_date_in_a_csv_are_read_and_day_month_numbers_are_not_guessed(tmp_path: Path) -> None:
    """A CSV saved by Excel writes a date cell as the computer's locale shows it, or as its serial
    number when the column is General.  Month names and serials cannot be misread; "05/03/2026" is
    the 5th of March in Kampala and the 3rd of May in an American copy of Excel, so that row is
    refused with the others stored."""
    data, _ = generate(5, seed=3, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["collected_at"] = ["5-Mar-2026", "05 Mar 26 10:30", "46086", "46086.4375", "05/03/2026 10:00"]
    frame.to_csv(path, index=False)
    batch = ingest_file(path)
    assert (batch.accepted, batch.rejected) == (4, 1)
    stored = dict(SurveyRecord.objects.filter(batch=batch).values_list("row_number", "collected_at"))
    assert [stored[r].isoformat().replace("+00:00", "Z") for r in range(2, 6)] == [
        "2026-03-04T21:00:00Z", "2026-03-05T07:30:00Z", "2026-03-04T21:00:00Z", "2026-03-05T07:30:00Z"]


def test_a_files_gps_points_are_stored_encrypted_as_a_devices_are(tmp_path: Path) -> None:
    data, _ = generate(3, seed=3, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["gps_lat"], frame["gps_lon"] = ["-0.91", "", "-1.02"], ["29.8", "", "29.95"]
    frame["gps_accuracy_m"] = ["6", "", ""]
    frame.to_csv(path, index=False)
    batch = ingest_file(path)
    assert batch.accepted == 3
    points = dict(SurveyRecord.objects.filter(batch=batch).values_list("row_number", "gps"))
    assert points == {2: {"lat": -0.91, "lon": 29.8, "accuracy_m": 6.0}, 3: None, 4: {"lat": -1.02, "lon": 29.95}}
    with connection.cursor() as cursor:  # encrypted at rest: the column holds no coordinate
        cursor.execute("SELECT gps FROM ingestion_surveyrecord WHERE gps IS NOT NULL")
        assert all("29.8" not in row[0] and "-0.91" not in row[0] for row in cursor.fetchall())


def _no_known_columns(tmp_path: Path, kind: str) -> Path:
    data, _ = generate(4, seed=5, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "s.csv", "csv")
    if kind == "unrelated_csv":
        path.write_text("foo,bar,baz\n1,2,3\n4,5,6\n7,8\n")  # a short row too: no IndexError either
    elif kind == "title_above_csv":
        path.write_bytes(b"RTV household survey export 2024\n" + path.read_bytes())
    elif kind == "wrapped_json":
        path = tmp_path / "s.json"
        path.write_text(json.dumps({"records": json.loads(data.to_json(orient="records"))}))
    elif kind == "title_above_xlsx":
        from openpyxl import load_workbook

        path = write(data, data.iloc[0:0], tmp_path / "s.xlsx", "xlsx")
        book = load_workbook(path)
        book.active.insert_rows(1, 2)
        book.active["A1"] = "RTV household survey export"
        book.save(path)
    return path


@pytest.mark.parametrize("kind", ["unrelated_csv", "title_above_csv", "wrapped_json", "title_above_xlsx"])
def test_a_file_whose_headers_match_no_field_fails_naming_the_headers_expected_and_found(
        kind: str, tmp_path: Path) -> None:
    """Not "succeeded" with every row silently lost: the batch fails, saying what it looked for."""
    path = _no_known_columns(tmp_path, kind)
    with pytest.raises(ReadError) as exc:
        ingest_file(path)
    assert exc.value.code == "no_known_columns"
    batch = IngestionBatch.objects.get()
    assert batch.status == "failed" and batch.error.startswith("no_known_columns")
    assert "District" in batch.error and "HouseHoldID" in batch.error  # expected
    found = {"unrelated_csv": "foo, bar, baz", "title_above_csv": "RTV household survey export 2024",
             "wrapped_json": "records", "title_above_xlsx": "RTV household survey export"}[kind]
    assert found in batch.error
    assert not SurveyRecord.objects.exists()


def test_two_spellings_of_one_field_lose_no_value(tmp_path: Path) -> None:
    """An app update renamed a key: records 1-2 say ``time_to_opd``, 3-4 ``TimeToOPD``.  Both
    columns map to the field; where the first is empty the second's value is stored."""
    data, _ = generate(4, seed=5, bad_rate=0.0)
    records = json.loads(data.to_json(orient="records"))
    for record in records[2:]:
        record["TimeToOPD"] = record.pop("time_to_opd")
    path = tmp_path / "v.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in records))
    batch = ingest_file(path)
    assert (batch.status, batch.accepted, batch.rejected) == ("succeeded", 4, 0)
    stored = SurveyRecord.objects.filter(batch=batch).order_by("row_number").values_list("values__time_to_opd", flat=True)
    assert list(stored) == [r.get("time_to_opd", r.get("TimeToOPD")) for r in records]
    assert all(v is not None for v in stored)
    assert {"position": len(records[0]), "header": "TimeToOPD", "field": None,
            "duplicate_of": "time_to_opd"} in batch.header_mapping


def test_two_columns_for_one_field_that_disagree_are_reported_not_silently_resolved(tmp_path: Path) -> None:
    """A file with ``TimeToOPD`` and ``time_to_opd`` both filled: where they agree (``30`` and
    ``30.0`` too) nothing is said; where they differ, the first column's value is stored and the row
    carries a warning naming both columns, and goes to a reviewer."""
    data, _ = generate(4, seed=5, bad_rate=0.0)
    records = json.loads(data.to_json(orient="records"))
    for record in records:
        record["TimeToOPD"] = record["time_to_opd"]
    records[1]["time_to_opd"], records[1]["TimeToOPD"] = 30, "30.0"
    records[2]["TimeToOPD"] = records[2]["time_to_opd"] + 15
    path = tmp_path / "v.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in records))
    batch = ingest_file(path)
    assert (batch.status, batch.accepted, batch.rejected) == ("succeeded", 4, 0)
    found = RowIssue.objects.filter(batch=batch, rule="conflicting_columns")
    assert [(i.row_number, i.field, i.severity) for i in found] == [(4, "time_to_opd", "warning")]
    assert "time_to_opd, TimeToOPD" in found[0].message
    stored = SurveyRecord.objects.filter(batch=batch).order_by("row_number")
    assert [r.values.time_to_opd for r in stored] == [r["time_to_opd"] for r in records]
    assert not stored[2].auto_approved and stored[2].review_status != "approved"


def test_two_columns_agree_on_a_number_written_two_ways_but_not_on_an_id() -> None:
    """Numbers compare as numbers (5 and 5.0 are one answer); ids and other text as text (0012 is not 12)."""
    import pyarrow as pa

    from ingestion.mapping import HeaderMapping

    mapping = HeaderMapping(columns=[
        {"position": 0, "header": "HouseHoldID", "field": "household_id"},
        {"position": 1, "header": "household_id", "field": None, "duplicate_of": "household_id"},
        {"position": 2, "header": "TimeToOPD", "field": "time_to_opd"},
        {"position": 3, "header": "time_to_opd", "field": None, "duplicate_of": "time_to_opd"}])
    table = pa.table({"0": ["0012", "A-1", ""], "1": ["12", "A-1", "B-2"],
                      "2": ["5", "30", "7"], "3": ["5.0", "45", ""]})
    assert mapping.conflicts(table, numeric={"time_to_opd"}) == {"household_id": [0], "time_to_opd": [1]}


def test_the_duplicates_count_is_the_rows_that_repeat_a_household_id_already_in_the_file(tmp_path: Path) -> None:
    """Three rows of one household: two are repeats; each row is still stored, with its finding, for a
    reviewer to decide (never merged).  The answer's count matches the rows flagged, less each id's first."""
    data, _ = generate(6, seed=21, bad_rate=0.0)
    data["household_id"] = ["HH-A", "HH-B", "HH-A", "HH-A", "HH-C", "HH-B"]
    batch = ingest_file(write(data, data.iloc[0:0], tmp_path / "repeats.csv", "csv"))
    assert batch.duplicates == 3 and batch.accepted == 6
    flagged = set(RowIssue.objects.filter(batch=batch, rule="duplicate_household").values_list("row_number", flat=True))
    assert flagged == {2, 3, 4, 5, 7}  # every row of a repeated id (header = row 1): A at 2, 4, 5; B at 3, 7


def test_a_nul_character_in_a_header_or_in_a_rejected_rows_district_refuses_that_row_not_the_file(
        tmp_path: Path) -> None:
    """Found by fuzzing the readers: a NUL in a header failed the plan (the mapping is stored as JSON,
    which PostgreSQL refuses NUL in), and one in a district failed the whole chunk (the quality report
    is keyed by district) -- every valid row of it lost.  Now the row with the NUL is rejected by name
    and the header is kept as it reads, NUL shown as U+2400."""
    data, _ = generate(8, seed=22, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "nul.csv", "csv")
    lines = path.read_bytes().split(b"\n")
    lines[0] += b",Notes\x00x"
    district = data.iloc[2]["district"].encode()
    lines[3] = lines[3].replace(district, district + b"\x00", 1)
    path.write_bytes(b"\n".join(line + (b",n" if k > 0 and line else b"") for k, line in enumerate(lines)))
    batch = ingest_file(path)
    assert batch.status == "succeeded" and (batch.accepted, batch.rejected) == (7, 1)
    assert {"header": "Notes\u2400x"}.items() <= next(c for c in batch.header_mapping if c["header"].startswith("Notes")).items()
    [issue] = RowIssue.objects.filter(batch=batch, rule="invalid_characters")
    assert (issue.row_number, issue.field) == (4, "district")
    assert any("\u2400" in d for d in batch.quality["by_district"])
