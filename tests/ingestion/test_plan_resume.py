"""Splitting a file into chunks never leaves a batch running for ever: a planner that dies is
replaced by the sweep, and one that fails says why."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from ingestion.models import IngestionBatch, SurveyRecord
from ingestion.services import batch_create, batch_plan, plans_resume_stale
from ingestion.synthetic.generator import generate, write
from ingestion.tasks import resume_stale_chunks_task
from rtv.models import OutboxMessage

pytestmark = pytest.mark.django_db


def uploaded(tmp_path: Path, rows: int = 60) -> IngestionBatch:
    data, errors = generate(rows, seed=5, bad_rate=0.0)
    path = write(data, errors, tmp_path / "s.csv", "csv")
    with path.open("rb") as fh:
        return batch_create(fh=fh, original_name=path.name)


def test_a_batch_whose_planner_died_is_planned_again_and_completes(  # type: ignore[no-untyped-def]
        tmp_path, settings, django_capture_on_commit_callbacks) -> None:
    settings.RTV_CHUNK_ROWS = 25
    batch = uploaded(tmp_path)
    # What a worker killed mid-plan leaves: the batch running, a chunk file written, no chunk row.
    IngestionBatch.objects.filter(pk=batch.pk).update(status="running",
                                                      plan_lease_until=timezone.now() - timedelta(seconds=1))
    orphan = default_storage.save(f"temp/{batch.pk}/chunk-00000.parquet", ContentFile(b"half a chunk"))
    with django_capture_on_commit_callbacks(execute=True):
        assert resume_stale_chunks_task() == 1
    batch.refresh_from_db()
    assert batch.status == "succeeded" and batch.accepted == SurveyRecord.objects.filter(batch=batch).count() == 60
    assert not default_storage.exists(orphan)
    assert plans_resume_stale() == 0  # done: nothing left to resume


def test_a_planner_within_its_lease_is_left_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    batch = uploaded(tmp_path)
    IngestionBatch.objects.filter(pk=batch.pk).update(status="running",
                                                      plan_lease_until=timezone.now() + timedelta(minutes=5))
    assert plans_resume_stale() == 0
    assert IngestionBatch.objects.get(pk=batch.pk).status == "running"
    assert not OutboxMessage.objects.filter(task="ingestion.plan_batch").exists()


def test_a_file_that_cannot_be_read_fails_its_batch_with_the_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    batch = uploaded(tmp_path)
    default_storage.delete(batch.file_key)  # storage lost the original
    with pytest.raises(FileNotFoundError):
        batch_plan(batch.pk, enqueue=False)
    batch.refresh_from_db()
    assert batch.status == "failed" and batch.error.startswith("plan_failed: ") and batch.finished_at is not None
    assert plans_resume_stale() == 0  # failed is final: not planned again


def test_a_batch_whose_close_failed_is_closed_by_the_sweep(tmp_path, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every chunk done, but the last worker's close of the batch failed (a deadlock, a kill): no
    chunk is left to try again, so the sweep closes it, once it is past the sweep's age."""
    from ingestion import services

    settings.RTV_CHUNK_ROWS = 25
    batch = uploaded(tmp_path)
    real = services.batch_finalize

    def refused(batch_id):  # type: ignore[no-untyped-def]
        raise RuntimeError("deadlock detected")

    monkeypatch.setattr(services, "batch_finalize", refused)
    for chunk_id in batch_plan(batch.pk, enqueue=False):
        with pytest.raises(RuntimeError):
            services.chunk_process(chunk_id)
    monkeypatch.setattr(services, "batch_finalize", real)
    batch.refresh_from_db()
    assert batch.status == "running" and set(batch.chunks.values_list("status", flat=True)) == {"done"}
    assert resume_stale_chunks_task() == 0  # a batch just created is left to its own workers
    IngestionBatch.objects.filter(pk=batch.pk).update(created_at=timezone.now() - timedelta(minutes=11))
    assert resume_stale_chunks_task() == 1
    batch.refresh_from_db()
    assert batch.status == "succeeded" and batch.accepted == SurveyRecord.objects.filter(batch=batch).count() == 60
    assert resume_stale_chunks_task() == 0


def test_a_pending_batch_whose_message_was_lost_is_sent_again_once_per_period(  # type: ignore[no-untyped-def]
        tmp_path, django_capture_on_commit_callbacks) -> None:
    """A broker that restarts without its queue (Redis keeping nothing on disk) loses the plan
    message after the outbox sent it: the batch would wait, "queued", for ever, and block its own
    file (same sha256) from being sent again."""
    batch = uploaded(tmp_path)
    assert plans_resume_stale() == 0  # just created: its message is on its way
    IngestionBatch.objects.filter(pk=batch.pk).update(created_at=timezone.now() - timedelta(minutes=11))
    from rtv.celery import app

    app.conf.task_always_eager = False  # sent, not run: as behind a backlog of messages
    try:
        assert plans_resume_stale() == 1
        assert plans_resume_stale() == 0  # not again until the period has passed
    finally:
        app.conf.task_always_eager = True
    IngestionBatch.objects.filter(pk=batch.pk).update(plan_lease_until=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert plans_resume_stale() == 1
    batch.refresh_from_db()
    assert batch.status == "succeeded" and batch.accepted == 60 and batch.plan_attempts == 1


def test_a_file_whose_planner_dies_each_time_fails_after_the_last_attempt(tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    """Else a file that kills its worker (too big for its memory) would kill one every sweep."""
    settings.RTV_PLAN_MAX_ATTEMPTS = 2
    batch = uploaded(tmp_path)
    for attempt in (1, 2):
        IngestionBatch.objects.filter(pk=batch.pk).update(  # a planner starts, and dies
            status="running", plan_attempts=attempt, plan_lease_until=timezone.now() - timedelta(seconds=1))
        assert plans_resume_stale() == (1 if attempt < 2 else 0)
    batch.refresh_from_db()
    assert batch.status == "failed" and batch.finished_at is not None
    assert batch.error.startswith("plan_failed: its worker stopped 2 times")


def test_a_plans_lease_outlasts_the_plan_tasks_time_limit(settings) -> None:
    """A planner still within its time limit is never taken for dead (a second one would delete the
    chunk files the first is writing)."""
    from ingestion.tasks import plan_batch_task

    assert plan_batch_task.time_limit < settings.RTV_PLAN_LEASE_SECONDS
