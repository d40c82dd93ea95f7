"""Quality history: the daily re-validation, the trend, alerts on a drop, the batch report."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from django.db.models import Avg
from django.utils import timezone

from ingestion.models import SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from quality.models import QualityAlert, QualitySnapshot
from quality.services import quality_snapshot_take
from quality.tasks import daily_snapshot_task
from rtv.models import PipelineRun

pytestmark = pytest.mark.django_db


def stored_on(tmp_path: Path, day: date, rows: int, seed: int, *, bad_ids: int = 0) -> None:
    data, _ = generate(rows, seed=seed)
    for i in range(bad_ids):
        data.loc[i, "household_id"] = f"odd id {i}"
    path = tmp_path / f"{day}-{seed}.csv"
    write(data, data.iloc[0:0], path, "csv")
    batch = ingest_file(path)
    noon = timezone.make_aware(datetime.combine(day, datetime.min.time())) + timedelta(hours=12)
    SurveyRecord.objects.filter(batch=batch).update(received_at=noon)


def test_a_day_is_revalidated_with_the_current_rules_and_a_drop_raises_an_alert(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    settings.RTV_QUALITY_DROP_ALERT = 0.001
    d1, d2 = date(2026, 11, 20), date(2026, 11, 21)
    stored_on(tmp_path, d1, 60, seed=1)
    stored_on(tmp_path, d2, 60, seed=2, bad_ids=30)
    first = quality_snapshot_take(day=d1)
    second = quality_snapshot_take(day=d2)
    assert (first.records, second.records) == (60, 60)
    assert second.by_rule.get("pattern", 0) >= 30 > first.by_rule.get("pattern", 0)
    assert second.mean_score < first.mean_score
    alert = QualityAlert.objects.get()
    assert alert.snapshot == second and alert.previous == first.mean_score and "fell" in alert.message
    again = quality_snapshot_take(day=d2)  # idempotent per day
    assert (first.day, second.day) == (d1, d2)  # a day's snapshot holds that day's records
    assert QualitySnapshot.objects.count() == 2 and again.pk == second.pk
    assert QualityAlert.objects.get().pk == alert.pk  # one alert for the day, not one per run
    QualityAlert.objects.update(delivered_at=timezone.now())
    quality_snapshot_take(day=d2)
    assert QualityAlert.objects.filter(delivered_at__isnull=True).count() == 0  # sent once


def test_no_alert_when_quality_holds(tmp_path: Path) -> None:
    stored_on(tmp_path, date(2026, 11, 20), 40, seed=1)
    stored_on(tmp_path, date(2026, 11, 21), 40, seed=2)
    quality_snapshot_take(day=date(2026, 11, 20))
    quality_snapshot_take(day=date(2026, 11, 21))
    assert not QualityAlert.objects.exists()


def test_the_scheduled_job_records_its_run() -> None:
    assert daily_snapshot_task() == 0
    assert PipelineRun.objects.get(job="quality_daily_snapshot").status == "succeeded"
    assert QualitySnapshot.objects.get().day == timezone.localdate() - timedelta(days=1)  # at 01:00: yesterday's
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["quality-daily-snapshot"]
    assert entry["task"] == "quality.daily_snapshot" and entry["schedule"].hour == {1} and entry["schedule"].minute == {0}
    assert settings.CELERY_TIMEZONE == "Africa/Kampala"


def test_the_trend_endpoint_and_page_show_each_day(api, client, make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stored_on(tmp_path, date(2026, 11, 20), 30, seed=1)
    quality_snapshot_take(day=date(2026, 11, 20))
    quality_snapshot_take(day=date(2026, 11, 21))
    body = api("reviewer").get("/api/v1/quality/trend/?days=7").json()
    assert [d["day"] for d in body["days"]] == ["2026-11-20", "2026-11-21"]
    assert body["days"][0]["records"] == 30 and body["days"][1]["records"] == 0
    assert api("field_officer").get("/api/v1/quality/trend/").status_code == 403
    client.force_login(make_user("data_manager"))
    page = client.get("/quality/")
    assert page.status_code == 200 and b"<polyline" in page.content and b"2026-11-20" in page.content


def test_the_batch_quality_report(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, errors = generate(300, seed=8, bad_rate=0.05)
    path = tmp_path / "q.csv"
    write(data, errors, path, "csv")
    batch = ingest_file(path)
    resp = api("data_manager").get(f"/api/v1/uploads/{batch.pk}/quality/")
    assert resp.status_code == 200
    report = resp.json()
    injected = errors.groupby("rule").size().to_dict()
    assert {k: v["error"] for k, v in report["by_rule"].items() if v["error"]} == injected
    assert set(report["by_district"]) <= {"Rukungiri", "Mitooma", "Kanungu", "Rubanda", ""}
    assert sum(d["records"] for d in report["by_district"].values()) == batch.accepted
    assert sum(d["rejected"] for d in report["by_district"].values()) == batch.rejected > 0
    assert sum(d["rows"] for d in report["by_district"].values()) == 300
    stored = SurveyRecord.objects.filter(batch=batch)
    assert report["scores"]["score"] == pytest.approx(stored.aggregate(m=Avg("quality_score"))["m"])
    for district, row in report["by_district"].items():
        mine = stored.filter(district=district)
        assert row["records"] == mine.count()
        assert row["with_warnings"] == mine.filter(warning_count__gt=0).count()
        if row["records"]:
            assert row["mean_score"] == pytest.approx(mine.aggregate(m=Avg("quality_score"))["m"])
    assert api("field_officer").get(f"/api/v1/uploads/{batch.pk}/quality/").status_code == 403


def test_a_dry_run_has_the_same_quality_report_without_storing_anything(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, errors = generate(200, seed=9, bad_rate=0.05)
    path = tmp_path / "q.csv"
    write(data, errors, path, "csv")
    dry = ingest_file(path, dry_run=True)
    real = ingest_file(path, force=True)
    assert SurveyRecord.objects.filter(batch=dry).count() == 0
    ours = api("data_manager").get(f"/api/v1/uploads/{dry.pk}/quality/").json()
    theirs = api("data_manager").get(f"/api/v1/uploads/{real.pk}/quality/").json()
    assert ours["scores"] == pytest.approx(theirs["scores"]) and ours["scores"]["score"] is not None
    assert ours["by_district"].keys() == theirs["by_district"].keys() and ours["by_district"]
    for d in ours["by_district"]:
        assert {k: v for k, v in ours["by_district"][d].items() if k != "mean_score"} == \
            {k: v for k, v in theirs["by_district"][d].items() if k != "mean_score"}


def test_the_batch_quality_report_is_on_the_batch_page_in_the_admin(client, make_user, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, errors = generate(120, seed=8, bad_rate=0.05)
    path = tmp_path / "q.csv"
    write(data, errors, path, "csv")
    batch = ingest_file(path)
    client.force_login(make_user("data_manager"))
    page = client.get(f"/admin/ingestion/ingestionbatch/{batch.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    for heading in ("Mean scores", "Findings by rule", "Findings by column", "Rows by district"):
        assert heading in html
    rule, n = errors.groupby("rule").size().sort_values().index[-1], errors.groupby("rule").size().max()
    assert f"<td>{rule}</td><td>{n}</td>" in html  # each rule with its error count
    client.force_login(make_user("field_officer", "fo"))
    assert client.get(f"/admin/ingestion/ingestionbatch/{batch.pk}/change/").status_code in (302, 403)


def test_a_batch_whose_answers_shift_against_history_is_reported(tmp_path: Path) -> None:
    history, _ = generate(400, seed=1)
    write(history, history.iloc[0:0], tmp_path / "h.csv", "csv")
    ingest_file(tmp_path / "h.csv")
    same, _ = generate(120, seed=2)
    write(same, same.iloc[0:0], tmp_path / "same.csv", "csv")
    assert ingest_file(tmp_path / "same.csv").quality["frequency_shift"]["shifted"] == []
    shifted, _ = generate(120, seed=3)
    shifted["hhh_sex"] = 2  # every head of household reported female
    write(shifted, shifted.iloc[0:0], tmp_path / "shift.csv", "csv")
    report = ingest_file(tmp_path / "shift.csv").quality["frequency_shift"]
    assert report["shifted"] == ["hhh_sex"] and report["psi"]["hhh_sex"] > 0.25


def test_answer_counts_of_all_fields_at_once_are_each_fields_own(tmp_path: Path) -> None:
    """The shift report groups by every field in one query, then sums per field: the same counts,
    missing answers included, as a grouped count per field."""
    from django.db.models import Count

    from ingestion.models import SurveyValues
    from ingestion.services import _answer_counts

    data, _ = generate(300, seed=5)
    data.loc[::7, "hhh_sex"] = None
    write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    ingest_file(tmp_path / "a.csv")
    fields = ["district", "hhh_sex", "daily_meals", "material_walls"]
    values = SurveyValues.objects.all()
    together = _answer_counts(values, fields)
    for name in fields:
        alone = dict(values.values_list(name).annotate(n=Count("record")).values_list(name, "n"))
        assert together[name] == alone, name
    assert None in together["hhh_sex"]


def test_the_device_metadata_is_checked_again_by_the_re_validation_and_a_correction(api, make_user) -> None:  # type: ignore[no-untyped-def]
    """A GPS point outside Uganda is a warning at receipt; the daily re-validation and a reviewer's
    correction check the same stored point, so the finding and the score do not silently go."""
    from quality.services import record_correct
    from tests.ingestion.test_submissions import body

    resp = api("field_officer").post("/api/v1/submissions/", body(location={"lat": 10.0, "lon": 10.0}), format="json")
    assert resp.status_code == 201 and "gps_in_uganda" in {i["code"] for i in resp.json()["quality"]["issues"]}
    record = SurveyRecord.objects.get(pk=resp.json()["id"])
    corrected = record_correct(record=record, changes={"household_size": 6}, reviewer=make_user("reviewer"))
    assert "gps_in_uganda" in set(corrected.issues.values_list("rule", flat=True))
    assert corrected.validity == record.validity
    snap = quality_snapshot_take(day=timezone.localdate())
    assert snap.by_rule.get("gps_in_uganda") == 1  # the corrected version; the first is superseded
