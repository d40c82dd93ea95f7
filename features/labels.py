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
    return pd.Series(income_per_day_values(typed), index=typed.index if isinstance(typed, pd.DataFrame) else None,
                     dtype="float64")


def income_per_day_values(typed: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """``income_per_day`` as a float64 array (a device submission's one row needs no Series)."""
    n = len(typed) if isinstance(typed, pd.DataFrame) else len(next(iter(typed.values()), ()))

    def column(name: str) -> np.ndarray:
        return np.asarray(typed[name], dtype="float64")

    reported = column(contract.TARGET_FIELD) if contract.TARGET_FIELD in typed else np.full(n, np.nan)
    if all(c in typed for c in contract.TARGET_COMPONENTS):
        # NaN if any component is missing: a partial sum is not the measure.
        computed = np.sum([column(c) for c in contract.TARGET_COMPONENTS], axis=0) / 365.0
        reported = np.where(np.isnan(reported), computed, reported)
    return np.asarray(reported, dtype="float64")


def overflowing_income(typed: pd.DataFrame | Mapping[str, Any]) -> list[tuple[int, str]]:
    """Rows whose income components are numbers that add up past what a float holds (the per-day
    measure would be infinite, which no answer can carry): (row, its largest component's name)."""
    if not all(c in typed for c in contract.TARGET_COMPONENTS):
        return []
    block = np.vstack([np.asarray(typed[c], dtype="float64") for c in contract.TARGET_COMPONENTS])
    with np.errstate(over="ignore", invalid="ignore"):
        total = block.sum(axis=0)
    return [(int(r), contract.TARGET_COMPONENTS[int(np.nanargmax(block[:, r]))]) for r in np.flatnonzero(np.isinf(total))]


def progress_status(per_day: pd.Series) -> pd.Series:
    """Status band per row ('' where the measure is unknown)."""
    return pd.Series(progress_status_values(per_day.to_numpy(dtype="float64")), index=per_day.index, dtype=object)


def progress_status_values(values: np.ndarray) -> np.ndarray:
    """``progress_status`` of a float64 array, as an object array."""
    bands = list(settings.RTV_STATUS_THRESHOLDS)  # highest threshold first
    # To a billionth of a dollar: 646.05 / 365 is 1.7699999999999998 in floating point, and a household
    # exactly on the At Risk line must not fall under it for being computed rather than reported.
    values = np.round(values, 9)
    conditions = [values >= threshold for _, threshold in bands]
    conditions.append(~np.isnan(values))
    choices = [name for name, _ in bands] + [settings.RTV_STATUS_FLOOR]
    return np.asarray(np.select(conditions, choices, default=""), dtype=object)


def is_vulnerable(status: pd.Series) -> pd.Series:
    """True for Struggling / Severely Struggling, None where the status is unknown."""
    return pd.Series(is_vulnerable_values(status.to_numpy(dtype=object)), index=status.index, dtype=object)


def is_vulnerable_values(values: np.ndarray) -> np.ndarray:
    """``is_vulnerable`` of an object array of statuses: True, False, or None where unknown."""
    out = np.isin(values, list(settings.RTV_VULNERABLE_STATUSES)).astype(object)
    out[values == ""] = None
    return out
