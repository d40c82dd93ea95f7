"""Nothing lost: a submission is committed before the answer, and downstream work survives a broker
outage (the outbox keeps it; the sweeper sends it when the broker is back; a real worker runs it)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.test import override_settings

from ingestion.models import SurveyRecord
from ingestion.services import ingest_file
from ingestion.synthetic.generator import generate, write
from modelling.models import Prediction
from modelling.services import model_train
from rtv.celery import app
from rtv.models import OutboxMessage
from rtv.outbox import outbox_sweep
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
