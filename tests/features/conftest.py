"""Shared by the feature tests: the binary label of each module's generated households."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def labels(households: pd.DataFrame) -> np.ndarray:
    """Vulnerable (below 1.25 x 1.416 USD/day) for the module's own ``households`` fixture."""
    return (households["income_consumption_residues_per_day"] < 1.25 * 1.416).to_numpy().astype(int)
