"""Device payloads from generated rows: JSON-ready values (no NaN, no numpy scalars, no pd.NA)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def household_payload(rows: pd.DataFrame, i: int = 0, **changes: Any) -> dict[str, Any]:
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rows.iloc[i].to_dict().items()}
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    row = {k: (None if v is not None and str(v) == "<NA>" else v) for k, v in row.items()}
    row.update(changes)
    return row
