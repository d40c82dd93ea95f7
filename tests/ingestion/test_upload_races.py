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


def test_two_uploads_processed_at_once_flag_the_rows_they_share(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A corrected export sent while the first is still processing: each chunk compares its rows with
    what is stored when it runs, and here both run before either has stored anything.  The batch
    that closes second still flags what the two share, so nothing goes in twice unflagged."""
    if connection.vendor != "postgresql":
        pytest.skip("two chunks processed at once, each on its own PostgreSQL connection, are what is under test")
    from ingestion import services
    from ingestion.models import RowIssue

    data, _ = generate(30, seed=21, bad_rate=0.0)
    extra, _ = generate(10, seed=22, bad_rate=0.0)
    first = write(data, data.iloc[0:0], tmp_path / "export.csv", "csv")
    import pandas as pd
    second = write(pd.concat([data.iloc[:20], extra], ignore_index=True), data.iloc[0:0], tmp_path / "export-fixed.csv",
                   "csv")
    chunks = []
    for path in (first, second):
        with path.open("rb") as fh:
            batch = services.batch_create(fh=fh, original_name=path.name)
        chunks += services.batch_plan(str(batch.pk), enqueue=False)
    assert len(chunks) == 2

    both_looked = Barrier(2, timeout=60)
    real = services.stored_matches

    def after_both_looked(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = real(*args, **kwargs)  # the real look-up, then wait until the other chunk has made its own
        both_looked.wait()
        return found

    monkeypatch.setattr(services, "stored_matches", after_both_looked)

    def process(chunk_id: int) -> bool:
        try:
            return services.chunk_process(chunk_id)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(process, chunks))

    assert set(IngestionBatch.objects.values_list("status", flat=True)) == {"succeeded"}
    assert SurveyRecord.objects.count() == 60
    shared = set(data["household_id"].iloc[:20])
    flagged = set(RowIssue.objects.filter(rule="near_duplicate").values_list("record__household__household_id",
                                                                              "record__batch_id"))
    # Each shared household is flagged at least once (both, when the two batches close at the same
    # moment), and nothing else is.
    assert {hid for hid, _ in flagged} == shared and 20 <= len(flagged) <= 40
    records = SurveyRecord.objects.filter(pk__in=RowIssue.objects.filter(rule="near_duplicate").values("record"))
    assert records.count() == len(flagged)
    assert not records.filter(auto_approved=True).exists() and not records.filter(warning_count=0).exists()
    for batch in IngestionBatch.objects.all():
        assert batch.warnings == SurveyRecord.objects.filter(batch=batch, warning_count__gt=0).count()
        assert services.batch_progress(batch)["warnings"] == batch.warnings  # the batch's page says the same
        ours = RowIssue.objects.filter(batch=batch, rule="near_duplicate").count()
        assert batch.quality["by_rule"].get("near_duplicate", {}).get("warning", 0) == ours
