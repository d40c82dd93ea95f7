"""Device submissions: identity by UUID, replays, conflicts, versions, batches, one error shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from ingestion.models import IngestionBatch, SurveyRecord
from ingestion.synthetic.generator import generate
from rtv.models import OutboxMessage
from tests.payloads import household_payload

pytestmark = pytest.mark.django_db

ROWS = generate(40, seed=99, bad_rate=0.0)[0]


def household(i: int = 0, **changes: Any) -> dict[str, Any]:
    return household_payload(ROWS, i, **changes)


def body(i: int = 0, sid: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"submission_id": sid or str(uuid.uuid4()), "form_version": "2026.1", "collected_at": "2026-11-20T10:15:00+03:00",
            "device_id": "tab-07", "location": {"lat": -0.91, "lon": 29.8, "accuracy_m": 6.0}, "data": household(i), **extra}


@pytest.fixture
def officer(api):  # type: ignore[no-untyped-def]
    return api("field_officer")


def test_first_receipt_stores_the_record_and_answers_201(officer, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    payload = body()
    with django_capture_on_commit_callbacks(execute=True):
        resp = officer.post("/api/v1/submissions/", payload, format="json")
    assert resp.status_code == 201, resp.json()
    out = resp.json()
    assert out["submission_id"] == payload["submission_id"] and out["version"] == 1
    # Clean data scores above the auto-approval threshold: approved without a reviewer.
    assert out["status"] == "approved" and out["quality"]["auto_approved"] is True
    assert out["quality"]["score"] >= 0.9 and out["quality"]["errors"] == 0
    rec = SurveyRecord.objects.get(submission_id=payload["submission_id"])
    assert rec.field_officer == officer.user and rec.device_id == "tab-07" and rec.form_version == "2026.1"
    assert rec.gps == {"lat": -0.91, "lon": 29.8, "accuracy_m": 6.0}
    assert rec.batch.channel == IngestionBatch.Channel.DEVICE
    assert rec.progress_status in {"On Track", "At Risk", "Struggling", "Severely Struggling"}
    # Downstream work was recorded in the same transaction (the outbox), then sent after commit.
    assert OutboxMessage.objects.filter(task="ingestion.after_submissions", args=[[rec.pk]]).exclude(sent_at=None).exists()


def test_an_identical_replay_answers_200_with_the_same_body_and_stores_nothing(officer) -> None:  # type: ignore[no-untyped-def]
    payload = body()
    first = officer.post("/api/v1/submissions/", payload, format="json")
    again = officer.post("/api/v1/submissions/", payload, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert SurveyRecord.objects.count() == 1


def test_a_replay_after_a_review_tells_the_device_the_decision(officer, make_user) -> None:  # type: ignore[no-untyped-def]
    from quality.services import review_decide

    payload = body()
    first = officer.post("/api/v1/submissions/", payload, format="json").json()
    review_decide(records=[SurveyRecord.objects.get(pk=first["id"])], to_status="rejected", reviewer=make_user("reviewer"))
    again = officer.post("/api/v1/submissions/", payload, format="json").json()
    decided = {**first, "status": "rejected", "quality": {**first["quality"], "auto_approved": False}}
    assert again == decided  # the same receipt, with the reviewer's decision


def test_the_same_id_with_different_content_is_a_409_with_a_stable_code(officer) -> None:  # type: ignore[no-untyped-def]
    payload = body()
    officer.post("/api/v1/submissions/", payload, format="json")
    changed = {**payload, "data": household(0, household_size=9)}
    resp = officer.post("/api/v1/submissions/", changed, format="json")
    assert resp.status_code == 409
    err = resp.json()
    assert err["code"] == "submission_conflict" and err["errors"][0]["field"] == "submission_id"
    assert "supersedes" in err["message"]
    assert SurveyRecord.objects.get().household_size == payload["data"]["household_size"]


def test_a_correction_that_supersedes_makes_a_new_version_and_keeps_the_old(officer) -> None:  # type: ignore[no-untyped-def]
    first = body()
    officer.post("/api/v1/submissions/", first, format="json")
    fix = body(sid=str(uuid.uuid4()), supersedes=first["submission_id"])
    fix["data"] = household(0, household_size=first["data"]["household_size"] + 1)
    resp = officer.post("/api/v1/submissions/", fix, format="json")
    assert resp.status_code == 201 and resp.json()["version"] == 2 and resp.json()["supersedes"] == first["submission_id"]
    assert SurveyRecord.objects.count() == 2
    versions = officer.get(f"/api/v1/submissions/{fix['submission_id']}/versions/").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[1]["changes"] == [{"field": "household_size", "old": first["data"]["household_size"],
                                       "new": first["data"]["household_size"] + 1}]
    detail = officer.get(f"/api/v1/submissions/{first['submission_id']}/").json()
    assert detail["latest_version"] == 2 and len(detail["versions"]) == 2
    again = officer.post("/api/v1/submissions/", body(supersedes=first["submission_id"]), format="json")
    assert again.status_code == 409 and again.json()["code"] == "already_superseded"


def test_an_officer_corrects_only_their_own_submissions(officer, api) -> None:  # type: ignore[no-untyped-def]
    """Another officer's submission is 'not stored' to them, as on GET: its versions and diffs stay
    with those who may see it.  A data manager (who sees every record) may correct it."""
    first = body()
    officer.post("/api/v1/submissions/", first, format="json")
    other = api("field_officer")
    fix = body(sid=str(uuid.uuid4()), supersedes=first["submission_id"])
    resp = other.post("/api/v1/submissions/", fix, format="json")
    assert resp.status_code == 409 and resp.json()["code"] == "supersedes_not_found"
    assert other.get(f"/api/v1/submissions/{first['submission_id']}/").status_code == 404
    assert SurveyRecord.objects.count() == 1
    manager_fix = body(sid=str(uuid.uuid4()), supersedes=first["submission_id"])
    resp = api("data_manager").post("/api/v1/submissions/", manager_fix, format="json")
    assert resp.status_code == 201 and resp.json()["version"] == 2


def test_a_resent_correction_is_a_replay_and_its_altered_twin_a_conflict(officer) -> None:  # type: ignore[no-untyped-def]
    """A device that resends a correction after a timeout gets the stored version back, not a refusal;
    the same id with other content is a conflict naming it, as for any submission."""
    first = body()
    officer.post("/api/v1/submissions/", first, format="json")
    fix = body(sid=str(uuid.uuid4()), supersedes=first["submission_id"])
    created = officer.post("/api/v1/submissions/", fix, format="json")
    resent = officer.post("/api/v1/submissions/", fix, format="json")
    assert (created.status_code, resent.status_code) == (201, 200)
    assert resent.json() == created.json() and resent.json()["version"] == 2
    altered = dict(fix, device_id="tab-99")
    conflict = officer.post("/api/v1/submissions/", altered, format="json")
    assert conflict.status_code == 409 and conflict.json()["code"] == "submission_conflict"
    assert conflict.json()["record"]["id"] == created.json()["id"]
    in_batch = officer.post("/api/v1/submissions/batch/", {"items": [fix]}, format="json").json()["results"][0]
    assert in_batch["result"] == "replayed" and in_batch["record"]["id"] == created.json()["id"]
    assert SurveyRecord.objects.count() == 2


def test_a_correction_of_a_superseded_version_is_refused_naming_the_latest(officer) -> None:  # type: ignore[no-untyped-def]
    """A device that never saw the newer version (another device's, a reviewer's) learns what to
    supersede instead: a 409 with a way out."""
    first = body()
    officer.post("/api/v1/submissions/", first, format="json")
    second = body(sid=str(uuid.uuid4()), supersedes=first["submission_id"])
    stored = officer.post("/api/v1/submissions/", second, format="json").json()
    late = officer.post("/api/v1/submissions/", body(supersedes=first["submission_id"]), format="json")
    assert late.status_code == 409 and late.json()["code"] == "already_superseded"
    assert late.json()["record"] == {"id": stored["id"], "submission_id": second["submission_id"]}
    assert second["submission_id"] in late.json()["message"]
    retried = officer.post("/api/v1/submissions/", body(supersedes=second["submission_id"]), format="json")
    assert retried.status_code == 201 and retried.json()["version"] == 3


@pytest.mark.parametrize("order", ["original first", "correction first"])
def test_an_original_and_its_corrections_in_one_batch_are_all_stored_as_versions(officer, order) -> None:  # type: ignore[no-untyped-def]
    """A device back online sends what it queued: an original and its corrections, in any order."""
    a = body()
    b = body(sid=str(uuid.uuid4()), supersedes=a["submission_id"])
    c = body(sid=str(uuid.uuid4()), supersedes=b["submission_id"])
    items = [a, b, c] if order == "original first" else [c, b, a]
    results = officer.post("/api/v1/submissions/batch/", {"items": items}, format="json").json()["results"]
    assert [r["result"] for r in results] == ["created"] * 3
    version = {r["submission_id"]: r["record"]["version"] for r in results}
    assert [version[x["submission_id"]] for x in (a, b, c)] == [1, 2, 3]
    stored = {str(r.submission_id): r for r in SurveyRecord.objects.select_related("supersedes")}
    assert stored[b["submission_id"]].supersedes == stored[a["submission_id"]]
    assert stored[c["submission_id"]].root_id == stored[a["submission_id"]].pk
    assert IngestionBatch.objects.get().accepted == 3  # one request, one batch
    resent = officer.post("/api/v1/submissions/batch/", {"items": items}, format="json").json()["results"]
    assert [r["result"] for r in resent] == ["replayed"] * 3 and SurveyRecord.objects.count() == 3


def test_a_large_batch_with_a_correction_writes_both_waves_into_one_batch(officer) -> None:  # type: ignore[no-untyped-def]
    """Twenty originals go by COPY, the correction after them in one statement: one batch, both counted."""
    originals = [body(i) for i in range(20)]
    fix = body(sid=str(uuid.uuid4()), supersedes=originals[3]["submission_id"])
    results = officer.post("/api/v1/submissions/batch/", {"items": [fix, *originals]}, format="json").json()["results"]
    assert [r["result"] for r in results] == ["created"] * 21 and results[0]["record"]["version"] == 2
    batch = IngestionBatch.objects.get()
    assert (batch.row_count, batch.accepted) == (21, 21) and batch.records.count() == 21


def test_two_corrections_of_one_version_in_a_batch_keep_the_first(officer) -> None:  # type: ignore[no-untyped-def]
    a = body()
    b1 = body(sid=str(uuid.uuid4()), supersedes=a["submission_id"])
    b2 = body(sid=str(uuid.uuid4()), supersedes=a["submission_id"])
    results = officer.post("/api/v1/submissions/batch/", {"items": [a, b1, b2]}, format="json").json()["results"]
    assert [r["result"] for r in results] == ["created", "created", "conflict"]
    assert results[2]["code"] == "already_superseded" and b1["submission_id"] in results[2]["message"]


def test_corrections_that_supersede_each_other_in_a_circle_are_refused(officer) -> None:  # type: ignore[no-untyped-def]
    x_id, y_id = str(uuid.uuid4()), str(uuid.uuid4())
    items = [body(sid=x_id, supersedes=y_id), body(sid=y_id, supersedes=x_id), body()]
    results = officer.post("/api/v1/submissions/batch/", {"items": items}, format="json").json()["results"]
    assert [(r["result"], r.get("code")) for r in results] == [
        ("invalid", "supersedes_not_found"), ("invalid", "supersedes_not_found"), ("created", None)]


def test_superseding_an_unknown_submission_is_refused_by_code(officer) -> None:  # type: ignore[no-untyped-def]
    resp = officer.post("/api/v1/submissions/", body(supersedes=str(uuid.uuid4())), format="json")
    assert resp.status_code == 409 and resp.json()["code"] == "supersedes_not_found"


def test_the_idempotency_key_header_can_carry_the_identity(officer) -> None:  # type: ignore[no-untyped-def]
    key = str(uuid.uuid4())
    payload = body()
    del payload["submission_id"]
    first = officer.post("/api/v1/submissions/", payload, format="json", HTTP_IDEMPOTENCY_KEY=key)
    again = officer.post("/api/v1/submissions/", payload, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert (first.status_code, again.status_code) == (201, 200) and first.json()["submission_id"] == key


@pytest.mark.parametrize(("change", "field", "code"), [
    ({"household_size": 0}, "data.household_size", "range"),
    ({"hhh_sex": 3}, "data.hhh_sex", "allowed"),
    ({"time_to_opd": "far"}, "data.time_to_opd", "type"),
    ({"village": None}, "data.village", "required"),
    ({"favourite_colour": "blue"}, "data.favourite_colour", "unknown_field"),
    ({"village": "Bukiriro\x00"}, "data.village", "invalid_characters"),  # PostgreSQL text holds no NUL
])
def test_invalid_data_gets_a_400_naming_the_field_and_rule(officer, change, field, code) -> None:  # type: ignore[no-untyped-def]
    payload = body()
    payload["data"] = {**payload["data"], **change}
    resp = officer.post("/api/v1/submissions/", payload, format="json")
    assert resp.status_code == 400
    err = resp.json()
    assert err["code"] == "invalid_submission"
    assert {"field": field, "code": code} in [{"field": e["field"], "code": e["code"]} for e in err["errors"]]
    assert SurveyRecord.objects.count() == 0


def test_a_nul_character_refuses_its_item_only(officer) -> None:  # type: ignore[no-untyped-def]
    bad = body(1)
    bad["data"] = {**bad["data"], "cluster": "Rubaare\x00"}
    resp = officer.post("/api/v1/submissions/batch/", {"items": [body(0), bad, body(2)]}, format="json")
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert [r["result"] for r in results] == ["created", "invalid", "created"]
    assert [(e["field"], e["code"]) for e in results[1]["errors"]] == [("data.cluster", "invalid_characters")]
    assert SurveyRecord.objects.count() == 2


def _raw_post(client, path: str, payload: dict[str, Any], **literals: str):  # type: ignore[no-untyped-def]
    """POST JSON text in which ``"@name@"`` placeholders become literal JSON (1e400, "\\ud800")."""
    text = json.dumps(payload)
    for name, literal in literals.items():
        text = text.replace(f'"@{name}@"', literal)
    return client.post(path, data=text.encode(), content_type="application/json")


@pytest.mark.parametrize(("field", "literal", "code"), [
    ("village", "1e400", "invalid_number"),  # parsed as infinity: no JSON answer or JSONB can hold it
    ("village", '"Buki\\ud800"', "invalid_characters"),  # a lone surrogate is not UTF-8
    ("village", '{"name": "Bukiriro"}', "invalid_type"),
    ("household_size", "[5]", "invalid_type"),
    ("household_size", "true", "invalid_type"),  # not 1 person
    ("hhh_sex", "true", "invalid_type"),  # codes 1 and 2: true is no answer
])
def test_values_no_answer_could_carry_are_refused_by_name(officer, field: str, literal: str, code: str) -> None:  # type: ignore[no-untyped-def]
    payload = body()
    payload["data"][field] = f"@{field}@"
    resp = _raw_post(officer, "/api/v1/submissions/", payload, **{field: literal})
    assert resp.status_code == 400, resp.content
    assert {"field": f"data.{field}", "code": code} in [{"field": e["field"], "code": e["code"]} for e in resp.json()["errors"]]
    batch = {"items": [body(0), payload, body(2)]}
    resp = _raw_post(officer, "/api/v1/submissions/batch/", batch, **{field: literal})
    assert resp.status_code == 200
    assert [r["result"] for r in resp.json()["results"]] == ["created", "invalid", "created"]
    assert SurveyRecord.objects.count() == 2


def test_true_and_false_answer_yes_no_questions(officer) -> None:  # type: ignore[no-untyped-def]
    payload = body()
    payload["data"]["latrine_constructed"], payload["data"]["work_casual"] = True, False
    resp = officer.post("/api/v1/submissions/", payload, format="json")
    assert resp.status_code == 201, resp.json()
    values = SurveyRecord.objects.get().data
    assert (values["latrine_constructed"], values["work_casual"]) == (1, 0)


def test_a_key_that_is_not_text_is_refused_without_echoing_it(officer) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(body()).replace('"data": {', '"data": {"\\ud800x": 1, ', 1)
    resp = officer.post("/api/v1/submissions/", data=text.encode(), content_type="application/json")
    assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == "unknown_field"


def test_income_components_whose_sum_overflows_are_refused(officer) -> None:  # type: ignore[no-untyped-def]
    from rtv import contract

    payload = body()
    for name in contract.TARGET_COMPONENTS[:2]:
        payload["data"][name] = 1e308
    for result, _ in [*contract.SUM_IDENTITIES, *contract.PER_DAY_IDENTITIES]:  # the totals a device may omit
        payload["data"][result] = None
    resp = officer.post("/api/v1/submissions/", payload, format="json")
    assert resp.status_code == 400, resp.content
    codes = {(e["field"], e["code"]) for e in resp.json()["errors"]}
    assert (f"data.{contract.TARGET_COMPONENTS[0]}", "out_of_range") in codes
    assert SurveyRecord.objects.count() == 0


def test_an_invalid_batch_item_echoes_only_an_id_it_can_answer(officer) -> None:  # type: ignore[no-untyped-def]
    bad = {"submission_id": "@sid@", "data": {}}
    resp = _raw_post(officer, "/api/v1/submissions/batch/", {"items": [bad, body(1)]}, sid="1e400")
    assert resp.status_code == 200
    first, second = resp.json()["results"]
    assert (first["result"], first["submission_id"], second["result"]) == ("invalid", None, "created")


@pytest.mark.parametrize(("payload", "field"), [
    ({"data": {}, "submission_id": "not-a-uuid"}, "submission_id"),
    ({"data": {}, "submission_id": 7}, "submission_id"),  # not UUID 00000000-...-0007
    ({"data": {}, "submission_id": str(uuid.uuid4()), "supersedes": 7}, "supersedes"),
    ({"submission_id": str(uuid.uuid4())}, "data"),
    ({"submission_id": str(uuid.uuid4()), "data": {}, "location": {"lat": 123, "lon": 0}}, "location.lat"),
    ({"submission_id": str(uuid.uuid4()), "data": {}, "collected_at": "2026-11-20T10:15:00"}, "collected_at"),
    ({"submission_id": str(uuid.uuid4()), "data": {}, "collected_at": "yesterday"}, "collected_at"),
])
def test_a_malformed_envelope_is_a_400_naming_the_field(officer, payload, field) -> None:  # type: ignore[no-untyped-def]
    resp = officer.post("/api/v1/submissions/", payload, format="json")
    assert resp.status_code == 400
    assert field in [e["field"] for e in resp.json()["errors"]]


def test_broken_json_is_a_400_not_a_500(officer) -> None:  # type: ignore[no-untyped-def]
    resp = officer.post("/api/v1/submissions/", data=b'{"data": ', content_type="application/json")
    assert resp.status_code == 400 and resp.json()["code"] == "parse_error"


@pytest.mark.parametrize("path", ["/api/v1/submissions/", "/api/v1/submissions/batch/"])
def test_json_nested_deeper_than_python_parses_is_a_400_parse_error(officer, path: str) -> None:  # type: ignore[no-untyped-def]
    deep = '{"data":' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = officer.post(path, data=deep, content_type="application/json")
    assert resp.status_code == 400
    assert resp.json() == {"code": "parse_error", "message": resp.json()["message"], "errors": []}
    assert "nested too deeply" in resp.json()["message"]


def test_a_body_over_the_limit_gets_413(officer, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_MAX_SUBMISSION_BYTES = 1000
    payload = body()
    payload["data"]["village"] = "x" * 2000
    resp = officer.post("/api/v1/submissions/", payload, format="json")
    assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large"


def test_a_device_batch_over_its_limit_gets_413_and_stores_nothing(officer, settings) -> None:  # type: ignore[no-untyped-def]
    raw = json.dumps({"items": [body(i) for i in range(5)]}).encode()
    settings.RTV_MAX_BATCH_BYTES = len(raw) - 1
    resp = officer.post("/api/v1/submissions/batch/", raw, content_type="application/json")
    assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large"
    assert str(settings.RTV_MAX_BATCH_BYTES) in resp.json()["message"] and SurveyRecord.objects.count() == 0
    settings.RTV_MAX_BATCH_BYTES = len(raw)
    resp = officer.post("/api/v1/submissions/batch/", raw, content_type="application/json")
    assert resp.json()["counts"] == {"created": 5}


@pytest.mark.parametrize("role", ["reviewer", "partner", "data_scientist", None])
def test_only_field_officers_data_managers_and_admins_submit(api, role) -> None:  # type: ignore[no-untyped-def]
    assert api(role).post("/api/v1/submissions/", body(), format="json").status_code == 403


def test_submissions_need_authentication() -> None:
    from rest_framework.test import APIClient

    assert APIClient().post("/api/v1/submissions/", body(), format="json").status_code == 401


def test_a_field_officer_reads_own_submissions_and_gets_404_for_others(api) -> None:  # type: ignore[no-untyped-def]
    alice, bob = api("field_officer"), None
    payload = body()
    alice.post("/api/v1/submissions/", payload, format="json")
    from django.contrib.auth.models import Group, User
    from rest_framework.test import APIClient

    user = User.objects.create_user("bob", password="pw-Secret-123")
    user.groups.add(Group.objects.get(name="field_officer"))
    bob = APIClient()
    bob.force_authenticate(user)
    assert alice.get(f"/api/v1/submissions/{payload['submission_id']}/").status_code == 200
    missing = bob.get(f"/api/v1/submissions/{uuid.uuid4()}/")
    not_yours = bob.get(f"/api/v1/submissions/{payload['submission_id']}/")
    assert missing.status_code == not_yours.status_code == 404
    assert missing.json() == not_yours.json()
    assert api("reviewer").get(f"/api/v1/submissions/{payload['submission_id']}/").status_code == 200


def test_a_batch_reports_each_item_in_order_and_one_bad_item_rejects_nothing_else(officer) -> None:  # type: ignore[no-untyped-def]
    stored = body(1)
    officer.post("/api/v1/submissions/", stored, format="json")
    bad = body(2)
    bad["data"] = {**bad["data"], "household_size": -1}
    conflict = {**stored, "data": household(1, household_size=30)}
    items = [body(3), stored, bad, conflict, {"submission_id": "nope", "data": {}}, body(4)]
    resp = officer.post("/api/v1/submissions/batch/", {"items": items}, format="json")
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert [r["result"] for r in results] == ["created", "replayed", "invalid", "conflict", "invalid", "created"]
    assert [r["index"] for r in results] == list(range(6))
    assert results[2]["errors"][0]["field"] == "data.household_size"
    assert results[3]["code"] == "submission_conflict"
    assert results[4]["errors"][0]["field"] == "submission_id"
    assert resp.json()["counts"] == {"created": 2, "replayed": 1, "invalid": 2, "conflict": 1}
    assert SurveyRecord.objects.count() == 3


def test_every_refused_batch_item_has_the_same_shape_whichever_check_refused_it(officer) -> None:  # type: ignore[no-untyped-def]
    bad_answers = body(2)
    bad_answers["data"] = {**bad_answers["data"], "household_size": -1}
    bad_envelope = {"submission_id": "nope", "data": {}}
    resp = officer.post("/api/v1/submissions/batch/", {"items": [bad_answers, bad_envelope]}, format="json")
    by_rules, by_envelope = resp.json()["results"]
    assert set(by_rules) == set(by_envelope) == {"index", "result", "status", "submission_id", "code", "message", "errors"}
    assert (by_envelope["code"], by_envelope["status"]) == (by_rules["code"], by_rules["status"]) == ("invalid_submission", 400)
    assert by_envelope["message"] == by_rules["message"] != ""


def test_another_officers_submission_id_is_refused_without_naming_their_record(officer, api) -> None:  # type: ignore[no-untyped-def]
    """The same id from another officer, with the same content or not, is one 409 that says the id
    is taken: nothing of the stored record (id, status, label, quality), nor whether it matches."""
    payload = body()
    mine = officer.post("/api/v1/submissions/", payload, format="json").json()
    other = api("field_officer")
    same = other.post("/api/v1/submissions/", payload, format="json")
    changed = other.post("/api/v1/submissions/", {**payload, "device_id": "tab-99"}, format="json")
    in_batch = other.post("/api/v1/submissions/batch/", {"items": [payload]}, format="json").json()["results"][0]
    assert set(same.json()) == set(changed.json()) == {"code", "message", "errors"}
    assert set(in_batch) == {"index", "result", "status", "submission_id", "code", "message", "errors"}
    for answer in (same.json(), changed.json(), in_batch):
        assert answer["code"] == "submission_id_taken"
        assert answer["errors"] == [{"field": "submission_id", "code": "submission_id_taken",
                                     "message": payload["submission_id"]}]
    assert same.status_code == changed.status_code == in_batch["status"] == 409
    assert same.json() == changed.json()
    assert in_batch["result"] == "conflict"
    # The sender still gets their own replay, and staff who see every record get its conflict.
    assert officer.post("/api/v1/submissions/", payload, format="json").status_code == 200
    staff = api("data_manager").post("/api/v1/submissions/", {**payload, "device_id": "x"}, format="json")
    assert (staff.status_code, staff.json()["code"], staff.json()["record"]["id"]) == (409, "submission_conflict", mine["id"])
    assert SurveyRecord.objects.count() == 1


def test_a_batch_over_500_items_is_refused(officer) -> None:  # type: ignore[no-untyped-def]
    resp = officer.post("/api/v1/submissions/batch/", {"items": [{}] * 501}, format="json")
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "items"


def test_a_few_items_and_many_items_are_stored_alike(officer, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    """A small request is written as one composed statement, a large one by bulk insert and COPY:
    the same household data gives the same stored record, values, findings and outbox message."""
    from django.forms.models import model_to_dict

    from ingestion.models import RowIssue, SurveyValues
    from quality.models import Rule
    from quality.rules import rule_update

    # The second request repeats the first's households on purpose, and generated households share
    # ids as the real extract's do; flagging repeats is tested apart.
    for kind in ("near_duplicate", "duplicate_household"):
        rule_update(rule=Rule.objects.get(kind=kind), user=None, active=False)
    few = [body(i) for i in range(3)]
    many = [body(i) for i in range(3)] + [body(i) for i in range(3, 25)]
    with django_capture_on_commit_callbacks(execute=True):
        assert officer.post("/api/v1/submissions/batch/", {"items": few}, format="json").json()["counts"] == {"created": 3}
        assert officer.post("/api/v1/submissions/batch/", {"items": many}, format="json").json()["counts"] == {"created": 25}

    def stored(sid: str) -> dict[str, Any]:
        rec = SurveyRecord.objects.get(submission_id=sid)
        values = model_to_dict(SurveyValues.objects.get(record=rec), exclude=["record"])
        record = model_to_dict(rec, exclude=["id", "submission_id", "batch", "received_at", "content_hash"])
        record["answers_hash"] = rec.answers_hash  # not editable, so not in model_to_dict
        issues = sorted((i.row_number, i.household_id, i.field, i.column, i.rule, i.severity, i.value, i.message)
                        for i in RowIssue.objects.filter(record=rec))
        assert RowIssue.objects.filter(record=rec).exclude(batch=rec.batch).count() == 0
        [outbox] = [m for m in OutboxMessage.objects.filter(task="ingestion.after_submissions") if rec.pk in m.args[0]]
        assert outbox.sent_at is not None
        return {"record": record, "values": values, "issues": issues, "outbox_size": len(outbox.args[0])}

    for a, b in zip(few, many[:3], strict=True):
        small, large = stored(a["submission_id"]), stored(b["submission_id"])
        assert small["outbox_size"] == 3 and large["outbox_size"] == 25
        assert small["record"] == large["record"] and small["values"] == large["values"]
        assert small["issues"] == large["issues"]
    assert sum(len(stored(a["submission_id"])["issues"]) for a in few) > 0, "the sample should carry some findings"
    assert SurveyRecord.objects.get(submission_id=few[0]["submission_id"]).gps == few[0]["location"]
    small_batch = SurveyRecord.objects.get(submission_id=few[0]["submission_id"]).batch
    assert (small_batch.row_count, small_batch.accepted, small_batch.channel) == (3, 3, IngestionBatch.Channel.DEVICE)


def test_rows_written_in_one_statement_are_marked_saved(officer) -> None:  # type: ignore[no-untyped-def]
    """After the composed write, the objects are what save() leaves: keyed and no longer 'adding'."""
    from datetime import datetime

    from ingestion.submissions import Envelope, submissions_receive

    payload = body()
    [outcome] = submissions_receive(user=officer.user, envelopes=[Envelope(
        submission_id=uuid.UUID(payload["submission_id"]), data=payload["data"], device_id="tab-07",
        collected_at=datetime.fromisoformat(payload["collected_at"]), location=payload["location"])])
    assert outcome is not None and outcome.result == "created"
    record = outcome.record
    assert record is not None and record.pk and not record._state.adding and not record.batch._state.adding
    record.batch.status = IngestionBatch.Status.FAILED
    record.batch.save()  # an update, not a second insert
    assert IngestionBatch.objects.get(pk=record.batch.pk).status == IngestionBatch.Status.FAILED


def test_answers_that_are_not_an_object_are_refused_naming_the_field(officer) -> None:  # type: ignore[no-untyped-def]
    resp = officer.post("/api/v1/submissions/", dict(body(), data=["not", "an", "object"]), format="json")
    assert resp.status_code == 400
    assert {(e["field"], e["code"]) for e in resp.json()["errors"]} == {("data", "not_a_dict")}
    item = officer.post("/api/v1/submissions/batch/", {"items": [dict(body(), data=7), body(1)]}, format="json").json()
    assert [r["result"] for r in item["results"]] == ["invalid", "created"]
    assert item["results"][0]["errors"][0]["field"] == "data"


@pytest.mark.parametrize("odd", [None, 5, "text", [], True])
def test_an_item_that_is_not_an_object_is_invalid_alone(officer, odd) -> None:  # type: ignore[no-untyped-def]
    """A device's queue with a null in it (a record lost on the phone) still syncs the rest."""
    resp = officer.post("/api/v1/submissions/batch/", {"items": [body(0), odd, body(2)]}, format="json")
    assert resp.status_code == 200, resp.json()
    results = resp.json()["results"]
    assert [r["result"] for r in results] == ["created", "invalid", "created"]
    assert results[1]["code"] == "invalid_submission" and results[1]["errors"]
    assert SurveyRecord.objects.count() == 2


def test_a_device_batch_keeps_its_request_as_an_upload_batch_keeps_its_file(officer) -> None:  # type: ignore[no-untyped-def]
    """Lineage whatever the door: the request's sha256, size, fields and timing at once, and its bytes
    under raw/ once the after-commit task has run (storage is not on the request's path)."""
    import hashlib

    from django.core.files.storage import default_storage

    from ingestion.models import DeviceRequest
    from ingestion.submissions import device_body
    from ingestion.tasks import after_submissions_task

    items = [body(0), body(1), dict(body(2), data={"no_such_field": 1})]
    raw = json.dumps({"items": items}).encode()
    resp = officer.post("/api/v1/submissions/batch/", raw, content_type="application/json")
    assert resp.json()["counts"] == {"created": 2, "invalid": 1}
    rec = SurveyRecord.objects.get(submission_id=items[0]["submission_id"])
    batch = IngestionBatch.objects.get(pk=rec.batch_id)
    assert (batch.sha256, batch.size_bytes) == (hashlib.sha256(raw).hexdigest(), len(raw))
    assert (batch.row_count, batch.accepted, batch.rejected) == (3, 2, 1)
    sent = sorted(set(items[0]["data"]) | set(items[1]["data"]))
    assert batch.column_count == len(sent) and [c["field"] for c in batch.header_mapping] == sent
    assert batch.timings["validate_s"] > 0
    assert device_body(batch) == raw and batch.file_key == ""  # waiting in the database: no worker has run
    assert_encrypted(DeviceRequest.objects.get(batch=batch).token, raw)

    for _ in range(2):  # a task run twice writes the body once
        after_submissions_task.apply(args=[[rec.pk]]).get()
    batch.refresh_from_db()
    assert batch.file_key == f"raw/{batch.pk}/original.json.zlib.fernet" and not DeviceRequest.objects.exists()
    with default_storage.open(batch.file_key, "rb") as fh:
        assert_encrypted(fh.read(), raw)
    assert device_body(batch) == raw
    assert len(default_storage.listdir(f"raw/{batch.pk}")[1]) == 1


def assert_encrypted(token: bytes, raw: bytes) -> None:
    """Readable with the configured keys, and with nothing else (not merely compressed)."""
    import zlib

    from cryptography.fernet import Fernet, InvalidToken

    from rtv.fields import fernet

    assert zlib.decompress(fernet().decrypt(bytes(token))) == raw
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(bytes(token))
    with pytest.raises(zlib.error):
        zlib.decompress(bytes(token))


def test_a_single_submission_keeps_its_body_too(officer) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    from ingestion.submissions import device_body

    raw = json.dumps(body()).encode()
    assert officer.post("/api/v1/submissions/", raw, content_type="application/json").status_code == 201
    batch = SurveyRecord.objects.get().batch
    assert (batch.sha256, batch.size_bytes, device_body(batch)) == (hashlib.sha256(raw).hexdigest(), len(raw), raw)


def test_a_request_left_waiting_is_kept_by_the_sweep_and_a_half_written_copy_replaced(officer) -> None:  # type: ignore[no-untyped-def]
    """The task's keep failed (storage down) or died between writing the file and its commit: the
    sweep keeps what has waited two minutes, over any copy the dead keep left."""
    from datetime import timedelta

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.utils import timezone

    from ingestion.models import DeviceRequest
    from ingestion.submissions import device_body
    from ingestion.tasks import keep_device_requests_task

    raws = [json.dumps(body(i)).encode() for i in range(2)]
    for raw in raws:
        assert officer.post("/api/v1/submissions/", raw, content_type="application/json").status_code == 201
    old, new = SurveyRecord.objects.order_by("pk")
    DeviceRequest.objects.filter(batch_id=old.batch_id).update(created_at=timezone.now() - timedelta(minutes=3))
    default_storage.save(f"raw/{old.batch_id}/original.json.zlib.fernet", ContentFile(b"half written"))
    assert keep_device_requests_task.apply().get() == 1  # the new one is still its task's to keep
    assert list(DeviceRequest.objects.values_list("batch_id", flat=True)) == [new.batch_id]
    kept = IngestionBatch.objects.get(pk=old.batch_id)
    assert kept.file_key == f"raw/{old.batch_id}/original.json.zlib.fernet" and device_body(kept) == raws[0]
    assert default_storage.listdir(f"raw/{old.batch_id}")[1] == ["original.json.zlib.fernet"]


def test_a_file_sent_with_a_device_requests_bytes_is_not_refused_as_sent_before(api, officer) -> None:  # type: ignore[no-untyped-def]
    from django.core.files.uploadedfile import SimpleUploadedFile

    raw = json.dumps([body()["data"]]).encode()  # a JSON array is also a valid records file
    assert officer.post("/api/v1/submissions/batch/", {"items": [body()]}, format="json").status_code == 200
    IngestionBatch.objects.update(sha256=__import__("hashlib").sha256(raw).hexdigest())  # as if these bytes
    resp = api("data_manager").post("/api/v1/uploads/", {"file": SimpleUploadedFile("a.json", raw)}, format="multipart")
    assert resp.status_code == 202, resp.json()


def test_a_full_batch_of_500_with_findings_is_stored_whole(officer) -> None:  # type: ignore[no-untyped-def]
    from ingestion.models import RowIssue

    rows = generate(500, seed=12, bad_rate=0.0)[0]
    unusual = {"time_to_opd": 600, "time_to_water": 600, "radios_owned": 20, "phones_owned": 20}  # outliers, kept
    items = [dict(body(), data=household_payload(rows, i, **unusual)) for i in range(500)]
    resp = officer.post("/api/v1/submissions/batch/", {"items": items}, format="json")
    assert resp.status_code == 200 and resp.json()["counts"] == {"created": 500}
    assert SurveyRecord.objects.count() == 500 and RowIssue.objects.filter(rule="outlier").count() >= 2000
    assert all(r["record"]["quality"]["warnings"] >= 4 for r in resp.json()["results"])


def test_a_form_posted_by_a_signed_in_browser_gets_415_not_500(make_user) -> None:  # type: ignore[no-untyped-def]
    """Session sign-in checks CSRF, which reads a multipart form before the view: the view answers
    that submissions are JSON."""
    from django.middleware.csrf import _get_new_csrf_string
    from django.test import Client

    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.force_login(make_user("field_officer"))
    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    for path in ("/api/v1/submissions/", "/api/v1/submissions/batch/"):
        resp = client.post(path, {"submission_id": "x"}, HTTP_X_CSRFTOKEN=token)  # multipart
        assert resp.status_code == 415 and resp.json()["code"] == "unsupported_media_type", resp.content
    url_encoded = client.post("/api/v1/submissions/", "submission_id=x", content_type="application/x-www-form-urlencoded",
                              HTTP_X_CSRFTOKEN=token)
    assert url_encoded.status_code == 415


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_keep_passes_over_a_request_another_keep_or_rotation_holds(officer) -> None:  # type: ignore[no-untyped-def]
    """While another worker holds a waiting request (keeping it, or rotating its key), a keep writes
    nothing for it: no second copy, no stale token over a new one; it is kept once the hold ends."""
    from django.core.files.storage import default_storage
    from django.db import connection

    from ingestion.models import DeviceRequest
    from ingestion.submissions import device_bodies_keep, device_body
    from tests.locks import rows_locked_elsewhere

    if connection.vendor != "postgresql":
        pytest.skip("row locks: SQLite (the embedded run, one worker) serialises whole writes")
    raw = json.dumps(body()).encode()
    assert officer.post("/api/v1/submissions/", raw, content_type="application/json").status_code == 201
    record = SurveyRecord.objects.get()
    # The after-commit task has kept it (a real commit here): back to waiting, as before a worker runs.
    batch = IngestionBatch.objects.get(pk=record.batch_id)
    with default_storage.open(batch.file_key, "rb") as fh:
        DeviceRequest.objects.create(batch=batch, token=fh.read())
    default_storage.delete(batch.file_key)
    IngestionBatch.objects.filter(pk=batch.pk).update(file_key="")
    with rows_locked_elsewhere(DeviceRequest.objects.filter(batch_id=record.batch_id)):
        assert device_bodies_keep([record.pk]) == 0
        assert not default_storage.exists(f"raw/{record.batch_id}/original.json.zlib.fernet")
    assert device_bodies_keep([record.pk]) == 1
    assert device_body(IngestionBatch.objects.get(pk=record.batch_id)) == raw


@pytest.mark.parametrize("size", [3, 25])  # the few-items path and the bulk path
def test_a_device_requests_findings_name_each_items_row_as_the_same_records_in_a_json_file_would(
        officer, size: int) -> None:  # type: ignore[no-untyped-def]
    """Item k of the request (counting from 0, invalid items included) is row k + 2: a spreadsheet's
    header is row 1.  A single submission is row 2."""
    from ingestion.models import RowIssue
    from ingestion.reports import error_report_csv

    unusual = {"time_to_opd": 600}  # an outlier: kept, with a warning
    items: list[Any] = [body(i) for i in range(size)]
    items[0] = {"form_version": "2026.1"}  # no submission_id: refused before the service, keeps its place
    items[2] = dict(body(2), data=household(2, **unusual))
    resp = officer.post("/api/v1/submissions/batch/", {"items": items}, format="json")
    assert resp.status_code == 200 and resp.json()["counts"] == {"invalid": 1, "created": size - 1}
    record = SurveyRecord.objects.get(submission_id=items[2]["submission_id"])
    assert record.row_number == 4
    assert set(RowIssue.objects.filter(batch=record.batch, field="time_to_opd").values_list("row_number", flat=True)) == {4}
    assert set(SurveyRecord.objects.filter(batch=record.batch).values_list("row_number", flat=True)) == set(range(3, size + 2))
    report = b"".join(error_report_csv(record.batch)).decode()
    rows = [line.split(",")[0] for line in report.splitlines()[1:]]
    assert {r for r, line in zip(rows, report.splitlines()[1:], strict=True) if "time_to_opd" in line} == {"4"}
    assert set(rows) <= {str(n) for n in range(3, size + 2)}

    single = officer.post("/api/v1/submissions/", dict(body(5), data=household(5, **unusual)), format="json").json()
    stored = SurveyRecord.objects.get(pk=single["id"])
    assert stored.row_number == 2 and set(stored.issues.values_list("row_number", flat=True)) == {2}
