"""Twenty simultaneous identical uploads against a real server on PostgreSQL store exactly one record."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

from ingestion.models import SurveyRecord
from tests.ingestion.test_submissions import body

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_twenty_concurrent_identical_posts_store_one_record_and_all_name_it(live_server) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's")
    user = User.objects.create_user("fo-race", password="pw-Secret-123")
    user.groups.add(Group.objects.get(name="field_officer"))
    token = str(AccessToken.for_user(user))
    payload = json.dumps(body(5, sid=str(uuid.uuid4()))).encode()
    barrier = Barrier(20)

    def post(_: int) -> tuple[int, dict]:  # type: ignore[type-arg]
        req = urllib.request.Request(f"{live_server.url}/api/v1/submissions/", data=payload, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        barrier.wait(timeout=30)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(post, range(20)))
    statuses = sorted(s for s, _ in answers)
    assert all(200 <= s < 300 for s in statuses), answers
    assert statuses.count(201) == 1 and statuses.count(200) == 19
    assert SurveyRecord.objects.count() == 1
    record_id = SurveyRecord.objects.get().pk
    assert {b["id"] for _, b in answers} == {record_id}
