"""Rules are data: loaded by migration, editable with history, and they decide what the validator does."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from django.utils import timezone

from ingestion.models import RowIssue, SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from quality.engine import validate_frame
from quality.models import Rule, RuleRevision
from quality.rules import active_rules, forget_rules, rule_update
from rtv.models import AuditEvent
from rtv.selectors import current_schema
from tests.ingestion.test_submissions import body

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_rules() -> None:
    forget_rules()


def validate(rows: pd.DataFrame):  # type: ignore[no-untyped-def]
    raw = {c: ["" if pd.isna(v) else str(v) for v in rows[c]] for c in rows.columns}
    schema = current_schema()
    return validate_frame(raw, [f for f in schema.fields if f.name in raw])


def test_the_initial_rule_set_covers_four_levels_with_history() -> None:
    levels = set(Rule.objects.values_list("level", flat=True))
    assert levels == {"structural", "semantic", "business", "statistical"}
    assert Rule.objects.filter(code="range.household_size", severity="error", params__min=1).exists()
    assert Rule.objects.get(code="pattern.household_id").severity == "warning"  # a quirk of the real data
    assert Rule.objects.get(code="sentinel.phones_owned").severity == "warning"
    assert RuleRevision.objects.count() == Rule.objects.count()


def test_changing_a_rule_changes_validation_and_keeps_its_history(make_user) -> None:  # type: ignore[no-untyped-def]
    data, _ = generate(30, seed=3)
    data.loc[0, "household_size"] = 12
    assert not ((validate(data).issues["rule"] == "range") & (validate(data).issues["field"] == "household_size")).any()
    manager = make_user("data_manager")
    rule = Rule.objects.get(code="range.household_size")
    rule_update(rule=rule, user=manager, note="programme rule: at most 10", params={"min": 1, "max": 10},
                message="household_size must be between 1 and 10")
    issues = validate(data).issues
    hit = issues[(issues["field"] == "household_size") & (issues["rule"] == "range")]
    assert 0 in hit["row"].tolist() and set(hit["severity"]) == {"error"}
    rule.refresh_from_db()
    assert rule.version == 2
    assert list(rule.revisions.values_list("version", "note"))[:1] == [(2, "programme rule: at most 10")]
    event = AuditEvent.objects.get(action="rule.changed", object_id=str(rule.pk))
    assert event.actor == manager and event.changes["params"][1] == {"min": 1, "max": 10}


def test_a_deactivated_rule_reports_nothing() -> None:
    data, _ = generate(40, seed=4)
    data.loc[3, "household_id"] = "not-a-pattern"
    assert "pattern" in set(validate(data).issues["rule"])
    rule_update(rule=Rule.objects.get(code="pattern.household_id"), user=None, active=False)
    assert "pattern" not in set(validate(data).issues["rule"])


def test_rules_refuse_changes_to_their_identity() -> None:
    with pytest.raises(ValueError, match="kind"):
        rule_update(rule=Rule.objects.get(code="range.household_size"), user=None, kind="allowed")


@pytest.mark.parametrize(("code", "params"), [
    ("pattern.household_id", {"regex": "KAN-("}),  # does not compile
    ("unknown_value.district", {}),  # no values
    ("range.household_size", {"min": "one"}),
    ("sum_identity.HHIncome+Consumption+Residues/Day", {"tolerance": 1}),  # no terms: breaks the export
    ("allowed.hhh_sex", ["1", "2"]),  # not an object
    # Paths a dozen trial rows never reach: the types are checked instead.
    ("robust_z.household_size", {"by": "district", "min_group": "20", "threshold": 5.0}),
    ("robust_z.household_size", {"by": "district", "min_group": 20, "threshold": "5"}),
    ("frequency_shift.district", {"fields": ["distrct"]}),
    ("frequency_shift.district", {"fields": ["district"], "history_rows": "20000"}),
    ("gps_in_uganda.gps_lat", {"lat_min": "-1.55", "lat_max": 4.3, "lon_min": 29.5, "lon_max": 35.1}),
    ("not_in_future.collected_at", {"tolerance_minutes": "10"}),
    ("outlier.household_size", {"maxi": 30}),  # a typo would be ignored for ever
    ("range.agriculture_land", {"min": 5, "max": 1}),  # every answer would break it
    ("required.household_size", {"min": 1e309}),  # a kind that reads no parameter (and JSON has no Infinity)
])
def test_params_that_would_break_the_validator_are_refused_and_nothing_changes(client, make_user, api,  # type: ignore[no-untyped-def]
                                                                              code: str, params: object) -> None:
    from django.core.exceptions import ValidationError

    rule = Rule.objects.get(code=code) if Rule.objects.filter(code=code).exists() else \
        Rule.objects.filter(kind=code.split(".")[0]).first()
    assert rule is not None
    with pytest.raises(ValidationError, match="params"):
        rule_update(rule=rule, user=None, params=params)
    client.force_login(make_user("data_manager"))
    resp = client.post(f"/admin/quality/rule/{rule.pk}/change/", {
        "severity": rule.severity, "level": rule.level, "params": json.dumps(params), "message": rule.message,
        "active": "on", "note": "", "revisions-TOTAL_FORMS": "0", "revisions-INITIAL_FORMS": "0"})
    assert resp.status_code == 200
    assert resp.context["adminform"].form.errors["params"]
    rule.refresh_from_db()
    assert rule.version == 1
    # ...and every door still works.
    assert api("field_officer").post("/api/v1/submissions/", body(), format="json").status_code == 201
    assert api("data_manager").get("/api/v1/quality/rules/expectations.json").status_code == 200


@pytest.mark.parametrize(("code", "changes", "attribute"), [
    ("required.household_id", {"severity": "warning"}, "severity"),
    ("required.district", {"active": False}, "active"),
    ("required.village", {"severity": "warning"}, "severity"),
    ("range.household_size", {"severity": "warning"}, "severity"),
    ("range.household_size", {"params": {"min": 0, "max": 60}}, "params"),
    ("range.household_size", {"params": {"min": 1, "max": None}}, "params"),
])
def test_rules_guarding_what_storage_requires_stay_active_errors(api, code: str, changes: dict[str, object],  # type: ignore[no-untyped-def]
                                                                attribute: str) -> None:
    """A warning means "kept and flagged"; a record without a household id, district or village, or
    a household of nobody, cannot be kept: weakening these would lose whole upload chunks."""
    from django.core.exceptions import ValidationError

    rule = Rule.objects.get(code=code)
    with pytest.raises(ValidationError) as err:
        rule_update(rule=rule, user=None, **changes)
    assert attribute in err.value.message_dict
    rule.refresh_from_db()
    assert rule.version == 1 and rule.active and rule.severity == "error"
    payload = body()
    payload["data"] = {**payload["data"], "household_size": 0}
    assert api("field_officer").post("/api/v1/submissions/", payload, format="json").status_code == 400


def test_every_initial_rule_passes_the_save_checks() -> None:
    from quality.rules import guard_check, params_check

    for rule in Rule.objects.all():
        params_check(rule)
        guard_check(rule)


def test_a_working_params_change_is_saved_through_the_admin(client, make_user) -> None:  # type: ignore[no-untyped-def]
    rule = Rule.objects.get(code="pattern.household_id")
    client.force_login(make_user("data_manager"))
    resp = client.post(f"/admin/quality/rule/{rule.pk}/change/", {
        "severity": rule.severity, "level": rule.level, "params": json.dumps({"regex": r"^[A-Z]{3}-.+$"}),
        "message": rule.message, "active": "on", "note": "looser", "revisions-TOTAL_FORMS": "0",
        "revisions-INITIAL_FORMS": "0"})
    assert resp.status_code == 302
    rule.refresh_from_db()
    assert rule.version == 2 and rule.params == {"regex": r"^[A-Z]{3}-.+$"}


def test_statistical_rules_flag_district_outliers_and_identical_households(tmp_path: Path) -> None:
    data, _ = generate(400, seed=9)
    district = data.loc[0, "district"]
    data.loc[0, "time_to_water"] = 1000.0  # legal (max 1440) but far outside its district
    data.loc[1] = data.loc[2]
    data.loc[1, "household_id"] = "KAN-XXX-YYY-K99999"  # same village and answers, another id
    path = tmp_path / "s.csv"
    write(data, data.iloc[0:0], path, "csv")
    ingest_file(path)
    found = set(RowIssue.objects.values_list("row_number", "field", "rule"))
    assert (2, "time_to_water", "robust_z") in found, district
    assert {(3, "household_id", "near_duplicate"), (4, "household_id", "near_duplicate")} <= found


def test_likely_duplicates_go_to_a_reviewer_whatever_their_score(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_AUTO_APPROVE_SCORE = 0.0  # every other row is approved by score
    data, _ = generate(60, seed=21, bad_rate=0.0)
    data.loc[5, "household_id"] = data.loc[4, "household_id"]  # the same household twice
    data.loc[11] = data.loc[12]
    data.loc[11, "household_id"] = "KAN-XXX-YYY-K99999"  # same village and answers, another id
    path = tmp_path / "d.csv"
    write(data, data.iloc[0:0], path, "csv")
    ingest_file(path)
    flagged = set(RowIssue.objects.filter(rule__in=["duplicate_household", "near_duplicate"])
                  .values_list("row_number", flat=True))
    assert {6, 7, 13, 14} <= flagged  # spreadsheet rows: header is row 1 (the generator makes a few too)
    waiting = set(SurveyRecord.objects.filter(auto_approved=False).values_list("row_number", flat=True))
    assert waiting == flagged
    assert set(SurveyRecord.objects.filter(row_number__in=flagged).values_list("review_status", flat=True)) == {
        "has_issues"}


def test_scores_fall_with_findings_and_decide_auto_approval() -> None:
    data, _ = generate(50, seed=12)
    data.loc[0, "village"] = None  # required: completeness falls
    data.loc[1, "household_id"] = "odd id"  # a semantic warning: validity falls a little
    scores = validate(data).scores
    assert scores.loc[0, "completeness"] < 1.0 and scores.loc[1, "validity"] < 1.0
    assert scores.loc[5, ["completeness", "validity", "consistency"]].tolist() == [1.0, 1.0, 1.0]
    assert scores.loc[0, "score"] < scores.loc[1, "score"] < scores.loc[5, "score"] == 1.0


def test_a_finding_on_a_location_never_repeats_it_where_the_record_keeps_it_encrypted(  # type: ignore[no-untyped-def]
        api, tmp_path) -> None:
    """A point outside Uganda is a warning that says so; the point itself stays in the record,
    encrypted, not in clear in the findings every staff role lists and downloads."""
    from django.db import connection

    from ingestion.models import RowIssue
    from ingestion.services import ingest_file
    from ingestion.synthetic.generator import write

    resp = api("field_officer").post("/api/v1/submissions/", body(1, location={"lat": 4.61234, "lon": 33.71234,
                                                                               "accuracy_m": 5}), format="json")
    [finding] = [i for i in resp.json()["quality"]["issues"] if i["code"] == "gps_in_uganda"]
    assert finding["field"] == "gps_lat" and "61234" not in str(resp.json()["quality"])
    data, _ = generate(3, seed=5, bad_rate=0.0)
    path = write(data, data.iloc[0:0], tmp_path / "g.csv", "csv")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).assign(gps_lat="-0.95555", gps_lon="29.85555")
    frame.loc[0, "gps_lat"] = "4.65555"
    frame.loc[1, "gps_lat"] = "north"  # a type finding on the field: its value is withheld too
    frame.to_csv(path, index=False)
    batch = ingest_file(path)
    report = b"".join(api("data_manager").get(f"/api/v1/uploads/{batch.pk}/errors.csv").streaming_content).decode()
    assert "gps_in_uganda" in report and "5555" not in report and "north" not in report
    assert set(RowIssue.objects.filter(field="gps_lat").values_list("value", flat=True)) == {"(withheld: personal data)"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ingestion_rowissue WHERE value LIKE '%%.6%%34%%' OR value LIKE '%%5555%%'")
        assert cursor.fetchone()[0] == 0


def test_device_metadata_is_checked_by_business_rules(api) -> None:  # type: ignore[no-untyped-def]
    officer = api("field_officer")
    outside = body(1, location={"lat": 51.5, "lon": -0.12, "accuracy_m": 5})
    resp = officer.post("/api/v1/submissions/", outside, format="json")
    assert resp.status_code == 201
    assert any(i["field"] == "gps_lat" and i["code"] == "gps_in_uganda" and i["severity"] == "warning"
               for i in resp.json()["quality"]["issues"])
    future = body(2, collected_at=(timezone.now() + timedelta(days=2)).isoformat())
    resp = officer.post("/api/v1/submissions/", future, format="json")
    assert resp.status_code == 400
    assert {"field": "collected_at", "code": "not_in_future"} in [  # where the sender put it, not in data
        {"field": e["field"], "code": e["code"]} for e in resp.json()["errors"]]


def test_the_active_rule_set_exports_as_an_expectation_suite(api) -> None:  # type: ignore[no-untyped-def]
    resp = api("data_scientist").get("/api/v1/quality/rules/expectations.json")
    assert resp.status_code == 200
    suite = resp.json()
    assert len(suite["expectations"]) == Rule.objects.filter(active=True).count()
    between = next(e for e in suite["expectations"] if e["meta"]["rule"] == "range.household_size")
    assert between["expectation_type"] == "expect_column_values_to_be_between"
    assert between["kwargs"] == {"column": "household_size", "min_value": 1, "max_value": 60}
    by_rule = {e["meta"]["rule"]: e for e in suite["expectations"]}
    assert by_rule["type.household_size"]["kwargs"]["type_list"] == ["int"]  # the field's own type
    assert by_rule["type.agriculture_land"]["kwargs"]["type_list"] == ["float", "int"]
    shift = by_rule["frequency_shift.district"]
    assert shift["kwargs"]["column_list"] == Rule.objects.get(code="frequency_shift.district").params["fields"]
    assert shift["kwargs"]["threshold"] == 0.25
    assert {e["meta"]["mostly"] for e in suite["expectations"] if e["meta"]["severity"] == "warning"} == {0.0}
    assert api("field_officer").get("/api/v1/quality/rules/expectations.json").status_code == 403


def test_the_rules_page_documents_every_rule(client, make_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(make_user("reviewer"))
    page = client.get("/quality/rules/")
    assert page.status_code == 200
    assert page.content.count(b"<code>range.") == Rule.objects.filter(kind="range").count()
    client.force_login(make_user("field_officer"))
    assert client.get("/quality/rules/").status_code == 403


def test_only_approved_records_train(tmp_path: Path) -> None:
    from modelling.services import training_frame

    data, _ = generate(120, seed=5)
    write(data, data.iloc[0:0], tmp_path / "t.csv", "csv")
    ingest_file(tmp_path / "t.csv")
    duplicates = RowIssue.objects.filter(rule__in=["duplicate_household", "near_duplicate"]).count()
    assert SurveyRecord.objects.filter(review_status="approved").count() == 120 - duplicates  # those wait
    SurveyRecord.objects.filter(pk__in=list(SurveyRecord.objects.filter(review_status="approved")
                                            .values_list("pk", flat=True)[:20])).update(review_status="rejected")
    first_ten = list(SurveyRecord.objects.filter(review_status="approved").values_list("pk", flat=True)[:10])
    SurveyRecord.objects.filter(pk__in=first_ten).update(review_status="on_hold")
    frame, y, _, _, _ = training_frame()
    assert len(frame) == len(y) == 90 - duplicates
    assert active_rules().get("household_size", "range") is not None


def test_the_label_measure_is_checked_against_its_components_when_a_total_between_them_is_blank(api) -> None:  # type: ignore[no-untyped-def]
    """domain.md: the per-day measure is the nine components / 365 on every row.  With household_income
    and consumption_residues left blank the chain of totals checks nothing, and a per-day value of
    2.19 (On Track) from components worth 0.27 a day would become the label."""
    from rtv import contract

    payload = body()
    data = dict(payload["data"])
    for c in contract.TARGET_COMPONENTS:
        data[c] = 0
    data["casual_labour"] = 100
    data.update(household_income=None, consumption_residues=None, income_consumption_residues=800,
                income_consumption_residues_per_day=800 / 365, household_income_per_day=None, consumption_per_day=None)
    resp = api("field_officer").post("/api/v1/submissions/", {**payload, "data": data}, format="json")
    assert resp.status_code == 400, resp.json()
    assert {"field": "data.income_consumption_residues_per_day", "code": "sum_identity"} in [
        {"field": e["field"], "code": e["code"]} for e in resp.json()["errors"]]
    # A household whose measure does add up is accepted with the same totals left blank.
    fine = body(1)
    fine["data"] = {**fine["data"], "household_income": None, "consumption_residues": None,
                    "household_income_per_day": None, "consumption_per_day": None}
    again = api("field_officer").post("/api/v1/submissions/", fine, format="json")
    assert again.status_code == 201, again.json()
