"""frame_records is DataFrame.to_dict("records"), value for value and type for type, only faster."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from quality.engine import frame_records


def test_frame_records_gives_what_to_dict_gives() -> None:
    frame = pd.DataFrame({"a": [1.5, np.nan], "b": pd.array([1, None], dtype="Int64"), "c": ["x", None],
                          "d": [True, False], "e": pd.to_datetime(["2026-01-01", None], utc=True),
                          "g": np.array([3, 4]), "h": pd.Series(["p", "q"], dtype="str")})
    ours, theirs = frame_records(frame), frame.to_dict("records")
    assert len(ours) == len(theirs) == 2
    for mine, reference in zip(ours, theirs, strict=True):
        assert list(mine) == list(reference)
        for key, value in mine.items():
            expected = reference[key]
            both_missing = pd.isna(value) and pd.isna(expected)
            assert both_missing or value == expected, key
            if not both_missing:
                assert type(value) is type(expected), key
            if isinstance(expected, float) and math.isnan(expected):
                assert isinstance(value, float) and math.isnan(value), key
