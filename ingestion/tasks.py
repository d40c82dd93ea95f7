"""Thin Celery wrappers around ingestion services: ids in, ids out."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="ingestion.ingest_path", time_limit=3600, soft_time_limit=3500)
def ingest_path_task(path: str, dry_run: bool = False, source: str = "") -> str:
    """Ingest a file the worker can read, in this worker (commands and demos; uploads use chunks)."""
    from .services import ingest_file

    return str(ingest_file(path, dry_run=dry_run, source=source, force=True).id)


@shared_task(name="ingestion.after_submissions", time_limit=300, soft_time_limit=280, acks_late=True, bind=True,
             max_retries=60)
def after_submissions_task(self: Any, record_ids: list[int]) -> int:
    """Downstream work for stored device submissions: a score by the champion, then their request
    bodies kept under raw/.  Safe to run twice: records already scored by that version and bodies
    already kept are skipped.  While a batch run holds the scoring (the nightly one, a new
    champion's), it comes back in two minutes instead of holding a worker until that run ends.  A
    storage failure does not hold the scoring back: the bodies wait for ``keep_device_requests``."""
    from modelling.batch import Busy, predictions_batch
    from modelling.serving import NoChampion

    from .submissions import device_bodies_keep

    try:
        scored = int(predictions_batch(record_ids=record_ids, export=False, wait=False)["scored"])
    except NoChampion:
        scored = 0
    except Busy as exc:
        raise self.retry(countdown=120, exc=exc) from exc
    try:
        device_bodies_keep(record_ids)
    except Exception:  # storage down: the sweep keeps them later
        log.warning("device requests not kept yet", exc_info=True, extra={"records": len(record_ids)})
    return scored


@shared_task(name="ingestion.keep_device_requests", time_limit=600, soft_time_limit=570)
def keep_device_requests_task() -> int:
    """Keep under raw/ the device requests still waiting after two minutes (their task failed to
    reach storage, or never ran), at most 1,000 a run."""
    from datetime import timedelta

    from .submissions import device_bodies_keep

    return device_bodies_keep(older_than=timedelta(minutes=2))


@shared_task(name="ingestion.delete_unnamed_files", time_limit=300, soft_time_limit=280, autoretry_for=(Exception,),
             retry_backoff=30, retry_backoff_max=3600, max_retries=20)
def delete_unnamed_files_task(files: list[list[str]]) -> int:
    """Delete the stored files a key rotation replaced ((batch id, key) pairs), unless their batch
    names them.  Safe to run twice; retried while storage refuses (the outbox only sends it once)."""
    from .submissions import unnamed_files_delete

    return unnamed_files_delete(files)


@shared_task(name="ingestion.plan_batch", time_limit=1800, soft_time_limit=1750, acks_late=True)
def plan_batch_task(batch_id: str) -> int:
    """Split an uploaded file into chunks (idempotent: only a pending batch is planned)."""
    from .services import batch_plan

    return len(batch_plan(batch_id))


# Inside the chunk's lease (RTV_CHUNK_LEASE_SECONDS, 900): a worker still busy with a chunk is
# stopped (and its attempt recorded as failed) before the sweep would take the chunk for dead and
# hand it to another.  A chunk of 20,000 rows takes seconds.
@shared_task(name="ingestion.process_chunk", time_limit=870, soft_time_limit=840, acks_late=True)
def process_chunk_task(chunk_id: int) -> bool:
    """Validate and store one chunk (idempotent: a done or claimed chunk is skipped)."""
    from .services import chunk_process

    return chunk_process(chunk_id)


@shared_task(name="ingestion.resume_stale_chunks", time_limit=120, soft_time_limit=110)
def resume_stale_chunks_task() -> int:
    """Hand out again the work of dead workers: files they were splitting, chunks they held, and
    batches they were closing."""
    from .services import batches_close_stale, chunks_resume_stale, plans_resume_stale

    return plans_resume_stale() + chunks_resume_stale() + batches_close_stale()


@shared_task(name="ingestion.scan_partner_inboxes", time_limit=600, soft_time_limit=580)
def scan_partner_inboxes_task() -> int:
    from .inbox import inbox_scan

    return inbox_scan()
