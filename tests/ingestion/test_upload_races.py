"""The same file sent at the same moment, against a real server on PostgreSQL, is stored once."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

from ingestion.models import IngestionBatch, SurveyRecord
from ingestion.synthetic.generator import generate, write
from tests.ingestion.test_submission_races import answer

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _manager_token() -> str:
    user = User.objects.create_user("dm-upload-race", password="pw-Secret-123")
    user.groups.add(Group.objects.get(name="data_manager"))
    return str(AccessToken.for_user(user))


def _post_file(url: str, token: str, name: str, content: bytes, barrier: Barrier) -> tuple[int, dict]:  # type: ignore[type-arg]
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: text/csv\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {token}"})
    return answer(req, barrier, timeout=120)


def test_simultaneous_uploads_of_one_file_store_it_once_and_the_rest_name_it(live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("concurrent requests each on their own PostgreSQL connection are what is under test")
    data, _ = generate(40, seed=12, bad_rate=0.0)
    content = write(data, data.iloc[0:0], tmp_path / "s.csv", "csv").read_bytes()
    token = _manager_token()
    senders = 4
    barrier = Barrier(senders)
    with ThreadPoolExecutor(max_workers=senders) as pool:
        answers = list(pool.map(lambda i: _post_file(f"{live_server.url}/api/v1/uploads/", token, f"s-{i}.csv",
                                                     content, barrier), range(senders)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] + [409] * (senders - 1), answers
    [stored] = [body["ingestion_id"] for status, body in answers if status == 202]
    assert all(body["code"] == "duplicate_file" and body["earlier"]["ingestion_id"] == stored
               for status, body in answers if status == 409)
    assert list(IngestionBatch.objects.values_list("pk", flat=True)) == [uuid.UUID(stored)]
    assert SurveyRecord.objects.count() == 40
