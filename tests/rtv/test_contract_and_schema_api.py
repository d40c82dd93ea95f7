"""The survey data contract is data: loaded by migration, browsable, served to devices."""

from __future__ import annotations

import csv

import pytest
from rest_framework.test import APIClient

from rtv import contract
from rtv.models import SchemaField, SchemaVersion

pytestmark = pytest.mark.django_db


def test_the_current_schema_describes_every_column_of_the_extract_and_the_device_metadata() -> None:
    version = SchemaVersion.objects.get(is_current=True)
    fields = SchemaField.objects.filter(schema=version)
    survey = fields.exclude(source_position=None)
    assert survey.count() == 75
    assert sorted(survey.values_list("source_position", flat=True)) == list(range(75))
    names = set(fields.values_list("name", flat=True))
    assert {"submission_id", "device_id", "field_officer", "form_version", "collected_at", "gps_lat", "gps_lon",
            "gps_accuracy_m", "cohort", "cycle", "evaluation_month", "evaluation_type", "consent"} <= names


def test_duplicate_headers_map_to_distinct_fields_ugx_first_usd_second() -> None:
    by_pos = {f.source_position: f for f in SchemaField.objects.filter(source_header__in=["VSLA_Profits", "Assets"])}
    assert (by_pos[11].name, by_pos[11].unit) == ("vsla_profits_ugx", "UGX")
    assert (by_pos[12].name, by_pos[12].unit) == ("vsla_profits_usd", "USD")
    assert (by_pos[40].name, by_pos[40].unit) == ("assets_ugx", "UGX")
    assert (by_pos[41].name, by_pos[41].unit) == ("assets_usd", "USD")


def test_the_raw_header_is_the_real_extracts_header_exactly(real_data) -> None:  # type: ignore[no-untyped-def]
    with real_data.open(newline="") as fh:
        assert tuple(next(csv.reader(fh))) == contract.RAW_HEADER


def test_schema_endpoint_requires_authentication() -> None:
    resp = APIClient().get("/api/v1/schema/")
    assert resp.status_code == 401
    body = resp.json()
    assert body["code"] == "not_authenticated" and body["errors"] == [] and body["message"]


@pytest.mark.parametrize("role", ["field_officer", "reviewer", "data_manager", "data_scientist", "partner", None])
def test_any_authenticated_user_reads_the_schema(api, role) -> None:  # type: ignore[no-untyped-def]
    resp = api(role).get("/api/v1/schema/")
    assert resp.status_code == 200
    body = resp.json()
    assert body["version"] == contract.CONTRACT_VERSION
    size = next(f for f in body["fields"] if f["name"] == "household_size")
    assert set(size) >= {"name", "aliases", "source_position", "type", "unit", "required", "allowed", "min", "max",
                         "role", "pii"}
    assert size == {**size, "aliases": ["HouseholdSize"], "source_position": 4, "type": "integer", "unit": "count",
                    "required": True, "min": 1.0, "role": "feature"}
    label = next(f for f in body["fields"] if f["name"] == "income_consumption_residues_per_day")
    assert label["role"] == "label" and label["aliases"] == ["HHIncome+Consumption+Residues/Day"]


def test_schema_endpoint_is_read_only(api) -> None:  # type: ignore[no-untyped-def]
    resp = api("admin").post("/api/v1/schema/", {}, format="json")
    assert resp.status_code == 405
    assert resp.json()["code"] == "method_not_allowed"


def test_a_bad_password_gets_a_machine_readable_401(make_user) -> None:  # type: ignore[no-untyped-def]
    make_user("field_officer", "fo")
    resp = APIClient().post("/api/v1/auth/token/", {"username": "fo", "password": "wrong"}, format="json")
    assert resp.status_code == 401
    assert resp.json()["code"] == "no_active_account"


def test_a_token_request_without_fields_names_them() -> None:
    resp = APIClient().post("/api/v1/auth/token/", {}, format="json")
    assert resp.status_code == 400
    fields = {e["field"] for e in resp.json()["errors"]}
    assert fields == {"username", "password"}


def test_logout_blacklists_the_refresh_token(make_user) -> None:  # type: ignore[no-untyped-def]
    make_user("reviewer", "rev")
    client = APIClient()
    tokens = client.post("/api/v1/auth/token/", {"username": "rev", "password": "pw-Secret-123"}, format="json").json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.post("/api/v1/auth/logout/", {"refresh": tokens["refresh"]}, format="json").status_code == 205
    again = APIClient().post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401


def test_a_password_change_ends_every_session_access_and_refresh_alike(make_user) -> None:  # type: ignore[no-untyped-def]
    """A stolen refresh token rotates for ever unless a password change stops it."""
    user = make_user("data_scientist", "ds")
    tokens = APIClient().post("/api/v1/auth/token/", {"username": "ds", "password": "pw-Secret-123"},
                              format="json").json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.get("/api/v1/models/").status_code == 200
    user.set_password("Reset-By-Admin-777")
    user.save()
    assert client.get("/api/v1/models/").status_code == 401
    again = APIClient().post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert again.status_code == 401 and again.json()["code"] == "password_changed"
    fresh = APIClient().post("/api/v1/auth/token/", {"username": "ds", "password": "Reset-By-Admin-777"},
                             format="json").json()
    assert APIClient().post("/api/v1/auth/token/refresh/", {"refresh": fresh["refresh"]}, format="json").status_code == 200


def test_role_groups_exist_from_the_start() -> None:
    from django.contrib.auth.models import Group

    assert set(Group.objects.values_list("name", flat=True)) >= {
        "field_officer", "reviewer", "data_manager", "data_scientist", "partner", "admin"}
