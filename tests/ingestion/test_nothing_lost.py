"""Nothing lost: a submission is committed before the answer, and downstream work survives a broker
outage (the outbox keeps it; the sweeper sends it when the broker is back; a real worker runs it)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.test import override_settings

from ingestion.models import SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling.models import Prediction
from modelling.services import model_train
from rtv.celery import app
from rtv.models import OutboxMessage
from rtv.outbox import outbox_relay_stop, outbox_sweep
from tests.ingestion.test_submissions import body

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def broker() -> Iterator[dict[str, str]]:
    old = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "broker_transport_options")}
    app.conf.update(task_always_eager=False, broker_transport_options={"max_retries": 0})
    try:
        yield {"dead": DEAD_BROKER, "live": REDIS}
    finally:
        outbox_relay_stop()  # its thread's connection must not outlive the test database
        use_broker(old.pop("broker_url"))
        app.conf.update(old)


def use_broker(url: str) -> None:
    import kombu.pools

    app.pool.force_close_all()
    kombu.pools.reset()
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def champion(tmp_path: Path):  # type: ignore[no-untyped-def]
    data, errors = generate(400, seed=8)
    write(data, errors, tmp_path / "t.csv", "csv")
    ingest_file(tmp_path / "t.csv")
    return model_train()


def test_the_api_accepts_while_the_broker_is_down_and_the_sweeper_delivers_later(  # type: ignore[no-untyped-def]
        api, broker, champion) -> None:
    use_broker(broker["dead"])
    officer = api("field_officer")
    started = time.monotonic()
    resp = officer.post("/api/v1/submissions/", body(7), format="json")
    assert resp.status_code == 201, resp.json()
    assert time.monotonic() - started < 15  # the outage costs a bounded wait, not a hang
    record = SurveyRecord.objects.get(pk=resp.json()["id"])
    message = OutboxMessage.objects.get(task="ingestion.after_submissions", args=[[record.pk]])
    outbox_relay_stop()  # the relay has tried the broker
    message.refresh_from_db()
    assert message.sent_at is None and message.attempts == 1 and message.last_error
    assert outbox_sweep(older_than=timedelta(0)) == 0  # still down: kept

    use_broker(broker["live"])
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert outbox_sweep(older_than=timedelta(0)) == 1
        deadline = time.monotonic() + 60
        while not Prediction.objects.filter(record=record).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    message.refresh_from_db()
    assert message.sent_at is not None
    prediction = Prediction.objects.get(record=record)
    assert prediction.model_version == champion


def test_a_committed_submission_is_in_the_database_before_the_answer(api, broker) -> None:  # type: ignore[no-untyped-def]
    use_broker(broker["dead"])
    resp = api("field_officer").post("/api/v1/submissions/", body(8), format="json")
    # A fresh connection (another transaction) sees it: it was committed, not merely pending.
    from django.db import connections

    with override_settings():
        other = connections.create_connection("default")
        try:
            with other.cursor() as cur:
                cur.execute("SELECT count(*) FROM ingestion_surveyrecord WHERE id = %s", [resp.json()["id"]])
                assert cur.fetchone()[0] == 1
        finally:
            other.close()


def published(url: str) -> list[tuple[str, list[int]]]:
    """The tasks waiting in the broker's default queue: (name, record ids), oldest first."""
    client = redis.Redis.from_url(url)
    out = []
    for raw in reversed(client.lrange("celery", 0, -1)):  # LPUSH: the newest is first
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        out.append((message["headers"]["task"], args[0]))
    return out


def test_a_burst_of_submissions_is_published_as_one_task_naming_every_record(  # type: ignore[no-untyped-def]
        api, broker, settings) -> None:
    settings.RTV_OUTBOX_RELAY_SECONDS = 1.0  # the burst gathers within the relay's wait
    use_broker(broker["live"])
    redis.Redis.from_url(broker["live"]).delete("celery")
    officer = api("field_officer")
    ids = [officer.post("/api/v1/submissions/", body(i), format="json").json()["id"] for i in range(5)]
    messages = OutboxMessage.objects.filter(task="ingestion.after_submissions")
    assert messages.count() == 5  # one committed per submission: each stands alone for the sweeper
    outbox_relay_stop()
    assert published(broker["live"]) == [("ingestion.after_submissions", sorted(ids))]
    assert all(m.sent_at is not None and m.attempts == 1 for m in messages)
    assert outbox_sweep(older_than=timedelta(0)) == 0  # nothing left for it


def test_a_published_task_names_at_most_a_bounded_number_of_records(  # type: ignore[no-untyped-def]
        api, broker, settings, monkeypatch) -> None:
    import rtv.outbox

    settings.RTV_OUTBOX_RELAY_SECONDS = 1.0
    monkeypatch.setattr(rtv.outbox, "MERGED_IDS_MAX", 2)
    use_broker(broker["live"])
    redis.Redis.from_url(broker["live"]).delete("celery")
    officer = api("field_officer")
    ids = [officer.post("/api/v1/submissions/", body(i), format="json").json()["id"] for i in range(5)]
    outbox_relay_stop()
    assert published(broker["live"]) == [("ingestion.after_submissions", ids[0:2]),
                                         ("ingestion.after_submissions", ids[2:4]),
                                         ("ingestion.after_submissions", ids[4:5])]


def test_without_the_relay_each_submission_is_published_after_its_commit(  # type: ignore[no-untyped-def]
        api, broker, settings) -> None:
    settings.RTV_OUTBOX_RELAY_SECONDS = 0
    use_broker(broker["live"])
    redis.Redis.from_url(broker["live"]).delete("celery")
    officer = api("field_officer")
    ids = [officer.post("/api/v1/submissions/", body(i), format="json").json()["id"] for i in range(2)]
    assert published(broker["live"]) == [("ingestion.after_submissions", [pk]) for pk in ids]


def test_an_upload_is_accepted_while_the_broker_is_down_and_processed_once_it_is_back(  # type: ignore[no-untyped-def]
        api, broker, tmp_path: Path) -> None:
    """Staff uploads take the same outbox: 202 at once, the plan kept unsent, then planned and
    processed by a real worker when the sweeper finds the broker again."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from ingestion.models import IngestionBatch

    data, errors = generate(120, seed=12, bad_rate=0.0)
    path = tmp_path / "down.csv"
    write(data, errors, path, "csv")
    use_broker(broker["dead"])
    manager = api("data_manager")
    resp = manager.post("/api/v1/uploads/", {"file": SimpleUploadedFile(path.name, path.read_bytes())},
                        format="multipart")
    assert resp.status_code == 202
    batch_id = resp.json()["ingestion_id"]
    message = OutboxMessage.objects.get(task="ingestion.plan_batch", args=[batch_id])
    assert message.sent_at is None and message.attempts == 1
    assert IngestionBatch.objects.get(pk=batch_id).status == "pending"

    use_broker(broker["live"])
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert outbox_sweep(older_than=timedelta(0)) >= 1
        deadline = time.monotonic() + 60
        while IngestionBatch.objects.get(pk=batch_id).status != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.2)
    batch = IngestionBatch.objects.get(pk=batch_id)
    assert batch.status == "succeeded" and batch.accepted == SurveyRecord.objects.filter(batch=batch).count() == 120
