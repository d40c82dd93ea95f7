"""Sign-in attempts are limited per account and per address, at the token endpoint and on both
sign-in pages: a password cannot be guessed at the server's full speed."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def limits(settings):  # type: ignore[no-untyped-def]
    settings.RTV_SIGN_IN_RATE_PER_ACCOUNT = "5/min"
    settings.RTV_SIGN_IN_RATE_PER_ADDRESS = "8/min"
    cache.clear()
    yield
    cache.clear()


def test_the_token_endpoint_refuses_an_account_past_its_attempts_even_with_the_right_password(  # type: ignore[no-untyped-def]
        limits, make_user) -> None:
    make_user("field_officer", "fo")
    client = APIClient()
    wrong = [client.post("/api/v1/auth/token/", {"username": "fo", "password": f"guess-{i}"}, format="json")
             for i in range(5)]
    assert [r.status_code for r in wrong] == [401] * 5
    right = client.post("/api/v1/auth/token/", {"username": "FO ", "password": "pw-Secret-123"}, format="json")
    assert right.status_code == 429 and right.json()["code"] == "throttled"
    assert int(right["Retry-After"]) > 0


def test_spreading_guesses_over_accounts_meets_the_limit_per_address(limits, make_user) -> None:  # type: ignore[no-untyped-def]
    client = APIClient()
    codes = [client.post("/api/v1/auth/token/", {"username": f"user{i}", "password": "x"}, format="json").status_code
             for i in range(9)]
    assert codes == [401] * 8 + [429]
    forged = APIClient(HTTP_X_FORWARDED_FOR="203.0.113.7")  # a header the client made up is not an address
    assert forged.post("/api/v1/auth/token/", {"username": "z", "password": "x"}, format="json").status_code == 429
    other = APIClient(REMOTE_ADDR="10.0.0.9")  # another address still signs in
    make_user("reviewer", "rev")
    assert other.post("/api/v1/auth/token/", {"username": "rev", "password": "pw-Secret-123"},
                      format="json").status_code == 200


@pytest.mark.parametrize("page", ["/accounts/login/", "/admin/login/"])
def test_the_sign_in_pages_have_the_same_limits(limits, client, make_user, page: str) -> None:  # type: ignore[no-untyped-def]
    make_user("data_manager", "dm")
    for i in range(5):
        assert client.post(page, {"username": "dm", "password": f"guess-{i}"}).status_code == 200  # the form again
    refused = client.post(page, {"username": "dm", "password": "pw-Secret-123"})
    assert refused.status_code == 429 and "Too many sign-in attempts" in refused.content.decode()
    assert client.get(page).status_code == 200  # the page itself still shows


def test_failing_to_sign_in_as_someone_from_elsewhere_does_not_lock_them_out(limits, make_user) -> None:  # type: ignore[no-untyped-def]
    make_user("admin", "boss")
    attacker = APIClient(REMOTE_ADDR="198.51.100.4")
    for i in range(6):
        attacker.post("/api/v1/auth/token/", {"username": "boss", "password": f"guess-{i}"}, format="json")
    assert attacker.post("/api/v1/auth/token/", {"username": "boss", "password": "x"}, format="json").status_code == 429
    owner = APIClient(REMOTE_ADDR="10.0.0.2")
    assert owner.post("/api/v1/auth/token/", {"username": "boss", "password": "pw-Secret-123"},
                      format="json").status_code == 200
