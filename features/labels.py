"""The label: ProgressStatus from HHIncome+Consumption+Residues/Day (USD), thresholds from settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
from django.conf import settings

from rtv import contract


def income_per_day(typed: pd.DataFrame) -> pd.Series:
    """The progress measure: the reported per-day value, else the sum of its components / 365."""
    reported = typed[contract.TARGET_FIELD] if contract.TARGET_FIELD in typed else pd.Series(np.nan, index=typed.index)
    if all(c in typed for c in contract.TARGET_COMPONENTS):
        computed = typed[list(contract.TARGET_COMPONENTS)].sum(axis=1, min_count=len(contract.TARGET_COMPONENTS)) / 365.0
        reported = reported.fillna(computed)
    return reported.astype("float64")


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
    vulnerable = status.isin(settings.RTV_VULNERABLE_STATUSES)
    return vulnerable.astype(object).where(status != "", None)
