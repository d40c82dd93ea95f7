"""A real Celery worker, over the real Redis broker, runs the ingestion service end to end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from ingestion.models import IngestionBatch, SurveyRecord
from ingestion.tasks import ingest_path_task
from rtv.celery import app

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def redis_worker(settings) -> Iterator[None]:  # type: ignore[no-untyped-def]
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    old = {k: app.conf[k] for k in ("broker_url", "task_always_eager", "broker_transport_options")}
    from tests.ingestion.test_nothing_lost import use_broker

    app.conf.update(task_always_eager=False, broker_transport_options={})
    use_broker(url)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        use_broker(str(old.pop("broker_url")))
        app.conf.update(old)


def test_an_ingestion_task_round_trips_through_redis_and_a_worker(redis_worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from ingestion.synthetic.generator import generate, write

    data, errors = generate(120, seed=3, bad_rate=0.05)
    path = tmp_path / "survey.csv"
    write(data, errors, path, "csv")
    result = ingest_path_task.apply_async(args=[str(path)])
    assert app.conf.broker_url.startswith("redis://")
    # The worker ran the task in its own thread and committed; we only ever see the stored outcome.
    import time

    deadline = time.monotonic() + 60
    while not IngestionBatch.objects.filter(status="succeeded").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    batch = IngestionBatch.objects.get()
    assert batch.status == "succeeded" and batch.row_count == 120
    assert batch.rejected == len(errors) > 0
    assert SurveyRecord.objects.count() == 120 - len(errors)
    assert result.id


def test_a_retrain_asked_over_the_api_is_trained_and_scored_by_the_worker(redis_worker, api,  # type: ignore[no-untyped-def]
                                                                          tmp_path: Path) -> None:
    """The Celery door of training: the API answers 202 at once, the worker trains, registers the
    version (the first becomes champion), and scores every record with it."""
    import time

    from ingestion.services import ingest_file
    from ingestion.synthetic.generator import generate, write
    from modelling.models import ModelVersion, Prediction
    from rtv.models import AuditEvent, OutboxMessage

    data, _ = generate(300, seed=12, bad_rate=0.0)
    write(data, data.iloc[0:0], tmp_path / "a.csv", "csv")
    stored = ingest_file(tmp_path / "a.csv").accepted
    scientist = api("data_scientist")
    resp = scientist.post("/api/v1/models/retrain/")
    assert resp.status_code == 202 and resp.json()["queued"] is True
    deadline = time.monotonic() + 180
    while Prediction.objects.count() < stored and time.monotonic() < deadline:
        time.sleep(0.5)
    version = ModelVersion.objects.get()
    assert "champion" in version.aliases
    assert AuditEvent.objects.get(action="model.registered").actor == scientist.user  # who asked is recorded
    assert Prediction.objects.filter(model_version=version).count() == stored == SurveyRecord.objects.count()
    assert OutboxMessage.objects.get(task="modelling.train_and_score").sent_at is not None
