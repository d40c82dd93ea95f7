"""A worker killed in the middle of a file: the file resumes by chunk, no row lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count

from ingestion.models import IngestionBatch, IngestionChunk, RowIssue, SurveyRecord
from ingestion.services import batch_create, chunks_resume_stale
from ingestion.synthetic.generator import generate, write
from rtv.celery import app
from tests.ingestion.test_nothing_lost import REDIS, use_broker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
REPO = Path(__file__).resolve().parents[2]


def wait_for(condition, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)


@pytest.fixture
def worker_env(settings, tmp_path: Path) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("needs the shared PostgreSQL test database")
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    db = connection.settings_dict
    url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    settings.RTV_CHUNK_ROWS = 150
    settings.RTV_CHUNK_LEASE_SECONDS = 3
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "rtv.settings.test", "DATABASE_URL": url,
           "CELERY_BROKER_URL": REDIS, "CELERY_TASK_ALWAYS_EAGER": "false", "RTV_CHUNK_ROWS": "150",
           "RTV_CHUNK_LEASE_SECONDS": "3",
           "RTV_DATA_DIR": settings.STORAGES["default"]["OPTIONS"]["location"], "RTV_VAR_DIR": str(tmp_path / "var")}
    old = {k: app.conf[k] for k in ("broker_url", "task_always_eager")}
    app.conf.task_always_eager = False
    use_broker(REDIS)
    try:
        yield env
    finally:
        use_broker(str(old["broker_url"]))
        app.conf.task_always_eager = old["task_always_eager"]


def start_worker(env: dict[str, str], **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(Path(sys.executable).parent / "celery"), "-A", "rtv", "worker", "--pool=solo",
                             "--loglevel=WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle"],
                            cwd=REPO, env={**env, **extra}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_killed_worker_loses_and_duplicates_nothing(worker_env, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      django_capture_on_commit_callbacks) -> None:
    data, errors = generate(600, seed=77, bad_rate=0.05)
    path = tmp_path / "big.csv"
    write(data, errors, path, "csv")
    with path.open("rb") as fh:
        batch = batch_create(fh=fh, original_name=path.name)
    from ingestion.services import batch_plan

    batch_plan(batch.pk)  # four chunks, their messages sent to Redis after commit
    assert IngestionChunk.objects.filter(batch=batch).count() == 4

    # A slow worker: each chunk sleeps after writing, before committing.  Kill it -9 mid-chunk.
    slow = start_worker(worker_env, RTV_TEST_CHUNK_DELAY="3")
    try:
        wait_for(lambda: IngestionChunk.objects.filter(batch=batch, status="done").count() >= 1
                 and IngestionChunk.objects.filter(batch=batch, status="running").exists())
        time.sleep(1.0)  # well inside the running chunk's uncommitted transaction
        slow.send_signal(signal.SIGKILL)
        slow.wait(timeout=10)
    finally:
        if slow.poll() is None:
            slow.kill()
    killed = IngestionChunk.objects.get(batch=batch, status="running")
    # Nothing of the killed chunk is visible: its transaction died with the worker.
    first, last = killed.start_row + 2, killed.start_row + 1 + killed.row_count
    assert not SurveyRecord.objects.filter(batch=batch, row_number__range=(first, last)).exists()

    fresh = start_worker(worker_env)
    try:
        time.sleep(3.5)  # the dead worker's lease expires
        assert chunks_resume_stale() >= 1  # what the beat job does every two minutes
        wait_for(lambda: IngestionBatch.objects.get(pk=batch.pk).status == "succeeded")
    finally:
        fresh.terminate()
        fresh.wait(timeout=20)

    batch.refresh_from_db()
    rejected = errors["row_number"].nunique()
    assert (batch.accepted, batch.rejected) == (600 - rejected, rejected)
    assert SurveyRecord.objects.filter(batch=batch).count() == 600 - rejected
    dupes = SurveyRecord.objects.filter(batch=batch).values("row_number").annotate(n=Count("id")).filter(n__gt=1)
    assert not dupes.exists()
    assert set(RowIssue.objects.filter(batch=batch, severity="error").values_list("row_number", "field", "rule")) == \
        set(errors[["row_number", "field", "rule"]].itertuples(index=False, name=None))
    assert IngestionChunk.objects.get(pk=killed.pk).attempts == 2
