"""One validator for every door, statistical rules included: a device's one submission is an outlier
(or not) against its district's stored records, as a file's row is against its file's."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from quality.reference import stored_reference
from quality.rules import active_rules
from tests.ingestion.test_submissions import body

pytestmark = pytest.mark.django_db


def findings(resp) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    assert resp.status_code == 201, resp.json()
    return {(i["field"], i["code"]) for i in resp.json()["quality"]["issues"]}


def test_a_device_value_far_from_its_districts_stored_records_is_flagged(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, _ = generate(400, seed=3, bad_rate=0.0)
    write(data, data.iloc[0:0], tmp_path / "s.csv", "csv")
    ingest_file(tmp_path / "s.csv")
    payload = body(0)
    district = payload["data"]["district"]
    median, mad = stored_reference(active_rules()).stats[("time_to_water", "district")][district]
    officer = api("field_officer")
    far = body(1, data={**payload["data"], "time_to_water": round(median + 8 * mad / 0.6745)})
    assert far["data"]["time_to_water"] <= 1440  # legal: only the statistics can tell
    assert ("time_to_water", "robust_z") in findings(officer.post("/api/v1/submissions/", far, format="json"))
    usual = body(2, data={**payload["data"], "time_to_water": median})
    assert ("time_to_water", "robust_z") not in findings(officer.post("/api/v1/submissions/", usual, format="json"))


def test_without_stored_records_a_device_value_is_not_judged_an_outlier(api) -> None:  # type: ignore[no-untyped-def]
    payload = body(0)
    payload["data"]["time_to_water"] = 1400
    assert not {c for _, c in findings(api("field_officer").post("/api/v1/submissions/", payload, format="json"))
                if c == "robust_z"}


def test_a_small_files_rows_are_judged_against_stored_records_as_a_devices_are(tmp_path: Path) -> None:
    """A partner's file of three rows has no district of 20 to be an outlier in: its rows are scored
    against their district's stored records, as a device's submission is.  A big file's districts
    keep their own statistics."""
    from ingestion.models import RowIssue

    data, _ = generate(400, seed=3, bad_rate=0.0)
    ingest_file(write(data, data.iloc[0:0], tmp_path / "s.csv", "csv"))
    small = data.iloc[:3].copy()
    district = small.iloc[0]["district"]
    median, mad = stored_reference(active_rules()).stats[("time_to_water", "district")][district]
    small["district"] = district
    small.iloc[0, small.columns.get_loc("time_to_water")] = round(median + 8 * mad / 0.6745)
    small.iloc[1, small.columns.get_loc("time_to_water")] = median
    batch = ingest_file(write(small, small.iloc[0:0], tmp_path / "few.csv", "csv"), force=True)
    flagged = set(RowIssue.objects.filter(batch=batch, rule="robust_z", field="time_to_water")
                  .values_list("row_number", flat=True))
    assert flagged == {2}
