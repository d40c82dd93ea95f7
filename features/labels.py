"""The label: ProgressStatus from HHIncome+Consumption+Residues/Day (USD), thresholds from settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings

from rtv import contract


def income_per_day(typed: pd.DataFrame | Mapping[str, Any]) -> pd.Series:
    """The progress measure: the reported per-day value, else the sum of its components / 365.
    ``typed`` is a frame, or typed columns by name (a small validation's arrays)."""
    frame = isinstance(typed, pd.DataFrame)
    n = len(typed) if frame else len(next(iter(typed.values()), ()))

    def column(name: str) -> np.ndarray:
        return np.asarray(typed[name], dtype="float64")

    reported = column(contract.TARGET_FIELD) if contract.TARGET_FIELD in typed else np.full(n, np.nan)
    if all(c in typed for c in contract.TARGET_COMPONENTS):
        # NaN if any component is missing: a partial sum is not the measure.
        computed = np.sum([column(c) for c in contract.TARGET_COMPONENTS], axis=0) / 365.0
        reported = np.where(np.isnan(reported), computed, reported)
    return pd.Series(reported, index=typed.index if isinstance(typed, pd.DataFrame) else None, dtype="float64")


def progress_status(per_day: pd.Series) -> pd.Series:
    """Status band per row ('' where the measure is unknown)."""
    values = per_day.to_numpy(dtype="float64")
    bands = list(settings.RTV_STATUS_THRESHOLDS)  # highest threshold first
    conditions = [values >= threshold for _, threshold in bands]
    conditions.append(~np.isnan(values))
    choices = [name for name, _ in bands] + [settings.RTV_STATUS_FLOOR]
    return pd.Series(np.select(conditions, choices, default=""), index=per_day.index, dtype=object)


def is_vulnerable(status: pd.Series) -> pd.Series:
    """True for Struggling / Severely Struggling, None where the status is unknown."""
    values = status.to_numpy(dtype=object)
    out = np.isin(values, list(settings.RTV_VULNERABLE_STATUSES)).astype(object)
    out[values == ""] = None
    return pd.Series(out, index=status.index, dtype=object)
