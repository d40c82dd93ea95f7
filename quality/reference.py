"""Reference statistics from stored records, for the statistical rules on inputs too small to carry
their own: a device's one submission has no district of 20 to be an outlier in, so its values are
scored against the district's stored records (the newest approved current ones), as a file's rows
are scored against their file's."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from django.conf import settings

from .engine import RuleSet

REFERENCE_ROWS = 20_000  # the newest records the statistics come from


@dataclass(frozen=True)
class Reference:
    """Per robust-z rule (field, grouping column): each group's median and MAD."""

    stats: dict[tuple[str, str], dict[str, tuple[float, float]]]


_lock = threading.Lock()
_cached: tuple[float, tuple[tuple[str, str, int], ...], Reference] | None = None


def stored_reference(rules: RuleSet) -> Reference:
    """The statistics the active robust-z rules need, from the stored records; kept for
    ``RTV_QUALITY_REFERENCE_SECONDS`` per process (reading 20,000 records is ~0.1 s, not a per-request cost)."""
    global _cached
    wanted = tuple(sorted((r.field, str(r.params.get("by", "district")), int(r.params.get("min_group", 20)))
                          for r in rules.by_kind.get("robust_z", ())))
    ttl = settings.RTV_QUALITY_REFERENCE_SECONDS
    with _lock:
        if _cached is not None and _cached[1] == wanted and time.monotonic() - _cached[0] < ttl:
            return _cached[2]
    reference = _compute(wanted)
    with _lock:
        _cached = (time.monotonic(), wanted, reference)
    return reference


def _compute(wanted: tuple[tuple[str, str, int], ...]) -> Reference:
    from ingestion.models import SURVEY_VALUE_FIELDS, SurveyRecord

    known = set(SURVEY_VALUE_FIELDS)
    wanted = tuple(w for w in wanted if w[0] in known and w[1] in known)
    if not wanted:
        return Reference({})
    columns = sorted({c for field, by, _ in wanted for c in (field, by)})
    rows = list(SurveyRecord.objects.filter(superseded_by__isnull=True, review_status="approved")
                .order_by("-id").values_list(*(f"values__{c}" for c in columns))[:REFERENCE_ROWS])
    frame = pd.DataFrame.from_records(rows, columns=columns)
    stats: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for field, by, min_group in wanted:
        groups: dict[str, tuple[float, float]] = {}
        if len(frame):
            x = pd.to_numeric(frame[field], errors="coerce")
            for group, values in x.groupby(frame[by].astype(str).str.strip()):
                v = values.dropna().to_numpy(dtype="float64")
                if v.size < min_group:
                    continue
                med = float(np.median(v))
                mad = float(np.median(np.abs(v - med)))
                if mad > 0:
                    groups[str(group)] = (med, mad)
        stats[(field, by)] = groups
    return Reference(stats)
