"""Likely duplicates across sources: a new record whose answers repeat a stored current record's is
flagged ``near_duplicate`` and sent to a reviewer, whichever door either came through."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ingestion.models import RowIssue, SurveyRecord, SurveyValues
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from quality.duplicates import answers_hashes, backfill
from quality.models import Rule
from quality.rules import rule_update
from quality.services import record_correct
from tests.payloads import household_payload

pytestmark = pytest.mark.django_db

ROWS = generate(30, seed=41, bad_rate=0.0)[0]
PINNED = 6565952824175937091


def submission(i: int, **changes: Any) -> dict[str, Any]:
    return {"submission_id": str(uuid.uuid4()), "form_version": "2026.1", "collected_at": "2026-11-20T10:15:00+03:00",
            "device_id": "tab-07", "location": {"lat": -0.91, "lon": 29.8, "accuracy_m": 6.0},
            "data": household_payload(ROWS, i, **changes)}


def codes(record: dict[str, Any]) -> list[str]:
    """The finding codes of a stored record as the API shows it."""
    return [i["code"] for i in record["quality"]["issues"]]


def flagged(batch_id: Any = None) -> set[str]:
    """Household ids with a near_duplicate finding (of one batch when given)."""
    qs = RowIssue.objects.filter(rule="near_duplicate")
    if batch_id is not None:
        qs = qs.filter(batch_id=batch_id)
    return set(qs.values_list("household_id", flat=True))


# ---- the hash ---------------------------------------------------------------------------------

def test_the_answers_hash_ignores_how_a_value_was_typed_but_not_what_it_is() -> None:
    base = pd.DataFrame({"village": ["Kyabuyonza"], "household_id": ["A-1"], "household_size": [5.0],
                         "loan_from": ["1 2"]})
    same = pd.DataFrame({"village": [" Kyabuyonza "], "household_id": ["B-9"], "household_size": pd.array([5], "Int64"),
                         "loan_from": ["1 2"]})
    other = base.assign(household_size=[6.0])
    h = [answers_hashes(f)[0] for f in (base, same, other)]
    assert h[0] == h[1], "the household id, spacing and 5 against 5.0 are not differences in the answers"
    assert h[0] != h[2]


def test_a_device_item_and_a_file_row_with_the_same_answers_hash_alike() -> None:
    """The device door hashes plain values, files hash typed frames: one hash for one household."""
    from quality.duplicates import record_answers_hashes

    rows = [household_payload(ROWS, i) for i in range(len(ROWS))]
    assert (record_answers_hashes(rows) == answers_hashes(ROWS)).all()
    assert len(set(answers_hashes(ROWS))) == len(ROWS)


def test_a_multiselect_answer_is_a_set_of_codes() -> None:
    base = pd.DataFrame({"village": ["V"], "loan_from": ["1 3"]})
    for same in ("3 1", "1,3", "1.0 3", " 3  1 "):
        assert answers_hashes(base.assign(loan_from=[same]))[0] == answers_hashes(base)[0], same
    assert answers_hashes(base.assign(loan_from=["1 4"]))[0] != answers_hashes(base)[0]


def test_the_hash_of_an_answer_set_is_pinned() -> None:
    """Stored hashes must stay comparable with new ones: a change in how they are computed (or in
    pandas' hashing underneath) would silently stop old and new records matching."""
    frame = pd.DataFrame({"district": ["Kanungu"], "village": ["Kihihi"], "household_size": [6.0],
                          "loan_from": ["3 1"], "agriculture_land": [1.5]})
    assert int(answers_hashes(frame)[0]) == PINNED


def test_a_field_missing_everywhere_leaves_the_hash_as_it_was() -> None:
    """A field added to the contract later is missing from older records: their hashes still match."""
    base = pd.DataFrame({"village": ["V"], "household_size": [4.0]})
    assert answers_hashes(base)[0] == answers_hashes(base.assign(time_to_opd=[np.nan], cluster=[None]))[0]
    assert answers_hashes(pd.DataFrame({"village": [None], "household_size": [np.nan]}))[0] == 0, "no answers: no hash"


# ---- files ------------------------------------------------------------------------------------

def test_a_second_file_repeating_stored_rows_is_flagged_row_by_row(tmp_path: Path) -> None:
    """A partner's cumulative export sent again with new rows: a different file (not refused by its
    sha256), whose repeated rows are flagged, not approved, and whose new rows are not."""
    data, _ = generate(40, seed=7, bad_rate=0.0)
    first = write(data.iloc[:30], data.iloc[0:0], tmp_path / "march.csv", "csv")
    batch1 = ingest_file(first)
    assert flagged() == set()
    assert batch1.accepted == 30
    later = data.iloc[20:40].copy()
    later.loc[later.index[:5], "household_id"] = [f"NEW-{i}" for i in range(5)]  # same answers, other ids
    second = write(later, data.iloc[0:0], tmp_path / "april.csv", "csv")
    batch2 = ingest_file(second)
    repeated = set(later["household_id"].iloc[:10])
    assert flagged(batch2.pk) == repeated
    records = SurveyRecord.objects.filter(batch=batch2)
    assert {r.household.household_id for r in records.filter(review_status="has_issues", auto_approved=False)} >= repeated
    message = RowIssue.objects.filter(batch=batch2, rule="near_duplicate").values_list("message", flat=True).first()
    assert message and "already stored" in message
    assert not records.filter(household__household_id__in=repeated, auto_approved=True).exists()
    assert records.exclude(household__household_id__in=repeated).filter(auto_approved=True).count() > 0


def test_a_dry_run_reports_stored_duplicates_and_the_hashes_match_the_stored_values(tmp_path: Path) -> None:
    data, _ = generate(12, seed=8, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    ingest_file(path)
    hashes = dict(SurveyRecord.objects.values_list("pk", "answers_hash"))
    assert all(hashes.values())
    # What a file stored equals what the stored values give (the migration's backfill): one hash, any door.
    SurveyRecord.objects.update(answers_hash=None)
    assert backfill(SurveyRecord, SurveyValues, chunk=5) == 12  # three chunks
    assert dict(SurveyRecord.objects.values_list("pk", "answers_hash")) == hashes
    again = write(data, data.iloc[0:0], tmp_path / "b.csv", "csv")
    dry = ingest_file(again, dry_run=True, force=True)
    assert flagged(dry.pk) == set(data["household_id"])


# ---- devices ----------------------------------------------------------------------------------

def test_a_device_submission_repeating_a_stored_file_row_gets_a_warning_and_a_reviewer(api, tmp_path: Path,
                                                                                       django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    path = write(ROWS.iloc[:5], ROWS.iloc[0:0], tmp_path / "f.csv", "csv")
    ingest_file(path)
    officer = api("field_officer")
    with django_capture_on_commit_callbacks(execute=True):
        copy = officer.post("/api/v1/submissions/", submission(2, household_id="TYPO-2"), format="json")
        fresh = officer.post("/api/v1/submissions/", submission(9), format="json")
    assert copy.status_code == 201 and fresh.status_code == 201
    assert "near_duplicate" in codes(copy.json())
    assert copy.json()["status"] == "has_issues" and copy.json()["quality"]["auto_approved"] is False
    assert "near_duplicate" not in codes(fresh.json())
    assert fresh.json()["status"] == "approved"
    assert flagged() == {"TYPO-2"}


def test_items_of_one_device_batch_repeating_each_other_are_flagged(api) -> None:  # type: ignore[no-untyped-def]
    officer = api("field_officer")
    items = [submission(3), submission(3, household_id="TWIN-3"), submission(4)]
    resp = officer.post("/api/v1/submissions/batch/", {"items": items}, format="json")
    assert ["near_duplicate" in codes(r["record"]) for r in resp.json()["results"]] == [True, True, False]


def test_one_household_twice_in_a_device_batch_is_flagged_as_in_a_file(api) -> None:  # type: ignore[no-untyped-def]
    """A device back online sends the same household twice, with different answers: both items are
    stored, each with a ``duplicate_household`` warning, and neither is approved by its score."""
    officer = api("field_officer")
    twice = ROWS.iloc[3]["household_id"]
    items = [submission(3), submission(4, household_id=twice), submission(5)]
    resp = officer.post("/api/v1/submissions/batch/", {"items": items}, format="json")
    assert [r["result"] for r in resp.json()["results"]] == ["created"] * 3
    assert ["duplicate_household" in codes(r["record"]) for r in resp.json()["results"]] == [True, True, False]
    assert [r["record"]["status"] for r in resp.json()["results"]][:2] == ["has_issues", "has_issues"]
    stored = SurveyRecord.objects.get(submission_id=items[0]["submission_id"])
    assert stored.batch.warnings >= 2 and stored.warning_count >= 1


def test_a_correction_is_not_a_duplicate_of_the_version_it_corrects(api) -> None:  # type: ignore[no-untyped-def]
    officer = api("field_officer")
    first = submission(5)
    assert officer.post("/api/v1/submissions/", first, format="json").status_code == 201
    fix = submission(5, household_id=first["data"]["household_id"]) | {"supersedes": first["submission_id"],
                                                                         "device_id": "tab-08"}
    resp = officer.post("/api/v1/submissions/", fix, format="json")
    assert resp.status_code == 201, resp.json()
    assert "near_duplicate" not in codes(resp.json())


def test_only_current_versions_count(api, make_user) -> None:  # type: ignore[no-untyped-def]
    """A reviewer's correction supersedes the old answers: repeating those is no longer a duplicate,
    repeating the corrected ones is."""
    officer = api("field_officer")
    first = submission(6)
    officer.post("/api/v1/submissions/", first, format="json")
    old = SurveyRecord.objects.get(submission_id=first["submission_id"])
    size = float(first["data"]["household_size"])
    new = record_correct(record=old, changes={"household_size": size + 1}, reviewer=make_user("reviewer"))
    assert new.answers_hash and new.answers_hash != old.answers_hash
    again_old = officer.post("/api/v1/submissions/", submission(6, household_id="OLD-6"), format="json")
    again_new = officer.post("/api/v1/submissions/", submission(6, household_id="NEW-6", household_size=size + 1),
                             format="json")
    assert "near_duplicate" not in codes(again_old.json())
    assert "near_duplicate" in codes(again_new.json())


def test_a_retried_request_reports_a_repeat_once(api, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A request that loses a race starts over: what the rolled-back attempt found is not kept twice."""
    from django.db import IntegrityError

    from ingestion import submissions

    ingest_file(write(ROWS.iloc[:5], ROWS.iloc[0:0], tmp_path / "f.csv", "csv"))
    original, lost = submissions._create_all, []

    def loses_once(*args: Any, **kwargs: Any) -> Any:
        records = original(*args, **kwargs)
        if not lost:
            lost.append(True)
            raise IntegrityError('duplicate key value violates unique constraint "record_unique_submission"')
        return records

    monkeypatch.setattr(submissions, "_create_all", loses_once)
    resp = api("field_officer").post("/api/v1/submissions/batch/",
                                     {"items": [submission(1, household_id="AGAIN-1"), submission(12)]}, format="json")
    assert lost and resp.status_code == 200, resp.json()
    first = resp.json()["results"][0]["record"]
    assert codes(first).count("near_duplicate") == 1
    assert RowIssue.objects.filter(rule="near_duplicate").count() == 1
    assert first["quality"]["warnings"] == len(first["quality"]["issues"])


def test_a_correction_in_a_later_wave_counts_in_the_batch_warnings(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An original and its correction in one request: the correction, written after, repeats a stored row."""
    ingest_file(write(ROWS.iloc[:5], ROWS.iloc[0:0], tmp_path / "f.csv", "csv"))
    original = submission(14)
    fix = submission(2, household_id=original["data"]["household_id"]) | {"supersedes": original["submission_id"]}
    resp = api("field_officer").post("/api/v1/submissions/batch/", {"items": [original, fix]}, format="json")
    assert [r["result"] for r in resp.json()["results"]] == ["created", "created"]
    assert "near_duplicate" in codes(resp.json()["results"][1]["record"])
    record = SurveyRecord.objects.get(submission_id=fix["submission_id"])
    warned = SurveyRecord.objects.filter(batch=record.batch, warning_count__gt=0).count()
    assert record.batch.warnings == warned >= 1


def test_with_the_rule_off_a_repeated_file_is_not_flagged(tmp_path: Path) -> None:
    rule_update(rule=Rule.objects.get(kind="near_duplicate"), user=None, active=False)
    data, _ = generate(10, seed=9, bad_rate=0.0)
    ingest_file(write(data, data.iloc[0:0], tmp_path / "a.csv", "csv"))
    ingest_file(write(data, data.iloc[0:0], tmp_path / "b.csv", "csv"), force=True)
    assert flagged() == set()


def test_a_duplicate_rule_cannot_be_made_to_reject() -> None:
    from django.core.exceptions import ValidationError

    for kind in ("near_duplicate", "duplicate_household"):
        with pytest.raises(ValidationError, match="reviewed, never rejected"):
            rule_update(rule=Rule.objects.get(kind=kind), user=None, severity="error")
        assert Rule.objects.get(kind=kind).severity == "warning"


def test_the_admin_says_why_a_duplicate_rule_stays_a_warning(client, make_user) -> None:  # type: ignore[no-untyped-def]
    rule = Rule.objects.get(kind="near_duplicate")
    client.force_login(make_user("data_manager"))
    resp = client.post(f"/admin/quality/rule/{rule.pk}/change/", {
        "severity": "error", "level": rule.level, "params": json.dumps(rule.params), "message": rule.message,
        "active": "on", "note": "", "revisions-TOTAL_FORMS": "0", "revisions-INITIAL_FORMS": "0"})
    assert resp.status_code == 200 and b"reviewed, never rejected" in resp.content
    rule.refresh_from_db()
    assert rule.severity == "warning" and rule.version == 1


def test_with_the_rule_off_nothing_is_flagged(api) -> None:  # type: ignore[no-untyped-def]
    rule_update(rule=Rule.objects.get(kind="near_duplicate"), user=None, active=False)
    officer = api("field_officer")
    officer.post("/api/v1/submissions/", submission(7), format="json")
    resp = officer.post("/api/v1/submissions/", submission(7, household_id="AGAIN-7"), format="json")
    assert resp.json()["status"] == "approved" and flagged() == set()


# ---- text longer than its column ----------------------------------------------------------------

def test_an_id_longer_than_its_column_is_refused_by_name_at_every_door(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Not a failed insert (a 500, or a whole chunk lost): a 400 naming the field, or that row rejected."""
    officer = api("field_officer")
    resp = officer.post("/api/v1/submissions/", submission(1, household_id="H" * 100), format="json")
    assert resp.status_code == 400, resp.content
    assert {"field": "data.household_id", "code": "too_long",
            "message": "household_id is longer than 64 characters"} in resp.json()["errors"]
    batch = officer.post("/api/v1/submissions/batch/",
                         {"items": [submission(2, village="V" * 121), submission(3)]}, format="json").json()
    assert [r["result"] for r in batch["results"]] == ["invalid", "created"]
    data, _ = generate(5, seed=10, bad_rate=0.0)
    data.loc[2, "household_id"] = "X" * 65
    stored = ingest_file(write(data, data.iloc[0:0], tmp_path / "long.csv", "csv"))
    assert stored.status == "succeeded" and (stored.accepted, stored.rejected) == (4, 1)
    issue = RowIssue.objects.get(batch=stored, rule="too_long")
    assert issue.row_number == 4 and issue.severity == "error" and issue.field == "household_id"
