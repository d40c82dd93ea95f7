"""Staff and partner uploads: 202 at once, chunked processing, progress, reports, dedupe, roles."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from ingestion.models import IngestionBatch, IngestionChunk, Partner, RowIssue, SurveyRecord
from ingestion.reports import neutralise
from ingestion.synthetic.generator import generate, write

pytestmark = pytest.mark.django_db


@pytest.fixture
def survey(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    data, errors = generate(600, seed=31, bad_rate=0.04)
    path = tmp_path / "survey.csv"
    write(data, errors, path, "csv")
    return path, errors


def upload(client, path: Path, name: str | None = None, **fields):  # type: ignore[no-untyped-def]
    f = SimpleUploadedFile(name or path.name, path.read_bytes())
    return client.post("/api/v1/uploads/", {"file": f, **fields}, format="multipart")


@pytest.fixture
def manager(api):  # type: ignore[no-untyped-def]
    return api("data_manager")


@pytest.fixture(autouse=True)
def small_chunks(settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_CHUNK_ROWS = 150  # 600 rows -> 4 chunks, so chunk boundaries are exercised


def test_an_upload_is_accepted_at_once_then_processed_in_chunks(manager, survey,  # type: ignore[no-untyped-def]
                                                                 django_capture_on_commit_callbacks) -> None:
    path, errors = survey
    with django_capture_on_commit_callbacks(execute=True):
        resp = upload(manager, path)
    assert resp.status_code == 202
    body = resp.json()
    assert body["ingestion_id"] and body["links"]["self"] == f"/api/v1/uploads/{body['ingestion_id']}/"
    assert IngestionChunk.objects.filter(batch_id=body["ingestion_id"]).count() == 4
    done = manager.get(body["links"]["self"]).json()
    assert done["state"] == "succeeded"
    assert done["progress"] == {"rows_done": 600, "rows_total": 600, "percent": 100.0}
    assert done["counts"]["rejected"] == errors["row_number"].nunique()
    assert done["counts"]["accepted"] == 600 - done["counts"]["rejected"] == SurveyRecord.objects.count()
    assert sum(done["label_counts"].values()) == done["counts"]["accepted"]
    assert set(done["timings"]) >= {"plan_s", "chunks_s", "total_s"}
    assert done["file"]["columns"] == 75 and len(done["file"]["sha256"]) == 64


def test_the_error_report_names_each_row_as_a_spreadsheet_shows_it(manager, survey,  # type: ignore[no-untyped-def]
                                                                    django_capture_on_commit_callbacks) -> None:
    path, errors = survey
    with django_capture_on_commit_callbacks(execute=True):
        ingestion_id = upload(manager, path).json()["ingestion_id"]
    resp = manager.get(f"/api/v1/uploads/{ingestion_id}/errors.csv")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/csv")
    text = b"".join(resp.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["row", "household_id", "column", "field", "rule", "severity", "value", "message"]
    reported = {(int(r["row"]), r["field"], r["rule"]) for r in rows if r["severity"] == "error"}
    assert reported == set(errors[["row_number", "field", "rule"]].itertuples(index=False, name=None))
    # The row numbers are the file's: row 2 is the first data row, across chunk boundaries too.
    source = list(csv.reader(path.open(newline="")))
    some = next(r for r in rows if r["severity"] == "error" and r["field"] == "household_size") \
        if any(r["field"] == "household_size" for r in rows) else rows[0]
    assert source[int(some["row"]) - 1][3] == some["household_id"].lstrip("'")
    xlsx = manager.get(f"/api/v1/uploads/{ingestion_id}/errors.xlsx")
    assert xlsx.status_code == 200
    sheet = pd.read_excel(io.BytesIO(xlsx.content), engine="calamine")
    assert len(sheet) == len(rows) and list(sheet.columns)[:3] == ["row", "household_id", "column"]


@pytest.mark.parametrize(("value", "safe"), [("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("@SUM(A1)", "'@SUM(A1)"),
                                            ("+1+1", "'+1+1"), ("-5", "-5"), ("-2.5e3", "-2.5e3"), ("Kanungu", "Kanungu")])
def test_report_cells_cannot_run_as_formulas(value: str, safe: str) -> None:
    assert neutralise(value) == safe


def test_a_dry_run_reports_and_stores_no_record(manager, survey, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    path, errors = survey
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(manager, path, dry_run="true").json()
    done = manager.get(body["links"]["self"]).json()
    assert done["dry_run"] is True and done["state"] == "succeeded"
    assert done["counts"]["rejected"] == errors["row_number"].nunique()
    assert SurveyRecord.objects.count() == 0
    # ...and a dry run does not block the real upload of the same file.
    with django_capture_on_commit_callbacks(execute=True):
        assert upload(manager, path).status_code == 202


def test_the_same_file_twice_is_refused_with_a_pointer_unless_forced(manager, survey,  # type: ignore[no-untyped-def]
                                                                      django_capture_on_commit_callbacks) -> None:
    path, _ = survey
    with django_capture_on_commit_callbacks(execute=True):
        first = upload(manager, path).json()
    again = upload(manager, path, name="renamed.csv")
    assert again.status_code == 409
    assert again.json()["code"] == "duplicate_file"
    assert again.json()["earlier"]["ingestion_id"] == first["ingestion_id"]
    forced = upload(manager, path, force="true")
    assert forced.status_code == 202
    assert IngestionBatch.objects.get(pk=forced.json()["ingestion_id"]).duplicate_of_id is not None


def test_another_sources_earlier_upload_refuses_the_file_without_being_named(api, survey,  # type: ignore[no-untyped-def]
                                                                              django_capture_on_commit_callbacks) -> None:
    """Nothing is stored twice, whoever sends the bytes again; but another partner's batch (its id,
    time and link) is not the sender's to know."""
    path, _ = survey
    first_partner, second_partner = api("partner"), api("partner")
    for client, slug in ((first_partner, "hope"), (second_partner, "care")):
        Partner.objects.create(name=slug, slug=slug).users.add(client.user)
    with django_capture_on_commit_callbacks(execute=True):
        first = upload(first_partner, path).json()
    again = upload(second_partner, path, name="ours.csv")
    assert again.status_code == 409
    assert again.json() == {"code": "duplicate_file", "message": again.json()["message"],
                            "errors": [{"field": "file", "code": "duplicate_file",
                                        "message": "this file was already ingested"}]}
    assert first["ingestion_id"] not in again.content.decode()
    # Staff, who see every batch, are pointed at it.
    staff = upload(api("data_manager"), path)
    assert staff.status_code == 409 and staff.json()["earlier"]["ingestion_id"] == first["ingestion_id"]
    # Forced, the file is taken, still without naming the other source's batch.
    with django_capture_on_commit_callbacks(execute=True):
        forced = upload(second_partner, path, force="true")
    assert forced.status_code == 202 and forced.json()["duplicate_of"] is None
    assert second_partner.get(forced.json()["links"]["self"]).json()["duplicate_of"] is None
    assert IngestionBatch.objects.get(pk=forced.json()["ingestion_id"]).duplicate_of_id is not None


def test_a_long_file_name_in_any_script_is_kept_as_its_name_not_its_storage_key(  # type: ignore[no-untyped-def]
        manager, survey, django_capture_on_commit_callbacks) -> None:
    path, _ = survey
    name = "é" * 200 + ".CSV"  # 400 bytes in UTF-8: longer than a file name may be
    with django_capture_on_commit_callbacks(execute=True):
        resp = upload(manager, path, name=name)
    assert resp.status_code == 202, resp.content[:300]
    done = manager.get(resp.json()["links"]["self"]).json()
    assert (done["state"], done["file"]["name"]) == ("succeeded", name)
    batch = IngestionBatch.objects.get(pk=resp.json()["ingestion_id"])
    assert batch.file_key == f"raw/{batch.pk}/original.csv"
    assert default_storage.open(batch.file_key).read() == path.read_bytes()


def test_a_file_storage_refuses_is_a_400_and_no_batch(manager, survey) -> None:  # type: ignore[no-untyped-def]
    with mock.patch("django.core.files.storage.FileSystemStorage.save",
                    side_effect=OSError(28, "No space left on device")):
        resp = upload(manager, survey[0])
    assert resp.status_code == 400
    assert resp.json()["code"] == "file_not_stored" and resp.json()["errors"][0]["field"] == "file"
    assert not IngestionBatch.objects.exists()


def test_a_header_longer_than_the_report_column_still_reports_its_findings(  # type: ignore[no-untyped-def]
        manager, survey, django_capture_on_commit_callbacks) -> None:
    """Aliases ignore punctuation, so "HouseholdSize____...": a 143-character header, maps; its
    findings are stored (the header cut to the column's 120 characters) and the batch succeeds."""
    path, _ = survey
    rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
    size = rows[0].index("HouseholdSize")
    rows[0][size] = "HouseholdSize" + "_" * 130
    rows[1][size] = "999"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(manager, path).json()
    done = manager.get(body["links"]["self"]).json()
    assert done["state"] == "succeeded", done["error"]
    findings = RowIssue.objects.filter(batch_id=body["ingestion_id"], row_number=2, field="household_size")
    assert {f.column for f in findings} == {("HouseholdSize" + "_" * 130)[:120]}


def _edit_cells(path: Path, edits: dict[tuple[int, str], str]) -> Path:
    """The CSV with some cells changed: {(spreadsheet row, header): new text}."""
    rows = list(csv.reader(path.open(newline="", encoding="utf-8")))
    for (row, header), text in edits.items():
        rows[row - 1][rows[0].index(header)] = text
    out = path.with_name("edited.csv")
    with out.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return out


def test_a_nul_character_rejects_its_row_by_name_and_the_reports_still_open(  # type: ignore[no-untyped-def]
        manager, survey, django_capture_on_commit_callbacks) -> None:
    """NUL (which PostgreSQL text cannot hold) far into the file, and a form feed (which a workbook
    cannot hold) in a reported value: the row with NUL is refused, nothing else is lost."""
    path, errors = survey
    edited = _edit_cells(path, {(300, "Village"): "Buki\x00riro", (301, "HouseHoldID"): "KAN-NYA\x0cGEO-1"})
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(manager, edited).json()
    done = manager.get(body["links"]["self"]).json()
    assert done["state"] == "succeeded", done["error"]
    rejected = set(errors["row_number"]) | {300}
    assert done["counts"]["rejected"] == len(rejected)
    assert SurveyRecord.objects.count() == 600 - len(rejected)
    text = b"".join(manager.get(f"/api/v1/uploads/{body['ingestion_id']}/errors.csv").streaming_content)
    rows = list(csv.DictReader(io.StringIO(text.decode("utf-8-sig"))))
    nul = [r for r in rows if r["rule"] == "invalid_characters"]
    assert [(r["row"], r["field"], r["column"], r["severity"]) for r in nul] == [("300", "village", "Village", "error")]
    assert nul[0]["value"] == "Buki\u2400riro"
    xlsx = manager.get(f"/api/v1/uploads/{body['ingestion_id']}/errors.xlsx")
    assert xlsx.status_code == 200
    sheet = pd.read_excel(io.BytesIO(xlsx.content), engine="calamine", dtype=str)
    assert len(sheet) == len(rows)
    assert "KAN-NYA\ufffdGEO-1" in set(sheet["household_id"]) | set(sheet["value"])


def test_a_file_over_the_size_limit_gets_413(manager, survey, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_MAX_UPLOAD_BYTES = 10_000
    resp = upload(manager, survey[0])
    assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large"


def test_too_many_rows_fails_the_batch_clearly(manager, survey, settings,  # type: ignore[no-untyped-def]
                                               django_capture_on_commit_callbacks) -> None:
    settings.RTV_MAX_UPLOAD_ROWS = 100
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(manager, survey[0]).json()
    done = manager.get(body["links"]["self"]).json()
    assert done["state"] == "failed" and done["error"].startswith("too_many_rows")
    assert SurveyRecord.objects.count() == 0


def test_an_unsupported_file_type_is_a_400_naming_the_file(manager, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "notes.docx"
    p.write_bytes(b"hello")
    resp = upload(manager, p)
    assert resp.status_code == 400 and resp.json()["code"] == "unsupported_format"
    assert resp.json()["errors"][0]["field"] == "file"


def test_a_missing_file_is_a_400_naming_the_field(manager) -> None:  # type: ignore[no-untyped-def]
    resp = manager.post("/api/v1/uploads/", {}, format="multipart")
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "file"


@pytest.mark.parametrize(("encoding", "delimiter"), [
    ("utf-8-sig", ","), ("utf-16", ","), ("latin-1", ","),
    ("utf-16-le", ","), ("utf-16-be", ","),  # UTF-16 without its byte-order mark
    ("utf-16", "\t"),  # Excel's "Unicode text": UTF-16, tab-separated
    ("utf-8", ";"),  # a locale's CSV
])
def test_common_encodings_are_read_correctly(manager, tmp_path: Path, encoding: str, delimiter: str,  # type: ignore[no-untyped-def]
                                             django_capture_on_commit_callbacks) -> None:
    data, _ = generate(20, seed=4)
    data.loc[0, "village"] = "Kabalé_1"
    data.loc[1, "household_id"] = "KAN-KAB-JOS-K0007"
    clean = tmp_path / "clean.csv"
    write(data, data.iloc[0:0], clean, "csv")
    text = clean.read_text(encoding="utf-8")
    if delimiter != ",":
        import csv
        import io

        out = io.StringIO()
        csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(csv.reader(io.StringIO(text)))
        text = out.getvalue()
    path = tmp_path / f"enc-{encoding}.csv"
    path.write_bytes(text.encode(encoding))
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(manager, path).json()
    assert manager.get(body["links"]["self"]).json()["counts"]["accepted"] == 20
    assert SurveyRecord.objects.filter(village="Kabalé_1").exists()
    assert SurveyRecord.objects.filter(household__household_id="KAN-KAB-JOS-K0007").exists()


def test_a_latin_1_file_whose_first_accent_comes_late_is_read_as_latin_1(  # type: ignore[no-untyped-def]
        manager, tmp_path: Path, django_capture_on_commit_callbacks) -> None:
    """Past the first MiB the encoding is checked too: 'Kabalé' in the last row, in Latin-1."""
    data, _ = generate(3000, seed=4)  # ~1.3 MB of CSV
    data.loc[2999, "village"] = "Kabalé_1"
    clean = tmp_path / "clean.csv"
    write(data, data.iloc[0:0], clean, "csv")
    assert clean.stat().st_size > 1 << 20
    path = tmp_path / "late-latin-1.csv"
    path.write_bytes(clean.read_text(encoding="utf-8").encode("latin-1"))
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(manager, path).json()
    done = manager.get(body["links"]["self"]).json()
    assert done["state"] == "succeeded", done["error"]
    assert SurveyRecord.objects.filter(village="Kabalé_1").exists()


def test_a_binary_file_named_csv_fails_clearly_by_its_encoding(manager, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               django_capture_on_commit_callbacks) -> None:
    path = tmp_path / "photo.csv"
    path.write_bytes(bytes(range(256)) * 40)
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(manager, path).json()
    done = manager.get(body["links"]["self"]).json()
    assert done["state"] == "failed" and done["error"].startswith("bad_encoding")


def test_leading_zeros_and_text_survive_excel(manager, tmp_path: Path, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    data, _ = generate(10, seed=6)
    data.loc[0, "household_id"] = "00123"
    path = tmp_path / "s.xlsx"
    write(data, data.iloc[0:0], path, "xlsx")
    with django_capture_on_commit_callbacks(execute=True):
        upload(manager, path)
    assert SurveyRecord.objects.filter(household__household_id="00123").exists()


@pytest.mark.parametrize("role", ["field_officer", "reviewer", None])
def test_roles_without_uploads_are_refused(api, role, survey) -> None:  # type: ignore[no-untyped-def]
    assert upload(api(role), survey[0]).status_code == 403


def test_a_partner_uploads_only_into_its_own_source(api, survey, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    client = api("partner")
    assert upload(client, survey[0]).json()["code"] == "no_partner"
    partner = Partner.objects.create(name="Hope Uganda", slug="hope")
    partner.users.add(client.user)
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(client, survey[0], source="someone-else").json()
    batch = IngestionBatch.objects.get(pk=body["ingestion_id"])
    assert (batch.partner, batch.source, batch.channel) == (partner, "hope", "partner")
    other = api("data_manager")
    assert other.get(body["links"]["self"]).status_code == 200
    outsider = api("partner")
    assert outsider.get(body["links"]["self"]).status_code == 404
    colleague = api("partner")  # another account of the same partner sees its source's uploads
    partner.users.add(colleague.user)
    assert colleague.get(body["links"]["self"]).status_code == 200
    inbox_file = IngestionBatch.objects.create(channel="partner", partner=partner, source="hope", status="succeeded")
    assert colleague.get(f"/api/v1/uploads/{inbox_file.pk}/").status_code == 200  # a file from its inbox
    assert outsider.get(f"/api/v1/uploads/{inbox_file.pk}/").status_code == 404


def test_a_deactivated_partner_or_a_user_without_the_role_no_longer_reads_its_batches(api) -> None:  # type: ignore[no-untyped-def]
    """Deactivating a partner closes its uploads; it closes its batches and error reports too."""
    client = api("partner")
    partner = Partner.objects.create(name="Hope Uganda", slug="hope")
    partner.users.add(client.user)
    batch = IngestionBatch.objects.create(channel="partner", partner=partner, source="hope", status="succeeded",
                                          created_by=client.user, original_name="inbox.csv")
    urls = [f"/api/v1/uploads/{batch.pk}/", f"/api/v1/uploads/{batch.pk}/errors.csv",
            f"/api/v1/uploads/{batch.pk}/quality/"]
    assert [client.get(u).status_code for u in urls] == [200, 200, 200]
    partner.active = False
    partner.save()
    assert [client.get(u).status_code for u in urls] == [404, 404, 404]
    assert client.get("/api/v1/uploads/").json()["uploads"] == []
    partner.active = True
    partner.save()
    client.user.groups.clear()  # the token is read afresh on each request, roles included
    assert client.get(urls[1]).status_code in (403, 404)


def test_the_upload_page_is_for_staff_roles(client, make_user) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/uploads/").status_code == 302  # to the login page
    client.force_login(make_user("field_officer"))
    assert client.get("/uploads/").status_code == 403
    client.force_login(make_user("data_manager", "dm"))
    page = client.get("/uploads/")
    assert page.status_code == 200 and b'type="file"' in page.content and b"Dry run" in page.content


def test_each_caller_lists_the_uploads_it_may_see_newest_first(api, django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    """A partner finds its inbox's batches (it never learnt their ids); another partner's stay hidden."""
    hope, care = Partner.objects.create(name="Hope", slug="hope"), Partner.objects.create(name="Care", slug="care")
    ours, theirs = api("partner"), api("partner")
    hope.users.add(ours.user)
    care.users.add(theirs.user)
    made = [IngestionBatch.objects.create(channel="partner", partner=p, source=p.slug, status=s, original_name=n)
            for p, s, n in ((hope, "succeeded", "march.csv"), (care, "succeeded", "care.csv"), (hope, "failed", "april.csv"))]
    with django_assert_max_num_queries(8):
        listed = ours.get("/api/v1/uploads/").json()["uploads"]
    assert [u["file"]["name"] for u in listed] == ["april.csv", "march.csv"]
    assert [u["ingestion_id"] for u in ours.get("/api/v1/uploads/?state=failed").json()["uploads"]] == [str(made[2].pk)]
    assert {u["file"]["name"] for u in api("data_manager").get("/api/v1/uploads/").json()["uploads"]} == {
        "march.csv", "care.csv", "april.csv"}
    bad = ours.get("/api/v1/uploads/?limit=lots")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "limit"
    assert ours.get("/api/v1/uploads/?state=nope").status_code == 400


def test_a_partner_signs_in_to_the_upload_page_and_sees_only_its_own_batches(client, make_user) -> None:  # type: ignore[no-untyped-def]
    """Partners are not staff: the admin's sign-in would turn them away."""
    user = make_user("partner", username="hope-user")
    hope = Partner.objects.create(name="Hope", slug="hope")
    hope.users.add(user)
    care = Partner.objects.create(name="Care", slug="care")
    IngestionBatch.objects.create(channel="partner", partner=hope, source="hope", original_name="ours.csv")
    IngestionBatch.objects.create(channel="partner", partner=care, source="care", original_name="theirs.csv")
    first = client.get("/uploads/")
    assert first.status_code == 302 and first["Location"].startswith("/accounts/login/")
    signed = client.post("/accounts/login/?next=/uploads/", {"username": "hope-user", "password": "pw-Secret-123",
                                                              "next": "/uploads/"})
    assert signed.status_code == 302 and signed["Location"] == "/uploads/"
    page = client.get("/uploads/")
    assert page.status_code == 200 and b"ours.csv" in page.content and b"theirs.csv" not in page.content


@pytest.mark.parametrize(("role", "lands"), [
    ("partner", "/uploads/"), ("data_manager", "/uploads/"), ("reviewer", "/admin/"), ("field_officer", "/api/docs/"),
])
def test_signing_in_without_a_next_page_lands_on_the_roles_first_page(client, make_user, role, lands) -> None:  # type: ignore[no-untyped-def]
    """Not Django's /accounts/profile/, which the platform does not have (a 404 after every sign-in)."""
    make_user(role, username=f"who-{role}")
    signed = client.post("/accounts/login/", {"username": f"who-{role}", "password": "pw-Secret-123"})
    assert signed.status_code == 302 and signed["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 302 and home["Location"] == lands
    assert client.get(lands).status_code == 200


def test_progress_is_reported_while_the_chunks_are_worked(manager, survey) -> None:  # type: ignore[no-untyped-def]
    """What the page's progress bar polls: rows done of the total, chunk by chunk, before the end."""
    from ingestion.services import batch_plan, chunk_process

    path, _ = survey
    body = upload(manager, path).json()  # no on-commit callbacks run: nothing is queued to a worker
    link = body["links"]["self"]
    assert manager.get(link).json()["state"] == "pending"
    chunks = batch_plan(body["ingestion_id"], enqueue=False)
    seen = [manager.get(link).json()]
    for chunk_id in chunks:
        chunk_process(chunk_id)
        seen.append(manager.get(link).json())
    assert [s["progress"]["rows_done"] for s in seen] == [0, 150, 300, 450, 600]
    assert {s["progress"]["rows_total"] for s in seen} == {600}
    assert [s["state"] for s in seen] == ["running"] * 4 + ["succeeded"]
    assert seen[2]["progress"]["percent"] == 50.0 and 0 < seen[2]["counts"]["accepted"] <= 300


def test_the_original_downloads_as_it_arrived_to_whoever_sees_the_batch_and_is_audited(  # type: ignore[no-untyped-def]
        manager, survey, api, django_capture_on_commit_callbacks) -> None:
    import json
    import uuid

    from rtv.models import AuditEvent
    from tests.payloads import household_payload

    path, _ = survey
    with django_capture_on_commit_callbacks(execute=True):
        body = upload(manager, path, name="Kanungu round 2 (final).csv").json()
    resp = manager.get(body["links"]["original"])
    assert resp.status_code == 200 and b"".join(resp.streaming_content) == path.read_bytes()
    assert 'filename="Kanungu round 2 (final).csv"' in resp["Content-Disposition"]
    assert AuditEvent.objects.filter(action="batch.original_downloaded", object_id=body["ingestion_id"],
                                     actor=manager.user).count() == 1
    assert api("partner").get(body["links"]["original"]).status_code == 404  # not theirs to see

    officer = api("field_officer")
    raw = json.dumps({"submission_id": str(uuid.uuid4()), "collected_at": "2026-11-20T10:15:00+03:00",
                      "data": household_payload(generate(1, seed=2, bad_rate=0.0)[0], 0)}).encode()
    record = officer.post("/api/v1/submissions/", raw, content_type="application/json").json()
    batch_id = SurveyRecord.objects.get(pk=record["id"]).batch_id
    mine = officer.get(f"/api/v1/uploads/{batch_id}/original")
    assert mine.status_code == 200 and mine.content == raw  # waiting in the database or under raw/: the same bytes
    assert api("field_officer").get(f"/api/v1/uploads/{batch_id}/original").status_code == 404  # another officer's
    IngestionBatch.objects.filter(pk=body["ingestion_id"]).update(file_key="")
    gone = manager.get(body["links"]["original"])
    assert gone.status_code == 404 and gone.json()["code"] == "original_not_kept"
    from django.core.files.storage import default_storage

    from ingestion.submissions import device_bodies_keep

    device_bodies_keep([record["id"]])
    default_storage.delete(IngestionBatch.objects.get(pk=batch_id).file_key)  # lost from storage
    lost = officer.get(f"/api/v1/uploads/{batch_id}/original")
    assert lost.status_code == 404 and lost.json()["code"] == "original_not_kept"
