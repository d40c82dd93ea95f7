"""Partner inboxes: files dropped under ``inbox/<partner slug>/`` in storage become batches."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, default_storage
from django.db import transaction

from rtv.outbox import outbox_enqueue
from rtv.services import audit_record, pipeline_run

from .models import IngestionBatch, Partner
from .readers import FORMATS, ReadError, detect_format
from .services import DuplicateFile, batch_create

log = logging.getLogger(__name__)
MAX_FILES_PER_RUN = 50


def storage_list(storage: Storage, prefix: str) -> list[str]:
    """Keys under a prefix, recursively.  Backends disagree on ``listdir`` (stack.md), so each is
    asked in its own terms."""
    if isinstance(storage, FileSystemStorage):
        root = Path(storage.location) / prefix
        if not root.exists():
            return []
        return sorted(str(Path(dirpath, f).relative_to(storage.location)).replace(os.sep, "/")
                      for dirpath, _, files in os.walk(root) for f in files)
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:  # S3
        return sorted(o.key for o in bucket.objects.filter(Prefix=prefix) if not o.key.endswith("/"))
    client = getattr(storage, "client", None)
    if client is not None and hasattr(client, "list_blobs"):  # Azure
        return sorted(b.name for b in client.list_blobs(name_starts_with=prefix))
    _dirs, files = storage.listdir(prefix)
    return sorted(prefix + f for f in files)


def inbox_scan(*, limit: int = MAX_FILES_PER_RUN) -> int:
    """Turn inbox files into batches (bounded per run); partners being scanned elsewhere are skipped."""
    created = 0
    with pipeline_run("partner_inbox_scan") as run:
        for partner_id in Partner.objects.filter(active=True).values_list("pk", flat=True):
            if created >= limit:
                break
            with transaction.atomic():
                partner = Partner.objects.select_for_update(skip_locked=True).filter(pk=partner_id).first()
                if partner is None:
                    continue  # another scanner holds this partner
                for key in storage_list(default_storage, partner.inbox_prefix)[:limit - created]:
                    created += _take(partner, key)
        run.counts = {"batches": created}
    return created


def _clean(name: str) -> str:
    """A file name as text PostgreSQL can hold (a name in another encoding reaches Python with lone
    surrogates, which no database column takes)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _take(partner: Partner, key: str) -> int:
    """One file: its own savepoint, so a failure takes back only its own batch; it leaves the inbox
    only once the scan's transaction has committed (a crash before then leaves it to the next run,
    which finds it ingested and archives it).  Any failure is audited and the scan goes on: one odd
    file never stops the others, nor another partner's."""
    name = _clean(key.rsplit("/", 1)[-1])
    try:
        with transaction.atomic():
            detect_format(name)
            size = default_storage.size(key)
            if size > settings.RTV_MAX_UPLOAD_BYTES:  # the upload door's limit: no door takes a bigger file
                raise ReadError("file_too_large", f"The file is {size:,} bytes; files are limited to "
                                                  f"{settings.RTV_MAX_UPLOAD_BYTES:,} bytes: send it in parts.")
            with default_storage.open(key, "rb") as fh:
                batch = batch_create(fh=fh, original_name=name, channel=IngestionBatch.Channel.PARTNER,
                                     partner=partner)
            outbox_enqueue("ingestion.plan_batch", str(batch.pk))
        transaction.on_commit(lambda: default_storage.delete(key))  # the original is kept under raw/<batch>/
        return 1
    except (DuplicateFile, ReadError) as exc:
        reason, action = str(exc), "inbox.file_refused"
    except Exception as exc:  # storage, database, an odd name: reported, retried next run, never blocking
        log.exception("inbox file failed", extra={"partner": partner.slug, "file": name})
        audit_record(actor=None, action="inbox.file_failed", object_type="ingestion.partner", object_id=str(partner.pk),
                     changes={"file": _clean(key), "reason": f"{type(exc).__name__}: {exc}"}, system="partner_inbox_scan")
        return 0
    # Refused: nothing is lost, the file moves to archive/ (under the name storage gives it), audited.
    try:
        safe = default_storage.get_valid_name(name) or "file"
        with default_storage.open(key, "rb") as fh:
            archived = default_storage.save(f"archive/inbox/{partner.slug}/{safe}", fh)
    except Exception as exc:
        log.exception("inbox file could not be archived", extra={"partner": partner.slug, "file": name})
        audit_record(actor=None, action="inbox.file_failed", object_type="ingestion.partner", object_id=str(partner.pk),
                     changes={"file": _clean(key), "reason": f"{reason}; archiving failed: {type(exc).__name__}"},
                     system="partner_inbox_scan")
        return 0
    transaction.on_commit(lambda: default_storage.delete(key))
    audit_record(actor=None, action=action, object_type="ingestion.partner", object_id=str(partner.pk),
                 changes={"file": _clean(key), "archived_as": archived, "reason": reason}, system="partner_inbox_scan")
    log.warning("inbox file refused", extra={"partner": partner.slug, "file": name, "reason": reason})
    return 0


__all__ = ["FORMATS", "inbox_scan", "storage_list"]
