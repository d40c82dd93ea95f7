"""Thin Celery wrappers around ingestion services: ids in, ids out."""

from __future__ import annotations

from celery import shared_task

from .services import ingest_file


# Not acks_late: a redelivered message would ingest the file twice (issue 3 moves to claimed chunks).
@shared_task(name="ingestion.ingest_path", time_limit=3600, soft_time_limit=3500)
def ingest_path_task(path: str, dry_run: bool = False, source: str = "") -> str:
    """Ingest a file the worker can read (a staged upload, a partner inbox file)."""
    return str(ingest_file(path, dry_run=dry_run, source=source).id)
