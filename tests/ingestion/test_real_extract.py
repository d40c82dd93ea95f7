"""The real RTV extract ingests exactly: every row accepted, RTV's own label counts, quirks as warnings."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from ingestion.models import Household, IngestionBatch, RowIssue, SurveyRecord

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


@pytest.fixture
def ingested(real_data, capsys):  # type: ignore[no-untyped-def]
    call_command("ingest_file", str(real_data), "--json")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return summary


def test_every_row_is_accepted_with_rtvs_label_counts(ingested) -> None:  # type: ignore[no-untyped-def]
    assert ingested["rows"] == 3897
    assert ingested["accepted"] == 3897
    assert ingested["rejected"] == 0
    assert ingested["label_counts"] == {"On Track": 1704, "At Risk": 535, "Struggling": 901, "Severely Struggling": 757}
    assert set(ingested) >= {"ingestion_id", "rows", "accepted", "warnings", "rejected", "label_counts"}
    assert SurveyRecord.objects.count() == 3897
    assert SurveyRecord.objects.filter(vulnerable=True).count() == 901 + 757


def test_both_copies_of_duplicated_headers_are_stored(ingested) -> None:  # type: ignore[no-untyped-def]
    # Row 2 of the file has no VSLA profit; find a household that has one and check both currencies.
    rec = SurveyRecord.objects.filter(values__vsla_profits_ugx__gt=0).order_by("row_number").first()
    assert rec is not None
    d = rec.data
    assert d["vsla_profits_ugx"] > 1000 and 0 < d["vsla_profits_usd"] < d["vsla_profits_ugx"]
    assert d["vsla_profits_usd"] == pytest.approx(d["vsla_profits_ugx"] / 4463.178775105381, rel=1e-9)
    assets = SurveyRecord.objects.filter(values__assets_ugx__gt=0).first()
    assert assets is not None
    assert assets.data["assets_usd"] == pytest.approx(assets.data["livestock_asset_value"])
    assert assets.data["assets_ugx"] == pytest.approx(assets.data["assets_usd"] * 4463.178775105381, rel=1e-6)


def test_the_extracts_quirks_are_warnings_not_rejections(ingested) -> None:  # type: ignore[no-untyped-def]
    batch = IngestionBatch.objects.get(pk=ingested["ingestion_id"])
    issues = RowIssue.objects.filter(batch=batch)
    assert not issues.filter(severity="error").exists()
    rules = set(issues.values_list("field", "rule"))
    assert ("household_id", "pattern") in rules  # lower-case and odd ids
    assert ("household_id", "duplicate_household") in rules
    assert ("phones_owned", "sentinel") in rules  # -99
    assert ("business_number", "type") in rules  # the backtick
    assert issues.filter(field="household_id", rule="duplicate_household").count() == 83
    backtick = issues.get(field="business_number", rule="type")
    assert backtick.value == "`" and backtick.column == "business_number" and backtick.record_id is not None
    assert ingested["warnings"] == batch.warnings > 0


def test_households_are_kept_once_while_shared_ids_keep_every_record(ingested) -> None:  # type: ignore[no-untyped-def]
    assert Household.objects.count() == 3855
    assert SurveyRecord.objects.values("household").distinct().count() == 3855


def test_multiselect_and_sentinel_values_are_kept_as_collected(ingested) -> None:  # type: ignore[no-untyped-def]
    assert SurveyRecord.objects.filter(values__loan_from="7 8").exists()
    assert SurveyRecord.objects.filter(values__phones_owned=-99).count() == 1
    assert SurveyRecord.objects.filter(values__household_fertilizer=99).count() > 1900


def test_a_dry_run_reports_the_same_and_stores_nothing(real_data, capsys) -> None:  # type: ignore[no-untyped-def]
    call_command("ingest_file", str(real_data), "--json", "--dry-run")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["accepted"] == 3897 and summary["dry_run"] is True
    assert SurveyRecord.objects.count() == 0
