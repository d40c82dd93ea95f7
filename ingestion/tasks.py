"""Thin Celery wrappers around ingestion services: ids in, ids out."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="ingestion.ingest_path", time_limit=3600, soft_time_limit=3500)
def ingest_path_task(path: str, dry_run: bool = False, source: str = "") -> str:
    """Ingest a file the worker can read, in this worker (commands and demos; uploads use chunks)."""
    from .services import ingest_file

    return str(ingest_file(path, dry_run=dry_run, source=source, force=True).id)


@shared_task(name="ingestion.after_submissions", time_limit=300, soft_time_limit=280, acks_late=True)
def after_submissions_task(record_ids: list[int]) -> int:
    """Downstream work for stored device submissions: a score by the champion.
    Safe to run twice: records already scored by that version are skipped."""
    from modelling.batch import predictions_batch
    from modelling.serving import NoChampion

    try:
        return int(predictions_batch(record_ids=record_ids, export=False)["scored"])
    except NoChampion:
        return 0


@shared_task(name="ingestion.plan_batch", time_limit=1800, soft_time_limit=1750, acks_late=True)
def plan_batch_task(batch_id: str) -> int:
    """Split an uploaded file into chunks (idempotent: only a pending batch is planned)."""
    from .services import batch_plan

    return len(batch_plan(batch_id))


@shared_task(name="ingestion.process_chunk", time_limit=1800, soft_time_limit=1750, acks_late=True)
def process_chunk_task(chunk_id: int) -> bool:
    """Validate and store one chunk (idempotent: a done or claimed chunk is skipped)."""
    from .services import chunk_process

    return chunk_process(chunk_id)


@shared_task(name="ingestion.resume_stale_chunks", time_limit=120, soft_time_limit=110)
def resume_stale_chunks_task() -> int:
    """Hand out again the work of dead workers: files they were splitting, chunks they held."""
    from .services import chunks_resume_stale, plans_resume_stale

    return plans_resume_stale() + chunks_resume_stale()


@shared_task(name="ingestion.scan_partner_inboxes", time_limit=600, soft_time_limit=580)
def scan_partner_inboxes_task() -> int:
    from .inbox import inbox_scan

    return inbox_scan()
