"""The transactional outbox: enqueue after commit, and never lose a task to a broker outage."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from .locks import exclusive
from .models import OutboxMessage

log = logging.getLogger(__name__)


def outbox_enqueue(task: str, *args: Any) -> OutboxMessage:
    """Record the task inside the caller's transaction; send it after commit."""
    return outbox_after_commit(OutboxMessage.objects.create(task=task, args=list(args)))


def outbox_after_commit(message: OutboxMessage) -> OutboxMessage:
    """Send a message the caller's transaction has written, once that transaction commits.  A
    mergeable task's message goes to the process's relay, which publishes what gathered in one go."""
    transaction.on_commit(lambda: _dispatch(message))
    return message


def _dispatch(message: OutboxMessage) -> None:
    from rtv.celery import app

    if message.task in MERGEABLE_TASKS and settings.RTV_OUTBOX_RELAY_SECONDS > 0 and not app.conf.task_always_eager:
        _relay.submit(message)
    else:
        _send(message.pk, message)


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
    _mark_sent([message_id], message.task)
    return True


# Tasks that are safe to run twice, whose "sent" mark may be committed without waiting for the WAL
# flush: a mark lost in a crash only makes the sweeper send the task again.  (Training is not one of
# them: a resend would register another model version.)
RELAXED_MARK_TASKS = frozenset({"ingestion.after_submissions"})


def _mark_sent(message_ids: list[int], task: str = "") -> None:
    """Record the publication.  For the idempotent tasks on PostgreSQL it is one plain statement
    whose commit does not wait for the WAL flush."""
    if (connection.vendor != "postgresql" or task not in RELAXED_MARK_TASKS
            or connection.in_atomic_block or not connection.get_autocommit()):
        OutboxMessage.objects.filter(pk__in=message_ids, sent_at__isnull=True).update(sent_at=timezone.now(),
                                                                                     attempts=F("attempts") + 1)
        return
    with connection.cursor() as cur:
        cur.execute(_MARK_SENT_SQL, [timezone.now(), message_ids])


# Tasks whose only argument is a list of record ids and that may run on any union of those lists:
# their messages are merged, so a burst of device submissions costs one publication and one
# "sent" update instead of one each (these were a fifth of a submission's time).
MERGEABLE_TASKS = frozenset({"ingestion.after_submissions"})
MERGED_IDS_MAX = 1000  # ids per published task: keeps one task's work bounded


class _Relay:
    """This process's publisher of committed, mergeable outbox messages.  ``submit`` only queues the
    message in memory (the request is not kept waiting on the broker); a daemon thread wakes, lets a
    few more gather for ``RTV_OUTBOX_RELAY_SECONDS``, then publishes them merged by task and marks
    them sent in one statement.  A message lost here (the process dies first) is still in the outbox,
    unsent: the sweeper sends it."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked worker starts its own thread
        atexit.register(self._at_exit)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: list[OutboxMessage] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, message: OutboxMessage) -> None:
        with self._lock:
            self._pending.append(message)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
                self._thread.start()
        self._wake.set()

    def flush(self) -> int:
        """Publish what is pending now, in the caller's thread.  Returns how many messages were sent."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._wake.clear()
        return _send_merged(batch) if batch else 0

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                if not self._stopping:
                    time.sleep(settings.RTV_OUTBOX_RELAY_SECONDS)  # let a burst gather
                close_old_connections()  # the thread's own connection, kept or closed as a request's is
                try:
                    self.flush()
                except Exception:  # never let the thread die: the sweeper covers what was not marked
                    log.exception("outbox relay failed; unsent messages are left to the sweeper")
                finally:
                    close_old_connections()
                if self._stopping:
                    return
        finally:
            connection.close()

    def stop(self) -> None:
        """Publish what is pending, end the thread and close its connection (a later submit starts
        another).  For tests, whose database must have no connection left at the end."""
        with self._lock:
            thread, self._stopping = self._thread, True
        self._wake.set()
        if thread is not None:
            thread.join(timeout=30)
        with self._lock:
            self._thread, self._stopping = None, False

    def _at_exit(self) -> None:
        try:
            self.flush()
        except Exception:  # the interpreter is going: what is unsent is the sweeper's
            log.warning("outbox relay could not flush at exit; the sweeper will send the rest")


_relay = _Relay()


def outbox_flush() -> int:
    """Publish the relay's pending messages now, in the caller's thread.  Returns how many were sent."""
    return _relay.flush()


def outbox_relay_stop() -> None:
    """Publish what is pending and end the relay's thread, closing its database connection."""
    _relay.stop()


def _send_merged(messages: list[OutboxMessage]) -> int:
    """Publish messages of mergeable tasks, one task per ``MERGED_IDS_MAX`` ids, and mark them sent."""
    from rtv.celery import app

    by_task: dict[str, list[OutboxMessage]] = {}
    for m in messages:
        by_task.setdefault(m.task, []).append(m)
    sent = 0
    for task, group in by_task.items():
        while group:  # as many messages as fit in one task's ids (at least one)
            take, ids = 0, list[int]()
            while take < len(group) and (not ids or len(ids) + len(group[take].args[0]) <= MERGED_IDS_MAX):
                ids.extend(group[take].args[0])
                take += 1
            part, group = [m.pk for m in group[:take]], group[take:]
            try:
                app.send_task(task, args=[sorted(ids)], retry=False)
            except Exception as exc:
                OutboxMessage.objects.filter(pk__in=part).update(attempts=F("attempts") + 1, last_error=str(exc)[:2000])
                log.warning("broker unavailable; outbox messages kept for the sweeper",
                            extra={"outbox_ids": part, "task": task, "error": str(exc)})
                return sent
            _mark_sent(part, task)
            sent += len(part)
    return sent


_MARK_SENT_SQL = (
    f"WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)) "
    f'UPDATE "{OutboxMessage._meta.db_table}" SET "sent_at" = %s, "attempts" = "attempts" + 1 '
    f'FROM relaxed WHERE "id" = ANY(%s) AND "sent_at" IS NULL'
)


def outbox_sweep(*, older_than: timedelta = timedelta(seconds=30), limit: int = 500) -> int:
    """Send unsent messages (a bounded batch, oldest first).  Returns how many were sent.

    One sweep at a time: a sweep still sending (a slow broker) when the next one starts would read
    the same unsent messages and publish each again, and a training message published twice trains
    twice.  The later sweep leaves the work to the one running."""
    with exclusive("rtv.outbox_sweep", wait=False) as mine:
        if not mine:
            return 0
        cutoff = timezone.now() - older_than
        ids = list(OutboxMessage.objects.filter(sent_at__isnull=True, created_at__lte=cutoff)
                   .order_by("created_at").values_list("pk", flat=True)[:limit])
        sent = 0
        for pk in ids:  # one broker call per message is inherent; bounded by ``limit``
            if not _send(pk):
                break  # the broker is still down: stop, try again on the next sweep
            sent += 1
        return sent
