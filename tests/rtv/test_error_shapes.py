"""Every API error, whoever raises it (a URL that matches nothing, simplejwt), has the one shape."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def _standard(resp) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert resp["Content-Type"].startswith("application/json"), resp.content[:200]
    body = resp.json()
    assert set(body) == {"code", "message", "errors"}, body
    assert isinstance(body["message"], str) and not body["message"].startswith("{")
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", ["/api/v1/submissions/123/", "/api/v1/submissions/123/versions/",
                                  "/api/v1/uploads/xyz/", "/api/v1/uploads/xyz/errors.csv", "/api/v1/nothing/"])
def test_an_api_path_that_matches_nothing_is_a_json_404(api, path: str) -> None:  # type: ignore[no-untyped-def]
    resp = api("data_manager").get(path)
    assert resp.status_code == 404
    assert _standard(resp) == {"code": "not_found", "message": "Not found.", "errors": []}


def test_a_page_outside_the_api_keeps_its_html_404(client) -> None:  # type: ignore[no-untyped-def]
    resp = client.get("/no-such-page/")
    assert resp.status_code == 404 and resp["Content-Type"].startswith("text/html")


def test_a_token_that_is_not_one_is_a_401_in_words() -> None:
    resp = APIClient(HTTP_AUTHORIZATION="Bearer abc").get(f"/api/v1/submissions/{uuid.uuid4()}/")
    assert resp.status_code == 401
    body = _standard(resp)
    assert body["code"] == "token_not_valid" and body["message"] == "Given token not valid for any token type"


def test_a_refresh_token_that_is_not_one_is_a_401_in_words() -> None:
    resp = APIClient().post("/api/v1/auth/token/refresh/", {"refresh": "abc"}, format="json")
    assert resp.status_code == 401
    body = _standard(resp)
    assert body["code"] == "token_not_valid" and body["message"] == "Token is invalid"


@pytest.mark.parametrize("length", ["abc", "-1", "1e3"])
def test_a_content_length_that_is_not_a_number_is_a_400_in_the_error_shape(client, length: str) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/api/v1/submissions/", data=b"{}", content_type="application/json", CONTENT_LENGTH=length)
    assert resp.status_code == 400
    assert resp.json()["code"] == "bad_content_length" and resp.json()["errors"][0]["field"] == "Content-Length"


@pytest.mark.parametrize("url", ["/admin/ingestion/surveyrecord/?village=%00", "/admin/ingestion/surveyrecord/?rule=a%00",
                                 "/api/v1/quality/trend/?days=%00"])
def test_a_nul_in_the_query_string_is_a_400_not_a_database_error(client, make_user, url: str) -> None:  # type: ignore[no-untyped-def]
    client.force_login(make_user("reviewer"))
    resp = client.get(url)
    assert resp.status_code == 400 and resp.json()["code"] == "invalid_characters"


@pytest.mark.parametrize(("parts", "files"), [(1200, 0), (0, 120)])
def test_a_form_with_too_many_parts_is_a_400_in_the_error_shape(api, parts: int, files: int) -> None:  # type: ignore[no-untyped-def]
    """Django's DATA_UPLOAD_MAX_NUMBER_FIELDS / _FILES limits: its own HTML 400 page before."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    form: dict[str, object] = {f"f{i}": "x" for i in range(parts)}
    form.update({f"file{i}": SimpleUploadedFile(f"s{i}.csv", b"a,b\n1,2\n") for i in range(files)})
    answer = api("data_manager").post("/api/v1/uploads/", form, format="multipart")
    assert answer.status_code == 400 and answer["Content-Type"].startswith("application/json")
    assert answer.json()["code"] == "too_many_parts"
