"""The API's OpenAPI document and its browsable docs: every device endpoint is described, with
the bearer JWT it needs."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def test_the_schema_offers_the_bearer_jwt_and_the_submission_endpoints_require_it(api) -> None:  # type: ignore[no-untyped-def]
    resp = api("field_officer").get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    doc = resp.json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["jwtAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for path in ("/api/v1/submissions/", "/api/v1/submissions/batch/", "/api/v1/predictions/", "/api/v1/uploads/"):
        assert {"jwtAuth": []} in doc["paths"][path]["post"]["security"], path


def test_the_schema_and_docs_are_for_signed_in_users(client, api) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/schema/").status_code == 401
    # The docs are a page: a browser that is not signed in goes to the sign-in page, and back.
    page = client.get("/api/docs/?x=1")
    assert page.status_code == 302 and page["Location"] == "/accounts/login/?next=/api/docs/%3Fx%3D1"
    resp = api("field_officer").get("/api/docs/")
    assert resp.status_code == 200 and b"swagger" in resp.content.lower()
    # The page's script and styles are the platform's own static files: no CDN, no "@latest".
    scripts = re.findall(rb'(?:src|href)="([^"]+)"', resp.content)
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in scripts
    assert not [s for s in scripts if s.startswith((b"http:", b"https:", b"//"))]


def test_the_schema_is_valid_and_drf_spectacular_has_nothing_to_guess(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A batch's items are described as submissions (not as strings), and each operation has its own id."""
    import json

    from django.core.management import call_command

    out = tmp_path / "schema.json"
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))
    doc = json.loads(out.read_text())
    items = doc["components"]["schemas"]["BatchIn"]["properties"]["items"]["items"]
    # Each item is a submission; a null one is accepted, and answered as invalid in its place.
    assert items == {"allOf": [{"$ref": "#/components/schemas/SubmissionIn"}], "nullable": True}


@pytest.mark.parametrize(("path", "headers", "status", "code"), [
    ("/api/schema/", {}, 401, "not_authenticated"),
    ("/api/schema/", {"HTTP_AUTHORIZATION": "Bearer not-a-token"}, 401, "token_not_valid"),
    ("/api/docs/", {"HTTP_AUTHORIZATION": "Bearer not-a-token"}, 401, "token_not_valid"),
    ("/api/schema/?format=json", {}, 401, "not_authenticated"),
])
def test_the_schema_and_docs_answer_errors_in_the_apis_json_shape(client, path, headers, status, code) -> None:  # type: ignore[no-untyped-def]
    """Not in the document's YAML, nor as a line of HTML: what every other endpoint answers."""
    resp = client.get(path, **headers)
    assert resp.status_code == status and resp["Content-Type"] == "application/json"
    body = resp.json()
    assert body["code"] == code and body["message"] and body["errors"] == []


def test_a_schema_format_the_platform_does_not_write_is_a_json_406(api) -> None:  # type: ignore[no-untyped-def]
    resp = api("field_officer").get("/api/schema/", HTTP_ACCEPT="text/html")
    assert resp.status_code == 406 and resp.json()["code"] == "not_acceptable"


def test_every_operation_documents_its_error_answers_in_the_one_error_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A client generated from the document knows what a refusal looks like: 401 and 406 everywhere,
    403 wherever a role decides, 404 where the path names a resource, 400/413/415 where a body is
    read, 429 on sign-in; each the Error schema.  What an operation documents itself is kept."""
    import json

    from django.core.management import call_command

    out = tmp_path / "schema.json"
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out))
    doc = json.loads(out.read_text())
    assert doc["components"]["schemas"]["Error"]["required"] == ["code", "message", "errors"]
    error = {"$ref": "#/components/schemas/Error"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = op["responses"]
            expected = {"401", "406"} | ({"404"} if "{" in path else set()) | (
                {"400", "413", "415"} if "requestBody" in op else set()) | (
                {"403"} if not path.startswith("/api/v1/auth/token/") else set())
            assert expected <= set(codes), (method, path, sorted(codes))
            for code in expected:
                assert codes[code]["content"]["application/json"]["schema"] == error, (method, path, code)
    assert "429" in doc["paths"]["/api/v1/auth/token/"]["post"]["responses"]
    assert "409" in doc["paths"]["/api/v1/submissions/"]["post"]["responses"]  # the operation's own, kept
