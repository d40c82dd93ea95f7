"""The transactional outbox: enqueue after commit, and never lose a task to a broker outage."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from .models import OutboxMessage

log = logging.getLogger(__name__)


def outbox_enqueue(task: str, *args: Any) -> OutboxMessage:
    """Record the task inside the caller's transaction; send it after commit."""
    return outbox_after_commit(OutboxMessage.objects.create(task=task, args=list(args)))


def outbox_after_commit(message: OutboxMessage) -> OutboxMessage:
    """Send a message the caller's transaction has written, once that transaction commits."""
    transaction.on_commit(lambda: _send(message.pk, message))
    return message


def _send(message_id: int, message: OutboxMessage | None = None) -> bool:
    from rtv.celery import app

    if message is None:
        message = OutboxMessage.objects.filter(pk=message_id, sent_at__isnull=True).first()
        if message is None:
            return False
    try:
        if app.conf.task_always_eager:
            # Eager mode (tests, one-off scripts): run in-process, as .delay() would.
            app.loader.import_default_modules()  # task autodiscovery, as a worker does at start
            app.tasks[message.task].apply(args=message.args, throw=True)
        else:
            app.send_task(message.task, args=message.args, retry=False)
    except Exception as exc:  # after commit nothing may fail the request: the sweeper retries
        OutboxMessage.objects.filter(pk=message_id).update(attempts=F("attempts") + 1, last_error=str(exc)[:2000])
        log.warning("broker unavailable; outbox message kept for the sweeper",
                    extra={"outbox_id": message_id, "task": message.task, "error": str(exc)})
        return False
    _mark_sent(message_id, message.task)
    return True


# Tasks that are safe to run twice, whose "sent" mark may be committed without waiting for the WAL
# flush: a mark lost in a crash only makes the sweeper send the task again.  (Training is not one of
# them: a resend would register another model version.)
RELAXED_MARK_TASKS = frozenset({"ingestion.after_submissions"})


def _mark_sent(message_id: int, task: str = "") -> None:
    """Record the publication.  It runs after every device submission, so for the idempotent tasks on
    PostgreSQL it is one plain statement whose commit does not wait for the WAL flush."""
    if (connection.vendor != "postgresql" or task not in RELAXED_MARK_TASKS
            or connection.in_atomic_block or not connection.get_autocommit()):
        OutboxMessage.objects.filter(pk=message_id, sent_at__isnull=True).update(sent_at=timezone.now(),
                                                                                attempts=F("attempts") + 1)
        return
    with connection.cursor() as cur:
        cur.execute(_MARK_SENT_SQL, [timezone.now(), message_id])


_MARK_SENT_SQL = (
    f"WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) "
    f'UPDATE "{OutboxMessage._meta.db_table}" SET "sent_at" = %s, "attempts" = "attempts" + 1 '
    f'FROM relaxed WHERE "id" = %s AND "sent_at" IS NULL'
)


def outbox_sweep(*, older_than: timedelta = timedelta(seconds=30), limit: int = 500) -> int:
    """Send unsent messages (a bounded batch, oldest first).  Returns how many were sent."""
    cutoff = timezone.now() - older_than
    ids = list(OutboxMessage.objects.filter(sent_at__isnull=True, created_at__lte=cutoff)
               .order_by("created_at").values_list("pk", flat=True)[:limit])
    sent = 0
    for pk in ids:  # one broker call per message is inherent; bounded by ``limit``
        if not _send(pk):
            break  # the broker is still down: stop, try again on the next sweep
        sent += 1
    return sent
