"""Thin Celery wrappers around ingestion services: ids in, ids out."""

from __future__ import annotations

from celery import shared_task

from .services import ingest_file


# Not acks_late: a redelivered message would ingest the file twice (issue 3 moves to claimed chunks).
@shared_task(name="ingestion.ingest_path", time_limit=3600, soft_time_limit=3500)
def ingest_path_task(path: str, dry_run: bool = False, source: str = "") -> str:
    """Ingest a file the worker can read (a staged upload, a partner inbox file)."""
    return str(ingest_file(path, dry_run=dry_run, source=source).id)


@shared_task(name="ingestion.after_submission", time_limit=300, soft_time_limit=280, acks_late=True)
def after_submission_task(record_id: int) -> int:
    """Downstream work for a stored device submission: a provisional score by the champion.
    Safe to run twice: a record already scored by that version is skipped."""
    from modelling.models import Prediction
    from modelling.services import champion_version, predictions_score

    mv = champion_version()
    if mv is None or Prediction.objects.filter(record_id=record_id, model_version=mv).exists():
        return 0
    return predictions_score(mv, record_ids=[record_id])
