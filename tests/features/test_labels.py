"""The label: ProgressStatus bands from income + production per day (USD), and "vulnerable"."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.labels import (
    income_per_day,
    income_per_day_values,
    is_vulnerable,
    is_vulnerable_values,
    progress_status,
    progress_status_values,
)
from rtv import contract

PER_DAY = [2.15, 2.1499, 1.77, 1.7699, 1.25, 1.2499, 0.0, np.nan]
STATUS = ["On Track", "At Risk", "At Risk", "Struggling", "Struggling", "Severely Struggling",
          "Severely Struggling", ""]
VULNERABLE = [False, False, False, True, True, True, True, None]


def test_status_bands_follow_the_configured_thresholds() -> None:
    status = progress_status(pd.Series(PER_DAY, index=range(10, 18)))
    assert status.tolist() == STATUS and list(status.index) == list(range(10, 18))
    assert progress_status_values(np.array(PER_DAY)).tolist() == STATUS


def test_vulnerable_is_struggling_or_worse_and_unknown_without_a_status() -> None:
    assert is_vulnerable(pd.Series(STATUS, dtype=object)).tolist() == VULNERABLE
    assert is_vulnerable_values(np.array(STATUS, dtype=object)).tolist() == VULNERABLE


def test_the_measure_is_the_reported_value_else_the_sum_of_its_components() -> None:
    components = list(contract.TARGET_COMPONENTS)
    frame = pd.DataFrame({c: [365.0, 365.0, 365.0] for c in components})
    frame[contract.TARGET_FIELD] = [np.nan, 3.5, np.nan]
    frame.loc[2, components[0]] = np.nan  # a missing component: no partial sum
    expected = [len(components) * 1.0, 3.5, np.nan]
    np.testing.assert_array_equal(income_per_day(frame).to_numpy(), expected)
    columns = {c: frame[c].to_numpy() for c in frame.columns}
    np.testing.assert_array_equal(income_per_day_values(columns), expected)
    np.testing.assert_array_equal(income_per_day_values(frame), expected)


def test_a_household_exactly_on_a_line_is_on_it_whether_the_measure_is_reported_or_computed() -> None:
    import numpy as np

    from features.labels import income_per_day_values, progress_status_values
    from rtv import contract

    computed = {c: [0.0] for c in contract.TARGET_COMPONENTS}
    computed[contract.TARGET_COMPONENTS[0]] = [1.77 * 365]  # 646.05: 1.7699999999999998 per day in floating point
    per_day = income_per_day_values(computed)
    assert per_day[0] != 1.77
    assert list(progress_status_values(per_day)) == list(progress_status_values(np.array([1.77]))) == ["At Risk"]
