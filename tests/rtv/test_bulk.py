"""COPY of a frame keeps what it is given: aware timestamps at their instant, nulls as NULL."""

from __future__ import annotations

import pandas as pd
import pytest

from rtv.bulk import copy_frame
from rtv.models import PipelineRun

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("zone", ["UTC", "Africa/Kampala"])
def test_aware_timestamps_are_stored_at_their_instant_whatever_their_offset(zone: str) -> None:
    finished = pd.Series(pd.DatetimeIndex(["2026-01-01 10:00:00.512859", "2026-12-31 23:59:59", None])
                         .tz_localize(zone))
    frame = pd.DataFrame({"job": ["a", "b", "c"], "status": ["succeeded", "succeeded", "running"],
                          "started_at": pd.Timestamp("2026-01-01", tz=zone),
                          "finished_at": finished, "counts": ["{}"] * 3, "error": [""] * 3,
                          "correlation_id": [f"00000000-0000-0000-0000-00000000000{i}" for i in range(3)]})
    assert copy_frame(PipelineRun, frame, list(frame.columns)) == 3
    stored = dict(PipelineRun.objects.values_list("job", "finished_at"))
    assert pd.Timestamp(stored["a"]) == finished[0] and pd.Timestamp(stored["b"]) == finished[1]
    assert stored["c"] is None


def test_rows_inserted_with_their_parameters_apart_get_their_keys_in_order(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.forms.models import model_to_dict

    from ingestion.models import Household
    from rtv.bulk import insert_returning_keys

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's bound parameters")
    from rtv import bulk

    monkeypatch.setattr(bulk, "MAX_PARAMS", 100 * bulk.insert_width(Household))  # three statements of 100, 100, 50
    made = [Household(household_id=f"KAN-{i:03d}", district="Kanungu", village=f"V{i % 7}") for i in range(250)]
    insert_returning_keys(Household, made)
    assert all(h.pk and not h._state.adding for h in made)
    stored = {h.pk: model_to_dict(h) for h in Household.objects.all()}
    assert [stored[h.pk] for h in made] == [model_to_dict(h) for h in made]  # each key names its own row
    made[3].village = "Moved"
    made[3].save()  # an update now, not a second insert
    assert Household.objects.count() == 250 and Household.objects.get(pk=made[3].pk).village == "Moved"
