"""Which records a model has seen: its training snapshot's records and every version of them.

A reviewer's correction is a new record (a new version of the same household survey), received after
the model was trained.  For judging a model on data it has not seen, a correction of a record it
trained on is not unseen: it is the same survey with a value changed.  A record's *root* is the first
version of its chain (``root_id``, or the record itself for a first version)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.db.models.functions import Coalesce

from features.snapshots import snapshot_record_ids
from ingestion.models import SurveyRecord

from .models import ModelVersion


def roots_of(record_ids: Iterable[int]) -> dict[int, int]:
    """Each record's root (one query)."""
    ids = list(record_ids)
    if not ids:
        return {}
    return dict(SurveyRecord.objects.filter(pk__in=ids).annotate(r=Coalesce("root_id", "pk")).values_list("pk", "r"))


def trained_roots(mv: ModelVersion) -> set[int] | None:
    """The roots of the records ``mv`` trained on; None when its snapshot does not list them."""
    if mv.snapshot_id is None:
        return None
    ids = snapshot_record_ids(mv.snapshot)
    return None if ids is None else set(roots_of(ids).values())


def unseen_by(record_ids: np.ndarray, *versions: ModelVersion) -> np.ndarray | None:
    """For each record id, whether none of ``versions`` trained on any version of it; None when one
    of them does not list what it trained on."""
    seen: set[int] = set()
    for mv in versions:
        roots = trained_roots(mv)
        if roots is None:
            return None
        seen |= roots
    root = roots_of(int(r) for r in record_ids)
    return np.array([root.get(int(r), int(r)) not in seen for r in record_ids], dtype=bool)
