"""Shared fixtures: role personas, API clients with JWT, isolated storage and MLflow, real data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from rtv.roles import ALL_ROLES, STAFF_ROLES

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "rtv" / "DataScientist_01_Assessment.csv"


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path: Path) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Every test writes files and MLflow runs into its own folder."""
    data = tmp_path / "data"
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(data)}}}
    # (pytest-django's settings fixture fires setting_changed, which resets default_storage.)
    settings.MLFLOW_TRACKING_URI = f"sqlite:///{tmp_path / 'mlflow.sqlite3'}"
    settings.MLFLOW_ARTIFACT_ROOT = str(tmp_path / "mlartifacts")
    from modelling import registry, serving
    from quality.rules import forget_rules
    from rtv.selectors import forget_schema

    registry._load.cache_clear()
    serving.forget()  # alias resolutions and experiments are per process; each test has its own
    forget_schema()  # each test's database may hold its own copy of the contract
    forget_rules()  # a rule changed by an earlier test was rolled back with it
    yield


@pytest.fixture
def make_user(db) -> Callable[..., User]:  # type: ignore[no-untyped-def]
    counter = iter(range(1, 10_000))

    def make(role: str | None, username: str | None = None) -> User:
        name = username or f"u_{role or 'outsider'}_{next(counter)}"
        user = User.objects.create_user(username=name, password="pw-Secret-123")
        if role:
            user.groups.add(Group.objects.get(name=role))
            user.is_staff = role in STAFF_ROLES
            user.save()
        return user

    return make


@pytest.fixture
def api(make_user) -> Callable[[str | None], APIClient]:  # type: ignore[no-untyped-def]
    """api("reviewer") -> a client holding a JWT for a new user in that role; api(None): no role."""

    def client_for(role: str | None) -> APIClient:
        assert role is None or role in ALL_ROLES
        user = make_user(role)
        client = APIClient()
        resp = client.post("/api/v1/auth/token/", {"username": user.username, "password": "pw-Secret-123"},
                           format="json")
        assert resp.status_code == 200, resp.content
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {resp.json()['access']}")
        client.user = user  # type: ignore[attr-defined]
        return client

    return client_for


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.exists():
        pytest.skip("the real RTV extract is not beside this checkout (../shared/data/rtv)")
    return REAL_DATA
