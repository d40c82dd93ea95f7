"""One at a time, across processes: a PostgreSQL advisory lock held for a block of work.

For jobs that write what they read (batch scoring, retraining triggers, the outbox sweep): two
overlapping runs of one would each read the same state and write it twice.  The lock is a session
lock, so it spans the job's own transactions, and the database drops it if the process dies.  On
SQLite (the embedded run: one worker) there is nothing to lock against, and the block just runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def exclusive(name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock called ``name`` for the block; yields whether it is held.  ``wait=False``: do
    not wait for another holder, yield False at once (the caller skips its work)."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cur:
        if wait:
            cur.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [name])
            held = True
        else:
            cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [name])
            held = bool(cur.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [name])
