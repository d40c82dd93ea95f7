"""Test helper: a lock held by someone else (another thread, on its own connection), as another
process running the same job would hold it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from django.db import connection, transaction

from rtv.locks import exclusive


@contextmanager
def _held_by_another_thread(take: Callable[[], AbstractContextManager[Any]], what: str) -> Iterator[None]:
    """For the block, what ``take()`` enters is held by another thread; released (and the thread
    gone) after."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with take():
                held.set()
                release.wait(30)
        finally:
            connection.close()

    other = threading.Thread(target=holder)
    other.start()
    assert held.wait(30), f"{what} was not taken"
    try:
        yield
    finally:
        release.set()
        other.join()


def held_elsewhere(name: str) -> AbstractContextManager[None]:
    """For the block, the named lock ``name`` is held by another thread."""
    return _held_by_another_thread(lambda: exclusive(name), name)


def rows_locked_elsewhere(rows: Any) -> AbstractContextManager[None]:
    """For the block, the rows of the queryset ``rows`` are locked FOR UPDATE by another thread's
    open transaction (a worker busy with them)."""
    @contextmanager
    def take() -> Iterator[None]:
        with transaction.atomic():
            list(rows.select_for_update())
            yield

    return _held_by_another_thread(take, "the rows")
