"""API authentication: a JWT names the user; one query reads the user and their roles, and every
change to either counts from the next request."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ingestion.synthetic.generator import generate
from tests.payloads import household_payload

pytestmark = pytest.mark.django_db

ROWS = generate(3, seed=99, bad_rate=0.0)[0]


def test_one_query_reads_the_user_and_their_roles(api) -> None:  # type: ignore[no-untyped-def]
    officer = api("field_officer")
    officer.get("/api/v1/schema/")  # warm what is cached per process
    with CaptureQueriesContext(connection) as queries:
        assert officer.get(f"/api/v1/submissions/{uuid.uuid4()}/").status_code == 404
    auth = [q["sql"] for q in queries.captured_queries if "auth_" in q["sql"]]
    assert len(auth) == 1 and "auth_group" in auth[0], auth


def test_a_role_taken_away_or_given_counts_from_the_next_request(api) -> None:  # type: ignore[no-untyped-def]
    client = api("field_officer")
    body = {"submission_id": str(uuid.uuid4()), "data": household_payload(ROWS, 0)}
    assert client.post("/api/v1/submissions/", body, format="json").status_code == 201
    client.user.groups.clear()
    assert client.post("/api/v1/submissions/", {**body, "submission_id": str(uuid.uuid4())},
                       format="json").status_code == 403
    client.user.groups.add(Group.objects.get(name="data_manager"))
    assert client.post("/api/v1/submissions/", {**body, "submission_id": str(uuid.uuid4())},
                       format="json").status_code == 201


def test_a_deactivated_user_is_refused_with_a_valid_token(api) -> None:  # type: ignore[no-untyped-def]
    client = api("reviewer")
    assert client.get("/api/v1/models/").status_code == 200
    client.user.is_active = False
    client.user.save()
    resp = client.get("/api/v1/models/")
    assert resp.status_code == 401 and resp.json()["code"] in ("user_inactive", "authentication_failed",
                                                                "not_authenticated"), resp.json()


def test_a_superuser_without_groups_is_an_admin(make_user) -> None:  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    user = make_user(None)
    user.is_superuser = True
    user.save()
    client = APIClient()
    token = client.post("/api/v1/auth/token/", {"username": user.username, "password": "pw-Secret-123"},
                        format="json").json()["access"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/models/").status_code == 200


def test_the_user_read_with_its_roles_is_the_user_the_orm_reads(make_user) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import User
    from rest_framework_simplejwt.tokens import AccessToken

    from rtv.authentication import RoleJWTAuthentication

    user = make_user("reviewer")
    user.groups.add(Group.objects.get(name="data_scientist"))
    read = RoleJWTAuthentication().get_user(AccessToken.for_user(user))
    expected = User.objects.get(pk=user.pk)
    fields = [f.attname for f in User._meta.concrete_fields]
    assert [getattr(read, f) for f in fields] == [getattr(expected, f) for f in fields]
    assert read._rtv_roles == {"reviewer", "data_scientist"}
    assert not read._state.adding and read._state.db == "default"
    read.first_name = "Saved"  # a normal model instance: it saves as an update
    read.save(update_fields=["first_name"])
    assert User.objects.get(pk=user.pk).first_name == "Saved"


def test_a_remembered_token_is_refused_once_it_expires(make_user) -> None:  # type: ignore[no-untyped-def]
    """Validated tokens are remembered per process, but the expiry still counts on every request."""
    import time
    from datetime import timedelta

    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(make_user("field_officer"))
    token.set_exp(lifetime=timedelta(seconds=5))  # room for a slow first request on a busy machine
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    missing = f"/api/v1/submissions/{uuid.uuid4()}/"
    assert client.get(missing).status_code == 404  # authenticated (and now remembered)
    assert client.get(missing).status_code == 404
    time.sleep(max(0.0, token["exp"] - time.time()) + 1.2)  # until it has expired
    refused = client.get(missing)
    assert refused.status_code == 401


def test_a_tampered_token_is_refused_even_after_its_original_was_accepted(api) -> None:  # type: ignore[no-untyped-def]
    client = api("field_officer")
    missing = f"/api/v1/submissions/{uuid.uuid4()}/"
    assert client.get(missing).status_code == 404
    raw = client._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    head, payload, signature = raw.split(".")
    forged = ".".join([head, payload, signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")])
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    assert client.get(missing).status_code == 401


@pytest.mark.parametrize(("claim", "value"), [
    ("user_id", ["1"]), ("user_id", {"a": 1}), ("user_id", "abc"), ("user_id", True),
    ("exp", 10**30), ("exp", 1e300),
])
def test_a_signed_token_with_a_claim_of_the_wrong_type_is_a_401_not_a_500(make_user, claim, value) -> None:  # type: ignore[no-untyped-def]
    """Only the signing key makes such a token, but every door answers it with the error shape:
    an API request, a refresh and a logout."""
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

    user = make_user("field_officer")
    access, refresh = AccessToken.for_user(user), RefreshToken.for_user(user)
    for token in (access, refresh):
        token.payload[claim] = value
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    answers = [client.get(f"/api/v1/submissions/{uuid.uuid4()}/"),
               APIClient().post("/api/v1/auth/token/refresh/", {"refresh": str(refresh)}, format="json")]
    client.credentials()
    logout = api_client_for(user).post("/api/v1/auth/logout/", {"refresh": str(refresh)}, format="json")
    for answer in answers:
        assert answer.status_code == 401 and answer.json()["code"] in ("token_not_valid", "password_changed")
    # Blacklisting needs only the token's id: one whose user claim is odd is blacklisted all the same.
    assert (logout.status_code, logout.status_code == 205 or logout.json()["code"]) in ((205, True), (400, "token_invalid"))


def api_client_for(user):  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import AccessToken

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}")
    return client
