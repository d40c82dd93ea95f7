"""Test helper: a lock held by someone else (another thread, on its own connection), as another
process running the same job would hold it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from rtv.locks import exclusive


@contextmanager
def held_elsewhere(name: str) -> Iterator[None]:
    """For the block, ``name`` is held by another thread; released (and the thread gone) after."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        try:
            with exclusive(name):
                held.set()
                release.wait(30)
        finally:
            connection.close()

    other = threading.Thread(target=holder)
    other.start()
    assert held.wait(30), f"{name} was not taken"
    try:
        yield
    finally:
        release.set()
        other.join()
