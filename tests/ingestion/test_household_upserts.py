"""Chunks of one file (or of two files) that name the same new households, in any order, store
each household once and never deadlock on each other."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
from django.db import connection, transaction

from ingestion.models import Household
from ingestion.services import _upsert_households

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_two_chunks_with_the_same_new_households_in_opposite_orders_do_not_deadlock() -> None:
    ids = [f"KAN-UPS-{i:05d}" for i in range(4000)]
    frames = [pd.DataFrame({"household_id": order, "district": "Kanungu", "village": "V"})
              for order in (ids, ids[::-1])]
    barrier, errors, results = threading.Barrier(2), [], []

    def chunk(frame: pd.DataFrame) -> None:
        try:
            with transaction.atomic():
                barrier.wait()
                results.append(_upsert_households(frame))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=chunk, args=(f,)) for f in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert Household.objects.count() == len(ids)
    first, second = results
    assert sorted(first.tolist()) == sorted(second.tolist())
