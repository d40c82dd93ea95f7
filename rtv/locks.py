"""One at a time, across processes: a lock held for a block of work.

For jobs that write what they read (batch scoring, retraining triggers, the outbox sweep, alert
delivery, rollout changes): two overlapping runs would each read the same state and write it twice.

On PostgreSQL an advisory lock: outside a transaction a session lock, spanning the block's own
transactions and released at its end; inside one (the admin wraps its saves in one) a transaction
lock, held until that transaction commits, so the next holder sees what this one wrote.  The
database drops either if the process dies.  On SQLite (the embedded run: a worker with two
processes, beat and the web server) a file lock under ``RTV_VAR_DIR/locks``.  Re-entrant in a
thread: a block inside another that holds the same lock just runs."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

log = logging.getLogger(__name__)
_held = threading.local()  # name -> depth, for this thread


@contextmanager
def exclusive(name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the lock called ``name`` for the block; yields whether it is held.  ``wait=False``: do
    not wait for another holder, yield False at once (the caller skips its work)."""
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(name):
        depth[name] += 1
        try:
            yield True
        finally:
            depth[name] -= 1
        return
    with (_postgres(name, wait) if connection.vendor == "postgresql" else _file(name, wait)) as held:
        if held:
            depth[name] = 1
        try:
            yield held
        finally:
            depth.pop(name, None)


@contextmanager
def _postgres(name: str, wait: bool) -> Iterator[bool]:
    scope = "_xact" if connection.in_atomic_block else ""  # inside a transaction: until it ends
    with connection.cursor() as cur:
        if wait:
            cur.execute(f"SELECT pg_advisory{scope}_lock(hashtextextended(%s, 0))", [name])
            held = True
        else:
            cur.execute(f"SELECT pg_try_advisory{scope}_lock(hashtextextended(%s, 0))", [name])
            row = cur.fetchone()
            held = bool(row and row[0])
    try:
        yield held
    finally:
        if held and not scope:
            try:
                with connection.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [name])
            except Exception:  # a broken connection: the database has dropped the lock with it
                log.warning("advisory lock not released; closing the connection", extra={"lock": name})
                connection.close()


@contextmanager
def _file(name: str, wait: bool) -> Iterator[bool]:
    folder = settings.VAR_DIR / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(name.encode()).hexdigest()[:16] + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            held = True
        except BlockingIOError:
            held = False
        try:
            yield held
        finally:
            if held:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
