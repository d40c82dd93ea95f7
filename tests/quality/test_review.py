"""The reviewers' workflow in the admin: queue, filters, bulk decisions, comments, corrections, roles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ingestion.models import RowIssue, SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from quality.models import ReviewComment, ReviewDecision
from quality.services import ReviewError, record_correct, review_decide
from rtv.models import AuditEvent

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/ingestion/surveyrecord/"


def stored(tmp_path: Path, rows: int, seed: int = 1) -> list[SurveyRecord]:
    data, _ = generate(rows, seed=seed)
    path = tmp_path / f"r{rows}-{seed}.csv"
    write(data, data.iloc[0:0], path, "csv")
    ingest_file(path)
    return list(SurveyRecord.objects.order_by("pk"))


@pytest.fixture
def reviewer_client(client, make_user):  # type: ignore[no-untyped-def]
    user = make_user("reviewer")
    client.force_login(user)
    client.user = user
    return client


def test_the_queue_lists_worst_quality_first(reviewer_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    records = stored(tmp_path, 30)
    SurveyRecord.objects.filter(pk=records[7].pk).update(quality_score=0.2, review_status="has_issues")
    SurveyRecord.objects.filter(pk=records[3].pk).update(quality_score=0.5, review_status="has_issues")
    page = reviewer_client.get(CHANGELIST + "?queue=open")
    assert page.status_code == 200
    shown = list(page.context["cl"].result_list)
    assert [r.pk for r in shown] == [records[7].pk, records[3].pk]


@pytest.mark.parametrize("query", ["", "?queue=open", "?score=good", "?rule=pattern", "?district=Kanungu",
                                   "?review_status=approved&o=-6", "?district__exact=Kanungu&village=Kihanda"])
def test_review_list_pages_use_a_bounded_number_of_queries(reviewer_client, tmp_path: Path, query: str) -> None:  # type: ignore[no-untyped-def]
    stored(tmp_path, 5, seed=2)
    reviewer_client.get(CHANGELIST + query)  # warm caches (rules, schema, session)
    with CaptureQueriesContext(connection) as small:
        assert reviewer_client.get(CHANGELIST + query).status_code == 200
    stored(tmp_path, 45, seed=3)
    with CaptureQueriesContext(connection) as large:
        assert reviewer_client.get(CHANGELIST + query).status_code == 200
    assert len(large.captured_queries) == len(small.captured_queries) <= 15


def test_the_queue_filters_by_village_within_the_chosen_district(reviewer_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    records = stored(tmp_path, 40)
    district = records[0].district
    page = reviewer_client.get(CHANGELIST + f"?district__exact={district}")
    [village_filter] = [f for f in page.context["cl"].filter_specs if f.title == "village"]
    offered = [v for v, _ in village_filter.lookup_choices]
    assert offered == sorted({r.village for r in records if r.district == district and r.village})
    chosen = records[0].village
    page = reviewer_client.get(CHANGELIST + f"?district__exact={district}&village={chosen}")
    assert {r.village for r in page.context["cl"].result_list} == {chosen}
    assert page.context["cl"].result_count == sum(1 for r in records if r.district == district and r.village == chosen)


def test_a_bulk_decision_with_a_comment_is_recorded_and_audited(reviewer_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    records = stored(tmp_path, 6)
    SurveyRecord.objects.update(review_status="has_issues", auto_approved=False)
    ids = [str(r.pk) for r in records[:3]]
    confirm = reviewer_client.post(CHANGELIST, {"action": "decide_rejected", "_selected_action": ids})
    assert confirm.status_code == 200 and b"will move to" in confirm.content
    done = reviewer_client.post(CHANGELIST, {"action": "decide_rejected", "_selected_action": ids, "apply": "1",
                                             "comment": "interview was not completed"})
    assert done.status_code == 302
    assert SurveyRecord.objects.filter(review_status="rejected").count() == 3
    decision = ReviewDecision.objects.get(record=records[0])
    assert (decision.reviewer, decision.from_status, decision.to_status, decision.comment) == (
        reviewer_client.user, "has_issues", "rejected", "interview was not completed")
    assert ReviewComment.objects.filter(text="interview was not completed").count() == 3
    assert AuditEvent.objects.filter(action="review.decided").count() == 3


def test_a_bulk_decision_on_all_records_of_a_filter_covers_every_one_of_them(reviewer_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """'Select all N' in the changelist, then Confirm: the confirmation page lists 50, decides all."""
    stored(tmp_path, 160)
    SurveyRecord.objects.update(review_status="has_issues", auto_approved=False)
    district = "Rukungiri"
    chosen = SurveyRecord.objects.filter(district=district).count()
    assert chosen > 50
    url = f"{CHANGELIST}?district__exact={district}"
    page = [str(pk) for pk in SurveyRecord.objects.filter(district=district).values_list("pk", flat=True)[:5]]
    confirm = reviewer_client.post(url, {"action": "decide_on_hold", "_selected_action": page, "select_across": "1"})
    assert confirm.status_code == 200 and f"{chosen} record(s) will move".encode() in confirm.content
    # The browser posts back the confirmation form's own fields.
    fields = re.findall(rb'<input type="hidden" name="(\w+)" value="([^"]*)"', confirm.content)
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name.decode(), []).append(value.decode())
    data["comment"] = ["moved together"]
    done = reviewer_client.post(url, data)
    assert done.status_code == 302
    assert SurveyRecord.objects.filter(review_status="on_hold").count() == chosen
    assert SurveyRecord.objects.exclude(district=district).filter(review_status="on_hold").count() == 0


def test_decisions_follow_the_states_and_skip_superseded_records(make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    records = stored(tmp_path, 3)
    reviewer = make_user("reviewer")
    with pytest.raises(ReviewError):
        review_decide(records=records, to_status="lost", reviewer=reviewer)
    new = record_correct(record=records[0], changes={"household_size": 7}, reviewer=reviewer)
    assert review_decide(records=records, to_status="on_hold", reviewer=reviewer) == 2  # v1 of record 0 is superseded
    assert SurveyRecord.objects.get(pk=new.pk).review_status == "approved"


def test_a_correction_is_a_new_version_and_the_old_one_is_kept(reviewer_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record = stored(tmp_path, 2)[0]
    before = record.data
    url = f"{CHANGELIST}{record.pk}/correct/"
    form = reviewer_client.get(url)
    assert form.status_code == 200
    post = {k: ("" if v is None else str(v)) for k, v in before.items()}
    post["household_size"] = str(int(before["household_size"]) + 1)
    post["comment"] = "recounted on a follow-up visit"
    resp = reviewer_client.post(url, post)
    assert resp.status_code == 302
    new = SurveyRecord.objects.get(supersedes=record)
    assert new.version == record.version + 1 and new.root_id == record.pk
    assert new.data["household_size"] == before["household_size"] + 1
    assert SurveyRecord.objects.get(pk=record.pk).data == before  # the old version is untouched
    event = AuditEvent.objects.get(action="review.corrected")
    assert event.changes["household_size"] == [before["household_size"], before["household_size"] + 1]


def test_a_correction_that_changes_nothing_is_refused(reviewer_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Else an identical version would approve the record with no trace of why."""
    record = stored(tmp_path, 2)[0]
    post = {k: ("" if v is None else str(v)) for k, v in record.data.items()}
    post["comment"] = "looked fine"
    resp = reviewer_client.post(f"{CHANGELIST}{record.pk}/correct/", post)
    assert resp.status_code == 200 and b"Nothing changed" in resp.content
    assert SurveyRecord.objects.count() == 2 and not AuditEvent.objects.filter(action="review.corrected").exists()


def test_a_correction_that_breaks_a_rule_saves_nothing(reviewer_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record = stored(tmp_path, 2)[0]
    post = {k: ("" if v is None else str(v)) for k, v in record.data.items()}
    post["hhh_sex"] = "5"
    resp = reviewer_client.post(f"{CHANGELIST}{record.pk}/correct/", post)
    assert resp.status_code == 200 and b"hhh_sex" in resp.content
    assert SurveyRecord.objects.count() == 2


def test_a_corrected_household_id_moves_the_new_version_to_that_household(make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record = stored(tmp_path, 2)[0]
    old_id = record.household.household_id
    new = record_correct(record=record, changes={"household_id": " KAN-NYA-GEO-K0001 "}, reviewer=make_user("reviewer"))
    assert new.household.household_id == "KAN-NYA-GEO-K0001" and new.data["household_id"] == "KAN-NYA-GEO-K0001"
    assert SurveyRecord.objects.get(pk=record.pk).household.household_id == old_id  # the old version stays
    assert not SurveyRecord.objects.filter(household__household_id=old_id, superseded_by__isnull=True).exists()
    assert set(RowIssue.objects.filter(record=new).values_list("household_id", flat=True)) <= {"KAN-NYA-GEO-K0001"}


@pytest.mark.parametrize(("field", "value"), [("village", "v" * 121), ("district", "d" * 65),
                                               ("household_id", "H" * 65), ("cluster", "Rubaare\x00")])
def test_a_correction_the_database_cannot_hold_is_refused_by_name(reviewer_client, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                  field: str, value: str) -> None:
    record = stored(tmp_path, 2)[0]
    with pytest.raises(ReviewError, match=field):
        record_correct(record=record, changes={field: value}, reviewer=reviewer_client.user)
    post = {k: ("" if v is None else str(v)) for k, v in record.data.items()}
    post[field] = value.replace("\x00", "")  # a form field refuses NUL itself
    if "\x00" not in value:
        resp = reviewer_client.post(f"{CHANGELIST}{record.pk}/correct/", post)
        assert resp.status_code == 200 and field.encode() in resp.content
    assert SurveyRecord.objects.count() == 2


def test_comments_are_added_through_the_change_page(reviewer_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    record = stored(tmp_path, 1)[0]
    page = reviewer_client.get(f"{CHANGELIST}{record.pk}/change/")
    assert page.status_code == 200 and b"values and findings" in page.content.lower()
    form = {"comments-TOTAL_FORMS": "1", "comments-INITIAL_FORMS": "0", "comments-0-text": "called the household",
            "decisions-TOTAL_FORMS": "0", "decisions-INITIAL_FORMS": "0"}
    resp = reviewer_client.post(f"{CHANGELIST}{record.pk}/change/", form)
    assert resp.status_code == 302, resp.content[:2000]
    assert ReviewComment.objects.get(record=record).text == "called the household"
    assert AuditEvent.objects.filter(action="review.commented").exists()


@pytest.mark.parametrize(("role", "list_status", "can_act"), [
    ("reviewer", 200, True), ("data_manager", 200, True), ("admin", 200, True), ("data_scientist", 200, False),
])
def test_staff_roles_see_the_queue_and_only_reviewers_decide(client, make_user, tmp_path: Path, role: str,  # type: ignore[no-untyped-def]
                                                             list_status: int, can_act: bool) -> None:
    records = stored(tmp_path, 2)
    client.force_login(make_user(role))
    assert client.get(CHANGELIST).status_code == list_status
    client.post(CHANGELIST, {"action": "decide_rejected", "_selected_action": [records[0].pk], "apply": "1"})
    assert (SurveyRecord.objects.get(pk=records[0].pk).review_status == "rejected") is can_act


@pytest.mark.parametrize("role", ["field_officer", "partner", None])
def test_non_staff_roles_cannot_open_the_admin(client, make_user, role: str | None) -> None:  # type: ignore[no-untyped-def]
    client.force_login(make_user(role))
    assert client.get(CHANGELIST).status_code == 302  # to the admin login


def test_a_bulk_decision_costs_the_same_queries_for_ten_records_as_for_two(make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    records = stored(tmp_path, 12)
    SurveyRecord.objects.update(review_status="has_issues")
    reviewer = make_user("reviewer")
    with CaptureQueriesContext(connection) as two:
        review_decide(records=records[:2], to_status="approved", reviewer=reviewer, comment="ok")
    with CaptureQueriesContext(connection) as ten:
        review_decide(records=records[2:], to_status="approved", reviewer=reviewer, comment="ok")
    assert len(two.captured_queries) == len(ten.captured_queries)
    assert AuditEvent.objects.filter(action="review.decided").count() == 12
