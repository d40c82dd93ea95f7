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


def _officer_token(name: str) -> str:
    user = User.objects.create_user(name, password="pw-Secret-123")
    user.groups.add(Group.objects.get(name="field_officer"))
    return str(AccessToken.for_user(user))


def answer(req: urllib.request.Request, barrier: Barrier, timeout: int = 60) -> tuple[int, dict]:  # type: ignore[type-arg]
    """Send ``req`` once every thread is at the barrier; the status and the JSON body (or the tail of
    a body that is not JSON, to show what went wrong)."""
    barrier.wait(timeout=30)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, {"body": text.decode(errors="replace")[-3000:]}


def _post(url: str, token: str, payload: bytes, barrier: Barrier) -> tuple[int, dict]:  # type: ignore[type-arg]
    return answer(urllib.request.Request(url, data=payload, method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"}), barrier)


def test_simultaneous_singles_and_batches_with_one_id_store_it_once(live_server) -> None:  # type: ignore[no-untyped-def]
    """Ten identical singles, five singles with other content and five device batches carrying the
    same id race: one record; the identical ones all name it; the different ones are conflicts."""
    if connection.vendor != "postgresql":
        pytest.skip("a concurrent insert waiting on the unique index is PostgreSQL's behaviour under test")
    token = _officer_token("fo-race-mixed")
    sid = str(uuid.uuid4())
    same = body(5, sid=sid)
    other = body(6, sid=sid)
    extra = [body(7 + i, sid=str(uuid.uuid4())) for i in range(5)]
    single, batch = f"{live_server.url}/api/v1/submissions/", f"{live_server.url}/api/v1/submissions/batch/"
    jobs = ([(single, json.dumps(same).encode())] * 10 + [(single, json.dumps(other).encode())] * 5
            + [(batch, json.dumps({"items": [extra[i], same]}).encode()) for i in range(5)])
    barrier = Barrier(len(jobs))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(lambda job: _post(job[0], token, job[1], barrier), jobs))
    assert all(s < 500 for s, _ in answers), [b for s, b in answers if s >= 500][:1]

    assert SurveyRecord.objects.filter(submission_id=sid).count() == 1
    record = SurveyRecord.objects.get(submission_id=sid)
    won_by_same = record.raw == same["data"]
    assert won_by_same or record.raw == other["data"]
    # Each contender for the id: (posted the winner's content?, status, the record it names or None).
    contenders = [(i < 10, s, b.get("id") or (b.get("record") or {}).get("id")) for i, (s, b) in enumerate(answers[:15])]
    contenders += [(True, r["status"], (r.get("record") or {}).get("id")) for r in (b["results"][1] for _, b in answers[15:])]
    contenders = [(posted_same == won_by_same, status, named) for posted_same, status, named in contenders]
    winners = [(status, named) for same_content, status, named in contenders if same_content]
    losers = [(status, named) for same_content, status, named in contenders if not same_content]
    assert sorted(status for status, _ in winners) == [200] * (len(winners) - 1) + [201]
    assert {named for _, named in winners} == {record.pk}
    assert losers and all(status == 409 and named == record.pk for status, named in losers)
    # The batches' other items are stored whatever happened to the shared id.
    assert all(s == 200 and b["results"][0]["result"] == "created" for s, b in answers[15:])
    assert SurveyRecord.objects.count() == 6


def test_twenty_concurrent_identical_posts_store_one_record_and_all_name_it(live_server) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("a concurrent insert waiting on the unique index is PostgreSQL's behaviour under test")
    token = _officer_token("fo-race")
    payload = json.dumps(body(5, sid=str(uuid.uuid4()))).encode()
    barrier = Barrier(20)
    url = f"{live_server.url}/api/v1/submissions/"
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: _post(url, token, payload, barrier), range(20)))
    statuses = sorted(s for s, _ in answers)
    assert all(200 <= s < 300 for s in statuses), answers
    assert statuses.count(201) == 1 and statuses.count(200) == 19
    assert SurveyRecord.objects.count() == 1
    record_id = SurveyRecord.objects.get().pk
    assert {b["id"] for _, b in answers} == {record_id}
